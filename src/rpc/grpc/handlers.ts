// The grpc-js handlers that run connect-es implementations. A unary call goes straight to the
// implementation with a lazily built context (no per-call AbortController, linked signals or Headers
// copies unless the handler asks for them); streams go through connect-es's own invoker.
import { once } from "node:events";
import type { Readable } from "node:stream";
import { create, type DescMessage, isMessage, type MessageInitShape } from "@bufbuild/protobuf";
import type { ConnectError, Interceptor, MethodImplSpec } from "@connectrpc/connect";
import { createAsyncIterable, invokeUnaryImplementation, transformInvokeImplementation } from "@connectrpc/connect/protocol";
import {
  Metadata,
  type ServerDuplexStream,
  type ServerReadableStream,
  type ServerUnaryCall,
  type ServerWritableStream,
  type sendUnaryData,
} from "@grpc/grpc-js";
import type { Principal } from "../../auth/principal.js";
import type { RpcCallMetrics } from "../call-metrics.js";
import { toConnectError, type RpcLogger } from "../errors.js";
import { GrpcCallContext } from "./call-context.js";
import { type AnyMessage, encodesInitShapes } from "./definitions.js";
import { addHeadersTo, grpcStatusOf } from "./metadata.js";

type StreamCall = ServerWritableStream<AnyMessage, AnyMessage> | ServerDuplexStream<AnyMessage, AnyMessage>;
type SurfaceCall = ServerUnaryCall<AnyMessage, AnyMessage> | StreamCall | ServerReadableStream<AnyMessage, AnyMessage>;

/** What the handlers need from the listener. */
export interface HandlerHost {
  logger: RpcLogger;
  /** connect-es interceptors beyond the error mapping; with none, unary calls take the direct path. */
  interceptors: Interceptor[];
  /** The error mapping interceptor plus `interceptors`, for the connect-es invokers. */
  allInterceptors: Interceptor[];
  /** Unary and client-streaming calls end after min(client deadline, this). */
  maxTimeoutMs: number;
  principalOf(call: SurfaceCall): Principal | null;
  /** Registers a call in flight; the returned function ends it. */
  track(call: InFlight): () => void;
  /** Where each call's code and duration are recorded; null records nothing. */
  callMetrics: RpcCallMetrics | null;
}

/** A call in flight, as the listener sees it: cut when it outlives its time or the server stops. */
export interface InFlight {
  readonly ctx: GrpcCallContext;
  /** Ends the call now with `error`, unless it has already been answered. */
  cut(error: ConnectError): void;
}

/** An implementation may return a plain init object; grpc-js serializes only messages. */
function asMessage(schema: DescMessage, value: unknown): AnyMessage {
  return isMessage(value, schema) ? value : create(schema, value as MessageInitShape<DescMessage>);
}

function deadlineOf(call: SurfaceCall): number {
  const deadline = call.getDeadline();
  return deadline instanceof Date ? deadline.getTime() : deadline;
}

export function unaryHandler(spec: MethodImplSpec & { kind: "unary" }, host: HandlerHost) {
  const procedure = `/${spec.method.parent.typeName}/${spec.method.name}`;
  const direct = host.interceptors.length === 0;
  const output = spec.method.output;
  const toMessage = encodesInitShapes(output) ? (response: unknown) => response as AnyMessage : (response: unknown) => asMessage(output, response);
  const recorder = host.callMetrics?.(procedure, "grpc") ?? null;
  return (call: ServerUnaryCall<AnyMessage, AnyMessage>, callback: sendUnaryData<AnyMessage>): void => {
    const started = recorder === null ? 0 : performance.now();
    const expiresAt = Math.min(deadlineOf(call), Date.now() + host.maxTimeoutMs);
    const principal = host.principalOf(call);
    const ctx = new GrpcCallContext(spec.method, call, principal, expiresAt);
    let answered = false;
    const finish = (error: ConnectError | null, response?: AnyMessage): void => {
      if (answered) return;
      answered = true;
      done();
      recorder?.done(error === null ? 0 : error.code, (performance.now() - started) / 1000, principal);
      if (error === null) {
        if (ctx.sentHeader !== undefined) call.sendMetadata(addHeadersTo(new Metadata(), ctx.sentHeader));
        callback(null, response, ctx.sentTrailer === undefined ? undefined : addHeadersTo(new Metadata(), ctx.sentTrailer));
      } else {
        callback(grpcStatusOf(error, ctx.sentTrailer));
      }
      ctx.complete();
    };
    const done = host.track({
      ctx,
      cut: (error) => {
        ctx.abort(error);
        finish(error);
      },
    });

    let result: Promise<AnyMessage>;
    try {
      result = direct
        ? Promise.resolve(spec.impl(call.request, ctx)).then(toMessage)
        : invokeUnaryImplementation(spec, ctx, call.request, host.allInterceptors);
    } catch (reason) {
      result = Promise.reject(reason);
    }
    // Both outcomes are always handled, whether or not the call was cut before the result came.
    result.then(
      (response) => finish(null, response),
      (reason: unknown) => finish(toConnectError(reason, procedure, host.logger, ctx.signalIfMade)),
    );
  };
}

