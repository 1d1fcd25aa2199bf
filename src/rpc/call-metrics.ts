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

/** gRPC status names by code number, as gRPC spells them (CANCELLED, not connect-es's Canceled). */
const CODE_NAMES = [
  "OK",
  "CANCELLED",
  "UNKNOWN",
  "INVALID_ARGUMENT",
  "DEADLINE_EXCEEDED",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION",
  "ABORTED",
  "OUT_OF_RANGE",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
  "UNAUTHENTICATED",
];

/** A status code's name, the same in the metrics' `code` label and in the access log. */
export function codeName(code: number): string {
  return CODE_NAMES[code] ?? String(code);
}

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
