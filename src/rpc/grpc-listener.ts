// The gRPC listener: @grpc/grpc-js serving the same connect-es ServiceImpl objects as the Connect
// listener. Its service definitions are built from the protobuf-es descriptors (toBinary/fromBinary),
// and each call runs the implementation through connect-es itself, with a HandlerContext.
import { once } from "node:events";
import type { Readable } from "node:stream";
import { fromBinary, toBinary, type DescMessage, type DescMethod, type DescService } from "@bufbuild/protobuf";
import {
  Code,
  ConnectError,
  createContextValues,
  createHandlerContext,
  createServiceImplSpec,
  type HandlerContext,
  type Interceptor,
  type MethodImplSpec,
  type ServiceImpl,
} from "@connectrpc/connect";
import { createAsyncIterable, invokeUnaryImplementation, transformInvokeImplementation } from "@connectrpc/connect/protocol";
import { setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import {
  Metadata,
  Server,
  ServerCredentials,
  ServerInterceptingCall,
  status as GrpcStatus,
  type MethodDefinition,
  type ServerDuplexStream,
  type ServerInterceptor,
  type ServerReadableStream,
  type ServerUnaryCall,
  type ServerWritableStream,
  type ServiceDefinition,
  type UntypedServiceImplementation,
  type sendUnaryData,
} from "@grpc/grpc-js";
import type { HeaderReader, Principal } from "../auth/principal.js";
import { principalKey } from "./context.js";
import { errorInterceptor, serviceOfPath, toConnectError, unauthenticatedError, type RpcLogger } from "./errors.js";

/** A service descriptor and its connect-es implementation, served by both listeners. */
export interface RpcService {
  service: DescService;
  impl: object;
}

/** Pairs a service with its implementation, type-checked against the descriptor. */
export function rpcService<S extends DescService>(service: S, impl: Partial<ServiceImpl<S>>): RpcService {
  return { service, impl };
}

export interface GrpcListenerOptions {
  services: readonly RpcService[];
  /**
   * Returns the caller of `procedure` ("/pkg.Service/Method"), or null to refuse the call with
   * UNAUTHENTICATED; a ConnectError it throws is sent as it is. It runs before the message is read.
   */
  authenticate: (header: HeaderReader, procedure: string) => Principal | null;
  /** Fully qualified names of services that need no credential, e.g. "grpc.health.v1.Health". */
  publicServices?: readonly string[];
  /** Larger request messages get RESOURCE_EXHAUSTED. */
  maxMessageBytes: number;
  /**
   * Unary and client-streaming calls are cancelled after min(client deadline, this). Server and
   * bidirectional streams (WatchUsage, TrackStream) are long-lived: only the client's deadline applies.
   */
  maxTimeoutMs: number;
  logger: RpcLogger;
  /** connect-es interceptors, run around every call, as on the Connect listener. */
  interceptors?: Interceptor[];
}

export interface GrpcListener {
  readonly server: Server;
  /** Binds host:port (0 picks a free port) and resolves to the bound port. */
  listen(host: string, port: number): Promise<number>;
  /**
   * Stops accepting calls and lets in-flight calls finish. After graceMs, handlers' signals are aborted
   * with UNAVAILABLE, and remaining calls are cut shortly after.
   */
  close(graceMs: number): Promise<void>;
}

type AnyMessage = Parameters<typeof toBinary>[1];
type StreamCall = ServerWritableStream<AnyMessage, AnyMessage> | ServerDuplexStream<AnyMessage, AnyMessage>;
type SurfaceCall = ServerUnaryCall<AnyMessage, AnyMessage> | StreamCall | ServerReadableStream<AnyMessage, AnyMessage>;

// Set by the server, never by the application: they are not copied into response metadata.
const RESERVED_METADATA = new Set(["grpc-status", "grpc-message", "content-type", "te", "grpc-encoding", "grpc-accept-encoding"]);

function serializer(schema: DescMessage): (value: AnyMessage) => Buffer {
  return (value) => {
    const bytes = toBinary(schema, value);
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
}

function deserializer(schema: DescMessage): (bytes: Buffer) => AnyMessage {
  return (bytes) => fromBinary(schema, bytes);
}

function metadataToHeaders(metadata: Metadata): Headers {
  const headers = new Headers();
  for (const [key, values] of Object.entries(metadata.toJSON())) {
    for (const value of values) {
      try {
        headers.append(key, typeof value === "string" ? value : Buffer.from(value).toString("base64"));
      } catch {
        // Not a valid HTTP header: not passed to the handler.
      }
    }
  }
  return headers;
}

function addHeadersTo(metadata: Metadata, headers: Headers): Metadata {
  headers.forEach((value, key) => {
    if (RESERVED_METADATA.has(key)) return;
    try {
      metadata.add(key, key.endsWith("-bin") ? Buffer.from(value, "base64") : value);
    } catch {
      // A key grpc-js refuses (for example an illegal character) is dropped rather than failing the call.
    }
  });
  return metadata;
}

function headerReaderOf(metadata: Metadata): HeaderReader {
  return (name) => {
    const first = metadata.get(name.toLowerCase())[0];
    return typeof first === "string" ? first : undefined;
  };
}

/** A ConnectError as a grpc-js status; its details go to grpc-status-details-bin, as connect-es does. */
function grpcStatusOf(error: ConnectError, trailer: Headers): { code: number; details: string; metadata: Metadata } {
  const headers = setTrailerStatus(new Headers(trailer), error);
  const metadata = new Metadata();
  headers.forEach((value, key) => {
    if (RESERVED_METADATA.has(key)) return;
    try {
      metadata.add(key, key.endsWith("-bin") ? Buffer.from(value, "base64") : value);
    } catch {
      // see addHeadersTo
    }
  });
  return { code: error.code, details: error.rawMessage, metadata };
}

/** Resolves like `promise`, or rejects with the signal's reason as soon as it aborts. */
function untilAborted<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error);
    signal.addEventListener("abort", onAbort, { once: true });
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
  });
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

