// The outbox sweeper: commits events that the fast path applied but whose process died before their
// commit. Any replica may run it; the ledger keeps one row per event either way.
import type { Catalog } from "../catalog/catalog.js";
import type { CounterRef, FastPath } from "../fastpath/fastpath.js";
import type { Ledger, LedgerEvent } from "../ledger/ledger.js";
import type { UsageChanges } from "./changes.js";
import type { Counters } from "./counters.js";
import { unitsToDecimal, unitsToNumber } from "./decimal.js";
import { decodeOutbox, encodeResult, type OutboxRecord } from "./records.js";
import { CREDIT_PRECISION, type Terms } from "./usage.js";

export interface SweeperDeps {
  catalog: Catalog;
  fastPath: FastPath;
  ledger: Ledger;
  changes: UsageChanges;
  counters: Counters;
  /** The customer's terms for a feature at an instant (Meter.termsAt). */
  termsAt: (customerId: string, featureKey: string, at: Date) => Terms | null;
}

export class OutboxSweeper {
  constructor(private readonly deps: SweeperDeps) {}

  /** Commits events pending for longer than `olderThanMs`; resolves to how many it settled. */
  async sweep(olderThanMs: number, max = 1000): Promise<number> {
    const { fastPath, ledger, changes } = this.deps;
    const stale = await fastPath.staleEvents(olderThanMs, max);
    if (stale.length === 0) return 0;
    const records = stale.map((s) => decodeOutbox(s.record));
    const events: LedgerEvent[] = records.map((r, i) => ({
      id: r.id,
      customerId: r.customerId,
      featureKey: r.featureKey,
      kind: r.kind,
      idempotencyKey: r.idempotencyKey,
      fingerprint: r.fingerprint,
      occurredAt: r.occurredAt,
      properties: r.properties,
      amount: unitsToDecimal(stale[i]!.delta, r.precision),
      credits: unitsToDecimal(stale[i]!.walletDelta, CREDIT_PRECISION),
    }));
    const outcomes = await ledger.append(events);
    let settled = 0;
    for (const [i, outcome] of outcomes.entries()) {
      const s = stale[i]!;
      const r = records[i]!;
      if (outcome.inserted || outcome.existing.id === s.eventId) {
        const [consumed, wallet] = await this.countersNow(r);
        const result = encodeResult({
          eventId: s.eventId,
          consumed,
          wallet,
          charged: -s.walletDelta,
          thresholdsCrossed: [],
          delta: unitsToNumber(s.delta, r.precision),
        });
        await fastPath.settle(s.customerId, s.dedupeKey, result);
        changes.notify(s.customerId, r.featureKey);
        settled++;
      } else {
        // Another event holds the key in the ledger: this one was never answered ALLOWED, so undo it.
        await fastPath.revert(
          {
            customerId: s.customerId,
            eventId: s.eventId,
            dedupeKey: s.dedupeKey,
            fingerprint: r.fingerprint,
            counter: r.counter,
            op: { kind: "add", units: s.delta },
            limit: null,
            walletDelta: s.walletDelta,
            walletMayGoNegative: true,
            record: s.record,
          },
          s,
        );
      }
    }
    return settled;
  }

  /** The swept event's counter and wallet as they are now: what a retry of its key is answered. */
  private async countersNow(r: OutboxRecord): Promise<[number, number | null]> {
    const terms = r.featureKey === null ? null : this.deps.termsAt(r.customerId, r.featureKey, r.occurredAt);
    if (!terms) return [0, r.featureKey === null ? await this.deps.counters.wallet(r.customerId) : null];
    const [consumed, wallet] = await this.deps.counters.read(r.customerId, [terms], terms.feature.creditCost !== null);
    return [consumed[0] ?? 0, wallet];
  }
}
