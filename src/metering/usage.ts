// Turns a counter (integer units) and a customer's entitlement into the usage block users read.
import type { Entitlement, Feature } from "../catalog/types.js";
import { decimalToUnits, MAX_UNITS, unitsToNumber } from "./decimal.js";
import type { Period } from "./period.js";
import type { UsageSnapshot } from "./types.js";

/** Credits are kept to 6 decimal places. */
export const CREDIT_PRECISION = 6;

/** What applies to one customer's feature in one period. */
export interface Terms {
  feature: Feature;
  entitlement: Entitlement;
  /** The limit in the feature's units; null when unlimited. */
  limitUnits: number | null;
  /** null for persistent features. */
  period: Period | null;
}

export function limitUnitsOf(feature: Feature, entitlement: Entitlement): number | null {
  return entitlement.limit === null ? null : decimalToUnits(entitlement.limit, feature.precision);
}

export function snapshot(terms: Terms, consumed: number, wallet: number | null, charged = 0): UsageSnapshot {
  const p = terms.feature.precision;
  const limit = terms.limitUnits;
  return {
    featureKey: terms.feature.key,
    consumed: unitsToNumber(consumed, p),
    limit: limit === null ? null : unitsToNumber(limit, p),
    remaining: limit === null ? 0 : unitsToNumber(Math.min(MAX_UNITS, Math.max(0, limit - consumed)), p),
    percentageUsed: percentage(consumed, limit),
    periodStart: terms.period?.start.getTime() ?? null,
    periodEnd: terms.period?.end.getTime() ?? null,
    overage: limit === null || terms.entitlement.hard ? 0 : unitsToNumber(Math.max(0, consumed - limit), p),
    hard: terms.entitlement.hard,
    creditBalance: wallet === null ? null : unitsToNumber(wallet, CREDIT_PRECISION),
    creditsCharged: unitsToNumber(charged, CREDIT_PRECISION),
  };
}

function percentage(consumed: number, limit: number | null): number {
  if (limit === null) return 0;
  if (limit === 0) return consumed > 0 ? 100 : 0;
  return (consumed / limit) * 100;
}

/** Is consumed at or past threshold% of limit? Exact: thresholds are compared in thousandths of a percent. */
function atOrPast(consumed: number, limit: number, threshold: number): boolean {
  return BigInt(consumed) * 100_000n >= BigInt(Math.round(threshold * 1000)) * BigInt(limit);
}

/** The thresholds that the move from `before` to `after` crossed upwards. */
export function thresholdsCrossed(terms: Terms, before: number, after: number): number[] {
  const limit = terms.limitUnits;
  if (limit === null || after <= before) return [];
  return terms.entitlement.thresholds.filter((t) => !atOrPast(before, limit, t) && atOrPast(after, limit, t));
}

export function thresholdsReached(terms: Terms, consumed: number): number[] {
  const limit = terms.limitUnits;
  if (limit === null) return [];
  return terms.entitlement.thresholds.filter((t) => atOrPast(consumed, limit, t));
}

/** The usage block of an event that moves only the wallet (a top-up). */
export function walletOnly(wallet: number | null): UsageSnapshot {
  return {
    featureKey: "",
    consumed: 0,
    limit: null,
    remaining: 0,
    percentageUsed: 0,
    periodStart: null,
    periodEnd: null,
    overage: 0,
    hard: true,
    creditBalance: wallet === null ? null : unitsToNumber(wallet, CREDIT_PRECISION),
    creditsCharged: 0,
  };
}
