// Sends one fuzz case to meterd and reads the answer the way a client of that protocol reads it:
// through @grpc/grpc-js with raw bytes, through connect-node's client, or as an HTTP/1.1 or HTTP/2
// request written by hand (any bytes, compression and timeout header).
import zlib from "node:zlib";
import http2 from "node:http2";
import { type DescMessage, fromBinary, fromJsonString } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { ConnectError, createClient, type Client, type Transport } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import {
  CheckResponseSchema,
  GetMetricsResponseSchema,
  MeteringService,
  TrackBatchResponseSchema,
  TrackResponseSchema,
  TrackStreamResponseSchema,
  WatchUsageResponseSchema,
} from "../../../gen/meterd/v1/metering_pb.js";
import { RawGrpcClient } from "../../support/grpc-raw.js";
import { envelope, envelopes, h1Request, h2Request, outcomeOf, type RawAnswer } from "../../support/raw-http.js";
import type { Compression, FuzzCase, Method, Protocol } from "./cases.js";
import { binaryBytes, messagesOf, notUtf8Bytes, resolveEvent, type SentEvent } from "./encode.js";

export interface Answer {
  /** "ok", a code as connect-es spells it ("invalid_argument"), or what was wrong with the answer. */
  code: string;
  message: string;
  /** The HTTP status, when the answer was read from HTTP. */
  httpStatus: number | null;
  /** The response messages received, decoded. */
  responses: unknown[];
  /** A server stream still open when the client stopped waiting (WatchUsage waits for changes). */
  stillOpen: boolean;
}

/** What was sent: the case as adjusted to what the wire can carry, and its events. */
export interface Sent {
  fuzzCase: FuzzCase;
  events: SentEvent[];
  /** Request messages sent (TrackStream: one per event). */
  messageCount: number;
}

const RESPONSE: Record<Method, DescMessage> = {
  Track: TrackResponseSchema,
  TrackBatch: TrackBatchResponseSchema,
  TrackStream: TrackStreamResponseSchema,
  Check: CheckResponseSchema,
  GetMetrics: GetMetricsResponseSchema,
  WatchUsage: WatchUsageResponseSchema,
};
const STREAMING: ReadonlySet<Method> = new Set(["TrackStream", "WatchUsage"]);
/** How long a WatchUsage is watched; any other call must be answered within ANSWER_MS. */
const WATCH_MS = 1000;
const ANSWER_MS = 15_000;
const GRPC_CODES = ["ok", "canceled", "unknown", "invalid_argument", "deadline_exceeded", "not_found", "already_exists", "permission_denied", "resource_exhausted", "failed_precondition", "aborted", "out_of_range", "unimplemented", "internal", "unavailable", "data_loss", "unauthenticated"];

/** A grpc-timeout value for `ms`, in the largest unit that keeps 8 digits; `overlong` writes all digits in ms. */
function grpcTimeout(ms: number, overlong: boolean): string {
  if (overlong || ms <= 99_999_999) return `${ms}m`;
  if (ms <= 99_999_999_000) return `${Math.floor(ms / 1000)}S`;
  return `${Math.ceil(ms / 3_600_000)}H`;
}

function timeoutHeader(protocol: Protocol, ms: number | null): Record<string, string> {
  if (ms === null) return {};
  // Every seventh long timeout goes out with more digits than the protocol allows.
  return protocol === "connect" ? { "connect-timeout-ms": String(ms) } : { "grpc-timeout": grpcTimeout(ms, ms > 99_999_999 && ms % 7 === 0) };
}

function decompressed(bytes: Buffer, encoding: string | undefined): Buffer {
  if (encoding === "gzip") return zlib.gunzipSync(bytes);
  if (encoding === "br") return zlib.brotliDecompressSync(bytes);
  return bytes;
}

function decode(schema: DescMessage, bytes: Buffer, json: boolean): unknown {
  return json ? fromJsonString(schema, bytes.toString("utf8")) : fromBinary(schema, bytes);
}

export class Sender {
  private keys = 0;
  private readonly grpcClient: RawGrpcClient;
  private readonly h2Sessions = new Map<number, http2.ClientHttp2Session>();
  private readonly clients = new Map<string, Client<typeof MeteringService>>();
  private readonly connectUrl: string;

  constructor(
    private readonly ports: { grpc: number; http: number },
    private readonly key: string,
    private readonly runId: string,
  ) {
    this.grpcClient = new RawGrpcClient(ports.grpc);
    this.connectUrl = `http://127.0.0.1:${ports.http}`;
  }

  close(): void {
    this.grpcClient.close();
    for (const session of this.h2Sessions.values()) session.destroy();
  }

  private nextKey = (): string => `fz-${this.runId}-${++this.keys}`;

