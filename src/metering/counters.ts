// The counters as the metering rules read them: from the fast path, loaded from the ledger's sums
// where the fast path lacks them, and rebuilt after the fast path lost a customer's data.
import type { CounterRef, FastPath } from "../fastpath/fastpath.js";
import type { Ledger } from "../ledger/ledger.js";
import { decimalToUnits } from "./decimal.js";
import { fastPathUnavailable, ledgerUnavailable, MeterError } from "./errors.js";
import { periodKey } from "./period.js";
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

export class Counters {
  constructor(
    private readonly fastPath: FastPath,
    private readonly ledger: Ledger,
    private readonly rebuildGraceMs = REBUILD_GRACE_MS,
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
    try {
      if (await this.ledger.hasEvents(customerId)) {
        const notBefore = await this.fastPath.beginRebuild(customerId, Date.now() + this.rebuildGraceMs);
        const wait = notBefore - Date.now();
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, Math.min(wait, this.rebuildGraceMs)));
      }
      await this.fastPath.markLive(customerId);
    } catch (error) {
      throw error instanceof MeterError ? error : fastPathUnavailable(error);
    }
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
