// Client timeouts on the Connect listener, clamped before connect-es reads them. connect-es arms one
// setTimeout per call with the client's timeout, and Node holds at most 2^31-1 ms (about 24.8 days)
// in a timer: anything longer fires after 1 ms (TimeoutOverflowWarning), so a client that asked for a
// long deadline would see its stream end at once. Every timeout header is therefore rewritten to
// min(client timeout, cap):
// - unary and client-streaming calls: cap = METERD_MAX_TIMEOUT_MS, also when the client sent none;
// - server and bidirectional streams (WatchUsage, TrackStream): cap = MAX_TIMER_MS; none stays none.
// Over-long values are clamped, not refused: connect-timeout-ms of 11 digits or more, and grpc-timeout
// of 9 digits or more (the protocols allow 10 and 8), both mean "longer than the cap".
import type { IncomingHttpHeaders } from "node:http";

/** The longest timer Node can hold. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

const GRPC_UNIT_MS = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000_001 } as const;
/** grpc-timeout allows at most 8 digits: larger milliseconds are written in seconds. */
const GRPC_MAX_VALUE = 99_999_999;

function firstValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** A timeout in ms as a grpc-timeout value; sub-millisecond and sub-second rest is rounded up or down by less than a unit. */
function grpcTimeout(ms: number): string {
  if (ms <= GRPC_MAX_VALUE) return `${Math.ceil(ms)}m`;
  return `${Math.floor(ms / 1000)}S`;
}

/**
 * Rewrites the request's timeout header (grpc-timeout for gRPC and gRPC-web, connect-timeout-ms
 * otherwise) to min(client timeout, capMs). `defaultToCap`: a request without one gets capMs.
 * A value that is not a timeout at all is left for connect-es to refuse (INVALID_ARGUMENT).
 */
export function clampTimeout(headers: IncomingHttpHeaders, capMs: number, defaultToCap: boolean): void {
  const contentType = firstValue(headers["content-type"]) ?? "";
  if (/^application\/grpc/i.test(contentType)) {
    const raw = firstValue(headers["grpc-timeout"]);
    if (raw === undefined) {
      if (defaultToCap) headers["grpc-timeout"] = grpcTimeout(capMs);
      return;
    }
    const match = /^(\d+)([HMSmun])$/.exec(raw);
    if (match === null) return;
    const digits = match[1]!;
    const ms = Number(digits) * GRPC_UNIT_MS[match[2] as keyof typeof GRPC_UNIT_MS];
    if (ms > capMs || digits.length > 8) headers["grpc-timeout"] = grpcTimeout(Math.min(ms, capMs));
  } else {
    const raw = firstValue(headers["connect-timeout-ms"]);
    if (raw === undefined) {
      if (defaultToCap) headers["connect-timeout-ms"] = String(capMs);
      return;
    }
    if (!/^\d+$/.test(raw)) return;
    const ms = Number(raw);
    if (ms > capMs || raw.length > 10) headers["connect-timeout-ms"] = String(Math.min(ms, capMs));
  }
}