  private authHeader(auth: FuzzCase["auth"]): Record<string, string> {
    if (auth === "none") return {};
    return { authorization: `Bearer ${auth === "key" ? this.key : "sk_wrong_key_for_the_fuzz_test"}` };
  }

  /** Adjusts the case to what its wire can carry at all (gRPC needs HTTP/2, grpc-js speaks only binary gRPC). */
  normalize(c: FuzzCase): FuzzCase {
    const w = c.wire;
    if (w.kind === "connect-client") {
      if (c.body.kind !== "messages") return this.normalize({ ...c, wire: { kind: "raw", listener: "connect", protocol: w.protocol, binary: w.binary, http: w.http } });
      // connect-node's clients need HTTP/2 for gRPC and for bidirectional streams; protobuf-es will not
      // write an impossible Timestamp as JSON.
      const http = w.protocol === "grpc" || c.method === "TrackStream" ? "2" : w.http;
      const impossibleTime = c.body.events.some((e) => e.timestamp !== null && (e.timestamp.nanos < 0 || e.timestamp.nanos > 999_999_999 || Math.abs(e.timestamp.offsetSeconds) > 1e10));
      return { ...c, wire: { ...w, http, binary: w.binary || impossibleTime } };
    }
    if (w.kind === "raw") {
      if (w.listener === "grpc-js") return { ...c, wire: { ...w, protocol: "grpc", binary: true, http: "2" } };
      const binary = c.body.kind === "not-utf8" ? true : w.binary;
      return { ...c, wire: { ...w, binary, http: w.protocol === "grpc" ? "2" : w.http } };
    }
    return c;
  }

  async send(original: FuzzCase): Promise<{ sent: Sent; answer: Answer }> {
    const c = this.normalize(original);
    const binary = c.wire.kind === "grpc-js" || c.wire.binary;
    const now = Math.floor(Date.now() / 1000);
    const bodyEvents = c.body.kind === "messages" ? c.body.events : c.body.kind === "not-utf8" ? [c.body.event] : [];
    const resolved = bodyEvents.map((e) => resolveEvent(e, binary ? "binary" : "json", this.nextKey, now));
    // A body that is not the events' message carries no event the ledger could hold.
    const events = c.body.kind === "messages" ? resolved.map((r) => r.sent) : [];
    const messages = this.messageBytes(c, resolved, binary);
    const sent: Sent = { fuzzCase: c, events, messageCount: messages.length };
    const answer =
      c.wire.kind === "grpc-js"
        ? await this.viaGrpcJs(c, messages)
        : c.wire.kind === "connect-client"
          ? await this.viaConnectClient(c, resolved)
          : await this.viaRaw(c, messages);
    return { sent, answer };
  }

  /** The request messages as bytes, before framing and compression. */
  private messageBytes(c: FuzzCase, resolved: ReturnType<typeof resolveEvent>[], binary: boolean): Buffer[] {
    const body = c.body;
    switch (body.kind) {
      case "messages": {
        const m = messagesOf(c.method, resolved);
        return binary ? m.binary.map((init) => binaryBytes(m.schema, init)) : m.json.map((obj) => Buffer.from(JSON.stringify(obj), "utf8"));
      }
      case "garbage":
        return [Buffer.from(body.bytes)];
      case "bad-json":
        return [Buffer.from(body.text, "utf8")];
      case "not-utf8":
        return [notUtf8Bytes(c.method, resolved[0]!)];
      case "oversized":
        return [Buffer.alloc(body.bytes, 0x41)];
      case "lying-length":
        return [Buffer.from(body.actual)];
    }
  }

  private async viaGrpcJs(c: FuzzCase, messages: Buffer[]): Promise<Answer> {
    const metadata = new grpc.Metadata();
    for (const [k, v] of Object.entries(this.authHeader(c.auth))) metadata.set(k, v);
    const deadline = c.timeoutMs === null ? undefined : Date.now() + c.timeoutMs;
    const path = `/meterd.v1.MeteringService/${c.method}`;
    const schema = RESPONSE[c.method];
    if (!STREAMING.has(c.method)) {
      const o = await this.grpcClient.unary(path, messages[0]!, metadata, deadline);
      const responses = o.response === undefined ? [] : [fromBinary(schema, o.response)];
      return { code: GRPC_CODES[o.code] ?? `grpc-status ${o.code}`, message: o.details, httpStatus: null, responses, stillOpen: false };
    }
    const call =
      c.method === "WatchUsage" ? this.grpcClient.serverStream(path, messages[0]!, metadata, deadline) : this.grpcClient.bidi(path, metadata, deadline);
    const responses: unknown[] = [];
    const status = new Promise<{ code: number; details: string }>((resolve) => {
      call.on("data", (bytes: Buffer) => responses.push(fromBinary(schema, bytes)));
      call.on("status", (s: grpc.StatusObject) => resolve({ code: s.code, details: s.details }));
      call.on("error", () => {}); // the status says it
    });
    if (c.method === "TrackStream") {
      const duplex = call as grpc.ClientDuplexStream<Buffer, Buffer>;
      for (const m of messages) duplex.write(m);
      duplex.end();
    }
    const waitMs = c.method === "WatchUsage" ? WATCH_MS : ANSWER_MS;
    const s = await Promise.race([status, sleep(waitMs).then(() => null)]);
    if (s === null) {
      call.cancel();
      return { code: c.method === "WatchUsage" ? "ok" : "no answer", message: "", httpStatus: null, responses, stillOpen: true };
    }
    return { code: GRPC_CODES[s.code] ?? `grpc-status ${s.code}`, message: s.details, httpStatus: null, responses, stillOpen: false };
  }

