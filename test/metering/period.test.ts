import { describe, expect, it } from "vitest";
import type { ResetAnchor, ResetInterval } from "../../src/catalog/types.js";
import { currentPeriodOf, periodKey, periodOf, resetsInDays, type Period } from "../../src/metering/period.js";

const DAY = 86_400_000;
const WEEK = 7 * DAY;

function d(iso: string): Date {
  const t = new Date(iso);
  if (Number.isNaN(t.getTime())) throw new Error(`bad date in test: ${iso}`);
  return t;
}

function p(at: Date | string, interval: ResetInterval, anchor: ResetAnchor = "calendar", billing: Date | string | null = null): Period {
  const result = periodOf(
    typeof at === "string" ? d(at) : at,
    interval,
    anchor,
    typeof billing === "string" ? d(billing) : billing,
  );
  if (result === null) throw new Error("expected a period");
  return result;
}

function iso(period: Period): [string, string] {
  return [period.start.toISOString(), period.end.toISOString()];
}

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const INTERVALS = ["day", "week", "month", "year"] as const;

describe("periodOf: never", () => {
  it("is null for both anchors", () => {
    expect(periodOf(d("2024-05-05T00:00:00Z"), "never", "calendar", null)).toBeNull();
    expect(periodOf(d("2024-05-05T00:00:00Z"), "never", "billing", d("2024-01-01T00:00:00Z"))).toBeNull();
    expect(periodOf(d("2024-05-05T00:00:00Z"), "never", "billing", null)).toBeNull();
  });
});

