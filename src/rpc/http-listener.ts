// The Connect listener: Connect, gRPC-web and gRPC on one port, over HTTP/1.1 and cleartext HTTP/2.
// A net.Server looks at the first bytes of each connection and hands it to an HTTP/2 server (the
// "PRI " preface) or an HTTP/1.1 server; both run the same handler. Credentials and CORS are
// checked from the headers, before the body is read.
import http from "node:http";
import http2 from "node:http2";
import net from "node:net";
import type { DescMethod } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  cors,
  createConnectRouter,
  createContextKey,
  createContextValues,
  type Interceptor,
  type ServiceImpl,
} from "@connectrpc/connect";
import { codeToHttpStatus, endStreamFlag, endStreamToJson, errorToJsonBytes } from "@connectrpc/connect/protocol-connect";
import { setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { universalRequestFromNodeRequest, universalResponseToNodeResponse } from "@connectrpc/connect-node";
import type { HeaderReader, Principal } from "../auth/principal.js";
import { MeterError } from "../metering/errors.js";
import { clampTimeout, MAX_TIMER_MS } from "./connect-timeout.js";
import { CallsInFlight } from "./calls-in-flight.js";
import { protocolOf, type RpcCallMetrics, type RpcCallRecorder, type RpcProtocol } from "./call-metrics.js";
import { principalKey } from "./context.js";
import { encodeGrpcMessage, errorInterceptor, serviceOfPath, unauthenticatedError, type RpcLogger } from "./errors.js";
import type { RpcService } from "./service.js";
import { acceptCompression, answerUndecodableAsInvalid, decodeFailureInterceptor } from "./undecodable-requests.js";

export type HttpRequest = http.IncomingMessage | http2.Http2ServerRequest;
export type HttpResponse = http.ServerResponse | http2.Http2ServerResponse;

export interface HttpListenerOptions {
  services: readonly RpcService[];
  /**
   * Returns the caller of `procedure` ("/pkg.Service/Method"), or null to refuse the call with
   * UNAUTHENTICATED; a ConnectError it throws is sent as it is (PERMISSION_DENIED, RESOURCE_EXHAUSTED).
   * It runs before the body is read.
   */
  authenticate: (header: HeaderReader, procedure: string) => Principal | null;
  /** Fully qualified names of services that need no credential; default: grpc.health.v1.Health. */
  publicServices?: readonly string[];
  /** Browser origins allowed by CORS, matched exactly, e.g. "https://app.example.com". */
  corsOrigins: readonly string[];
  /** Larger request messages get RESOURCE_EXHAUSTED. */
  maxMessageBytes: number;
  /**
   * Unary and client-streaming calls time out after min(client timeout, this). Server and
   * bidirectional streams (WatchUsage, TrackStream) are long-lived: the client's timeout applies, up
   * to MAX_TIMER_MS (about 24.8 days; see connect-timeout.ts).
   */
  maxTimeoutMs: number;
  logger: RpcLogger;
  /** connect-es interceptors, run around every call, as on the gRPC listener. */
  interceptors?: Interceptor[];
  /** Tried first for every request (for example /metrics); returns true when it has answered. */
  extraRoutes?: (req: HttpRequest, res: HttpResponse) => boolean;
  /** Records each call's code and duration. */
  callMetrics?: RpcCallMetrics;
}

export interface HttpListener {
  /** Listens on host:port (0 picks a free port) and resolves to the bound port. */
  listen(host: string, port: number): Promise<number>;
  /**
   * Stops accepting connections and lets in-flight calls finish; idle connections are closed at once.
   * After graceMs, handlers' signals are aborted with UNAVAILABLE and what is left is cut shortly after.
   */
  close(graceMs: number): Promise<void>;
}

const HTTP2_PREFACE_START = Buffer.from("PRI ");
const FIRST_BYTES_TIMEOUT_MS = 10_000;
const ALLOW_HEADERS = [...cors.allowedHeaders, "Authorization", "X-Api-Key"].join(", ");
const EXPOSE_HEADERS = [...cors.exposedHeaders, "Retry-After", "Retry-After-Ms"].join(", ");

function firstHeader(req: HttpRequest, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function headerRecord(headers: Headers): Record<string, string> {
  const out: Record<string, string> = {};
  headers.forEach((value, key) => (out[key] = value));
  return out;
}

/**
 * Writes an error decided from the headers alone (no credential, a refused token, a rate limit), in
 * the request's own protocol, without reading the body. The error's metadata (retry-after) goes into
 * the response headers.
 */
function writeEarlyError(req: HttpRequest, res: HttpResponse, error: ConnectError): void {
  const contentType = firstHeader(req, "content-type") ?? "";
  const metadata = headerRecord(error.metadata);
  if (/^application\/grpc(-web(-text)?)?([+;]|$)/i.test(contentType)) {
    // gRPC and gRPC-web: a trailers-only response.
    const details = setTrailerStatus(new Headers(), error).get("grpc-status-details-bin");
    const headers = {
      ...metadata,
      "content-type": contentType,
      "grpc-status": String(error.code),
      "grpc-message": encodeGrpcMessage(error.rawMessage),
      ...(details === null ? {} : { "grpc-status-details-bin": details }),
    };
    if (res instanceof http2.Http2ServerResponse) {
      // One HEADERS frame with END_STREAM. writeHead() + end() would send the status as ordinary
      // headers, then reset the unread request: grpc-js clients then report INTERNAL.
      res.stream.respond({ ...res.getHeaders(), ...headers, ":status": 200 }, { endStream: true });
    } else {
      res.writeHead(200, headers);
      res.end();
    }
  } else if (/^application\/connect\+/i.test(contentType)) {
    // Connect streaming: one end-stream message (flag 0x02), always JSON.
    const json = Buffer.from(JSON.stringify(endStreamToJson(new Headers(), error, undefined)));
    const envelope = Buffer.alloc(5 + json.length);
    envelope.writeUInt8(endStreamFlag, 0);
    envelope.writeUInt32BE(json.length, 1);
    json.copy(envelope, 5);
    res.writeHead(200, { ...metadata, "content-type": contentType });
    res.end(envelope);
  } else {
    // Connect unary (POST application/json or application/proto, or GET).
    res.writeHead(codeToHttpStatus(error.code), { ...metadata, "content-type": "application/json" });
    res.end(errorToJsonBytes(error, undefined));
  }
}

/** When the listener took the call, and in which protocol: what the call metrics need. */
const callStartKey = createContextKey<number>(0, { description: "call start (performance.now)" });
const protocolKey = createContextKey<RpcProtocol>("connect", { description: "protocol" });

/** A stream's responses, recorded once they end: with the error's code, or CANCELLED when abandoned. */
async function* recordedStream<T>(messages: AsyncIterable<T>, done: (code: number) => void): AsyncIterable<T> {
  let code: number = Code.Canceled;
  try {
    yield* messages;
    code = 0;
  } catch (reason) {
    code = ConnectError.from(reason).code;
    throw reason;
  } finally {
    done(code);
  }
}

/**
 * Records every call that reaches the router's interceptors; put it first, so that it sees the codes the
 * error interceptor gives. (A unary request connect-es cannot decode is answered before any interceptor
 * and is not recorded.)
 */
function callMetricsInterceptor(recorders: Map<DescMethod, Record<RpcProtocol, RpcCallRecorder>>): Interceptor {
  return (next) => async (req) => {
    const recorder = recorders.get(req.method)?.[req.contextValues.get(protocolKey)];
    if (recorder === undefined) return next(req);
    const started = req.contextValues.get(callStartKey);
    const done = (code: number): void => recorder.done(code, (performance.now() - started) / 1000, req.contextValues.get(principalKey));
    try {
      const res = await next(req);
      if (res.stream) return { ...res, message: recordedStream(res.message, done) };
      done(0);
      return res;
    } catch (reason) {
      done(ConnectError.from(reason).code);
      throw reason;
    }
  };
}

/**
 * A browser (a request with an Origin) must send what no plain HTML form or link can: a gRPC or
 * streaming content type, the Connect-Protocol-Version header, or, for GET, connect=v1. Such requests
 * need a CORS preflight, so a page from an origin that is not allowed cannot send them at all.
 */
function crossSiteGuard(req: HttpRequest): ConnectError | null {
  if (firstHeader(req, "origin") === undefined) return null;
  if (/^application\/(grpc|connect\+)/i.test(firstHeader(req, "content-type") ?? "")) return null;
  if (req.method === "GET" ? /[?&]connect=v1(&|$)/.test(req.url ?? "") : firstHeader(req, "connect-protocol-version") !== undefined) {
    return null;
  }
  return new MeterError(
    Code.InvalidArgument,
    "CONNECT_PROTOCOL_HEADER_REQUIRED",
    "a request from a browser must send the header Connect-Protocol-Version: 1 (connect-web does)",
  );
}

export function createHttpListener(options: HttpListenerOptions): HttpListener {
  const { logger, maxTimeoutMs } = options;
  const publicServices = new Set(options.publicServices ?? ["grpc.health.v1.Health"]);
  const corsOrigins = new Set(options.corsOrigins);
  // The calls close() cuts with UNAVAILABLE once it stops waiting for them (see calls-in-flight.ts).
  const calls = new CallsInFlight();
  const principals = new WeakMap<HttpRequest, Principal>();
  const methods = new Map<string, DescMethod>();
  for (const { service } of options.services) {
    for (const method of service.methods) methods.set(`/${service.typeName}/${method.name}`, method);
  }
  const callMetrics = options.callMetrics;
  // Each method's recorders, looked up once here: a call then costs one map lookup.
  const recorders = new Map<DescMethod, Record<RpcProtocol, RpcCallRecorder>>();
  if (callMetrics !== undefined) {
    for (const [path, method] of methods) {
      recorders.set(method, { grpc: callMetrics(path, "grpc"), "grpc-web": callMetrics(path, "grpc-web"), connect: callMetrics(path, "connect") });
    }
  }
  const refused = (req: HttpRequest, method: DescMethod, error: ConnectError): void => {
    recorders.get(method)?.[protocolOf(firstHeader(req, "content-type"))].refused(error.code);
  };

  // connect-es's router, served through connect-node's request and response helpers rather than
  // connectNodeAdapter, so that each unary handler can be wrapped (see undecodable-requests.ts).
  const router = createConnectRouter({
    readMaxBytes: options.maxMessageBytes,
    // A JSON key that names no field is refused, not dropped (see undecodable-requests.ts).
    jsonOptions: { ignoreUnknownFields: false },
    // No maxTimeoutMs here: Connect would refuse longer client timeouts, even on streams. clampTimeout caps them.
    interceptors: [
      ...(callMetrics === undefined ? [] : [callMetricsInterceptor(recorders)]),
      errorInterceptor(logger),
      decodeFailureInterceptor,
      ...(options.interceptors ?? []),
    ],
    acceptCompression,
  });
  for (const { service, impl } of options.services) {
    router.service(service, impl as Partial<ServiceImpl<typeof service>>);
  }
  const handlers = new Map(router.handlers.map((h) => [h.requestPath, answerUndecodableAsInvalid(h)]));

  function connectHandler(req: HttpRequest, res: HttpResponse): void {
    const handler = handlers.get((req.url ?? "").split("?", 1)[0] ?? "");
    if (handler === undefined) {
      res.writeHead(404, { "content-type": "text/plain; charset=utf-8" });
      res.end("not found\n");
      return;
    }
    const contextValues = createContextValues().set(principalKey, principals.get(req) ?? null);
    if (callMetrics !== undefined) {
      contextValues.set(callStartKey, performance.now()).set(protocolKey, protocolOf(firstHeader(req, "content-type")));
    }
    const request = universalRequestFromNodeRequest(req, res, undefined, contextValues);
    // A unary implementation never reads its signal: at shutdown its client is answered here, in its
    // own protocol, UNAVAILABLE (retry with the same key), before the connection is cut.
    const onShutdown =
      handler.method.methodKind === "unary" ? (reason: unknown) => void (res.headersSent ? undefined : writeEarlyError(req, res, ConnectError.from(reason))) : undefined;
    handler({ ...request, signal: calls.link(request.signal, onShutdown) })
      // Answered already when shutdown cut the call (see onShutdown).
      .then((uRes) => (res.writableEnded ? undefined : universalResponseToNodeResponse(uRes, res)))
      .catch((reason: unknown) => {
        // As connectNodeAdapter does: a call the client abandoned is not a failure of the server.
        if (ConnectError.from(reason).code === Code.Aborted) return;
        logger.error({ err: reason, url: req.url }, "connect handler failed");
      });
  }

  function handle(req: HttpRequest, res: HttpResponse): void {
    try {
      if (options.extraRoutes?.(req, res) === true) return;

      const origin = firstHeader(req, "origin");
      const allowedOrigin = origin !== undefined && corsOrigins.has(origin) ? origin : undefined;
      res.setHeader("Vary", "Origin");
      if (req.method === "OPTIONS" && origin !== undefined && firstHeader(req, "access-control-request-method") !== undefined) {
        // A CORS preflight: answered here; an origin that is not allowed gets no CORS headers.
        res.writeHead(
          204,
          allowedOrigin === undefined
            ? {}
            : {
                "access-control-allow-origin": allowedOrigin,
                "access-control-allow-methods": cors.allowedMethods.join(", "),
                "access-control-allow-headers": ALLOW_HEADERS,
                "access-control-max-age": "7200",
              },
        );
        res.end();
        return;
      }
      if (allowedOrigin !== undefined) {
        res.setHeader("Access-Control-Allow-Origin", allowedOrigin);
        res.setHeader("Access-Control-Expose-Headers", EXPOSE_HEADERS);
      }

      const path = (req.url ?? "").split("?", 1)[0] ?? "";
      const method = methods.get(path);
      if (method !== undefined) {
        const crossSite = crossSiteGuard(req);
        if (crossSite !== null) {
          refused(req, method, crossSite);
          writeEarlyError(req, res, crossSite);
          return;
        }
        if (!publicServices.has(serviceOfPath(path) ?? "")) {
          const header: HeaderReader = (name) => firstHeader(req, name.toLowerCase());
          let principal: Principal | null;
          try {
            principal = options.authenticate(header, path);
          } catch (err) {
            if (!(err instanceof ConnectError)) throw err;
            refused(req, method, err);
            writeEarlyError(req, res, err);
            return;
          }
          if (principal === null) {
            const error = unauthenticatedError(header);
            refused(req, method, error);
            writeEarlyError(req, res, error);
            return;
          }
          principals.set(req, principal);
        }
        const capped = method.methodKind === "unary" || method.methodKind === "client_streaming";
        clampTimeout(req.headers, capped ? maxTimeoutMs : MAX_TIMER_MS, capped);
      }
      connectHandler(req, res);
    } catch (err) {
      logger.error({ err, url: req.url }, "http request failed");
      if (!res.headersSent) res.writeHead(500);
      res.end();
    }
  }

  // Connections, so that close() can wait for them and cut what is left.
  let closing = false;
  const sockets = new Set<net.Socket>();
  const h1Active = new Map<net.Socket, number>();
  const h1Responses = new Set<http.ServerResponse>();
  const sessions = new Set<http2.Http2Session>();
  const peeking = new Set<net.Socket>();
  let onAllClosed: (() => void) | null = null;

  const h1 = http.createServer((req, res) => {
    const socket = req.socket;
    h1Active.set(socket, (h1Active.get(socket) ?? 0) + 1);
    h1Responses.add(res);
    if (closing) res.setHeader("Connection", "close");
    res.once("close", () => {
      h1Responses.delete(res);
      const active = h1Active.get(socket);
      if (active === undefined) return; // the connection is already closed
      h1Active.set(socket, active - 1);
      if (closing && active === 1) socket.end();
    });
    handle(req, res);
  });
  const h2 = http2.createServer({}, handle);
  h2.on("session", (session) => {
    sessions.add(session);
    session.once("close", () => sessions.delete(session));
    if (closing) session.close();
  });

  function route(socket: net.Socket): void {
    sockets.add(socket);
    socket.on("error", (err) => logger.debug({ err }, "http connection error"));
    socket.once("close", () => {
      sockets.delete(socket);
      peeking.delete(socket);
      h1Active.delete(socket);
      if (sockets.size === 0) onAllClosed?.();
    });
    if (closing) {
      socket.destroy();
      return;
    }
    peeking.add(socket);
    let received = Buffer.alloc(0);
    const timer = setTimeout(() => socket.destroy(), FIRST_BYTES_TIMEOUT_MS);
    socket.once("close", () => clearTimeout(timer));
    const onData = (chunk: Buffer): void => {
      received = Buffer.concat([received, chunk]);
      const decided =
        received.length >= HTTP2_PREFACE_START.length ||
        !HTTP2_PREFACE_START.subarray(0, received.length).equals(received);
      if (!decided) return;
      socket.off("data", onData);
      clearTimeout(timer);
      peeking.delete(socket);
      socket.pause();
      socket.unshift(received);
      if (received.subarray(0, HTTP2_PREFACE_START.length).equals(HTTP2_PREFACE_START)) {
        // The HTTP/2 session reads the buffered bytes itself; resuming the socket would break it.
        h2.emit("connection", socket);
      } else {
        h1Active.set(socket, 0);
        h1.emit("connection", socket);
        // The HTTP/1.1 parser reads new bytes from the handle; the buffered ones need the stream flowing.
        socket.resume();
      }
    };
    socket.on("data", onData);
  }

  const netServer = net.createServer({ noDelay: true }, route);

  return {
    listen(host, port) {
      return new Promise((resolve, reject) => {
        netServer.once("error", reject);
        netServer.listen(port, host, () => {
          netServer.off("error", reject);
          resolve((netServer.address() as net.AddressInfo).port);
        });
      });
    },
    async close(graceMs) {
      closing = true;
      netServer.close();
      for (const session of sessions) session.close(); // GOAWAY; ends once its streams are done
      for (const res of h1Responses) if (!res.headersSent) res.setHeader("Connection", "close");
      for (const socket of sockets) {
        // Idle HTTP/1.1 connections, and connections that have not sent their first bytes yet.
        if (h1Active.get(socket) === 0 || peeking.has(socket)) socket.destroy();
      }
      const allClosed = new Promise<void>((resolve) => {
        onAllClosed = resolve;
        if (sockets.size === 0) resolve();
      });
      const closedWithin = (ms: number): Promise<boolean> => {
        let timer: NodeJS.Timeout | undefined;
        const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
        return Promise.race([allClosed.then(() => true), timeout]).finally(() => clearTimeout(timer));
      };
      if (await closedWithin(graceMs)) return;
      calls.abortAll(new ConnectError("the server is shutting down; retry", Code.Unavailable));
      if (await closedWithin(1000)) return;
      for (const socket of sockets) socket.destroy();
      await allClosed;
    },
  };
}
