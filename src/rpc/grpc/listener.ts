// The gRPC listener: @grpc/grpc-js serving the same connect-es ServiceImpl objects as the Connect
// listener. Credentials are checked from the metadata before the message is read.
import { Code, ConnectError, createServiceImplSpec, type Interceptor } from "@connectrpc/connect";
import {
  Metadata,
  Server,
  ServerCredentials,
  ServerInterceptingCall,
  status as GrpcStatus,
  type MethodDefinition,
  type ServerInterceptor,
  type ServiceDefinition,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import type { HeaderReader, Principal } from "../../auth/principal.js";
import { errorInterceptor, serviceOfPath, toConnectError, unauthenticatedError, type RpcLogger } from "../errors.js";
import type { RpcCallMetrics } from "../call-metrics.js";
import type { RpcService } from "../service.js";
import { type AnyMessage, methodDefinition } from "./definitions.js";
import { applyGrpcJsFixes } from "./grpc-js-fixes.js";
import { type HandlerHost, type InFlight, streamHandler, unaryHandler } from "./handlers.js";
import { grpcStatusOf, headerReaderOf } from "./metadata.js";

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
   * Unary and client-streaming calls end after min(client deadline, this), checked every second.
   * Server and bidirectional streams (WatchUsage, TrackStream) are long-lived: only the client's
   * deadline applies, clamped to about 24.8 days (see grpc-js-fixes.ts).
   */
  maxTimeoutMs: number;
  logger: RpcLogger;
  /** connect-es interceptors, run around every call, as on the Connect listener. */
  interceptors?: Interceptor[];
  /** Records each call's code and duration (no interceptor: unary calls keep the direct path). */
  callMetrics?: RpcCallMetrics;
}

export interface GrpcListener {
  readonly server: Server;
  /** Binds host:port (0 picks a free port) and resolves to the bound port. */
  listen(host: string, port: number): Promise<number>;
  /**
   * Stops accepting calls and lets in-flight calls finish. After graceMs, calls still running are
   * answered UNAVAILABLE (their handlers' signals abort), and what is left is cut shortly after.
   */
  close(graceMs: number): Promise<void>;
}

/** How often calls in flight are checked against their deadline cap. */
const EXPIRY_CHECK_MS = 1000;

export function createGrpcListener(options: GrpcListenerOptions): GrpcListener {
  applyGrpcJsFixes();
  const { logger, maxTimeoutMs } = options;
  const publicServices = new Set(options.publicServices ?? ["grpc.health.v1.Health"]);
  // The interceptor authenticates each call's metadata; handlers find the principal by that object.
  const principals = new WeakMap<Metadata, Principal>();
  const inFlight = new Set<InFlight>();
  let idle: (() => void) | null = null;

  // One timer for every call, rather than one per call: a call past its time is cut within a second.
  const expiry = setInterval(() => {
    const now = Date.now();
    for (const call of inFlight) {
      if (call.ctx.expiresAt <= now) call.cut(new ConnectError("the deadline was exceeded", Code.DeadlineExceeded));
    }
  }, EXPIRY_CHECK_MS);
  expiry.unref();

  const extra = options.interceptors ?? [];
  const callMetrics = options.callMetrics ?? null;
  // Calls refused before their handler runs are recorded too, for the procedures served (not any path sent).
  const served = new Set(options.services.flatMap(({ service }) => service.methods.map((m) => `/${service.typeName}/${m.name}`)));
  const refused = (path: string, code: number): void => {
    if (callMetrics !== null && served.has(path)) callMetrics(path, "grpc").refused(code);
  };
  const host: HandlerHost = {
    logger,
    interceptors: extra,
    allInterceptors: [errorInterceptor(logger), ...extra],
    maxTimeoutMs,
    callMetrics,
    principalOf: (call) => principals.get(call.metadata) ?? null,
    track(call) {
      inFlight.add(call);
      return () => {
        inFlight.delete(call);
        if (inFlight.size === 0) idle?.();
      };
    },
  };

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
              const error = toConnectError(err, descriptor.path, logger);
              refused(descriptor.path, error.code);
              intercepting.sendStatus(grpcStatusOf(error, undefined) as never);
              return;
            }
            if (principal === null) {
              // Refused here, before the request message is read.
              const error = unauthenticatedError(header);
              refused(descriptor.path, GrpcStatus.UNAUTHENTICATED);
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

  for (const { service, impl } of options.services) {
    const spec = createServiceImplSpec(service, impl);
    const definition: Record<string, MethodDefinition<AnyMessage, AnyMessage>> = {};
    const handlers: UntypedServiceImplementation = {};
    for (const method of service.methods) {
      const methodSpec = spec.methods[method.localName];
      if (methodSpec === undefined) continue;
      definition[method.localName] = methodDefinition(service, method);
      handlers[method.localName] = (
        methodSpec.kind === "unary" ? unaryHandler(methodSpec, host) : streamHandler(methodSpec, host)
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
          const unavailable = new ConnectError("the server is shutting down; retry", Code.Unavailable);
          for (const call of [...inFlight]) call.cut(unavailable);
          // Give the aborted handlers a moment to send their status, then cut what is left.
          const force = (): void => {
            clearTimeout(forceTimer);
            clearInterval(expiry);
            server.forceShutdown();
            resolve();
          };
          const forceTimer = setTimeout(force, 1000);
          if (inFlight.size === 0) force();
          else idle = force;
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(timer);
          clearInterval(expiry);
          resolve();
        });
      });
    },
  };
}