describe("periodOf: calendar", () => {
  it("day runs from UTC midnight to midnight", () => {
    expect(iso(p("2024-03-15T13:45:00Z", "day"))).toEqual(["2024-03-15T00:00:00.000Z", "2024-03-16T00:00:00.000Z"]);
    expect(iso(p("2024-03-15T00:00:00.000Z", "day"))).toEqual(["2024-03-15T00:00:00.000Z", "2024-03-16T00:00:00.000Z"]);
    expect(iso(p("2024-03-15T23:59:59.999Z", "day"))).toEqual(["2024-03-15T00:00:00.000Z", "2024-03-16T00:00:00.000Z"]);
    expect(iso(p("2024-12-31T12:00:00Z", "day"))).toEqual(["2024-12-31T00:00:00.000Z", "2025-01-01T00:00:00.000Z"]);
    expect(iso(p("2024-02-29T05:00:00Z", "day"))).toEqual(["2024-02-29T00:00:00.000Z", "2024-03-01T00:00:00.000Z"]);
    // A non-UTC offset in the input is the same instant; the period is still UTC.
    expect(iso(p("2024-03-15T23:30:00-05:00", "day"))).toEqual(["2024-03-16T00:00:00.000Z", "2024-03-17T00:00:00.000Z"]);
  });

  it("week is the ISO week, from Monday 00:00 UTC", () => {
    // 2024-03-11 is a Monday.
    for (const day of ["11", "12", "13", "14", "15", "16", "17"]) {
      expect(iso(p(`2024-03-${day}T12:00:00Z`, "week"))).toEqual(["2024-03-11T00:00:00.000Z", "2024-03-18T00:00:00.000Z"]);
    }
    expect(iso(p("2024-03-17T23:59:59.999Z", "week"))[0]).toBe("2024-03-11T00:00:00.000Z");
    expect(iso(p("2024-03-18T00:00:00.000Z", "week"))[0]).toBe("2024-03-18T00:00:00.000Z");
    expect(iso(p("2024-03-10T23:59:59.999Z", "week"))[0]).toBe("2024-03-04T00:00:00.000Z");
  });

  it("ISO weeks cross year ends", () => {
    // 2020-12-31 is a Thursday; its week (2020-W53) runs 28 Dec to 4 Jan.
    const w53 = ["2020-12-28T00:00:00.000Z", "2021-01-04T00:00:00.000Z"];
    expect(iso(p("2020-12-28T00:00:00Z", "week"))).toEqual(w53);
    expect(iso(p("2020-12-31T18:00:00Z", "week"))).toEqual(w53);
    expect(iso(p("2021-01-01T00:00:00Z", "week"))).toEqual(w53);
    expect(iso(p("2021-01-03T23:59:59.999Z", "week"))).toEqual(w53);
    expect(iso(p("2021-01-04T00:00:00Z", "week"))).toEqual(["2021-01-04T00:00:00.000Z", "2021-01-11T00:00:00.000Z"]);
    // 2025-W01 starts Monday 30 Dec 2024.
    expect(iso(p("2025-01-01T00:00:00Z", "week"))).toEqual(["2024-12-30T00:00:00.000Z", "2025-01-06T00:00:00.000Z"]);
    expect(iso(p("2024-12-29T23:59:59.999Z", "week"))).toEqual(["2024-12-23T00:00:00.000Z", "2024-12-30T00:00:00.000Z"]);
    // 2023-01-01 is a Sunday: it belongs to the week starting Monday 26 Dec 2022.
    expect(iso(p("2023-01-01T10:00:00Z", "week"))).toEqual(["2022-12-26T00:00:00.000Z", "2023-01-02T00:00:00.000Z"]);
    // Across a leap day.
    expect(iso(p("2024-03-01T00:00:00Z", "week"))).toEqual(["2024-02-26T00:00:00.000Z", "2024-03-04T00:00:00.000Z"]);
  });

  it("month runs from the 1st to the next 1st", () => {
    expect(iso(p("2024-02-15T00:00:00Z", "month"))).toEqual(["2024-02-01T00:00:00.000Z", "2024-03-01T00:00:00.000Z"]);
    expect(iso(p("2023-02-28T23:59:59.999Z", "month"))).toEqual(["2023-02-01T00:00:00.000Z", "2023-03-01T00:00:00.000Z"]);
    expect(iso(p("2024-02-29T23:59:59.999Z", "month"))).toEqual(["2024-02-01T00:00:00.000Z", "2024-03-01T00:00:00.000Z"]);
    expect(iso(p("2024-03-01T00:00:00.000Z", "month"))).toEqual(["2024-03-01T00:00:00.000Z", "2024-04-01T00:00:00.000Z"]);
    expect(iso(p("2024-12-31T23:59:59.999Z", "month"))).toEqual(["2024-12-01T00:00:00.000Z", "2025-01-01T00:00:00.000Z"]);
    expect(iso(p("2025-01-01T00:00:00.000Z", "month"))).toEqual(["2025-01-01T00:00:00.000Z", "2025-02-01T00:00:00.000Z"]);
    for (let m = 0; m < 12; m++) {
      const start = new Date(Date.UTC(2023, m, 1));
      const end = new Date(Date.UTC(2023, m + 1, 1));
      expect(p(new Date(start.getTime() + 12345), "month")).toEqual({ start, end });
      expect(p(new Date(end.getTime() - 1), "month")).toEqual({ start, end });
    }
  });

  it("year runs from 1 January", () => {
    expect(iso(p("2024-07-04T12:00:00Z", "year"))).toEqual(["2024-01-01T00:00:00.000Z", "2025-01-01T00:00:00.000Z"]);
    expect(iso(p("2024-01-01T00:00:00.000Z", "year"))).toEqual(["2024-01-01T00:00:00.000Z", "2025-01-01T00:00:00.000Z"]);
    expect(iso(p("2023-12-31T23:59:59.999Z", "year"))).toEqual(["2023-01-01T00:00:00.000Z", "2024-01-01T00:00:00.000Z"]);
  });

  it("is used for a billing anchor when the customer has none", () => {
    for (const interval of INTERVALS) {
      const at = d("2024-05-17T08:09:10Z");
      expect(p(at, interval, "billing", null)).toEqual(p(at, interval, "calendar", null));
    }
  });

  it("ignores the billing anchor for the calendar anchor", () => {
    const at = d("2024-05-17T08:09:10Z");
    expect(iso(p(at, "month", "calendar", "2024-01-31T10:00:00Z"))).toEqual(["2024-05-01T00:00:00.000Z", "2024-06-01T00:00:00.000Z"]);
  });

  it("handles instants before 1970", () => {
    expect(iso(p("1969-12-31T23:00:00Z", "day"))).toEqual(["1969-12-31T00:00:00.000Z", "1970-01-01T00:00:00.000Z"]);
    // 1 Jan 1970 is a Thursday.
    expect(iso(p("1970-01-01T00:00:00Z", "week"))).toEqual(["1969-12-29T00:00:00.000Z", "1970-01-05T00:00:00.000Z"]);
  });
});