  private connectClient(protocol: Protocol, binary: boolean, http: "1.1" | "2"): Client<typeof MeteringService> {
    const id = `${protocol}/${binary}/${http}`;
    let client = this.clients.get(id);
    if (client === undefined) {
      const common = { baseUrl: this.connectUrl, useBinaryFormat: binary };
      const transport: Transport =
        protocol === "grpc"
          ? createGrpcTransport(common)
          : http === "2"
            ? (protocol === "connect" ? createConnectTransport : createGrpcWebTransport)({ ...common, httpVersion: "2" })
            : (protocol === "connect" ? createConnectTransport : createGrpcWebTransport)({ ...common, httpVersion: "1.1" });
      client = createClient(MeteringService, transport);
      this.clients.set(id, client);
    }
    return client;
  }

  private async viaConnectClient(c: FuzzCase, resolved: ReturnType<typeof resolveEvent>[]): Promise<Answer> {
    if (c.wire.kind !== "connect-client") throw new Error("not a connect-client case");
    const client = this.connectClient(c.wire.protocol, c.wire.binary, c.wire.http);
    // The timeout goes in as a header: the client's own timer would overflow on long ones.
    const headers = { ...this.authHeader(c.auth), ...timeoutHeader(c.wire.protocol, c.timeoutMs) };
    const abort = new AbortController();
    const waitMs = c.method === "WatchUsage" ? WATCH_MS : ANSWER_MS;
    const timer = setTimeout(() => abort.abort(), waitMs);
    const options = { headers, signal: abort.signal };
    const m = messagesOf(c.method, resolved);
    const responses: unknown[] = [];
    try {
      switch (c.method) {
        case "Track":
          responses.push(await client.track(m.binary[0]!, options));
          break;
        case "TrackBatch":
          responses.push(await client.trackBatch(m.binary[0]!, options));
          break;
        case "Check":
          responses.push(await client.check(m.binary[0]!, options));
          break;
        case "GetMetrics":
          responses.push(await client.getMetrics(m.binary[0]!, options));
          break;
        case "TrackStream": {
          async function* requests() {
            for (const init of m.binary) yield init;
          }
          for await (const r of client.trackStream(requests(), options)) responses.push(r);
          break;
        }
        case "WatchUsage":
          for await (const r of client.watchUsage(m.binary[0]!, options)) responses.push(r);
          break;
      }
      return { code: "ok", message: "", httpStatus: null, responses, stillOpen: false };
    } catch (error) {
      if (abort.signal.aborted) {
        return { code: c.method === "WatchUsage" ? "ok" : "no answer", message: "", httpStatus: null, responses, stillOpen: true };
      }
      const e = ConnectError.from(error);
      return { code: codeToString(e.code), message: e.rawMessage, httpStatus: null, responses, stillOpen: false };
    } finally {
      clearTimeout(timer);
    }
  }

  private h2Session(port: number): http2.ClientHttp2Session {
    let session = this.h2Sessions.get(port);
    if (session === undefined || session.closed || session.destroyed) {
      session = http2.connect(`http://127.0.0.1:${port}`);
      session.on("error", () => {}); // a broken session fails its requests, which report it
      this.h2Sessions.set(port, session);
    }
    return session;
  }

