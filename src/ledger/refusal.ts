// Which ledger failures are permanent: the event itself can never be stored, so retrying it with the
// same idempotency key would fail the same way. Everything else (a lost connection, a timeout, a
// restarting server, a serialization conflict) may succeed on a retry.
import { InvalidEventError } from "./sql-ledger.js";

/** SQLSTATE: five digits or upper-case letters, as pg's DatabaseError and PGlite's errors carry it. */
const SQLSTATE = /^[0-9A-Z]{5}$/;

/** Causes followed before giving up; wrappers rarely nest more than once or twice. */
const MAX_CAUSE_DEPTH = 5;

function sqlState(error: object): string | null {
  const code = (error as { code?: unknown }).code;
  return typeof code === "string" && SQLSTATE.test(code) ? code : null;
}

/**
 * True when `error` (or an error it wraps as `cause`) says the event can never be written: the
 * ledger's own InvalidEventError, or a Postgres data exception (SQLSTATE class 22: invalid byte
 * sequence, untranslatable character, datetime or numeric out of range, ...), which comes from the
 * caller's values. Never true for connection errors (their codes, "ECONNRESET", "57P01", class 08,
 * are not in this class), nor for constraint violations (class 23): every NOT NULL and CHECK column
 * is filled by meterd itself, so a violation is meterd's fault, not the caller's, and a row that fits
 * no partition (also 23514) succeeds once the month's partition is made.
 */
export function isPermanentLedgerRefusal(error: unknown): boolean {
  let current: unknown = error;
  for (let depth = 0; depth < MAX_CAUSE_DEPTH && typeof current === "object" && current !== null; depth++) {
    if (current instanceof InvalidEventError) return true;
    const state = sqlState(current);
    if (state !== null && state.startsWith("22")) return true;
    current = (current as { cause?: unknown }).cause;
  }
  return false;
}