describe("periodOf: billing anchor, day and week", () => {
  const anchor = "2024-03-10T15:30:00.000Z";

  it("steps 24 h from the anchor, keeping its time of day", () => {
    expect(iso(p("2024-03-10T15:30:00.000Z", "day", "billing", anchor))).toEqual(["2024-03-10T15:30:00.000Z", "2024-03-11T15:30:00.000Z"]);
    expect(iso(p("2024-03-11T15:29:59.999Z", "day", "billing", anchor))).toEqual(["2024-03-10T15:30:00.000Z", "2024-03-11T15:30:00.000Z"]);
    expect(iso(p("2024-03-11T15:30:00.000Z", "day", "billing", anchor))).toEqual(["2024-03-11T15:30:00.000Z", "2024-03-12T15:30:00.000Z"]);
    expect(iso(p("2024-06-01T00:00:00.000Z", "day", "billing", anchor))).toEqual(["2024-05-31T15:30:00.000Z", "2024-06-01T15:30:00.000Z"]);
  });

  it("covers instants before the anchor (negative k)", () => {
    expect(iso(p("2024-03-10T15:29:59.999Z", "day", "billing", anchor))).toEqual(["2024-03-09T15:30:00.000Z", "2024-03-10T15:30:00.000Z"]);
    expect(iso(p("2024-03-01T00:00:00.000Z", "day", "billing", anchor))).toEqual(["2024-02-29T15:30:00.000Z", "2024-03-01T15:30:00.000Z"]);
    expect(iso(p("2024-03-03T15:30:00.000Z", "week", "billing", anchor))).toEqual(["2024-03-03T15:30:00.000Z", "2024-03-10T15:30:00.000Z"]);
    expect(iso(p("2024-03-03T15:29:59.999Z", "week", "billing", anchor))).toEqual(["2024-02-25T15:30:00.000Z", "2024-03-03T15:30:00.000Z"]);
  });

  it("steps 7 days from the anchor's weekday, not from Monday", () => {
    // 2024-03-10 is a Sunday.
    expect(iso(p("2024-03-13T00:00:00Z", "week", "billing", anchor))).toEqual(["2024-03-10T15:30:00.000Z", "2024-03-17T15:30:00.000Z"]);
    expect(iso(p("2024-03-17T15:30:00Z", "week", "billing", anchor))).toEqual(["2024-03-17T15:30:00.000Z", "2024-03-24T15:30:00.000Z"]);
    // Across a year end.
    expect(iso(p("2025-01-01T00:00:00Z", "week", "billing", anchor))).toEqual(["2024-12-29T15:30:00.000Z", "2025-01-05T15:30:00.000Z"]);
  });
});

