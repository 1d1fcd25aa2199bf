// GetMetrics and WatchUsage: a customer's usage per feature in the current period (or, for GetMetrics, a
// past one), ready to display.
import type { Meter } from "./meter.js";
import { invalid } from "./errors.js";
import type { UsageChanges } from "./changes.js";
import { resetsInDays } from "./period.js";
import type { MetricView } from "./types.js";
import { snapshot, type Terms, thresholdsReached } from "./usage.js";
import { checkCustomerId } from "./validate.js";

export class Metrics {
  /** WatchUsage streams open now. */
  watching = 0;

  constructor(
    private readonly meter: Meter,
    private readonly changes: UsageChanges,
    private readonly clock: () => Date = () => new Date(),
  ) {}

  /**
   * All the customer's features, or one. A feature outside the customer's plan has no metric. With `at`,
   * the period that holds that instant: a period that has ended is summed from the ledger (a persistent
   * feature up to `at`), under the customer's current plan; the credit balance is always today's.
   */
  async get(customerId: string, featureKey: string, at: Date | null = null): Promise<MetricView[]> {
    checkCustomerId(customerId);
    const catalog = this.meter.catalog;
    if (featureKey !== "" && !catalog.feature(featureKey)) {
      throw invalid("feature_key", `must name a known feature, "${featureKey}" is not one`, "UNKNOWN_FEATURE");
    }
    const now = this.clock();
    if (at !== null && !(at.getTime() <= now.getTime())) throw invalid("at", "must not be in the future", "AT_IN_FUTURE");
    const instant = at ?? now;
    const customer = catalog.customer(customerId);
    const terms: Terms[] = [];
    for (const { feature } of catalog.entitlements(customer)) {
      if (featureKey !== "" && feature.key !== featureKey) continue;
      const t = this.meter.termsAt(customer, feature, instant);
      if (t) terms.push(t);
    }
    // Terms of the current period read the counters; those of a period that has ended, the ledger.
    const isPast = terms.map((t) => (t.period === null ? at !== null && instant.getTime() < now.getTime() : t.period.end.getTime() <= now.getTime()));
    const withWallet = terms.some((t) => t.feature.creditCost !== null);
    const [[currentUsed, wallet], pastUsed] = await Promise.all([
      this.meter.readTerms(customerId, terms.filter((_, i) => !isPast[i]), withWallet),
      this.meter.readPastTerms(customerId, terms.filter((_, i) => isPast[i]), instant),
    ]);
    let nextCurrent = 0;
    let nextPast = 0;
    return terms.map((t, i) => {
      const used = (isPast[i] ? pastUsed[nextPast++] : currentUsed[nextCurrent++]) ?? 0;
      return {
        ...snapshot(t, used, t.feature.creditCost === null ? null : wallet),
        featureTitle: t.feature.title,
        productName: t.feature.productName,
        unit: t.feature.unit,
        resetsInDays: resetsInDays(t.period, now),
        thresholdsReached: thresholdsReached(t, used),
      };
    });
  }

  /** The current metrics, then the metrics that changed, until the signal aborts. */
  async *watch(customerId: string, featureKey: string, signal: AbortSignal): AsyncGenerator<MetricView[]> {
    let wake: (() => void) | null = null;
    let dirty = false;
    // Subscribed before the first read, so that no change between the two is missed.
    const unsubscribe = this.changes.subscribe(customerId, (changed) => {
      if (featureKey !== "" && changed !== null && changed !== featureKey) return;
      dirty = true;
      wake?.();
    });
    const onAbort = () => wake?.();
    signal.addEventListener("abort", onAbort);
    this.watching++;
    try {
      const first = await this.get(customerId, featureKey);
      let last = new Map(first.map((m) => [m.featureKey, JSON.stringify(m)]));
      yield first;
      while (!signal.aborted) {
        if (!dirty) await new Promise<void>((resolve) => (wake = resolve));
        wake = null;
        if (signal.aborted) break;
        dirty = false;
        const current = await this.get(customerId, featureKey);
        const changed = current.filter((m) => last.get(m.featureKey) !== JSON.stringify(m));
        last = new Map(current.map((m) => [m.featureKey, JSON.stringify(m)]));
        if (changed.length > 0) yield changed;
      }
    } finally {
      this.watching--;
      unsubscribe();
      signal.removeEventListener("abort", onAbort);
    }
  }
}
