// Client timeouts on the Connect listener, clamped before connect-es reads them. connect-es arms one
// setTimeout per call with the client's timeout, and Node holds at most 2^31-1 ms (about 24.8 days)
// in a timer: anything longer fires after 1 ms (TimeoutOverflowWarning), so a client that asked for a
// long deadline would see its stream end at once. Every timeout header is therefore rewritten to
// min(client timeout, cap):
// - unary and client-streaming calls: cap = METERD_MAX_TIMEOUT_MS, also when the client sent none;
// - server and bidirectional streams (WatchUsage, TrackStream): cap = MAX_TIMER_MS; none stays none.
// connect-timeout-ms of 11 digits or more (the protocol allows 10) is clamped too, not refused: it can
// only mean "longer than the cap", and connect-es's own client writes such values for timeouts past
// about 115 days. A grpc-timeout of 9 digits or more is left for connect-es to refuse
// (INVALID_ARGUMENT), as the grpc-js listener does: gRPC clients pick a unit that fits 8 digits.
import type { IncomingHttpHeaders } from "node:http";

/** The longest timer Node can hold. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

const GRPC_UNIT_MS = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000_001 } as const;
/** grpc-timeout allows at most 8 digits: a larger cap is written in seconds. */
const GRPC_MAX_VALUE = 99_999_999;

function firstValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** A cap in whole ms as a grpc-timeout value of at most 8 digits (in seconds, rounded down, past 99,999,999 ms). */
function grpcTimeout(ms: number): string {
  return ms <= GRPC_MAX_VALUE ? `${ms}m` : `${Math.floor(ms / 1000)}S`;
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
    const match = /^(\d{1,8})([HMSmun])$/.exec(raw);
    if (match === null) return;
    const ms = Number(match[1]) * GRPC_UNIT_MS[match[2] as keyof typeof GRPC_UNIT_MS];
    if (ms > capMs) headers["grpc-timeout"] = grpcTimeout(capMs);
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