describe("periodOf: billing anchor, month", () => {
  it("clamps a 31st anchor to each month's length over a whole year, from the original anchor", () => {
    const anchor = "2024-01-31T10:00:00.000Z";
    const starts = [
      "2024-01-31T10:00:00.000Z",
      "2024-02-29T10:00:00.000Z",
      "2024-03-31T10:00:00.000Z",
      "2024-04-30T10:00:00.000Z",
      "2024-05-31T10:00:00.000Z",
      "2024-06-30T10:00:00.000Z",
      "2024-07-31T10:00:00.000Z",
      "2024-08-31T10:00:00.000Z",
      "2024-09-30T10:00:00.000Z",
      "2024-10-31T10:00:00.000Z",
      "2024-11-30T10:00:00.000Z",
      "2024-12-31T10:00:00.000Z",
      "2025-01-31T10:00:00.000Z",
      "2025-02-28T10:00:00.000Z",
      "2025-03-31T10:00:00.000Z",
    ];
    for (let i = 0; i + 1 < starts.length; i++) {
      const start = starts[i]!;
      const end = starts[i + 1]!;
      // At the start, just before the end, and in the middle.
      expect(iso(p(start, "month", "billing", anchor))).toEqual([start, end]);
      expect(iso(p(new Date(d(end).getTime() - 1), "month", "billing", anchor))).toEqual([start, end]);
      const mid = new Date((d(start).getTime() + d(end).getTime()) / 2);
      expect(iso(p(mid, "month", "billing", anchor))).toEqual([start, end]);
      // Just before the start belongs to the previous period.
      if (i > 0) {
        expect(iso(p(new Date(d(start).getTime() - 1), "month", "billing", anchor))).toEqual([starts[i - 1], start]);
      }
    }
  });

  it("clamps to 28 February in a non-leap year", () => {
    const anchor = "2023-01-31T00:00:00.000Z";
    expect(iso(p("2023-03-01T00:00:00Z", "month", "billing", anchor))).toEqual(["2023-02-28T00:00:00.000Z", "2023-03-31T00:00:00.000Z"]);
    expect(iso(p("2023-02-28T00:00:00Z", "month", "billing", anchor))).toEqual(["2023-02-28T00:00:00.000Z", "2023-03-31T00:00:00.000Z"]);
    expect(iso(p("2023-02-27T23:59:59.999Z", "month", "billing", anchor))).toEqual(["2023-01-31T00:00:00.000Z", "2023-02-28T00:00:00.000Z"]);
  });

  it("keeps days that every month has", () => {
    const anchor = "2024-01-15T06:07:08.009Z";
    expect(iso(p("2024-02-20T00:00:00Z", "month", "billing", anchor))).toEqual(["2024-02-15T06:07:08.009Z", "2024-03-15T06:07:08.009Z"]);
    expect(iso(p("2024-02-15T06:07:08.008Z", "month", "billing", anchor))).toEqual(["2024-01-15T06:07:08.009Z", "2024-02-15T06:07:08.009Z"]);
    expect(iso(p("2024-12-25T00:00:00Z", "month", "billing", anchor))).toEqual(["2024-12-15T06:07:08.009Z", "2025-01-15T06:07:08.009Z"]);
    expect(iso(p("2024-12-10T00:00:00Z", "month", "billing", anchor))).toEqual(["2024-11-15T06:07:08.009Z", "2024-12-15T06:07:08.009Z"]);
  });

  it("clamps a 30th anchor in February only", () => {
    const anchor = "2024-01-30T00:00:00.000Z";
    expect(iso(p("2024-03-01T00:00:00Z", "month", "billing", anchor))).toEqual(["2024-02-29T00:00:00.000Z", "2024-03-30T00:00:00.000Z"]);
    expect(iso(p("2025-02-28T12:00:00Z", "month", "billing", anchor))).toEqual(["2025-02-28T00:00:00.000Z", "2025-03-30T00:00:00.000Z"]);
  });

  it("covers instants before the anchor (negative k), clamped the same way", () => {
    const anchor = "2024-03-31T10:00:00.000Z";
    expect(iso(p("2024-03-31T09:59:59.999Z", "month", "billing", anchor))).toEqual(["2024-02-29T10:00:00.000Z", "2024-03-31T10:00:00.000Z"]);
    expect(iso(p("2024-03-01T00:00:00Z", "month", "billing", anchor))).toEqual(["2024-02-29T10:00:00.000Z", "2024-03-31T10:00:00.000Z"]);
    expect(iso(p("2024-02-29T09:00:00Z", "month", "billing", anchor))).toEqual(["2024-01-31T10:00:00.000Z", "2024-02-29T10:00:00.000Z"]);
    expect(iso(p("2023-12-15T00:00:00Z", "month", "billing", anchor))).toEqual(["2023-11-30T10:00:00.000Z", "2023-12-31T10:00:00.000Z"]);
    expect(iso(p("2023-03-01T00:00:00Z", "month", "billing", anchor))).toEqual(["2023-02-28T10:00:00.000Z", "2023-03-31T10:00:00.000Z"]);
    expect(iso(p("2020-02-29T10:00:00Z", "month", "billing", anchor))).toEqual(["2020-02-29T10:00:00.000Z", "2020-03-31T10:00:00.000Z"]);
  });

  it("keeps the anchor's time of day even when the instant is earlier in the day", () => {
    const anchor = "2024-01-10T23:00:00.000Z";
    expect(iso(p("2024-02-10T22:59:59.999Z", "month", "billing", anchor))).toEqual(["2024-01-10T23:00:00.000Z", "2024-02-10T23:00:00.000Z"]);
    expect(iso(p("2024-02-10T23:00:00.000Z", "month", "billing", anchor))).toEqual(["2024-02-10T23:00:00.000Z", "2024-03-10T23:00:00.000Z"]);
  });
});

