// Five corrections to @grpc/grpc-js 1.14's server call, made where it decides before any interceptor
// can see the call (BaseServerInterceptingCall, which the package exports under build/src).
//
// 1. Deadlines. grpc-js turns grpc-timeout into ms with `| 0` and hands it to setTimeout: 30 days
//    (2,592,000,000 ms) wraps negative and the call is cut at once, 8760H wraps to a random value.
//    Here a timeout past what a Node timer can hold (2^31-1 ms, about 24.8 days) is clamped to it.
// 2. Caller's bytes answered INTERNAL. A request that does not decode (bad protobuf or UTF-8), does
//    not decompress, or carries a malformed grpc-timeout gets INTERNAL from grpc-js, which makes a
//    client's bug look like a server fault. Those statuses become INVALID_ARGUMENT; every other
//    INTERNAL is left alone, so INTERNAL keeps meaning a fault worth an alert.
// 3. A message after the status. When a stream's deadline passes, grpc-js sends its status (ending the
//    HTTP/2 stream and waiting to send trailers), but a response the handler writes a moment later is
//    still written: a write after end, which fails the stream before its trailers go, so the client
//    waits forever (HTTP 200, no grpc-status). Here a message after the status is dropped.
// 4. A request cut inside a message. When the request stream ends while a message's length prefix
//    still promises bytes, grpc-js drops the partial message without a word: a stream call then ends
//    OK as if the caller had sent nothing more. Here it is INVALID_ARGUMENT.
// 5. An encoding grpc-js cannot read. grpc-js looks at grpc-encoding only when a compressed message
//    arrives, so a call naming an unknown encoding succeeds when no message needs it. Here it is
//    UNIMPLEMENTED from the start, as the gRPC spec asks, before any message is read.
// No grpc/grpc-node issue was found for any of them; remove a fix once grpc-js makes it its own.
import { createRequire } from "node:module";
import { status as GrpcStatus, type StatusObject } from "@grpc/grpc-js";

/** What grpc-js decompresses (its decompressMessage). */
const READABLE_ENCODINGS: ReadonlySet<string> = new Set(["identity", "gzip", "deflate"]);

/** The longest timer Node keeps; a longer grpc-timeout is clamped to it. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

const UNIT_MS = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000_001 } as const;
// As the gRPC spec writes it: at most 8 digits and a unit. grpc-js's own pattern is not anchored.
const TIMEOUT = /^(\d{1,8})([HMSmun])$/;
// 35,791 minutes = 2,147,460,000 ms: the longest whole-minute timeout under MAX_TIMER_MS, in 8 digits.
const CLAMPED = `${Math.floor(MAX_TIMER_MS / 60_000)}M`;

/** The grpc-js statuses for a caller's undecodable request, by their fixed details text. */
const CALLER_FAULTS: ReadonlyArray<[RegExp, string]> = [
  [/^Error deserializing request/, "the request message could not be decoded: invalid protobuf or UTF-8"],
  [/^Failed to decompress message/, "the request message could not be decompressed"],
  [/^Invalid grpc-timeout value/, "grpc-timeout must be 1 to 8 digits and a unit (H, M, S, m, u or n)"],
];

interface BaseCall {
  handleTimeoutHeader(value: unknown): void;
  handleEndEvent(): void;
  start(listener: unknown): void;
  incomingEncoding: string;
  decoder: { readState: number };
  sendStatus(status: Partial<StatusObject>): void;
  sendMessage(message: unknown, callback: () => void): void;
  /** Set here once a status has been sent: nothing may be written after it. */
  meterdStatusSent?: boolean;
}

let applied = false;

export function applyGrpcJsFixes(): void {
  if (applied) return;
  applied = true;
  const require = createRequire(import.meta.url);
  const { BaseServerInterceptingCall } = require("@grpc/grpc-js/build/src/server-interceptors.js") as {
    BaseServerInterceptingCall: { prototype: BaseCall };
  };
  const proto = BaseServerInterceptingCall.prototype;
  const { handleTimeoutHeader, sendStatus, sendMessage, handleEndEvent, start } = proto;
  if ([handleTimeoutHeader, sendStatus, sendMessage, handleEndEvent, start].some((f) => typeof f !== "function")) {
    throw new Error("@grpc/grpc-js changed: BaseServerInterceptingCall no longer has handleTimeoutHeader/sendStatus/sendMessage/handleEndEvent/start");
  }

  proto.start = function (this: BaseCall, listener: unknown) {
    if (!READABLE_ENCODINGS.has(this.incomingEncoding)) {
      this.sendStatus({
        code: GrpcStatus.UNIMPLEMENTED,
        details: `grpc-encoding "${this.incomingEncoding}" is not supported: send identity, gzip or deflate`,
      });
      return;
    }
    start.call(this, listener);
  };

  proto.handleEndEvent = function (this: BaseCall) {
    // grpc-js's StreamDecoder is between messages (NO_DATA, 0) unless a prefix or a message is partial.
    if (this.decoder.readState !== 0 && this.meterdStatusSent !== true) {
      this.sendStatus({ code: GrpcStatus.INVALID_ARGUMENT, details: "the request ended inside a message: its length prefix promised more bytes than were sent" });
      return;
    }
    handleEndEvent.call(this);
  };

  proto.handleTimeoutHeader = function (this: BaseCall, value: unknown) {
    const match = TIMEOUT.exec(String(value));
    // Not the spec's form (grpc-js would take the last 8 digits of "123456789S"): refused as invalid.
    if (match === null) handleTimeoutHeader.call(this, "invalid");
    else if (Number(match[1]) * UNIT_MS[match[2] as keyof typeof UNIT_MS] > MAX_TIMER_MS) handleTimeoutHeader.call(this, CLAMPED);
    else handleTimeoutHeader.call(this, value);
  };

  proto.sendMessage = function (this: BaseCall, message: unknown, callback: () => void) {
    // The call is over: the message is dropped, and the writer told it is done so that it does not stall.
    if (this.meterdStatusSent === true) {
      process.nextTick(callback);
      return;
    }
    sendMessage.call(this, message, callback);
  };

  proto.sendStatus = function (this: BaseCall, status: Partial<StatusObject>) {
    this.meterdStatusSent = true;
    if (status.code === GrpcStatus.INTERNAL && typeof status.details === "string") {
      const fault = CALLER_FAULTS.find(([pattern]) => pattern.test(status.details!));
      if (fault) {
        sendStatus.call(this, { ...status, code: GrpcStatus.INVALID_ARGUMENT, details: fault[1] });
        return;
      }
    }
    sendStatus.call(this, status);
  };
}
