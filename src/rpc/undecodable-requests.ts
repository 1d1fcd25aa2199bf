// Requests the Connect listener cannot decode are the caller's fault: INVALID_ARGUMENT (HTTP 400 on
// Connect unary), so that INTERNAL always means a server fault worth an alert. connect-es 2.1.2
// answers three kinds of undecodable request with INTERNAL instead, inside its protocol handlers:
//
// - "parse binary: ...": createBinarySerialization raises Code.Internal for servers and clients
//   alike since connectrpc/connect-es#1063 (the conformance suite wants INTERNAL for a response a
//   client cannot parse; connect-go answers a request it cannot unmarshal with INVALID_ARGUMENT).
// - "decompression failed": connect-node's gzip and brotli map only some zlib codes to
//   INVALID_ARGUMENT (connectrpc/connect-es#1204); a truncated body (Z_BUF_ERROR) stays INTERNAL.
// - "received compressed envelope, but do not know how to decompress": a message flagged as
//   compressed in a request that named no encoding.
//
// Each is corrected where it can be seen: decompression by the Compression objects given to
// connect-es; the other two, on streaming calls, where the implementation reads the request
// messages (an interceptor); on unary calls, which connect-es decodes before any interceptor runs,
// in the answer, once the handler has written it. Errors of the implementation are never touched.
//
// JSON requests are parsed with unknown fields refused (connect-es ignores them by default): a
// misspelt "idempotency-key" would otherwise be dropped, and exactly-once with it. protobuf-es names the
// key in its message; here that refusal also gets meterd's ErrorDetail (field, rule, UNKNOWN_FIELD) on
// Connect, where a body can carry it.
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import type { Compression, UniversalHandler, UniversalServerResponse } from "@connectrpc/connect/protocol";
import { errorToJsonBytes } from "@connectrpc/connect/protocol-connect";
import { compressionBrotli, compressionGzip } from "@connectrpc/connect-node";
import { invalid, type MeterError } from "../metering/errors.js";

/** zlib and brotli codes that describe the input, not the server (Z_MEM_ERROR, for one, is not here). */
const INPUT_FAULT = /^(Z_DATA_ERROR|Z_BUF_ERROR|Z_NEED_DICT|ERR_PADDING_\d|ERR__ERROR_FORMAT_\w+|ERR__ERROR_DICTIONARY\w*)$/;

/** The messages connect-es 2.1.2 gives the two decoding failures it raises as INTERNAL. */
const DECODE_FAILURE = /^(parse binary: |received compressed envelope, but do not know how to decompress)/;

function isDecodeFailure(code: Code, message: string): boolean {
  return code === Code.Internal && DECODE_FAILURE.test(message);
}

/** protobuf-es's message for a JSON key that names no field of the message being read. */
const UNKNOWN_JSON_KEY = /^cannot decode message ([\w.]+) from JSON: key "(.*)" is unknown$/s;

/** The refusal of an unknown JSON key as meterd words it, or null for any other message. */
export function unknownFieldError(message: string): MeterError | null {
  const match = UNKNOWN_JSON_KEY.exec(message);
  if (match === null) return null;
  return invalid(match[2]!, `is not a field of ${match[1]!} (JSON names are lowerCamelCase or the proto's own)`, "UNKNOWN_FIELD");
}

function invalidArgument(error: ConnectError): ConnectError {
  return new ConnectError(error.rawMessage, Code.InvalidArgument, error.metadata, undefined, error.cause ?? error);
}

function inputFaultAware(compression: Compression): Compression {
  return {
    name: compression.name,
    compress: (bytes) => compression.compress(bytes),
    decompress: (bytes, readMaxBytes) =>
      compression.decompress(bytes, readMaxBytes).catch((reason: unknown) => {
        if (!(reason instanceof ConnectError) || reason.code !== Code.Internal) throw reason;
        const cause = reason.cause as { code?: unknown } | undefined;
        throw typeof cause?.code === "string" && INPUT_FAULT.test(cause.code) ? invalidArgument(reason) : reason;
      }),
  };
}

/** gzip and brotli, as connect-node accepts them by default, with corrupt or truncated input as INVALID_ARGUMENT. */
export const acceptCompression: Compression[] = [inputFaultAware(compressionGzip), inputFaultAware(compressionBrotli)];

async function* decodedMessages<T>(messages: AsyncIterable<T>): AsyncIterable<T> {
  try {
    yield* messages;
  } catch (reason) {
    if (!(reason instanceof ConnectError)) throw reason;
    if (isDecodeFailure(reason.code, reason.rawMessage)) throw invalidArgument(reason);
    throw (reason.code === Code.InvalidArgument ? unknownFieldError(reason.rawMessage) : null) ?? reason;
  }
}

/**
 * On streaming calls, the request messages are decoded while the implementation reads them: a
 * decoding failure surfaces there, before it reaches the implementation.
 */
export const decodeFailureInterceptor: Interceptor = (next) => (req) =>
  req.stream ? next({ ...req, message: decodedMessages(req.message) }) : next(req);

const GRPC_STATUS_INTERNAL = String(Code.Internal);
const GRPC_STATUS_INVALID_ARGUMENT = String(Code.InvalidArgument);
const TRAILER_FLAG = 0x80;
const COMPRESSED_FLAG = 0x01;