describe("periodOf: billing anchor, year", () => {
  it("runs from the anniversary", () => {
    const anchor = "2023-06-15T12:00:00.000Z";
    expect(iso(p("2024-01-01T00:00:00Z", "year", "billing", anchor))).toEqual(["2023-06-15T12:00:00.000Z", "2024-06-15T12:00:00.000Z"]);
    expect(iso(p("2024-06-15T12:00:00.000Z", "year", "billing", anchor))).toEqual(["2024-06-15T12:00:00.000Z", "2025-06-15T12:00:00.000Z"]);
    expect(iso(p("2024-06-15T11:59:59.999Z", "year", "billing", anchor))).toEqual(["2023-06-15T12:00:00.000Z", "2024-06-15T12:00:00.000Z"]);
    // Before the anchor.
    expect(iso(p("2023-06-15T11:59:59.999Z", "year", "billing", anchor))).toEqual(["2022-06-15T12:00:00.000Z", "2023-06-15T12:00:00.000Z"]);
    expect(iso(p("2020-01-01T00:00:00Z", "year", "billing", anchor))).toEqual(["2019-06-15T12:00:00.000Z", "2020-06-15T12:00:00.000Z"]);
  });

  it("moves a 29 February anchor to 28 February in non-leap years", () => {
    const anchor = "2024-02-29T08:00:00.000Z";
    expect(iso(p("2024-06-01T00:00:00Z", "year", "billing", anchor))).toEqual(["2024-02-29T08:00:00.000Z", "2025-02-28T08:00:00.000Z"]);
    expect(iso(p("2025-02-28T08:00:00Z", "year", "billing", anchor))).toEqual(["2025-02-28T08:00:00.000Z", "2026-02-28T08:00:00.000Z"]);
    expect(iso(p("2025-02-28T07:59:59.999Z", "year", "billing", anchor))).toEqual(["2024-02-29T08:00:00.000Z", "2025-02-28T08:00:00.000Z"]);
    expect(iso(p("2027-12-01T00:00:00Z", "year", "billing", anchor))).toEqual(["2027-02-28T08:00:00.000Z", "2028-02-29T08:00:00.000Z"]);
    expect(iso(p("2028-02-29T08:00:00Z", "year", "billing", anchor))).toEqual(["2028-02-29T08:00:00.000Z", "2029-02-28T08:00:00.000Z"]);
    // Before the anchor.
    expect(iso(p("2023-06-01T00:00:00Z", "year", "billing", anchor))).toEqual(["2023-02-28T08:00:00.000Z", "2024-02-29T08:00:00.000Z"]);
    expect(iso(p("2020-03-01T00:00:00Z", "year", "billing", anchor))).toEqual(["2020-02-29T08:00:00.000Z", "2021-02-28T08:00:00.000Z"]);
  });

  it("does not drift: a 28 February anchor stays on the 28th", () => {
    const anchor = "2023-02-28T00:00:00.000Z";
    expect(iso(p("2024-03-01T00:00:00Z", "year", "billing", anchor))).toEqual(["2024-02-28T00:00:00.000Z", "2025-02-28T00:00:00.000Z"]);
  });
});