/** The request messages of a client or bidi stream. Breaking out of it does not end the response side. */
async function* requestsOf(call: Readable, signal: AbortSignal): AsyncGenerator<AnyMessage> {
  try {
    for await (const message of call.iterator({ destroyOnReturn: false })) yield message as AnyMessage;
  } catch (reason) {
    if (signal.aborted) throw signal.reason;
    throw reason;
  }
}

/**
 * Settles like `promise`, or rejects with the signal's reason as soon as it aborts. `promise` always
 * gets its handlers, even when the signal has already fired, so a later rejection is never unhandled.
 */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error);
    promise.then(
      (value) => {
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      },
      (reason: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(reason as Error);
      },
    );
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * The responses of a streaming implementation called as it is, as the unary direct path does: connect-es's
 * invoker would create() every response message again (for a TrackStream answer of a thousand results and
 * usages, a reflective copy of each), which a compiled encoder does not need. Errors are mapped where the
 * handler catches them, as the error interceptor would.
 */
async function* directResponses(spec: MethodImplSpec, ctx: GrpcCallContext, requests: AsyncIterable<AnyMessage>): AsyncGenerator<AnyMessage> {
  switch (spec.kind) {
    case "server_streaming":
      for await (const request of requests) {
        yield* spec.impl(request, ctx) as AsyncIterable<AnyMessage>;
        return;
      }
      return;
    case "client_streaming":
      yield (await spec.impl(requests, ctx)) as AnyMessage;
      return;
    case "bidi_streaming":
      yield* spec.impl(requests, ctx) as AsyncIterable<AnyMessage>;
      return;
    default:
      throw new Error(`not a streaming method: ${spec.method.name}`);
  }
}

export function streamHandler(spec: MethodImplSpec, host: HandlerHost) {
  const procedure = `/${spec.method.parent.typeName}/${spec.method.name}`;
  const direct = host.interceptors.length === 0 && encodesInitShapes(spec.method.output);
  // Server and bidi streams (WatchUsage, TrackStream) are long-lived: only the client's deadline applies.
  const capped = spec.kind === "client_streaming";
  const recorder = host.callMetrics?.(procedure, "grpc") ?? null;
  return (call: SurfaceCall, callback?: sendUnaryData<AnyMessage>): void => {
    const started = recorder === null ? 0 : performance.now();
    let code = 0;
    const expiresAt = capped ? Math.min(deadlineOf(call), Date.now() + host.maxTimeoutMs) : deadlineOf(call);
    const principal = host.principalOf(call);
    const ctx = new GrpcCallContext(spec.method, call, principal, expiresAt);
    const signal = ctx.signal;
    const done = host.track({ ctx, cut: (error) => ctx.abort(error) });
    const requests =
      spec.kind === "server_streaming"
        ? createAsyncIterable([(call as ServerWritableStream<AnyMessage, AnyMessage>).request])
        : requestsOf(call as unknown as Readable, signal);
    const responses = (direct ? directResponses(spec, ctx, requests) : transformInvokeImplementation(spec, ctx, host.allInterceptors)(requests))[
      Symbol.asyncIterator
    ]();

    const run = async (): Promise<void> => {
      let headerSent = false;
      for (;;) {
        const next = await untilAborted(responses.next(), signal);
        if (next.done === true) break;
        if (!headerSent) {
          if (ctx.sentHeader !== undefined) call.sendMetadata(addHeadersTo(new Metadata(), ctx.sentHeader));
          headerSent = true;
        }
        if (callback !== undefined) {
          // Client streaming: the one response message ends the call.
          callback(null, next.value, addHeadersTo(new Metadata(), ctx.sentTrailer));
          return;
        }
        if (!(call as StreamCall).write(next.value)) await once(call, "drain", { signal });
      }
      if (!headerSent && ctx.sentHeader !== undefined) call.sendMetadata(addHeadersTo(new Metadata(), ctx.sentHeader));
      (call as StreamCall).end(addHeadersTo(new Metadata(), ctx.sentTrailer));
    };

    run()
      .catch((reason: unknown) => {
        const status = grpcStatusOf(toConnectError(reason, procedure, host.logger, signal), ctx.sentTrailer);
        code = status.code ?? 2;
        if (callback !== undefined) callback(status);
        else if (!call.cancelled) (call as NodeJS.EventEmitter).emit("error", status);
        // Let an implementation that is still running see that the call is over.
        void responses.return?.(undefined).catch(() => {});
      })
      .finally(() => {
        ctx.complete();
        done();
        recorder?.done(code, (performance.now() - started) / 1000, principal);
      });
  };
}
