// The in-process fast path of the embedded default. Atomic by construction: apply() runs from its
// first read to its last write without an await, so no other call can interleave with a decision.
import { MAX_UNITS } from "../metering/decimal.js";
import type { ApplyRequest, ApplyResult, CounterRef, FastPath, FreshCustomer, Original, OutboxStatus, Readings, SettleItem, StaleEvent } from "./fastpath.js";

interface KeyRecord {
  fingerprint: string;
  eventId: string;
  /** What apply() answered, for a resend of the same event. */
  applied: Extract<ApplyResult, { code: "APPLIED" }>;
  record: string;
  walletDelta: number;
  counted: boolean;
  appliedAt: number;
  /** Whether the event is committed (settled); false while it is being committed. */
  settled: boolean;
  waiters: Array<() => void>;
}

/** Settled keys kept in memory; older ones are still caught by the ledger's unique index. */
const MAX_SETTLED_KEYS = 1_000_000;

const counterId = (c: CounterRef) => `${c.customerId}\u0000${c.featureKey}\u0000${c.periodKey}`;
const keyId = (customerId: string, dedupeKey: string) => `${customerId}\u0000${dedupeKey}`;

export class MemoryFastPath implements FastPath {
  private readonly counters = new Map<string, number>();
  private readonly wallets = new Map<string, number>();
  private readonly keys = new Map<string, KeyRecord>();
  /** Keys applied and not yet settled or reverted: the outbox. */
  private readonly pending = new Set<string>();

  async apply(req: ApplyRequest): Promise<ApplyResult> {
    const id = keyId(req.customerId, req.dedupeKey);
    const record = this.keys.get(id);
    if (record) {
      if (record.fingerprint !== req.fingerprint) return { code: "KEY_CONFLICT" };
      if (record.settled) return { code: "DUPLICATE", original: originalOf(record) };
      return record.eventId === req.eventId ? record.applied : { code: "PENDING" };
    }

    const cid = req.counter ? counterId(req.counter) : null;
    const consumed = cid === null ? 0 : this.counters.get(cid);
    const usesWallet = req.walletDelta !== 0;
    const wallet = usesWallet ? this.wallets.get(req.customerId) : 0;
    if (consumed === undefined || wallet === undefined) {
      return { code: "NOT_LOADED", counter: consumed === undefined, wallet: wallet === undefined, customer: false };
    }

    let delta: number;
    if (req.op.kind === "set") {
      if (req.op.expected !== null && req.op.expected !== consumed) return { code: "EXPECTED_MISMATCH", consumed };
      delta = req.op.target - consumed;
    } else {
      delta = req.op.units;
    }
    const after = consumed + delta;
    // A total is never negative: a correction larger than the usage it corrects is refused.
    if (after < 0 || after > MAX_UNITS) return { code: "OUT_OF_RANGE", consumed };
    // Only growth is capped: a correction or a lower SetUsage is always admitted.
    if (delta > 0 && req.limit !== null && after > req.limit) return { code: "DENIED_LIMIT", consumed };
    const walletAfter = wallet + req.walletDelta;
    if (req.walletDelta < 0 && walletAfter < 0 && !req.walletMayGoNegative) {
      return { code: "DENIED_CREDITS", consumed, wallet };
    }
    if (Math.abs(walletAfter) > MAX_UNITS) return { code: "OUT_OF_RANGE", consumed };

    if (cid !== null) this.counters.set(cid, after);
    if (usesWallet) this.wallets.set(req.customerId, walletAfter);
    // The event id names the pending entry: a key holds one event at a time.
    const applied = { code: "APPLIED" as const, before: consumed, after, delta, walletAfter: usesWallet ? walletAfter : null, ref: req.eventId };
    this.keys.set(id, {
      fingerprint: req.fingerprint,
      eventId: req.eventId,
      applied,
      record: req.record,
      walletDelta: req.walletDelta,
      counted: cid !== null,
      appliedAt: Date.now(),
      settled: false,
      waiters: [],
    });
    this.pending.add(id);
    return applied;
  }

  async applyMany(reqs: ApplyRequest[]): Promise<ApplyResult[]> {
    const results: ApplyResult[] = [];
    for (const req of reqs) results.push(await this.apply(req));
    return results;
  }

  async settleMany(items: ReadonlyArray<SettleItem>): Promise<void> {
    for (const { customerId, dedupeKey, ref } of items) {
      const id = keyId(customerId, dedupeKey);
      const record = this.keys.get(id);
      if (!record || record.eventId !== ref) continue;
      record.settled = true;
      this.pending.delete(id);
      this.wake(record);
    }
    if (this.keys.size > MAX_SETTLED_KEYS) this.prune();
  }

