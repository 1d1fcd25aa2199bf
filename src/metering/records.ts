// What the metering rules keep in the fast path for each event, in compact forms: the outbox row (what
// the ledger needs to commit an applied event, should its process die first), the answer a retry of the
// key gets, and the fingerprint that tells a retry from a reuse of its key. Positional JSON arrays, led by
// a format number; the forms that earlier versions wrote are still read.
import { hash } from "node:crypto";
import type { CounterRef, Original } from "../fastpath/fastpath.js";
import { unitsToNumber } from "./decimal.js";
import type { EventKind } from "../ledger/ledger.js";
import type { TrackOutcome } from "./types.js";
import { snapshot, type Terms, thresholdsCrossed, walletOnly } from "./usage.js";

/** An applied event's ledger row but for its amounts, which the fast path holds. */
export interface OutboxRecord {
  id: string;
  customerId: string;
  featureKey: string | null;
  kind: EventKind;
  idempotencyKey: string | null;
  fingerprint: string;
  occurredAt: Date;
  properties: Record<string, string>;
  dedupeKey: string;
  counter: CounterRef | null;
  precision: number;
}

const OUTBOX_FORMAT = 2;

/** The outbox row of an event: its ledger row but for the amounts, and what the fast path needs. */
export function encodeOutbox(
  r: Omit<OutboxRecord, "dedupeKey" | "counter" | "precision">,
  dedupeKey: string,
  counter: CounterRef | null,
  precision: number,
): string {
  return JSON.stringify([
    OUTBOX_FORMAT,
    r.id,
    r.customerId,
    r.featureKey,
    r.kind,
    r.idempotencyKey,
    r.fingerprint,
    r.occurredAt.getTime(),
    r.properties,
    dedupeKey,
    counter?.periodKey ?? null,
    precision,
  ]);
}

export function decodeOutbox(text: string): OutboxRecord {
  const parsed: unknown = JSON.parse(text);
  if (!Array.isArray(parsed)) {
    // meterd 0.1: an object with the same fields, occurredAt as an ISO string.
    const old = parsed as Omit<OutboxRecord, "occurredAt"> & { occurredAt: string };
    return { ...old, occurredAt: new Date(old.occurredAt) };
  }
  const [, id, customerId, featureKey, kind, idempotencyKey, fingerprint, at, properties, dedupeKey, periodKey, precision] = parsed as [
    number, string, string, string | null, EventKind, string | null, string, number, Record<string, string>, string, string | null, number,
  ];
  return {
    id,
    customerId,
    featureKey,
    kind,
    idempotencyKey,
    fingerprint,
    occurredAt: new Date(at),
    properties,
    dedupeKey,
    counter: featureKey !== null && periodKey !== null ? { customerId, featureKey, periodKey } : null,
    precision,
  };
}

/**
 * The original answer to a retried key, as a duplicate, from what the fast path kept; `terms` are the
 * retry's (null: a top-up). A string is a result stored by meterd before 0.2.
 */
export function duplicateOf(original: Original | string, terms: Terms | null): TrackOutcome {
  return typeof original === "string" ? decodeResult(original, terms) : answerOf(original, terms, true);
}

/**
 * The answer to an applied event, first (duplicate false) or to a retry of its key: one function, so that
 * a retry is answered exactly as the event was. `terms` null: a top-up. The usage block is built only
 * when read, since a batch answers most events without one (see TrackBatch's usages); an object literal
 * with a getter makes `usage` an own enumerable accessor, so that spreading or comparing an answer sees
 * a plain TrackOutcome.
 */
export function answerOf(o: Original, terms: Terms | null, duplicate: boolean): TrackOutcome {
  const consumed = o.counted ? o.after : 0;
  let built: TrackOutcome["usage"] | undefined;
  return {
    eventId: o.eventId,
    allowed: true,
    denyReason: null,
    duplicate,
    get usage() {
      return (built ??= terms ? snapshot(terms, consumed, o.walletAfter, -o.walletDelta) : walletOnly(o.walletAfter));
    },
    thresholdsCrossed: terms ? thresholdsCrossed(terms, o.before, o.after) : [],
    delta: terms ? unitsToNumber(o.delta, terms.feature.precision) : 0,
  };
}

/** A result stored by meterd before 0.2: a positional array, or (0.1) the whole answer. */
function decodeResult(text: string, terms: Terms | null): TrackOutcome {
  const parsed: unknown = JSON.parse(text);
  if (!Array.isArray(parsed)) return { ...(parsed as TrackOutcome), duplicate: true };
  const [, eventId, consumed, wallet, charged, thresholds, delta] = parsed as [number, string, number, number | null, number, number[], number];
  return {
    eventId,
    allowed: true,
    denyReason: null,
    duplicate: true,
    usage: terms ? snapshot(terms, consumed, wallet, charged) : walletOnly(wallet),
    thresholdsCrossed: thresholds,
    delta,
  };
}

/**
 * Identifies an event's payload: sha256 of the JSON of `parts`, object keys sorted, base64url, 22
 * characters. Written out by hand (no replacer, no sorting of arrays) for speed, byte for byte the same
 * as JSON.stringify with a key-sorting replacer, so that keys recorded before stay comparable.
 */
export function fingerprintOf(parts: ReadonlyArray<string | number | null | Record<string, string>>): string {
  let json = "[";
  parts.forEach((part, i) => {
    if (i > 0) json += ",";
    json += part !== null && typeof part === "object" ? sortedJson(part) : JSON.stringify(part);
  });
  return hash("sha256", `${json}]`, "base64url").slice(0, 22);
}

/** Array-index keys ("0", "42"): a JS object lists them first, in numeric order, whatever else it holds. */
const INDEX_KEY = /^(?:0|[1-9]\d{0,9})$/;
const isIndex = (key: string) => INDEX_KEY.test(key) && Number(key) < 2 ** 32 - 1;

function sortedJson(object: Record<string, string>): string {
  let keys = Object.keys(object);
  if (keys.length === 0) return "{}";
  // The replacer sorted the keys, then rebuilt an object, which moves index keys first again.
  if (keys.length > 1) {
    const indexes = keys.filter(isIndex).sort((a, b) => Number(a) - Number(b));
    keys = indexes.length === 0 ? keys.sort() : [...indexes, ...keys.filter((k) => !isIndex(k)).sort()];
  }
  let json = "{";
  keys.forEach((key, i) => {
    json += `${i > 0 ? "," : ""}${JSON.stringify(key)}:${JSON.stringify(object[key])}`;
  });
  return `${json}}`;
}
