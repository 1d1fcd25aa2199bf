// Requests written by hand, for bytes no generated client would send: one HTTP/1.1 or HTTP/2 request,
// its whole answer (status, headers, body, trailers), and the framing of the three protocols on the
// Connect port (5-byte envelopes; Connect end-stream messages; gRPC-web trailer frames).
import http from "node:http";
import http2 from "node:http2";

export interface RawAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  trailers: Record<string, string | string[] | undefined>;
  /** False when the client stopped waiting (timeoutMs) after the response had begun. */
  complete: boolean;
}

export interface RawRequest {
  path: string;
  headers: Record<string, string>;
  body: Uint8Array;
  /**
   * Stop waiting after this long (default 10 s): an answer that has begun is returned as it is
   * (complete: false), no answer at all is an error.
   */
  timeoutMs?: number;
}

/** One request on a fresh HTTP/1.1 connection. */
export function h1Request(port: number, request: RawRequest): Promise<RawAnswer> {
  const timeoutMs = request.timeoutMs ?? 10_000;
  return new Promise((resolve, reject) => {
    let partial: (() => RawAnswer) | null = null;
    const req = http.request(
      { host: "127.0.0.1", port, method: "POST", path: request.path, headers: request.headers, agent: false },
      (res) => {
        const chunks: Buffer[] = [];
        const answer = (complete: boolean): RawAnswer => ({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks),
          trailers: res.trailers,
          complete,
        });
        partial = () => answer(false);
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", () => {}); // after a timeout, the partial answer has been given
        res.on("end", () => resolve(answer(true)));
      },
    );
    const timer = setTimeout(() => {
      if (partial !== null) resolve(partial());
      else reject(new Error(`no answer within ${timeoutMs} ms`));
      req.destroy();
    }, timeoutMs);
    req.on("close", () => clearTimeout(timer));
    req.on("error", (err) => {
      clearTimeout(timer);
      if (partial !== null) resolve(partial());
      else reject(err);
    });
    req.end(request.body);
  });
}

/** One request on `session`, or on a fresh cleartext HTTP/2 connection that is closed afterwards. */
export function h2Request(port: number, request: RawRequest, session?: http2.ClientHttp2Session): Promise<RawAnswer> {
  const own = session === undefined ? http2.connect(`http://127.0.0.1:${port}`) : null;
  const s = session ?? own!;
  const answer = new Promise<RawAnswer>((resolve, reject) => {
    const onSessionError = (err: Error) => reject(err);
    s.once("error", onSessionError);
    const stream = s.request({ ":method": "POST", ":path": request.path, ...request.headers });
    let headers: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    stream.on("response", (h) => (headers = h));
    stream.on("trailers", (t) => (trailers = t));
    stream.on("data", (c: Buffer) => chunks.push(c));
    let cancelled = false;
    stream.setTimeout(request.timeoutMs ?? 10_000, () => {
      cancelled = true;
      stream.close(http2.constants.NGHTTP2_CANCEL);
    });
    // The answer is complete when the server ends its side (END_STREAM), even if the request is
    // still being sent: a server that has answered need not read the rest (an oversized body).
    stream.on("end", () => {
      const status = Number(headers[":status"] ?? 0);
      if (status !== 0) resolve({ status, headers, body: Buffer.concat(chunks), trailers, complete: !cancelled });
      stream.close(http2.constants.NGHTTP2_CANCEL);
    });
    stream.on("close", () => {
      s.off("error", onSessionError);
      const status = Number(headers[":status"] ?? 0);
      if (status === 0) reject(new Error(`the stream closed without an answer (code ${stream.rstCode})`));
      else resolve({ status, headers, body: Buffer.concat(chunks), trailers, complete: !cancelled });
    });
    stream.on("error", () => {}); // reported by "close"
    stream.end(request.body);
  });
  return own === null ? answer : answer.finally(() => own.close());
}

/** A 5-byte envelope (flags, big-endian length) around `data`. */
export function envelope(data: Uint8Array, flags = 0): Buffer {
  const out = Buffer.alloc(5 + data.length);
  out.writeUInt8(flags, 0);
  out.writeUInt32BE(data.length, 1);
  out.set(data, 5);
  return out;
}