describe("periodOf: invalid input", () => {
  it("throws on an invalid date", () => {
    expect(() => periodOf(new Date(Number.NaN), "day", "calendar", null)).toThrow(RangeError);
    expect(() => periodOf(d("2024-01-01T00:00:00Z"), "month", "billing", new Date(Number.NaN))).toThrow(RangeError);
  });
});

describe("periodOf: properties over random instants", () => {
  const lo = Date.UTC(1999, 0, 1);
  const hi = Date.UTC(2040, 0, 1);

  function randomInstant(next: () => number): Date {
    return new Date(lo + Math.floor(next() * (hi - lo)));
  }

  for (const interval of INTERVALS) {
    for (const anchor of ["calendar", "billing"] as const) {
      it(`${interval} / ${anchor}: start <= at < end, periods tile the line`, () => {
        const next = rng(interval.length * 31 + anchor.length);
        for (let i = 0; i < 2000; i++) {
          const at = randomInstant(next);
          const billing = anchor === "billing" ? randomInstant(next) : null;
          const period = p(at, interval, anchor, billing);
          const { start, end } = period;
          expect(start.getTime()).toBeLessThanOrEqual(at.getTime());
          expect(at.getTime()).toBeLessThan(end.getTime());
          // The start and the last instant map to the same period; the end starts the next one.
          expect(p(start, interval, anchor, billing)).toEqual(period);
          expect(p(new Date(end.getTime() - 1), interval, anchor, billing)).toEqual(period);
          expect(p(end, interval, anchor, billing).start).toEqual(end);
          expect(p(new Date(start.getTime() - 1), interval, anchor, billing).end).toEqual(start);
          const len = end.getTime() - start.getTime();
          switch (interval) {
            case "day":
              expect(len).toBe(DAY);
              break;
            case "week":
              expect(len).toBe(WEEK);
              break;
            case "month":
              expect(len).toBeGreaterThanOrEqual(28 * DAY);
              expect(len).toBeLessThanOrEqual(31 * DAY);
              break;
            case "year":
              expect(len === 365 * DAY || len === 366 * DAY).toBe(true);
              break;
          }
          if (anchor === "calendar") {
            expect(start.getUTCHours() + start.getUTCMinutes() + start.getUTCSeconds() + start.getUTCMilliseconds()).toBe(0);
            if (interval === "week") expect(start.getUTCDay()).toBe(1);
            if (interval === "month" || interval === "year") expect(start.getUTCDate()).toBe(1);
            if (interval === "year") expect(start.getUTCMonth()).toBe(0);
          } else if (billing !== null) {
            const msOfDay = (x: Date) => x.getTime() - Date.UTC(x.getUTCFullYear(), x.getUTCMonth(), x.getUTCDate());
            if (interval === "day" || interval === "week") {
              const step = interval === "day" ? DAY : WEEK;
              expect((((start.getTime() - billing.getTime()) % step) + step) % step).toBe(0);
            } else {
              // Month and year starts keep the anchor's time of day, and its day clamped.
              expect(msOfDay(start)).toBe(msOfDay(billing));
              const dim = new Date(Date.UTC(start.getUTCFullYear(), start.getUTCMonth() + 1, 0)).getUTCDate();
              expect(start.getUTCDate()).toBe(Math.min(billing.getUTCDate(), dim));
              const monthsApart =
                (start.getUTCFullYear() - billing.getUTCFullYear()) * 12 + start.getUTCMonth() - billing.getUTCMonth();
              expect(((monthsApart % (interval === "month" ? 1 : 12)) + 12) % 12).toBe(0);
            }
          }
        }
      });
    }
  }
});