  async revert(req: ApplyRequest, applied: { delta: number }): Promise<void> {
    const id = keyId(req.customerId, req.dedupeKey);
    const record = this.keys.get(id);
    // A late revert must not undo another event that has since taken the key, nor a settled event: the
    // ledger holds it.
    if (!record || record.eventId !== req.eventId || record.settled) return;
    if (req.counter) {
      const cid = counterId(req.counter);
      this.counters.set(cid, (this.counters.get(cid) ?? 0) - applied.delta);
    }
    if (req.walletDelta !== 0) {
      this.wallets.set(req.customerId, (this.wallets.get(req.customerId) ?? 0) - req.walletDelta);
    }
    this.keys.delete(id);
    this.pending.delete(id);
    this.wake(record);
  }

  async outboxStatus(): Promise<OutboxStatus> {
    // A Set keeps insertion order, and a key is added again only after it left: the first is the oldest.
    for (const id of this.pending) {
      const r = this.keys.get(id);
      return { entries: this.pending.size, oldestAgeMs: r === undefined ? null : Math.max(0, Date.now() - r.appliedAt) };
    }
    return { entries: 0, oldestAgeMs: null };
  }

  async staleEvents(olderThanMs: number, max: number): Promise<StaleEvent[]> {
    const before = Date.now() - olderThanMs;
    const stale: StaleEvent[] = [];
    for (const id of this.pending) {
      if (stale.length >= max) break;
      const r = this.keys.get(id);
      if (!r || r.settled || r.appliedAt > before) continue;
      const [customerId = "", dedupeKey = ""] = id.split("\u0000");
      stale.push({ ref: r.eventId, customerId, dedupeKey, eventId: r.eventId, delta: r.applied.delta, walletDelta: r.walletDelta, record: r.record });
    }
    return stale;
  }

  async pendingEvents(customerId: string): Promise<StaleEvent[]> {
    return (await this.staleEvents(-Infinity, Infinity)).filter((e) => e.customerId === customerId);
  }

  async listCounters(customerId: string): Promise<Array<{ counter: CounterRef; units: number }>> {
    const out: Array<{ counter: CounterRef; units: number }> = [];
    for (const [id, units] of this.counters) {
      const [owner = "", featureKey = "", periodKey = ""] = id.split("\u0000");
      if (owner === customerId) out.push({ counter: { customerId, featureKey, periodKey }, units });
    }
    return out;
  }

  async resetCustomer(customerId: string): Promise<void> {
    for (const { counter } of await this.listCounters(customerId)) this.counters.delete(counterId(counter));
    this.wallets.delete(customerId);
  }

  waitSettled(customerId: string, dedupeKey: string, timeoutMs: number): Promise<void> {
    const record = this.keys.get(keyId(customerId, dedupeKey));
    if (!record || record.settled) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      record.waiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  // The in-process fast path never loses its data while the process lives: every customer is live.
  async beginRebuild(): Promise<number> {
    return 0;
  }

  async markLive(): Promise<void> {}

  async isLive(): Promise<boolean> {
    return true;
  }

  async startFresh(customers: ReadonlyArray<FreshCustomer>): Promise<void> {
    for (const { customerId, counters, wallet } of customers) {
      for (const counter of counters) await this.loadCounter(counter, 0);
      if (wallet) await this.loadWallet(customerId, 0);
    }
  }

  async loadCounter(counter: CounterRef, units: number): Promise<void> {
    const cid = counterId(counter);
    if (!this.counters.has(cid)) this.counters.set(cid, units);
  }

  async loadWallet(customerId: string, units: number): Promise<void> {
    if (!this.wallets.has(customerId)) this.wallets.set(customerId, units);
  }

  async read(counters: CounterRef[], walletOf: string | null): Promise<Readings> {
    return {
      counters: counters.map((c) => this.counters.get(counterId(c)) ?? null),
      wallet: walletOf === null ? null : (this.wallets.get(walletOf) ?? null),
    };
  }

  async close(): Promise<void> {}

  private wake(record: KeyRecord): void {
    const waiters = record.waiters.splice(0);
    for (const wake of waiters) wake();
  }

  /** Drops the oldest settled keys (Map keeps insertion order) down to 90% of the cap. */
  private prune(): void {
    let excess = this.keys.size - Math.floor(MAX_SETTLED_KEYS * 0.9);
    for (const [id, record] of this.keys) {
      if (excess <= 0) break;
      if (!record.settled) continue;
      this.keys.delete(id);
      excess--;
    }
  }
}

function originalOf(record: KeyRecord): Original {
  const { before, after, delta, walletAfter } = record.applied;
  return { eventId: record.eventId, before, after, delta, walletAfter, walletDelta: record.walletDelta, counted: record.counted };
}
