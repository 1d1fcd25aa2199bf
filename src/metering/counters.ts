// The counters as the metering rules read them: from the fast path, loaded from the ledger's sums
// where the fast path lacks them, and rebuilt after the fast path lost a customer's data.
import type { CounterRef, FastPath, FreshCustomer } from "../fastpath/fastpath.js";
import type { Ledger } from "../ledger/ledger.js";
import { decimalToUnits } from "./decimal.js";
import { fastPathUnavailable, ledgerUnavailable, MeterError } from "./errors.js";
import { periodKey } from "./period.js";
import type { MeterStats } from "./stats.js";
import { CREDIT_PRECISION, type Terms } from "./usage.js";

/** How long a rebuild waits for commits that were in flight when the fast path lost its data. */
export const REBUILD_GRACE_MS = 3_000;

export function counterRef(customerId: string, terms: Terms): CounterRef {
  return { customerId, featureKey: terms.feature.key, periodKey: periodKey(terms.period) };
}

/** A fast path that does not answer: nothing was decided, so fail closed rather than guess. */
export function failClosed(error: unknown): never {
  throw error instanceof MeterError ? error : fastPathUnavailable(error);
}

export function ledgerDown(error: unknown): never {
  throw error instanceof MeterError ? error : ledgerUnavailable(error);
}

/** What the fast path lacked for one event of a batch. */
export interface Missing {
  customerId: string;
  /** Nothing of the customer's is live: rebuild it first. */
  customer: boolean;
  counter: { ref: CounterRef; terms: Terms } | null;
  wallet: boolean;
}

export class Counters {
  constructor(
    private readonly fastPath: FastPath,
    private readonly ledger: Ledger,
    private readonly rebuildGraceMs = REBUILD_GRACE_MS,
    private readonly stats: Pick<MeterStats, "rebuilds" | "freshStarts"> = { rebuilds: 0, freshStarts: 0 },
  ) {}

  /**
   * Counters (and the wallet) of one customer for these terms, loaded from the ledger where the fast path
   * lacks them. While the customer is being rebuilt, the ledger answers and nothing is loaded.
   */
  async read(customerId: string, terms: Terms[], withWallet: boolean): Promise<[number[], number | null]> {
    const refs = terms.map((t) => counterRef(customerId, t));
    for (let attempt = 0; ; attempt++) {
      const readings = await this.fastPath.read(refs, withWallet ? customerId : null).catch(failClosed);
      const walletMissing = withWallet && readings.wallet === null;
      if (!readings.counters.includes(null) && !walletMissing) {
        return [readings.counters.map((c) => c ?? 0), withWallet ? readings.wallet : null];
      }
      if (attempt > 2 || !(await this.fastPath.isLive(customerId).catch(failClosed))) {
        const counters = await Promise.all(refs.map((ref, i) => readings.counters[i] ?? this.ledgerUnits(ref, terms[i]!)));
        const wallet = withWallet ? (readings.wallet ?? (await this.ledgerWallet(customerId))) : null;
        return [counters, wallet];
      }
      await Promise.all(refs.map((ref, i) => (readings.counters[i] === null ? this.loadCounter(ref, terms[i]!) : null)));
      if (walletMissing) await this.loadWallet(customerId);
    }
  }

  async wallet(customerId: string): Promise<number> {
    return (await this.read(customerId, [], true))[1] ?? 0;
  }

  /**
   * Makes a customer live in the fast path. A customer with history may have had events in flight when
   * the fast path lost its data; their commits land within the grace, so the sums loaded after it hold them.
   */
  async rebuild(customerId: string): Promise<void> {
    const hasHistory = await this.ledger.hasEvents(customerId).catch(ledgerDown);
    await this.rebuildKnown(customerId, hasHistory);
  }

