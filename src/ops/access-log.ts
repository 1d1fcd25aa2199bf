// One log line per call: procedure, protocol, status code, duration, and who called (a secret key's id
// or a customer token's id, never a secret). The ingestion calls (Track, TrackBatch, TrackStream, Check)
// and GetMetrics (which dashboards poll) come thousands a second, so their successful calls are logged
// at a sampling rate; their failures, and every call of every other method, always are.
import { codeName, type RpcCallMetrics } from "../rpc/call-metrics.js";

/** The procedures whose successful calls are sampled. */
const HIGH_VOLUME = new Set(["Track", "TrackBatch", "TrackStream", "Check", "GetMetrics"].map((m) => `/meterd.v1.MeteringService/${m}`));

/** What the access log writes to: a pino logger, or anything with its info(object, message). */
export interface AccessLogSink {
  info(obj: object, msg: string): void;
}

/**
 * The access log as a call recorder. `sampleRate` (0 to 1) is the share of successful high-volume calls
 * logged; `random` is for tests.
 */
export function accessLog(logger: AccessLogSink, sampleRate: number, random: () => number = Math.random): RpcCallMetrics {
  return (procedure, protocol) => {
    const sampled = HIGH_VOLUME.has(procedure);
    return {
      done(code, seconds, principal) {
        if (code === 0 && sampled && (sampleRate <= 0 || random() >= sampleRate)) return;
        const who = principal === null ? {} : principal.kind === "secret" ? { key: principal.keyId } : { token: principal.tokenId, customer: principal.customerId };
        logger.info({ access: true, procedure, protocol, code: codeName(code), ms: Math.round(seconds * 100_000) / 100, ...who }, "call");
      },
      refused(code) {
        logger.info({ access: true, procedure, protocol, code: codeName(code) }, "call refused");
      },
    };
  };
}
