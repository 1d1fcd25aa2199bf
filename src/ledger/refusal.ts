// Which ledger failures are permanent: the event itself can never be stored, so retrying it with the
// same idempotency key would fail the same way. Everything else (a lost connection, a timeout, a
// restarting server, a serialization conflict) may succeed on a retry.
import { InvalidEventError } from "./sql-ledger.js";

/** SQLSTATE: five digits or upper-case letters, as pg's DatabaseError and PGlite's errors carry it. */
const SQLSTATE = /^[0-9A-Z]{5}$/;

const NOT_NULL_VIOLATION = "23502";
const CHECK_VIOLATION = "23514";

/** Causes followed before giving up; wrappers rarely nest more than once or twice. */
const MAX_CAUSE_DEPTH = 5;

function sqlState(error: object): string | null {
  const code = (error as { code?: unknown }).code;
  return typeof code === "string" && SQLSTATE.test(code) ? code : null;
}

/**
 * Constraint violations that depend only on the row's own values. Unique violations (23505) are not
 * here: they depend on what else is stored, and the ledger answers them as "already there". A row
 * that fits no partition is also a check violation (23514), but one without a constraint name: it
 * depends on which partitions exist, and succeeds once the month's partition is made.
 */
function violatesRowConstraint(state: string, error: object): boolean {
  if (state === NOT_NULL_VIOLATION) return true;
  const constraint = (error as { constraint?: unknown }).constraint;
  return state === CHECK_VIOLATION && typeof constraint === "string" && constraint !== "";
}

/**
 * True when `error` (or an error it wraps as `cause`) says the event can never be written: the
 * ledger's own InvalidEventError, or a Postgres data exception (SQLSTATE class 22: invalid byte
 * sequence, untranslatable character, datetime or numeric out of range, ...) or a check or not-null
 * violation. Never true for connection errors (their codes, "ECONNRESET", "57P01", class 08, are not
 * in these classes), nor for a row that fits no partition.
 */
export function isPermanentLedgerRefusal(error: unknown): boolean {
  let current: unknown = error;
  for (let depth = 0; depth < MAX_CAUSE_DEPTH && typeof current === "object" && current !== null; depth++) {
    if (current instanceof InvalidEventError) return true;
    const state = sqlState(current);
    if (state !== null && (state.startsWith("22") || violatesRowConstraint(state, current))) return true;
    current = (current as { cause?: unknown }).cause;
  }
  return false;
}
