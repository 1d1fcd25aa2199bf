// Input rules shared by every RPC. Each check throws INVALID_ARGUMENT naming the field and the rule,
// before anything is written.
import { invalid } from "./errors.js";

const CUSTOMER_ID = /^[^\u0000-\u001f\u007f]{1,255}$/;
/** Printable ASCII without spaces: UUIDs, ULIDs and "order-42:line-3" all fit. */
const IDEMPOTENCY_KEY = /^[\x21-\x7e]{1,255}$/;
const MAX_PROPERTIES = 50;
const MAX_PROPERTY_KEY = 64;
const MAX_PROPERTY_VALUE = 1024;

export function checkCustomerId(id: string, field = "customer_id"): void {
  if (id === "") throw invalid(field, "must not be empty", "CUSTOMER_ID_EMPTY");
  if (!CUSTOMER_ID.test(id)) {
    throw invalid(field, "must be at most 255 characters without control characters", "CUSTOMER_ID_INVALID");
  }
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
    if (key === "" || key.length > MAX_PROPERTY_KEY) {
      throw invalid(`${field}[${JSON.stringify(key)}]`, `key must be 1 to ${MAX_PROPERTY_KEY} characters`, "PROPERTY_KEY_INVALID");
    }
    if (value.length > MAX_PROPERTY_VALUE) {
      throw invalid(`${field}[${JSON.stringify(key)}]`, `value must be at most ${MAX_PROPERTY_VALUE} characters`, "PROPERTY_VALUE_TOO_LONG");
    }
  }
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