  private async viaRaw(c: FuzzCase, messages: Buffer[]): Promise<Answer> {
    if (c.wire.kind !== "raw") throw new Error("not a raw case");
    const { protocol, binary, http } = c.wire;
    const port = c.wire.listener === "grpc-js" ? this.ports.grpc : this.ports.http;
    const streaming = STREAMING.has(c.method);
    const json = !binary || c.body.kind === "bad-json";
    const connectUnary = protocol === "connect" && !streaming;
    const contentType =
      protocol === "connect"
        ? connectUnary
          ? json ? "application/json" : "application/proto"
          : json ? "application/connect+json" : "application/connect+proto"
        : `application/${protocol}${json ? "+json" : protocol === "grpc-web" ? "+proto" : ""}`;
    const encodingHeader = connectUnary ? "content-encoding" : protocol === "connect" ? "connect-content-encoding" : "grpc-encoding";
    const { body, encoding } = frame(messages, c.compression, connectUnary, c.body.kind === "lying-length" ? c.body.claimed : null);
    const headers: Record<string, string> = {
      "content-type": contentType,
      ...this.authHeader(c.auth),
      ...timeoutHeader(protocol, c.timeoutMs),
      ...(encoding === null ? {} : { [encodingHeader]: encoding }),
      ...(protocol === "grpc" ? { te: "trailers" } : {}),
    };
    const request = { path: `/meterd.v1.MeteringService/${c.method}`, headers, body, timeoutMs: c.method === "WatchUsage" ? WATCH_MS : ANSWER_MS };
    let raw: RawAnswer;
    try {
      raw = http === "2" ? await h2Request(port, request, this.h2Session(port)) : await h1Request(port, request);
    } catch (error) {
      return { code: "no answer", message: String(error), httpStatus: null, responses: [], stillOpen: false };
    }
    const kind = protocol === "connect" ? (connectUnary ? "connect" : "connect-stream") : protocol;
    const responses = decodeResponses(c.method, kind, raw);
    if (!raw.complete) {
      // Only a WatchUsage may still be open when the client stops waiting: it waits for changes.
      const stillOpen = c.method === "WatchUsage" && raw.status === 200;
      return { code: stillOpen ? "ok" : "no answer", message: `HTTP ${raw.status}, unfinished`, httpStatus: raw.status, responses, stillOpen };
    }
    const outcome = outcomeOf(kind, raw);
    return { code: outcome.code, message: outcome.message, httpStatus: raw.status, responses, stillOpen: false };
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** The request body: compressed as the case says, in envelopes unless it is Connect unary. */
function frame(messages: Buffer[], compression: Compression, connectUnary: boolean, claimed: number | null): { body: Buffer; encoding: string | null } {
  const gzipTruncated = (b: Buffer) => {
    const z = zlib.gzipSync(b);
    return z.subarray(0, Math.max(10, z.length - 6));
  };
  const gzipCorrupt = (b: Buffer) => Buffer.concat([zlib.gzipSync(b).subarray(0, 10), Buffer.from("not deflate data at all"), b]);
  const transform: Record<Compression, { bytes: (b: Buffer) => Buffer; encoding: string | null; flag: number }> = {
    identity: { bytes: (b) => b, encoding: null, flag: 0 },
    gzip: { bytes: (b) => zlib.gzipSync(b), encoding: "gzip", flag: 1 },
    br: { bytes: (b) => zlib.brotliCompressSync(b), encoding: "br", flag: 1 },
    "gzip-truncated": { bytes: gzipTruncated, encoding: "gzip", flag: 1 },
    "gzip-corrupt": { bytes: gzipCorrupt, encoding: "gzip", flag: 1 },
    // Connect unary has no flag: the body is gzip without saying so.
    "flag-without-encoding": { bytes: connectUnary ? (b) => zlib.gzipSync(b) : (b) => b, encoding: null, flag: 1 },
    "unknown-encoding": { bytes: (b) => b, encoding: "zstd-fuzz", flag: 1 },
  };
  const t = transform[compression];
  if (connectUnary) return { body: t.bytes(messages[0]!), encoding: t.encoding };
  const framed = messages.map((m) => {
    const data = t.bytes(m);
    const e = envelope(data, t.flag);
    if (claimed !== null) e.writeUInt32BE(claimed >>> 0, 1);
    return e;
  });
  return { body: Buffer.concat(framed), encoding: t.encoding };
}

/** The response messages of a raw answer, decoded (undecodable ones are left out: the judge sees the count). */
function decodeResponses(method: Method, kind: "connect" | "connect-stream" | "grpc" | "grpc-web", raw: RawAnswer): unknown[] {
  if (raw.status !== 200) return [];
  const schema = RESPONSE[method];
  const contentType = String(raw.headers["content-type"] ?? "");
  const json = /json/.test(contentType);
  const encodingHeader = kind === "connect" ? "content-encoding" : kind === "connect-stream" ? "connect-content-encoding" : "grpc-encoding";
  const encoding = raw.headers[encodingHeader] as string | undefined;
  try {
    if (kind === "connect") return [decode(schema, decompressed(raw.body, encoding), json)];
    return envelopes(raw.body)
      .filter((e) => e.complete && (e.flags & 0x82) === 0)
      .map((e) => decode(schema, (e.flags & 0x01) !== 0 ? decompressed(e.data, encoding) : e.data, json));
  } catch {
    return [];
  }
}
