// What the floors hand to meterd's own storage adapters, built the way src/metering/meter.ts builds it for
// a bench Track (api_calls, amount 1, an idempotency key, one property): the ApplyRequest that
// RedisFastPath.apply/applyMany takes, the LedgerEvent that SqlLedger.append takes, the items that
// settleMany takes, and the markLive/loadCounter calls that make a customer warm.
//
// This is the only file of the harness that knows those interfaces: when the fast path's or the ledger's
// shapes change (the Lua protocol, the outbox record, the settle payload), adapt this file to build what
// meterd now builds, and the protocol, latency and Redis floors follow unchanged.
import type { ApplyRequest, ApplyResult, CounterRef, SettleItem } from "../../src/fastpath/fastpath.js";
import type { RedisFastPath } from "../../src/fastpath/redis/redis-fastpath.js";
import type { LedgerEvent } from "../../src/ledger/ledger.js";
import { newEventId } from "../../src/metering/event-id.js";
import { encodeOutbox } from "../../src/metering/records.js";

const FEATURE = "api_calls";
/** The bench catalogue's hard limit on api_calls (bench/catalog.json). */
const LIMIT = 1_000_000_000;
const PROPERTIES = { region: "eu-west" };

let fingerprints = 0;
/**
 * meterd's fingerprint is 22 base64url characters of a SHA-256: one of the same size, made without a
 * random read per event, which would cost the floor's Node CPU more than the value is worth.
 */
const nextFingerprint = () => `AAAAAAAAAAAAAAAAAAAAAA${(fingerprints++).toString(36)}`.slice(-22);

/** The calendar month's period key, as src/metering/period.ts periodKey() writes it for api_calls. */
export function monthKey(now = new Date()): string {
  return String(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
}

const counterOf = (customerId: string, period: string): CounterRef => ({ customerId, featureKey: FEATURE, periodKey: period });

/** Makes a customer live with its api_calls counter loaded, as meterd does on the customer's first event. */
export async function warmCustomer(fastPath: RedisFastPath, customerId: string): Promise<void> {
  await fastPath.markLive(customerId);
  await fastPath.loadCounter(counterOf(customerId, monthKey()), 0);
}

/** One batch of bench events: what applyMany takes, and what the ledger row and answer are made from. */
export interface FloorBatch {
  reqs: ApplyRequest[];
  rows: Array<Omit<LedgerEvent, "amount" | "credits">>;
}

/** A batch with one event per (customer, idempotency key). */
export function floorBatch(events: ReadonlyArray<{ customerId: string; idempotencyKey: string }>, now = new Date()): FloorBatch {
  const period = monthKey(now);
  const reqs = new Array<ApplyRequest>(events.length);
  const rows = new Array<FloorBatch["rows"][number]>(events.length);
  events.forEach(({ customerId, idempotencyKey }, i) => {
    const id = newEventId();
    const fingerprint = nextFingerprint();
    const counter = counterOf(customerId, period);
    const row = { id, customerId, featureKey: FEATURE, kind: "track" as const, idempotencyKey, fingerprint, occurredAt: now, properties: PROPERTIES };
    // meterd's outbox record (src/metering/records.ts), kept in Redis in the call's batch until settled.
    const record = encodeOutbox(row, idempotencyKey, counter, 0);
    rows[i] = row;
    reqs[i] = {
      customerId,
      eventId: id,
      dedupeKey: idempotencyKey,
      fingerprint,
      counter,
      op: { kind: "add", units: 1 },
      limit: LIMIT,
      walletDelta: 0,
      walletMayGoNegative: false,
      record,
    };
  });
  return { reqs, rows };
}

type Applied = Extract<ApplyResult, { code: "APPLIED" }>;

/** The fast path's answers, every one APPLIED, or an error: a floor that was denied measured nothing. */
export function appliedOnly(results: ApplyResult[]): Applied[] {
  const other = results.find((r) => r.code !== "APPLIED");
  if (other) throw new Error(`floor: ${results.filter((r) => r.code !== "APPLIED").length} events not APPLIED (${other.code})`);
  return results as Applied[];
}

/** The ledger events of an applied batch: the rows with their amounts, as Meter.answerFor makes them. */
export function ledgerEvents(batch: FloorBatch, applied: Applied[]): LedgerEvent[] {
  return batch.rows.map((row, i) => ({ ...row, amount: String(applied[i]!.delta), credits: "0" }));
}

/** What settleMany takes per event after the commit: the pending entry that the apply named. */
export function settleItems(batch: FloorBatch, applied: Applied[]): SettleItem[] {
  return batch.reqs.map((req, i) => ({ customerId: req.customerId, dedupeKey: req.dedupeKey, ref: applied[i]!.ref }));
}
