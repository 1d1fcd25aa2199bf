// Which period an instant falls in. A period is the half-open interval [start, end): an instant
// exactly on a boundary belongs to the period that starts there.
//
// Calendar anchor: UTC calendar periods (day, ISO week from Monday, month, year).
// Billing anchor: periods start at billingAnchor + k * interval for integer k (negative before the
// anchor). Months and years are counted from the original anchor each time, the day clamped to the
// month's length and the time of day kept: an anchor on 31 Jan 10:00 gives 28/29 Feb 10:00,
// 31 Mar 10:00, 30 Apr 10:00 ... Days and weeks are fixed 24 h and 7 * 24 h steps.

import type { ResetAnchor, ResetInterval } from "../catalog/types.js";

export interface Period {
  start: Date;
  end: Date;
}

export const DAY_MS = 86_400_000;
export const WEEK_MS = 7 * DAY_MS;

/** A UTC instant from calendar fields; unlike Date.UTC, years 0..99 are not moved to 19xx. */
function utc(year: number, month: number, day: number, msOfDay = 0): number {
  const d = new Date(0);
  d.setUTCFullYear(year, month, day);
  return d.getTime() + msOfDay;
}

function daysInMonth(year: number, month: number): number {
  return new Date(utc(year, month + 1, 0)).getUTCDate();
}

function checkDate(d: Date, name: string): number {
  const t = d instanceof Date ? d.getTime() : Number.NaN;
  if (!Number.isFinite(t)) throw new RangeError(`${name} must be a valid Date`);
  return t;
}

function calendarPeriod(at: number, interval: Exclude<ResetInterval, "never">): [number, number] {
  const d = new Date(at);
  const y = d.getUTCFullYear();
  const m = d.getUTCMonth();
  const day = d.getUTCDate();
  switch (interval) {
    case "day": {
      const start = utc(y, m, day);
      return [start, start + DAY_MS];
    }
    case "week": {
      const sinceMonday = (d.getUTCDay() + 6) % 7;
      const start = utc(y, m, day - sinceMonday);
      return [start, start + WEEK_MS];
    }
    case "month":
      return [utc(y, m, 1), utc(y, m + 1, 1)];
    case "year":
      return [utc(y, 0, 1), utc(y + 1, 0, 1)];
  }
}

/** The anchor moved by `months` whole months, day clamped to the month's length, time of day kept. */
function addMonthsClamped(anchor: Date, months: number): number {
  const total = anchor.getUTCMonth() + months;
  const year = anchor.getUTCFullYear() + Math.floor(total / 12);
  const month = ((total % 12) + 12) % 12;
  const day = Math.min(anchor.getUTCDate(), daysInMonth(year, month));
  const msOfDay =
    anchor.getTime() - utc(anchor.getUTCFullYear(), anchor.getUTCMonth(), anchor.getUTCDate());
  return utc(year, month, day, msOfDay);
}

function billingPeriod(
  at: number,
  interval: Exclude<ResetInterval, "never">,
  anchor: Date,
): [number, number] {
  const a = anchor.getTime();
  if (interval === "day" || interval === "week") {
    const step = interval === "day" ? DAY_MS : WEEK_MS;
    const start = a + Math.floor((at - a) / step) * step;
    return [start, start + step];
  }
  const stepMonths = interval === "month" ? 1 : 12;
  const d = new Date(at);
  const monthsApart =
    (d.getUTCFullYear() - anchor.getUTCFullYear()) * 12 + (d.getUTCMonth() - anchor.getUTCMonth());
  // A first guess; the start of period k is strictly increasing in k, so step to the right one.
  let k = Math.floor(monthsApart / stepMonths);
  while (addMonthsClamped(anchor, k * stepMonths) > at) k--;
  while (addMonthsClamped(anchor, (k + 1) * stepMonths) <= at) k++;
  return [addMonthsClamped(anchor, k * stepMonths), addMonthsClamped(anchor, (k + 1) * stepMonths)];
}

/**
 * The period that contains `at`, or null for the interval "never" (a persistent feature).
 * A billing anchor with no billingAnchor set falls back to calendar periods.
 */
export function periodOf(
  at: Date,
  interval: ResetInterval,
  anchor: ResetAnchor,
  billingAnchor: Date | null,
): Period | null {
  if (interval === "never") return null;
  const t = checkDate(at, "at");
  let bounds: [number, number];
  if (anchor === "billing" && billingAnchor !== null) {
    checkDate(billingAnchor, "billingAnchor");
    bounds = billingPeriod(t, interval, billingAnchor);
  } else {
    bounds = calendarPeriod(t, interval);
  }
  return { start: new Date(bounds[0]), end: new Date(bounds[1]) };
}

/** Most (interval, anchor, billing anchor) combinations whose current period is remembered. */
const REMEMBERED_PERIODS = 10_000;
const remembered = new Map<string, Period>();

/**
 * periodOf, remembered: the period that holds `at` holds every instant up to its end, so the Tracks of a
 * month find it here instead of working it out each time. Periods are shared, never changed.
 */
export function currentPeriodOf(at: Date, interval: ResetInterval, anchor: ResetAnchor, billingAnchor: Date | null): Period | null {
  if (interval === "never") return null;
  const key = `${interval}\u0000${anchor}\u0000${anchor === "billing" ? (billingAnchor?.getTime() ?? "") : ""}`;
  const known = remembered.get(key);
  const t = at.getTime();
  if (known !== undefined && known.start.getTime() <= t && t < known.end.getTime()) return known;
  const period = periodOf(at, interval, anchor, billingAnchor);
  if (period !== null) {
    if (remembered.size >= REMEMBERED_PERIODS) remembered.clear();
    remembered.set(key, period);
  }
  return period;
}

/** Whole days from `now` until the period ends, rounded up; 0 for a persistent period or a past end. */
export function resetsInDays(period: Period | null, now: Date): number {
  if (period === null) return 0;
  const days = Math.ceil((period.end.getTime() - now.getTime()) / DAY_MS);
  return days > 0 ? days : 0;
}

/** A compact, stable key for a period in counter keys: "p" when persistent, else start epoch ms. */
export function periodKey(period: Period | null): string {
  return period === null ? "p" : String(period.start.getTime());
}