export function createGrpcListener(options: GrpcListenerOptions): GrpcListener {
  const { logger, maxTimeoutMs } = options;
  const publicServices = new Set(options.publicServices ?? ["grpc.health.v1.Health"]);
  const interceptors = [errorInterceptor(logger), ...(options.interceptors ?? [])];
  const shutdown = new AbortController();
  // The interceptor authenticates each call's metadata; handlers find the principal by that object.
  const principals = new WeakMap<Metadata, Principal>();
  let inFlight = 0;
  let idle: (() => void) | null = null;

  const authInterceptor: ServerInterceptor = (descriptor, call) => {
    const intercepting: ServerInterceptingCall = new ServerInterceptingCall(call, {
      start: (next) =>
        next({
          onReceiveMetadata: (metadata, proceed) => {
            if (publicServices.has(serviceOfPath(descriptor.path) ?? "")) {
              proceed(metadata);
              return;
            }
            const header = headerReaderOf(metadata);
            let principal: Principal | null;
            try {
              principal = options.authenticate(header, descriptor.path);
            } catch (err) {
              intercepting.sendStatus(grpcStatusOf(toConnectError(err, descriptor.path, logger), new Headers()));
              return;
            }
            if (principal === null) {
              // Refused here, before the request message is read.
              const error = unauthenticatedError(header);
              intercepting.sendStatus({ code: GrpcStatus.UNAUTHENTICATED, details: error.rawMessage, metadata: new Metadata() });
              return;
            }
            principals.set(metadata, principal);
            proceed(metadata);
          },
        }),
    });
    return intercepting;
  };

  const server = new Server({
    "grpc.max_receive_message_length": options.maxMessageBytes,
    interceptors: [authInterceptor],
  });

  function contextFor(call: SurfaceCall, spec: MethodImplSpec, capped: boolean): HandlerContext & { abort(reason?: unknown): void } {
    const cancel = new AbortController();
    const onCancel = (): void => cancel.abort(new ConnectError("the client cancelled the call", Code.Canceled));
    (call as NodeJS.EventEmitter).once("cancelled", onCancel);
    if (call.cancelled) onCancel();

    const deadline = call.getDeadline();
    const deadlineMs = deadline instanceof Date ? deadline.getTime() : deadline;
    let timeoutMs = Number.isFinite(deadlineMs) ? Math.max(0, deadlineMs - Date.now()) : undefined;
    if (capped) timeoutMs = Math.min(timeoutMs ?? maxTimeoutMs, maxTimeoutMs);

    const service = spec.method.parent;
    return createHandlerContext({
      service,
      method: spec.method,
      protocolName: "grpc",
      requestMethod: "POST",
      url: `http://${call.getHost()}/${service.typeName}/${spec.method.name}`,
      ...(timeoutMs === undefined ? {} : { timeoutMs }),
      shutdownSignal: shutdown.signal,
      requestSignal: cancel.signal,
      requestHeader: metadataToHeaders(call.metadata),
      contextValues: createContextValues().set(principalKey, principals.get(call.metadata) ?? null),
    });
  }

  function started(): () => void {
    inFlight++;
    return () => {
      inFlight--;
      if (inFlight === 0) idle?.();
    };
  }

  function sendHeaderOnce(call: SurfaceCall, ctx: HandlerContext): void {
    let count = 0;
    ctx.responseHeader.forEach(() => count++);
    if (count > 0) call.sendMetadata(addHeadersTo(new Metadata(), ctx.responseHeader));
  }

  function unaryHandler(spec: MethodImplSpec & { kind: "unary" }) {
    const procedure = `/${spec.method.parent.typeName}/${spec.method.name}`;
    return (call: ServerUnaryCall<AnyMessage, AnyMessage>, callback: sendUnaryData<AnyMessage>): void => {
      const done = started();
      const ctx = contextFor(call, spec, true);
      untilAborted(invokeUnaryImplementation(spec, ctx, call.request, interceptors), ctx.signal)
        .then(
          (response) => {
            sendHeaderOnce(call, ctx);
            callback(null, response, addHeadersTo(new Metadata(), ctx.responseTrailer));
          },
          (reason: unknown) => {
            callback(grpcStatusOf(toConnectError(reason, procedure, logger, ctx.signal), ctx.responseTrailer));
          },
        )
        .finally(() => {
          ctx.abort();
          done();
        });
    };
  }

  function streamHandler(spec: MethodImplSpec) {
    const procedure = `/${spec.method.parent.typeName}/${spec.method.name}`;
    const capped = spec.kind === "unary" || spec.kind === "client_streaming";
    return (call: SurfaceCall, callback?: sendUnaryData<AnyMessage>): void => {
      const done = started();
      const ctx = contextFor(call, spec, capped);
      const requests =
        spec.kind === "server_streaming"
          ? createAsyncIterable([(call as ServerWritableStream<AnyMessage, AnyMessage>).request])
          : requestsOf(call as unknown as Readable, ctx.signal);
      const responses = transformInvokeImplementation(spec, ctx, interceptors)(requests)[Symbol.asyncIterator]();

      const run = async (): Promise<void> => {
        let headerSent = false;
        for (;;) {
          const next = await untilAborted(responses.next(), ctx.signal);
          if (next.done === true) break;
          if (!headerSent) {
            sendHeaderOnce(call, ctx);
            headerSent = true;
          }
          if (callback !== undefined) {
            // Client streaming: the one response message ends the call.
            callback(null, next.value, addHeadersTo(new Metadata(), ctx.responseTrailer));
            return;
          }
          if (!(call as StreamCall).write(next.value)) await once(call, "drain", { signal: ctx.signal });
        }
        if (!headerSent) sendHeaderOnce(call, ctx);
        (call as StreamCall).end(addHeadersTo(new Metadata(), ctx.responseTrailer));
      };

      run()
        .catch((reason: unknown) => {
          const status = grpcStatusOf(toConnectError(reason, procedure, logger, ctx.signal), ctx.responseTrailer);
          if (callback !== undefined) callback(status);
          else if (!call.cancelled) (call as NodeJS.EventEmitter).emit("error", status);
          // Let an implementation that is still running see that the call is over.
          void responses.return?.().catch(() => {});
        })
        .finally(() => {
          ctx.abort();
          done();
        });
    };
  }

  for (const { service, impl } of options.services) {
    const spec = createServiceImplSpec(service, impl);
    const definition: Record<string, MethodDefinition<AnyMessage, AnyMessage>> = {};
    const handlers: UntypedServiceImplementation = {};
    for (const method of service.methods) {
      const methodSpec = spec.methods[method.localName];
      if (methodSpec === undefined) continue;
      definition[method.localName] = methodDefinition(service, method);
      handlers[method.localName] = (
        methodSpec.kind === "unary" ? unaryHandler(methodSpec) : streamHandler(methodSpec)
      ) as UntypedServiceImplementation[string];
    }
    server.addService(definition as ServiceDefinition, handlers);
  }

  return {
    server,
    listen(host, port) {
      const address = host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
      return new Promise((resolve, reject) => {
        server.bindAsync(address, ServerCredentials.createInsecure(), (error, boundPort) => {
          if (error === null) resolve(boundPort);
          else reject(error);
        });
      });
    },
    close(graceMs) {
      return new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          shutdown.abort(new ConnectError("the server is shutting down; retry", Code.Unavailable));
          // Give the aborted handlers a moment to send their status, then cut what is left.
          const force = (): void => {
            clearTimeout(forceTimer);
            server.forceShutdown();
            resolve();
          };
          const forceTimer = setTimeout(force, 1000);
          if (inFlight === 0) force();
          else idle = force;
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    },
  };
}

function methodDefinition(service: DescService, method: DescMethod): MethodDefinition<AnyMessage, AnyMessage> {
  return {
    path: `/${service.typeName}/${method.name}`,
    requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
    responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
    requestSerialize: serializer(method.input),
    requestDeserialize: deserializer(method.input),
    responseSerialize: serializer(method.output),
    responseDeserialize: deserializer(method.output),
    originalName: method.localName,
  };
}
