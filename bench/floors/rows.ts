// The ledger rows and fast-path requests of bench events, built the way meterd builds them
// (src/metering/meter.ts prepare/commit), for the floors: the same rows, the same script arguments.
import { randomBytes, randomUUID } from "node:crypto";
import type { ApplyRequest } from "../../src/fastpath/fastpath.js";

/** The calendar month's period key, as src/metering/period.ts periodKey() writes it for api_calls. */
export function monthKey(now = new Date()): string {
  return String(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
}

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

const PROPERTIES = { region: "eu-west" };

/** One bench event: its ledger row and its fast-path request (the same ids and keys). */
export function benchEvent(customerId: string, idempotencyKey: string, period = monthKey()): { row: Row; req: ApplyRequest } {
  const id = randomUUID();
  // meterd's fingerprint is 22 base64url characters of a SHA-256: the same size here.
  const fingerprint = randomBytes(17).toString("base64url").slice(0, 22);
  const occurredAt = new Date().toISOString();
  const counter = { customerId, featureKey: "api_calls", periodKey: period };
  const outbox = {
    id,
    customerId,
    featureKey: "api_calls",
    kind: "track",
    idempotencyKey,
    fingerprint,
    occurredAt,
    properties: PROPERTIES,
    dedupeKey: idempotencyKey,
    counter,
    precision: 0,
  };
  return {
    row: {
      id,
      customerId,
      featureKey: "api_calls",
      kind: "track",
      amount: "1",
      credits: "0",
      idempotencyKey,
      fingerprint,
      occurredAt,
      properties: JSON.stringify(PROPERTIES),
    },
    req: {
      customerId,
      eventId: id,
      dedupeKey: idempotencyKey,
      fingerprint,
      counter,
      op: { kind: "add", units: 1 },
      limit: 1_000_000_000,
      walletDelta: 0,
      walletMayGoNegative: false,
      record: JSON.stringify(outbox),
    },
  };
}

/**
 * The Postgres floor's statement: the rows into both ledger tables (meterd_event_keys, meterd_events), each
 * a plain INSERT ... SELECT FROM unnest, in one statement and so one round trip and one commit. No
 * ON CONFLICT, no RETURNING: the least work that stores the same rows.
 */
export const FLOOR_INSERT = `WITH k AS (
    INSERT INTO meterd_event_keys (event_id, customer_id, idempotency_key, occurred_at)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[])
  )
  INSERT INTO meterd_events (id, customer_id, feature_key, kind, amount, credits, idempotency_key, fingerprint,
    occurred_at, properties)
  SELECT * FROM unnest($1::text[], $2::text[], $5::text[], $6::text[], $7::numeric[], $8::numeric[], $3::text[],
    $9::text[], $4::timestamptz[], $10::jsonb[])`;

export function floorInsertValues(rows: Row[]): unknown[] {
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
