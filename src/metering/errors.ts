// Errors of the metering rules. Each carries a stable reason, and for bad input the field and the
// rule it broke, both in the message and as a meterd.v1.ErrorDetail that clients can read.
import { Code, ConnectError } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import { ErrorDetailSchema } from "../../gen/meterd/v1/usage_pb.js";

export class MeterError extends ConnectError {
  constructor(
    code: Code,
    readonly reason: string,
    message: string,
    readonly field = "",
    readonly rule = "",
  ) {
    super(message, code, undefined, [{ desc: ErrorDetailSchema, value: { reason, field, rule } }]);
  }

  // ConnectError's own instanceof accepts any error named "ConnectError", which would make every
  // ConnectError a MeterError; this class keeps that name (so it stays a ConnectError everywhere) and
  // restores the prototype check for itself.
  static override [Symbol.hasInstance](value: unknown): boolean {
    return Function.prototype[Symbol.hasInstance].call(this, value);
  }

  /** The same error about a field nested under `prefix`, for example "events[3]". */
  under(prefix: string): MeterError {
    const field = this.field === "" ? prefix : `${prefix}.${this.field}`;
    const message = this.field === "" ? `${prefix}: ${this.rawMessage}` : this.rawMessage.replace(this.field, field);
    return new MeterError(this.code, this.reason, message, field, this.rule);
  }

  /** The per-event error of a batch or a stream. */
  toEventError(): { code: string; message: string; field: string; reason: string } {
    return { code: codeToString(this.code), message: this.rawMessage, field: this.field, reason: this.reason };
  }
}

/** Bad input: INVALID_ARGUMENT naming the field and the rule. */
export function invalid(field: string, rule: string, reason: string): MeterError {
  return new MeterError(Code.InvalidArgument, reason, `${field} ${rule}`, field, rule);
}

/** UNAVAILABLE: the one code a client retries, with the same idempotency key. */
function unavailable(reason: string, message: string, cause: unknown): MeterError {
  const error = new MeterError(Code.Unavailable, reason, message);
  error.cause = cause;
  return error;
}

/**
 * The fast path (Redis) did not answer: fail closed rather than guess a limit. An event it applied
 * without answering waits in the outbox and is committed once, so a retry with the same key is safe.
 */
export function fastPathUnavailable(cause: unknown): MeterError {
  return unavailable(
    "FAST_PATH_UNAVAILABLE",
    "the fast path did not answer; retry with the same idempotency key, the event is counted at most once",
    cause,
  );
}

/** The commit's outcome is unknown (its reply was lost and the ledger cannot be asked). */
export function commitUnknown(cause: unknown): MeterError {
  return unavailable(
    "COMMIT_OUTCOME_UNKNOWN",
    "the ledger did not confirm the commit; the event is kept and committed once the ledger answers: retry with the same idempotency key to learn its outcome",
    cause,
  );
}

/** The ledger could not be reached, or refused the commit: nothing was counted. */
export function ledgerUnavailable(cause: unknown): MeterError {
  return unavailable(
    "LEDGER_UNAVAILABLE",
    "the ledger could not commit the event; nothing was counted, retry with the same idempotency key",
    cause,
  );
}

/**
 * The ledger refused the event for what it holds (a value Postgres can never store), not for its
 * state: a retry would be refused the same way, so this is INVALID_ARGUMENT and never UNAVAILABLE.
 */
export function ledgerRefused(cause: unknown): MeterError {
  const error = new MeterError(
    Code.InvalidArgument,
    "LEDGER_REFUSED_EVENT",
    "the ledger refused the event: it can never be written as sent; nothing was counted, do not retry it unchanged",
  );
  error.cause = cause;
  return error;
}
