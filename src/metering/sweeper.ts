// The outbox sweeper: commits events that the fast path applied but whose process died before their
// commit. Any replica may run it; the ledger keeps one row per event either way.
import type { FastPath, SettleItem } from "../fastpath/fastpath.js";
import type { Ledger, LedgerEvent } from "../ledger/ledger.js";
import type { UsageChanges } from "./changes.js";
import { unitsToDecimal } from "./decimal.js";
import { decodeOutbox } from "./records.js";
import { CREDIT_PRECISION } from "./usage.js";

export interface SweeperDeps {
  fastPath: FastPath;
  ledger: Ledger;
  changes: UsageChanges;
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
    const settle: SettleItem[] = [];
    for (const [i, outcome] of outcomes.entries()) {
      const s = stale[i]!;
      const r = records[i]!;
      if (outcome.inserted || outcome.existing.id === s.eventId) {
        settle.push({ customerId: s.customerId, dedupeKey: s.dedupeKey, ref: s.ref });
        changes.notify(s.customerId, r.featureKey);
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
    // A retry of a settled key is answered with what its event was answered when applied.
    await fastPath.settleMany(settle);
    return settle.length;
  }
}
