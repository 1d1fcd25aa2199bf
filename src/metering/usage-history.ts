// QueryUsage: usage over time from the ledger. The request is checked here and its buckets laid out:
// calendar ones by the ledger (Postgres knows every time zone's rules), billing periods from the
// catalogue as GetMetrics works them out. The first and last buckets are cut to [from, to), so that
// the buckets of a range add up to the range's total, and every sum is an exact decimal string.
import type { Catalog } from "../catalog/catalog.js";
import type { Feature } from "../catalog/types.js";
import type { Ledger } from "../ledger/ledger.js";
import { invalid } from "./errors.js";
import { periodOf } from "./period.js";
import { checkCustomerId } from "./validate.js";

export type UsageWindow = "hour" | "day" | "month" | "period";

export interface UsageHistoryQuery {
  /** "": every customer (secret keys only; the RPC layer decides). */
  customerId: string;
  featureKeys: readonly string[];
  from: Date | null;
  to: Date | null;
  window: UsageWindow;
  /** "": UTC. */
  timeZone: string;
  groupBy: readonly string[];
  filter: ReadonlyArray<readonly [string, readonly string[]]>;
}

export interface UsageBucket {
  featureKey: string;
  start: Date;
  end: Date;
  value: string;
  group: Record<string, string>;
}

export const MAX_FEATURES = 20;
export const MAX_GROUP_BY = 5;
export const MAX_FILTER_KEYS = 10;
export const MAX_FILTER_VALUES = 100;
/** Buckets per feature: a year of hours fits. */
export const MAX_BUCKETS = 10_000;

export async function queryUsageHistory(ledger: Ledger, catalog: Catalog, q: UsageHistoryQuery): Promise<UsageBucket[]> {
  const { from, to, features } = check(catalog, q);
  const timeZone = q.timeZone === "" ? "UTC" : q.timeZone;
  const customerId = q.customerId === "" ? null : q.customerId;
  // Calendar buckets are the same for every feature: one statement sums them all. Billing periods follow
  // each feature's own interval and anchor: a statement per feature.
  const series: Array<{ features: Feature[]; bounds: Date[] }> =
    q.window === "period"
      ? features.map((feature) => ({ features: [feature], bounds: periodBounds(catalog, q.customerId, feature, from, to) }))
      : [{ features, bounds: [from, ...(await ledger.calendarBounds(q.window, q.window === "hour" ? "UTC" : timeZone, from, to, MAX_BUCKETS)), to] }];
  const out: UsageBucket[] = [];
  for (const { features: of, bounds } of series) {
    if (bounds.length - 1 > MAX_BUCKETS) {
      throw invalid("window", `must make at most ${MAX_BUCKETS} buckets per feature over the range`, "TOO_MANY_BUCKETS");
    }
    const rows = await ledger.queryUsage({ customerId, featureKeys: of.map((f) => f.key), bounds, groupBy: q.groupBy, filter: q.filter });
    for (const feature of of) {
      const bucket = (i: number, value: string, group: Record<string, string>): UsageBucket => ({ featureKey: feature.key, start: bounds[i - 1]!, end: bounds[i]!, value, group });
      const own = rows.filter((r) => r.featureKey === feature.key);
      if (q.groupBy.length === 0) {
        const sums = new Map(own.map((r) => [r.bucket, r.value]));
        for (let i = 1; i < bounds.length; i++) out.push(bucket(i, sums.get(i) ?? "0", {}));
      } else {
        for (const r of own) out.push(bucket(r.bucket, r.value, Object.fromEntries(q.groupBy.map((key, k) => [key, r.group[k] ?? ""]))));
      }
    }
  }
  return out;
}

function check(catalog: Catalog, q: UsageHistoryQuery): { from: Date; to: Date; features: Feature[] } {
  if (q.customerId !== "") checkCustomerId(q.customerId);
  if (q.featureKeys.length === 0 || q.featureKeys.length > MAX_FEATURES) {
    throw invalid("feature_keys", `must name 1 to ${MAX_FEATURES} features`, "FEATURE_KEYS_COUNT");
  }
  const features = [...new Set(q.featureKeys)].map((key, i) => {
    const feature = catalog.feature(key);
    if (!feature) throw invalid(`feature_keys[${i}]`, `must name a known feature, "${key}" is not one`, "UNKNOWN_FEATURE");
    return feature;
  });
  if (q.from === null) throw invalid("from", "is required", "RANGE_REQUIRED");
  if (q.to === null) throw invalid("to", "is required", "RANGE_REQUIRED");
  if (!(q.from.getTime() < q.to.getTime())) throw invalid("to", "must be after from", "RANGE_EMPTY");
  if (q.window === "period" && q.customerId === "") {
    throw invalid("window", "USAGE_WINDOW_PERIOD needs a customer_id: billing periods are each customer's own", "PERIOD_NEEDS_CUSTOMER");
  }
  if (q.timeZone !== "" && !isTimeZone(q.timeZone)) {
    throw invalid("time_zone", `must be an IANA time zone such as "Europe/Paris", "${q.timeZone}" is not one`, "TIME_ZONE_UNKNOWN");
  }
  if (q.groupBy.length > MAX_GROUP_BY) throw invalid("group_by", `must hold at most ${MAX_GROUP_BY} property keys`, "GROUP_BY_TOO_LONG");
  q.groupBy.forEach((key, i) => {
    if (key === "") throw invalid(`group_by[${i}]`, "must not be empty", "PROPERTY_KEY_EMPTY");
  });
  if (q.filter.length > MAX_FILTER_KEYS) throw invalid("filter", `must hold at most ${MAX_FILTER_KEYS} property keys`, "FILTER_TOO_LONG");
  for (const [key, values] of q.filter) {
    if (values.length === 0 || values.length > MAX_FILTER_VALUES) {
      throw invalid(`filter[${key}]`, `must hold 1 to ${MAX_FILTER_VALUES} values`, "FILTER_VALUES_COUNT");
    }
  }
  return { from: q.from, to: q.to, features };
}

/** Time zones as Intl knows them (the same IANA database as Postgres's, give or take a release). */
function isTimeZone(name: string): boolean {
  try {
    new Intl.DateTimeFormat("en", { timeZone: name });
    return true;
  } catch {
    return false;
  }
}

/** The customer's billing periods of the feature that meet [from, to), cut to it. */
function periodBounds(catalog: Catalog, customerId: string, feature: Feature, from: Date, to: Date): Date[] {
  const customer = catalog.customer(customerId);
  if (feature.kind === "persistent") return [from, to];
  const bounds = [from];
  let at = from;
  while (at.getTime() < to.getTime() && bounds.length <= MAX_BUCKETS + 1) {
    const period = periodOf(at, feature.interval, feature.anchor, customer.billingAnchor);
    if (period === null) break;
    const end = period.end.getTime() < to.getTime() ? period.end : to;
    bounds.push(end);
    at = end;
  }
  return bounds;
}
