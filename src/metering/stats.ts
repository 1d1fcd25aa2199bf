// What the metering rules count as they run, in plain numbers: a decision costs one increment, and
// whoever exports them (src/ops/prometheus.ts) reads them when it is asked. Nothing here knows Prometheus.
import type { TrackOutcome } from "./types.js";
import { MeterError } from "./errors.js";

export class MeterStats {
  /** Track decisions (unary, batches and streams), one per event. */
  allowed = 0;
  limitReached = 0;
  insufficientCredits = 0;
  notEntitled = 0;
  /** Retries answered with what their key's event was answered. */
  duplicate = 0;
  /** Events refused with an error (bad input, a fast path or ledger away, a key reused...). */
  rejected = 0;

  /** Writes failed because the fast path did not answer (FAST_PATH_UNAVAILABLE). */
  fastPathUnavailable = 0;
  /** Settles that failed after a commit: the events wait in the outbox for the sweeper. */
  fastPathSettleFailed = 0;
  /** Writes failed because the ledger could not commit (LEDGER_UNAVAILABLE). */
  ledgerUnavailable = 0;
  /** Commits whose outcome stayed unknown (COMMIT_OUTCOME_UNKNOWN). */
  ledgerCommitUnknown = 0;
  /** Events the ledger refused for their own values (LEDGER_REFUSED_EVENT). */
  ledgerRefused = 0;

  /** Events the outbox sweeper committed. */
  swept = 0;
  /** Customers rebuilt from the ledger after the fast path lost their data. */
  rebuilds = 0;
  /** Customers the ledger has never seen, started at 0 in the fast path. */
  freshStarts = 0;

  decided(outcome: TrackOutcome): void {
    if (outcome.duplicate) this.duplicate++;
    else if (outcome.allowed) this.allowed++;
    else if (outcome.denyReason === "limit_reached") this.limitReached++;
    else if (outcome.denyReason === "insufficient_credits") this.insufficientCredits++;
    else this.notEntitled++;
  }

  /** Counts a write's error by what failed: the fast path, the ledger, or neither (not counted as a fault). */
  failed(error: unknown): void {
    if (!(error instanceof MeterError)) return;
    switch (error.reason) {
      case "FAST_PATH_UNAVAILABLE":
        this.fastPathUnavailable++;
        break;
      case "LEDGER_UNAVAILABLE":
        this.ledgerUnavailable++;
        break;
      case "COMMIT_OUTCOME_UNKNOWN":
        this.ledgerCommitUnknown++;
        break;
      case "LEDGER_REFUSED_EVENT":
        this.ledgerRefused++;
        break;
    }
  }

  /** A Track event refused with an error. */
  trackFailed(error: unknown): void {
    this.rejected++;
    this.failed(error);
  }
}