  /**
   * What a batch found missing in the fast path, loaded in groups rather than event by event: each
   * customer rebuilt once (one ledger query tells which have history), then each counter loaded once
   * (one ledger query sums them all), then each wallet once.
   */
  async loadMany(missing: readonly Missing[]): Promise<void> {
    const rebuild = [...new Set(missing.filter((m) => m.customer).map((m) => m.customerId))];
    // Customers the ledger has never seen: their counters start at 0 without asking the ledger again. A
    // replica that counts them meanwhile loads its counter first, and a load never overwrites one.
    const fresh = new Set<string>();
    if (rebuild.length > 0) {
      const withHistory = await this.ledger.customersWithEvents(rebuild).catch(ledgerDown);
      for (const customerId of rebuild) if (!withHistory.has(customerId)) fresh.add(customerId);
      await Promise.all(rebuild.filter((customerId) => withHistory.has(customerId)).map((customerId) => this.rebuildKnown(customerId, true)));
    }
    const counters = new Map<string, { ref: CounterRef; terms: Terms }>();
    for (const m of missing) {
      if (m.counter === null) continue;
      const { ref } = m.counter;
      counters.set(`${ref.customerId}\u0000${ref.featureKey}\u0000${ref.periodKey}`, m.counter);
    }
    if (fresh.size > 0) {
      // Live, with their counters and wallets at 0, all in one fast-path call.
      const starts = new Map<string, FreshCustomer>();
      for (const customerId of fresh) starts.set(customerId, { customerId, counters: [], wallet: false });
      for (const { ref } of counters.values()) starts.get(ref.customerId)?.counters.push(ref);
      for (const m of missing) {
        const start = m.wallet ? starts.get(m.customerId) : undefined;
        if (start) start.wallet = true;
      }
      await this.fastPath.startFresh([...starts.values()]).catch(failClosed);
      this.stats.freshStarts += starts.size;
    }
    const loads = [...counters.values()].filter(({ ref }) => !fresh.has(ref.customerId));
    if (loads.length > 0) {
      const sums = await this.ledger
        .sumUsageMany(
          loads.map(({ ref, terms }) => ({ customerId: ref.customerId, featureKey: ref.featureKey, from: terms.period?.start ?? null, to: terms.period?.end ?? null })),
        )
        .catch(ledgerDown);
      await Promise.all(
        loads.map(({ ref, terms }, i) => this.fastPath.loadCounter(ref, decimalToUnits(sums[i] ?? "0", terms.feature.precision)).catch(failClosed)),
      );
    }
    const wallets = [...new Set(missing.filter((m) => m.wallet && !fresh.has(m.customerId)).map((m) => m.customerId))];
    await Promise.all(wallets.map((customerId) => this.loadWallet(customerId)));
  }

  private async rebuildKnown(customerId: string, hasHistory: boolean): Promise<void> {
    try {
      if (hasHistory) {
        const notBefore = await this.fastPath.beginRebuild(customerId, Date.now() + this.rebuildGraceMs);
        const wait = notBefore - Date.now();
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, Math.min(wait, this.rebuildGraceMs)));
      }
      await this.fastPath.markLive(customerId);
      if (hasHistory) this.stats.rebuilds++;
      else this.stats.freshStarts++;
    } catch (error) {
      throw error instanceof MeterError ? error : fastPathUnavailable(error);
    }
  }

  /**
   * Usage of one customer for these terms from the ledger alone, in one query: for a closed period, whose
   * counters the fast path need not keep. A persistent feature is summed up to `until`.
   */
  async fromLedger(customerId: string, terms: Terms[], until: Date): Promise<number[]> {
    if (terms.length === 0) return [];
    const sums = await this.ledger
      .sumUsageMany(terms.map((t) => ({ customerId, featureKey: t.feature.key, from: t.period?.start ?? null, to: t.period?.end ?? until })))
      .catch(ledgerDown);
    return terms.map((t, i) => decimalToUnits(sums[i] ?? "0", t.feature.precision));
  }

  async loadCounter(ref: CounterRef, terms: Terms): Promise<void> {
    await this.fastPath.loadCounter(ref, await this.ledgerUnits(ref, terms)).catch(failClosed);
  }

  async loadWallet(customerId: string): Promise<void> {
    await this.fastPath.loadWallet(customerId, await this.ledgerWallet(customerId)).catch(failClosed);
  }

  private async ledgerUnits(ref: CounterRef, terms: Terms): Promise<number> {
    const period = terms.period;
    const sum = await this.ledger.sumUsage(ref.customerId, ref.featureKey, period?.start ?? null, period?.end ?? null).catch(ledgerDown);
    return decimalToUnits(sum, terms.feature.precision);
  }

  private async ledgerWallet(customerId: string): Promise<number> {
    return decimalToUnits(await this.ledger.walletBalance(customerId).catch(ledgerDown), CREDIT_PRECISION);
  }
}