describe("resetsInDays", () => {
  const period = p("2024-03-15T12:00:00Z", "day"); // ends 2024-03-16T00:00Z

  it("is 0 for a persistent feature", () => {
    expect(resetsInDays(null, d("2024-03-15T12:00:00Z"))).toBe(0);
  });

  it("rounds up to whole days", () => {
    const end = period.end.getTime();
    expect(resetsInDays(period, new Date(end - 1))).toBe(1);
    expect(resetsInDays(period, new Date(end - DAY))).toBe(1);
    expect(resetsInDays(period, new Date(end - DAY - 1))).toBe(2);
    expect(resetsInDays(period, new Date(end - 12 * 3_600_000))).toBe(1);
    const month = p("2024-02-01T00:00:00Z", "month"); // ends 1 March: 29 days
    expect(resetsInDays(month, d("2024-02-01T00:00:00Z"))).toBe(29);
    expect(resetsInDays(month, d("2024-02-01T00:00:00.001Z"))).toBe(29);
    expect(resetsInDays(month, d("2024-02-29T23:59:59Z"))).toBe(1);
  });

  it("is 0 at or after the end", () => {
    const end = period.end.getTime();
    expect(resetsInDays(period, new Date(end))).toBe(0);
    expect(Object.is(resetsInDays(period, new Date(end + 1)), 0)).toBe(true);
    expect(resetsInDays(period, new Date(end + 5 * DAY))).toBe(0);
  });
});

describe("periodKey", () => {
  it("is p for persistent and the start in epoch ms otherwise", () => {
    expect(periodKey(null)).toBe("p");
    const period = p("2024-03-15T12:00:00Z", "month");
    expect(periodKey(period)).toBe(String(Date.UTC(2024, 2, 1)));
    expect(periodKey(period)).toBe("1709251200000");
  });

  it("is the same for every instant in one period and differs between periods", () => {
    const a = periodKey(p("2024-03-01T00:00:00Z", "month"));
    const b = periodKey(p("2024-03-31T23:59:59.999Z", "month"));
    const c = periodKey(p("2024-04-01T00:00:00Z", "month"));
    expect(a).toBe(b);
    expect(c).not.toBe(a);
    expect(periodKey(p("2024-05-10T00:00:00Z", "month", "billing", "2024-01-31T10:00:00Z"))).toBe(
      String(d("2024-04-30T10:00:00Z").getTime()),
    );
  });
});

describe("currentPeriodOf", () => {
  it("answers what periodOf answers, for instants walking across many periods, anchors and intervals", () => {
    const intervals: ResetInterval[] = ["day", "week", "month", "year", "never"];
    const anchors: ResetAnchor[] = ["calendar", "billing"];
    const billing = [null, new Date("2024-01-31T10:00:00Z"), new Date("2023-02-28T23:59:59.999Z")];
    for (const interval of intervals) {
      for (const anchor of anchors) {
        for (const billingAnchor of billing) {
          // Forwards and backwards in uneven steps, so that cached periods are both reused and left.
          for (let t = Date.parse("2025-12-20T00:00:00Z"), i = 0; i < 120; i++, t += (i % 7 === 0 ? -5 : 3) * 86_400_000 + 3_600_000) {
            const at = new Date(t);
            expect(currentPeriodOf(at, interval, anchor, billingAnchor)).toEqual(periodOf(at, interval, anchor, billingAnchor));
          }
        }
      }
    }
  });
});
