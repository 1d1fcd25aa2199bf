// What the listeners record of each call, for whoever exports it (src/ops/prometheus.ts, the access log
// of src/ops/access-log.ts): the listener looks a recorder up by procedure and protocol, and tells it
// each call's status code, duration and caller.
import type { Principal } from "../auth/principal.js";

export type RpcProtocol = "grpc" | "grpc-web" | "connect";

/** One procedure over one protocol: what recording a finished call costs. */
export interface RpcCallRecorder {
  /** A call ended with gRPC status `code` after `seconds`; `principal` is who made it, when known. */
  done(code: number, seconds: number, principal: Principal | null): void;
  /** A call refused from its headers alone (no credential, a rate limit): counted, not timed. */
  refused(code: number): void;
}

/** The recorder of a procedure ("/pkg.Service/Method") over a protocol; made once, then the same object. */
export type RpcCallMetrics = (procedure: string, protocol: RpcProtocol) => RpcCallRecorder;

/** The protocol of a request to the Connect listener, from its content type. */
export function protocolOf(contentType: string | undefined): RpcProtocol {
  if (contentType === undefined || !contentType.startsWith("application/grpc")) return "connect";
  return contentType.startsWith("application/grpc-web") ? "grpc-web" : "grpc";
}

/** Both `a` and `b` record every call. */
export function bothCallMetrics(a: RpcCallMetrics, b: RpcCallMetrics): RpcCallMetrics {
  return (procedure, protocol) => {
    const [x, y] = [a(procedure, protocol), b(procedure, protocol)];
    return {
      done(code, seconds, principal) {
        x.done(code, seconds, principal);
        y.done(code, seconds, principal);
      },
      refused(code) {
        x.refused(code);
        y.refused(code);
      },
    };
  };
}