/** The envelopes of a body; a trailing partial one is returned as it is, with complete: false. */
export function envelopes(body: Buffer): Array<{ flags: number; data: Buffer; complete: boolean }> {
  const out: Array<{ flags: number; data: Buffer; complete: boolean }> = [];
  let at = 0;
  while (at < body.length) {
    if (body.length - at < 5) {
      out.push({ flags: -1, data: body.subarray(at), complete: false });
      break;
    }
    const length = body.readUInt32BE(at + 1);
    const end = at + 5 + length;
    out.push({ flags: body[at]!, data: body.subarray(at + 5, Math.min(end, body.length)), complete: end <= body.length });
    at = end;
  }
  return out;
}

/** The code an answer carries, in the request's protocol, as connect-es spells codes ("invalid_argument"), or "ok". */
export type Outcome = { code: string; message: string; httpStatus: number };

const GRPC_CODES = [
  "ok", "canceled", "unknown", "invalid_argument", "deadline_exceeded", "not_found", "already_exists",
  "permission_denied", "resource_exhausted", "failed_precondition", "aborted", "out_of_range",
  "unimplemented", "internal", "unavailable", "data_loss", "unauthenticated",
];

function grpcOutcome(status: string | undefined, message: string | undefined, httpStatus: number): Outcome {
  const n = Number(status);
  const code = status === undefined ? "missing grpc-status" : (GRPC_CODES[n] ?? `grpc-status ${status}`);
  let text = message ?? "";
  try {
    text = decodeURIComponent(text);
  } catch {
    // left encoded
  }
  return { code, message: text, httpStatus };
}

function header(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/**
 * What the server answered, read the way a client of `protocol` reads it: Connect unary from the
 * status and JSON body; Connect streaming from the end-stream message; gRPC from the trailers (or
 * trailers-only headers); gRPC-web from the trailer frame (or the headers).
 */
export function outcomeOf(protocol: "connect" | "connect-stream" | "grpc" | "grpc-web", answer: RawAnswer): Outcome {
  const httpStatus = answer.status;
  if (protocol === "connect") {
    if (httpStatus === 200) return { code: "ok", message: "", httpStatus };
    try {
      const json = JSON.parse(answer.body.toString("utf8")) as { code?: string; message?: string };
      return { code: json.code ?? `http ${httpStatus}`, message: json.message ?? "", httpStatus };
    } catch {
      return { code: `http ${httpStatus}`, message: answer.body.toString("utf8").slice(0, 200), httpStatus };
    }
  }
  if (protocol === "connect-stream") {
    if (httpStatus !== 200) return { code: `http ${httpStatus}`, message: answer.body.toString("utf8").slice(0, 200), httpStatus };
    const end = envelopes(answer.body).find((e) => e.flags >= 0 && (e.flags & 0x02) !== 0);
    if (end === undefined) return { code: "missing end-stream", message: "", httpStatus };
    const json = JSON.parse(end.data.toString("utf8")) as { error?: { code?: string; message?: string } };
    return json.error === undefined ? { code: "ok", message: "", httpStatus } : { code: json.error.code ?? "?", message: json.error.message ?? "", httpStatus };
  }
  if (protocol === "grpc") {
    const source = answer.trailers["grpc-status"] !== undefined ? answer.trailers : answer.headers;
    if (httpStatus !== 200) return { code: `http ${httpStatus}`, message: "", httpStatus };
    return grpcOutcome(header(source["grpc-status"]), header(source["grpc-message"]), httpStatus);
  }
  if (httpStatus !== 200) return { code: `http ${httpStatus}`, message: "", httpStatus };
  if (answer.headers["grpc-status"] !== undefined) {
    return grpcOutcome(header(answer.headers["grpc-status"]), header(answer.headers["grpc-message"]), httpStatus);
  }
  const trailer = envelopes(answer.body).find((e) => e.flags >= 0 && (e.flags & 0x80) !== 0);
  if (trailer === undefined) return { code: "missing trailer frame", message: "", httpStatus };
  const fields = Object.fromEntries(
    trailer.data
      .toString("utf8")
      .split(/\r\n/)
      .filter((line) => line.includes(":"))
      .map((line) => [line.slice(0, line.indexOf(":")).trim().toLowerCase(), line.slice(line.indexOf(":") + 1).trim()]),
  );
  return grpcOutcome(fields["grpc-status"], fields["grpc-message"], httpStatus);
}
