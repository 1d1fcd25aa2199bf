// Ledger rows of bench events as text, for the floors that insert with pg directly (no meterd code):
// the same columns and values as the rows meterd writes for a bench Track, ids made as meterd makes them.
import { newEventId } from "../../src/metering/event-id.js";

export interface Row {
  id: string;
  customerId: string;
  featureKey: string;
  kind: string;
  amount: string;
  credits: string;
  idempotencyKey: string;
  fingerprint: string;
  occurredAt: string;
  properties: string;
}

const PROPERTIES = JSON.stringify({ region: "eu-west" });

let fingerprints = 0;
/** meterd's fingerprint is 22 base64url characters of a SHA-256: one of the same size, without a random read per row. */
const nextFingerprint = () => `AAAAAAAAAAAAAAAAAAAAAA${(fingerprints++).toString(36)}`.slice(-22);

export function benchRow(customerId: string, idempotencyKey: string, occurredAt = new Date().toISOString()): Row {
  return {
    id: newEventId(),
    customerId,
    featureKey: "api_calls",
    kind: "track",
    amount: "1",
    credits: "0",
    idempotencyKey,
    fingerprint: nextFingerprint(),
    occurredAt,
    properties: PROPERTIES,
  };
}

/**
 * The rows as the ten arrays of an unnest: $1 id, $2 customer_id, $3 idempotency_key, $4 occurred_at,
 * $5 feature_key, $6 kind, $7 amount, $8 credits, $9 fingerprint, $10 properties.
 */
export function rowArrays(rows: Row[]): unknown[] {
  return [
    rows.map((r) => r.id),
    rows.map((r) => r.customerId),
    rows.map((r) => r.idempotencyKey),
    rows.map((r) => r.occurredAt),
    rows.map((r) => r.featureKey),
    rows.map((r) => r.kind),
    rows.map((r) => r.amount),
    rows.map((r) => r.credits),
    rows.map((r) => r.fingerprint),
    rows.map((r) => r.properties),
  ];
}
