// Input rules shared by every RPC. Each check throws INVALID_ARGUMENT naming the field and the rule,
// before anything is written.
//
// Text must also be something the ledger can store, or the fast path would count an event that the
// ledger then refuses: Postgres text and jsonb cannot hold U+0000, and an unpaired surrogate has no
// UTF-8 form (pg would silently store U+FFFD in its place). The protobuf decoders refuse unpaired
// surrogates already; these checks keep the rules true for every caller of the metering rules.
import { invalid } from "./errors.js";

const CUSTOMER_ID = /^[^\u0000-\u001f\u007f]{1,255}$/;
/** Printable ASCII without spaces: UUIDs, ULIDs and "order-42:line-3" all fit. */
const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;
const MAX_PROPERTIES = 50;
const MAX_PROPERTY_KEY = 64;
const MAX_PROPERTY_VALUE = 1024;
/** With the u flag, only an unpaired surrogate is a code point of category Cs (String#isWellFormed, before ES2024 typings). */
const LONE_SURROGATE = /\p{Cs}/u;
/** C0 controls, DEL and C1 controls: never part of a key or a name. */
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;

function checkWellFormed(value: string, field: string): void {
  if (LONE_SURROGATE.test(value)) {
    throw invalid(field, "must be well-formed Unicode (no unpaired surrogate)", "TEXT_NOT_WELL_FORMED");
  }
}

/**
 * Free text the ledger or the catalogue stores (a property value, a description): any character but
 * U+0000, well-formed. Tabs and line breaks are allowed.
 */
export function checkStorableText(value: string, field: string): void {
  if (value.includes("\u0000")) throw invalid(field, "must not contain U+0000 (NUL)", "TEXT_CONTAINS_NUL");
  checkWellFormed(value, field);
}

/** A name (a title, a unit, a property key): no control characters at all, well-formed. */
export function checkName(value: string, field: string): void {
  if (CONTROL.test(value)) throw invalid(field, "must not contain control characters", "TEXT_CONTAINS_CONTROL");
  checkWellFormed(value, field);
}

export function checkCustomerId(id: string, field = "customer_id"): void {
  if (id === "") throw invalid(field, "must not be empty", "CUSTOMER_ID_EMPTY");
  if (!CUSTOMER_ID.test(id)) {
    throw invalid(field, "must be at most 255 characters without control characters", "CUSTOMER_ID_INVALID");
  }
  checkWellFormed(id, field);
}

/** Empty is allowed: the server then gives the event an id of its own. */
export function checkIdempotencyKey(key: string, field = "idempotency_key"): void {
  if (key !== "" && !IDEMPOTENCY_KEY.test(key)) {
    throw invalid(field, "must be 1 to 255 printable ASCII characters without spaces", "IDEMPOTENCY_KEY_INVALID");
  }
}

export function checkProperties(properties: Record<string, string>, field = "properties"): void {
  const entries = Object.entries(properties);
  if (entries.length > MAX_PROPERTIES) {
    throw invalid(field, `must have at most ${MAX_PROPERTIES} entries`, "TOO_MANY_PROPERTIES");
  }
  for (const [key, value] of entries) {
    // The entry is named only when a rule fails: this runs for every property of every event.
    if (key === "" || key.length > MAX_PROPERTY_KEY) {
      throw invalid(entryName(field, key), `key must be 1 to ${MAX_PROPERTY_KEY} characters`, "PROPERTY_KEY_INVALID");
    }
    if (CONTROL.test(key)) throw invalid(entryName(field, key), "key must not contain control characters", "PROPERTY_KEY_INVALID");
    if (LONE_SURROGATE.test(key)) {
      throw invalid(entryName(field, key), "key must be well-formed Unicode (no unpaired surrogate)", "PROPERTY_KEY_INVALID");
    }
    if (value.length > MAX_PROPERTY_VALUE) {
      throw invalid(entryName(field, key), `value must be at most ${MAX_PROPERTY_VALUE} characters`, "PROPERTY_VALUE_TOO_LONG");
    }
    if (value.includes("\u0000")) throw invalid(entryName(field, key), "value must not contain U+0000 (NUL)", "PROPERTY_VALUE_INVALID");
    if (LONE_SURROGATE.test(value)) {
      throw invalid(entryName(field, key), "value must be well-formed Unicode (no unpaired surrogate)", "PROPERTY_VALUE_INVALID");
    }
  }
}

/** A property's name in an error: JSON.stringify escapes controls and unpaired surrogates, so it is printable. */
function entryName(field: string, key: string): string {
  return `${field}[${JSON.stringify(key)}]`;
}

export interface TimeWindow {
  maxBackdateMs: number;
  maxFutureMs: number;
}

export function checkTimestamp(at: Date, now: Date, window: TimeWindow, field = "timestamp"): void {
  const ms = at.getTime();
  if (!Number.isFinite(ms)) throw invalid(field, "must be a valid time", "TIMESTAMP_INVALID");
  if (ms < now.getTime() - window.maxBackdateMs) {
    const days = Math.round(window.maxBackdateMs / 86_400_000);
    throw invalid(field, `must be at most ${days} days in the past`, "TIMESTAMP_TOO_OLD");
  }
  if (ms > now.getTime() + window.maxFutureMs) {
    const seconds = Math.round(window.maxFutureMs / 1000);
    throw invalid(field, `must be at most ${seconds} seconds in the future`, "TIMESTAMP_IN_FUTURE");
  }
}

/** The range of google.protobuf.Timestamp: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z. */
const MIN_TIMESTAMP_SECONDS = -62_135_596_800n;
const MAX_TIMESTAMP_SECONDS = 253_402_300_799n;

/**
 * A Timestamp as sent, before it becomes a Date: nanos outside 0..999,999,999 would be rounded into
 * another second, and seconds outside the Timestamp range are not a time at all.
 */
export function checkTimestampFields(ts: { seconds: bigint; nanos: number }, field = "timestamp"): void {
  if (!Number.isInteger(ts.nanos) || ts.nanos < 0 || ts.nanos > 999_999_999) {
    throw invalid(`${field}.nanos`, "must be 0 to 999,999,999", "TIMESTAMP_INVALID");
  }
  if (ts.seconds < MIN_TIMESTAMP_SECONDS || ts.seconds > MAX_TIMESTAMP_SECONDS) {
    throw invalid(`${field}.seconds`, "must be within years 1 to 9999 (-62135596800 to 253402300799)", "TIMESTAMP_INVALID");
  }
}
