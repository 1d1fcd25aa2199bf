// Compares the fast path's counters and wallets with the ledger, and repairs a customer whose numbers
// differ by making the fast path rebuild them from the ledger (the same path as after a Redis loss).
import type { Catalog } from "../catalog/catalog.js";
import type { FastPath, StaleEvent } from "../fastpath/fastpath.js";
import type { Ledger } from "../ledger/ledger.js";
import { decodeOutbox } from "./records.js";
import { decimalToUnits, unitsToDecimal } from "./decimal.js";
import { periodOf } from "./period.js";
import { CREDIT_PRECISION } from "./usage.js";

export interface Difference {
  customerId: string;
  /** null for the credit wallet. */
  featureKey: string | null;
  periodKey: string | null;
  /** What the fast path holds, and what the ledger plus the events still being committed say. */
  fastPath: string;
  expected: string;
}

export class Reconciler {
  constructor(
    private readonly catalog: Catalog,
    private readonly fastPath: FastPath,
    private readonly ledger: Ledger,
  ) {}

  /** The customers to check: every one with events in the ledger, in pages. */
  async *customers(pageSize = 500): AsyncGenerator<string[]> {
    let after = "";
    for (;;) {
      const page = await this.ledger.customerIds(after, pageSize);
      if (page.length === 0) return;
      yield page;
      after = page[page.length - 1]!;
    }
  }

  /**
   * The differences of one customer; with `repair`, a customer with any difference is reset so that the
   * fast path rebuilds it from the ledger on next use. Pending events (applied, not yet committed) count
   * as expected: they are in the counter and on their way to the ledger. A pending event that the ledger
   * already holds (committed, its settle still to come) counts once, in the ledger's sums.
   */
  async check(customerId: string, repair: boolean): Promise<Difference[]> {
    const pending: StaleEvent[] = [];
    // Read after the pending list: an event committed meanwhile is in the ledger, and found here.
    for (const event of await this.fastPath.pendingEvents(customerId)) {
      if ((await this.ledger.findById(event.eventId)) === null) pending.push(event);
    }
    const pendingBy = new Map<string, number>();
    let pendingCredits = 0;
    for (const event of pending) {
      const { counter } = decodeOutbox(event.record);
      if (counter) pendingBy.set(`${counter.featureKey}\u0000${counter.periodKey}`, (pendingBy.get(`${counter.featureKey}\u0000${counter.periodKey}`) ?? 0) + event.delta);
      pendingCredits += event.walletDelta;
    }
    const customer = this.catalog.customer(customerId);
    const differences: Difference[] = [];
    for (const { counter, units } of await this.fastPath.listCounters(customerId)) {
      const feature = this.catalog.feature(counter.featureKey);
      if (!feature) continue;
      const period =
        counter.periodKey === "p" ? null : periodOf(new Date(Number(counter.periodKey)), feature.interval, feature.anchor, customer.billingAnchor);
      const sum = await this.ledger.sumUsage(customerId, counter.featureKey, period?.start ?? null, period?.end ?? null);
      const expected = decimalToUnits(sum, feature.precision) + (pendingBy.get(`${counter.featureKey}\u0000${counter.periodKey}`) ?? 0);
      if (expected !== units) {
        differences.push({
          customerId,
          featureKey: counter.featureKey,
          periodKey: counter.periodKey,
          fastPath: unitsToDecimal(units, feature.precision),
          expected: unitsToDecimal(expected, feature.precision),
        });
      }
    }
    const { wallet } = await this.fastPath.read([], customerId);
    if (wallet !== null) {
      const expected = decimalToUnits(await this.ledger.walletBalance(customerId), CREDIT_PRECISION) + pendingCredits;
      if (expected !== wallet) {
        differences.push({
          customerId,
          featureKey: null,
          periodKey: null,
          fastPath: unitsToDecimal(wallet, CREDIT_PRECISION),
          expected: unitsToDecimal(expected, CREDIT_PRECISION),
        });
      }
    }
    if (repair && differences.length > 0) await this.fastPath.resetCustomer(customerId);
    return differences;
  }
}