async function readAll(body: AsyncIterable<Uint8Array> | undefined): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  if (body !== undefined) for await (const chunk of body) chunks.push(chunk);
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
}

async function* prepend(first: Uint8Array, rest: AsyncIterable<Uint8Array>): AsyncIterable<Uint8Array> {
  yield first;
  yield* rest;
}

async function* once(bytes: Uint8Array): AsyncIterable<Uint8Array> {
  yield bytes;
}

function grpcMessageOf(value: string | null): string {
  try {
    return decodeURIComponent(value ?? "");
  } catch {
    return "";
  }
}

/** gRPC: the status travels in the response's trailers, already set when a unary call failed early. */
function fixGrpc(res: UniversalServerResponse): UniversalServerResponse {
  const trailer = res.trailer;
  if (trailer?.get("grpc-status") === GRPC_STATUS_INTERNAL && isDecodeFailure(Code.Internal, grpcMessageOf(trailer.get("grpc-message")))) {
    trailer.set("grpc-status", GRPC_STATUS_INVALID_ARGUMENT);
  }
  return res;
}

/** A gRPC-web trailer frame saying INTERNAL for a decoding failure, rewritten to INVALID_ARGUMENT; else null. */
function fixedTrailerFrame(frame: Uint8Array): Uint8Array | null {
  const flags = frame[0] ?? 0;
  if ((flags & TRAILER_FLAG) === 0 || (flags & COMPRESSED_FLAG) !== 0 || frame.length < 5) return null;
  const view = Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength);
  if (view.readUInt32BE(1) !== frame.length - 5) return null; // not one whole frame: left as it is
  const text = view.subarray(5).toString("utf8");
  const message = /^grpc-message: ?(.*?)\r?$/im.exec(text)?.[1] ?? null;
  if (!/^grpc-status: ?13\r?$/im.test(text) || !isDecodeFailure(Code.Internal, grpcMessageOf(message))) return null;
  const fixed = Buffer.from(text.replace(/^(grpc-status: ?)13(\r?)$/im, `$1${GRPC_STATUS_INVALID_ARGUMENT}$2`), "utf8");
  const envelope = Buffer.alloc(5 + fixed.length);
  envelope.writeUInt8(flags, 0);
  envelope.writeUInt32BE(fixed.length, 1);
  fixed.copy(envelope, 5);
  return envelope;
}

/**
 * gRPC-web: the status travels in a trailer frame at the end of the body. A unary call that failed
 * before its implementation ran sends that frame alone, first.
 */
async function fixGrpcWeb(res: UniversalServerResponse): Promise<UniversalServerResponse> {
  if (res.body === undefined) return res;
  const it = res.body[Symbol.asyncIterator]();
  const rest: AsyncIterable<Uint8Array> = { [Symbol.asyncIterator]: () => it };
  const first = await it.next();
  if (first.done === true) return { ...res, body: rest };
  return { ...res, body: prepend(fixedTrailerFrame(first.value) ?? first.value, rest) };
}

/** Connect unary: an error is a JSON body with an HTTP status mapped from its code. */
async function fixConnectUnary(res: UniversalServerResponse): Promise<UniversalServerResponse> {
  if ((res.status !== 500 && res.status !== 400) || res.header?.get("content-encoding") != null) return res;
  const bytes = await readAll(res.body);
  let error: { code?: unknown; message?: unknown; details?: unknown };
  try {
    error = JSON.parse(Buffer.from(bytes).toString("utf8")) as typeof error;
  } catch {
    return { ...res, body: once(bytes) };
  }
  if (typeof error.message !== "string") return { ...res, body: once(bytes) };
  const unknownField = error.code === "invalid_argument" && error.details === undefined ? unknownFieldError(error.message) : null;
  if (unknownField !== null) return withBody(res, Buffer.from(errorToJsonBytes(unknownField, {})));
  if (error.code !== "internal" || !isDecodeFailure(Code.Internal, error.message)) {
    return { ...res, body: once(bytes) };
  }
  return withBody(res, Buffer.from(JSON.stringify({ ...error, code: "invalid_argument" }), "utf8"));
}

/** The response with an INVALID_ARGUMENT error body in place of its own. */
function withBody(res: UniversalServerResponse, fixed: Buffer): UniversalServerResponse {
  const header = new Headers(res.header);
  header.set("content-length", String(fixed.byteLength));
  return { ...res, status: 400, header, body: once(fixed) };
}

/**
 * Wraps a unary method's handler so that a request connect-es could not decode is answered
 * INVALID_ARGUMENT in the request's protocol. Streaming methods are returned as they are: their
 * decoding failures go through decodeFailureInterceptor.
 */
export function answerUndecodableAsInvalid(handler: UniversalHandler): UniversalHandler {
  if (handler.method.methodKind !== "unary") return handler;
  const wrapped = async (req: Parameters<UniversalHandler>[0]): Promise<UniversalServerResponse> => {
    const res = await handler(req);
    const contentType = req.header.get("content-type") ?? "";
    if (/^application\/grpc-web/i.test(contentType)) return fixGrpcWeb(res);
    if (/^application\/grpc/i.test(contentType)) return fixGrpc(res);
    return fixConnectUnary(res);
  };
  return Object.assign(wrapped, handler);
}
