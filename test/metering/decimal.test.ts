import { describe, expect, it } from "vitest";
import {
  MAX_UNITS,
  amountToUnits,
  creditsForUnits,
  decimalToUnits,
  maxAmount,
  minAmount,
  parseDecimalString,
  unitsToDecimal,
  unitsToNumber,
  type UnitsResult,
} from "../../src/metering/decimal.js";

function units(r: UnitsResult): number {
  if (!r.ok) throw new Error(`expected ok, got ${r.reason}: ${r.rule}`);
  return r.units;
}

function failure(r: UnitsResult): { reason: string; rule: string } {
  if (r.ok) throw new Error(`expected a failure, got ${r.units} units`);
  return { reason: r.reason, rule: r.rule };
}

// A small deterministic PRNG so that property loops are reproducible.
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

describe("MAX_UNITS", () => {
  it("is the largest safe integer", () => {
    expect(MAX_UNITS).toBe(Number.MAX_SAFE_INTEGER);
    expect(maxAmount(6)).toBe("9007199254.740991");
    expect(maxAmount(0)).toBe("9007199254740991");
    expect(maxAmount(2)).toBe("90071992547409.91");
    expect(minAmount(6)).toBe("0.000001");
    expect(minAmount(0)).toBe("1");
  });
});

describe("amountToUnits", () => {
  it("reads 0.1 exactly: ten tracks of 0.1 make exactly 1", () => {
    const tenth = units(amountToUnits(0.1, 6));
    expect(tenth).toBe(100_000);
    let total = 0;
    for (let i = 0; i < 10; i++) total += units(amountToUnits(0.1, 6));
    expect(total).toBe(1_000_000);
    expect(unitsToDecimal(total, 6)).toBe("1");
    // The float way would not be exact.
    expect(0.1 * 3).not.toBe(0.3);
    expect(units(amountToUnits(0.1 * 3, 6))).toBe(300_000);
  });

  it("reads common values exactly", () => {
    expect(units(amountToUnits(1, 6))).toBe(1_000_000);
    expect(units(amountToUnits(0.3, 6))).toBe(300_000);
    expect(units(amountToUnits(0.30000000000000004, 6))).toBe(300_000);
    expect(units(amountToUnits(1.005, 2))).toBe(101); // 1.005 * 100 in floats is 100.49999...
    expect(units(amountToUnits(1.15, 1))).toBe(12);
    expect(units(amountToUnits(123.456789, 6))).toBe(123_456_789);
    expect(units(amountToUnits(42, 0))).toBe(42);
    expect(units(amountToUnits(-42, 0))).toBe(-42);
    expect(units(amountToUnits(0.000001, 6))).toBe(1);
    expect(units(amountToUnits(4.35, 2))).toBe(435); // 4.35 * 100 = 434.99999999999994
  });

  it("treats zero and negative zero as 0 units", () => {
    const z = units(amountToUnits(0, 6));
    expect(z).toBe(0);
    const nz = units(amountToUnits(-0, 6));
    expect(Object.is(nz, 0)).toBe(true);
    expect(Object.is(units(amountToUnits(-0, 0)), 0)).toBe(true);
  });

  it("rounds half away from zero", () => {
    expect(units(amountToUnits(2.5, 0))).toBe(3);
    expect(units(amountToUnits(-2.5, 0))).toBe(-3);
    expect(units(amountToUnits(3.5, 0))).toBe(4);
    expect(units(amountToUnits(2.4999, 0))).toBe(2);
    expect(units(amountToUnits(-2.4999, 0))).toBe(-2);
    expect(units(amountToUnits(0.5, 0))).toBe(1);
    expect(units(amountToUnits(-0.5, 0))).toBe(-1);
    expect(units(amountToUnits(0.0000005, 6))).toBe(1);
    expect(units(amountToUnits(-0.0000005, 6))).toBe(-1);
    expect(units(amountToUnits(0.0000015, 6))).toBe(2);
    expect(units(amountToUnits(0.0000014999, 6))).toBe(1);
    expect(units(amountToUnits(1.2345675, 6))).toBe(1_234_568);
    expect(units(amountToUnits(1.2345674999, 6))).toBe(1_234_567);
    expect(units(amountToUnits(0.125, 2))).toBe(13);
    expect(units(amountToUnits(-0.125, 2))).toBe(-13);
  });

  it("handles exponent forms of String(number)", () => {
    expect(String(1e-7)).toBe("1e-7");
    expect(String(1.5e21)).toBe("1.5e+21");
    expect(String(5e-7)).toBe("5e-7");
    expect(units(amountToUnits(5e-7, 6))).toBe(1);
    expect(units(amountToUnits(1.5e-6, 6))).toBe(2);
    expect(units(amountToUnits(1.5e-5, 6))).toBe(15);
    expect(units(amountToUnits(1.5e-5, 5))).toBe(2);
  });

  it("refuses values that round to zero, and says so: the digits alone are never the reason", () => {
    for (const v of [0.00000049, 1e-7, -1e-7, 2.5e-7, 4.9e-7, 5e-324, Number.MIN_VALUE]) {
      const f = failure(amountToUnits(v, 6));
      expect(f.reason).toBe("AMOUNT_ROUNDS_TO_ZERO");
      expect(f.rule).toBe("must not round to 0: amounts are rounded half away from zero to 6 decimal places, so 0.0000005 counts as 0.000001 and less counts nothing");
    }
    const f0 = failure(amountToUnits(0.49, 0));
    expect(f0.reason).toBe("AMOUNT_ROUNDS_TO_ZERO");
    expect(f0.rule).toBe("must not round to 0: amounts are rounded half away from zero to 0 decimal places, so 0.5 counts as 1 and less counts nothing");
    // The same number of decimal places is accepted when it rounds to something.
    expect(units(amountToUnits(1.4, 0))).toBe(1);
    expect(units(amountToUnits(0.5, 0))).toBe(1);
    expect(failure(amountToUnits(0.004, 2)).reason).toBe("AMOUNT_ROUNDS_TO_ZERO");
    expect(units(amountToUnits(0.005, 2))).toBe(1);
  });

  it("refuses NaN and infinities", () => {
    for (const v of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
      for (const p of [0, 3, 6]) {
        const f = failure(amountToUnits(v, p));
        expect(f.reason).toBe("AMOUNT_NOT_FINITE");
        expect(f.rule).toBe("must be a finite number");
      }
    }
  });

  it("accepts exactly MAX_UNITS and refuses one unit more", () => {
    // Near 2^33 doubles are about 1.9e-6 apart, so the literal 9007199254.740991 is the double
    // whose shortest form is "9007199254.740992": one unit past the bound. The largest double
    // that fits is 9007199254.74099.
    expect(String(9007199254.740991)).toBe("9007199254.740992");
    expect(units(amountToUnits(9007199254.74099, 6))).toBe(MAX_UNITS - 1);
    expect(units(amountToUnits(-9007199254.74099, 6))).toBe(-(MAX_UNITS - 1));
    expect(failure(amountToUnits(9007199254.740991, 6)).reason).toBe("AMOUNT_OUT_OF_RANGE");
    // Exactly MAX_UNITS where the double's shortest form is exact (p = 0, 1, 4, 5).
    expect(units(amountToUnits(90071992547.40991, 5))).toBe(MAX_UNITS);
    expect(units(amountToUnits(-90071992547.40991, 5))).toBe(-MAX_UNITS);
    expect(units(amountToUnits(900719925474.0991, 4))).toBe(MAX_UNITS);
    expect(units(amountToUnits(900719925474099.1, 1))).toBe(MAX_UNITS);
    expect(failure(amountToUnits(90071992547.40992, 5)).reason).toBe("AMOUNT_OUT_OF_RANGE");
    expect(failure(amountToUnits(900719925474.0992, 4)).reason).toBe("AMOUNT_OUT_OF_RANGE");
    expect(failure(amountToUnits(-900719925474099.2, 1)).reason).toBe("AMOUNT_OUT_OF_RANGE");
    expect(units(amountToUnits(Number.MAX_SAFE_INTEGER, 0))).toBe(MAX_UNITS);
    expect(units(amountToUnits(-Number.MAX_SAFE_INTEGER, 0))).toBe(-MAX_UNITS);

    const over = failure(amountToUnits(9007199254.740992, 6));
    expect(over.reason).toBe("AMOUNT_OUT_OF_RANGE");
    expect(over.rule).toBe("must be at most 9007199254.740991 at 6 decimal places");
    const under = failure(amountToUnits(-9007199254.740992, 6));
    expect(under.reason).toBe("AMOUNT_OUT_OF_RANGE");
    expect(under.rule).toBe("must be at least -9007199254.740991 at 6 decimal places");

    expect(failure(amountToUnits(Number.MAX_SAFE_INTEGER + 1, 0)).reason).toBe("AMOUNT_OUT_OF_RANGE");
    expect(failure(amountToUnits(9007199254740991, 1)).reason).toBe("AMOUNT_OUT_OF_RANGE");
    // Just past the bound after rounding: 9007199254.7409915 rounds up to ...992.
    expect(failure(amountToUnits(9007199254.7409915, 6)).reason).toBe("AMOUNT_OUT_OF_RANGE");
  });

  it("refuses huge values, including exponent forms", () => {
    for (const v of [1e21, 1.5e21, -1.5e21, 1e300, Number.MAX_VALUE, -Number.MAX_VALUE]) {
      for (const p of [0, 6]) {
        expect(failure(amountToUnits(v, p)).reason).toBe("AMOUNT_OUT_OF_RANGE");
      }
    }
    expect(failure(amountToUnits(1e10, 6)).reason).toBe("AMOUNT_OUT_OF_RANGE");
    expect(units(amountToUnits(1e9, 6))).toBe(1e15);
    expect(units(amountToUnits(1e15, 0))).toBe(1e15);
  });

  it("throws on an invalid precision", () => {
    expect(() => amountToUnits(1, 7)).toThrow(RangeError);
    expect(() => amountToUnits(1, -1)).toThrow(RangeError);
    expect(() => amountToUnits(1, 1.5)).toThrow(RangeError);
  });

  it("agrees with the decimal string of the double for random values", () => {
    const next = rng(1);
    for (let i = 0; i < 2000; i++) {
      const p = Math.floor(next() * 7);
      const u = Math.floor((next() - 0.5) * 2e12);
      // A value with exactly p decimals, as a client would send it.
      const v = Number(unitsToDecimal(u, p));
      expect(units(amountToUnits(v, p))).toBe(u);
      expect(unitsToNumber(u, p)).toBe(v);
    }
  });
});

describe("amountToUnits exponent values", () => {
  it("rounds 2.5e-7 to zero (refused) and 7.5e-7 up to 1", () => {
    expect(failure(amountToUnits(2.5e-7, 6)).reason).toBe("AMOUNT_ROUNDS_TO_ZERO");
    expect(units(amountToUnits(7.5e-7, 6))).toBe(1);
    expect(units(amountToUnits(1e-6, 6))).toBe(1);
    expect(units(amountToUnits(1.23e-5, 6))).toBe(12);
    expect(units(amountToUnits(1.25e-5, 6))).toBe(13);
    expect(units(amountToUnits(-1.25e-5, 6))).toBe(-13);
    expect(String(1e20)).toBe("100000000000000000000");
    expect(failure(amountToUnits(1e20, 0)).reason).toBe("AMOUNT_OUT_OF_RANGE");
  });
});

describe("decimalToUnits", () => {
  it("converts exact decimal strings", () => {
    expect(decimalToUnits("123", 0)).toBe(123);
    expect(decimalToUnits("123", 6)).toBe(123_000_000);
    expect(decimalToUnits("-0.5", 6)).toBe(-500_000);
    expect(decimalToUnits("1.000000", 6)).toBe(1_000_000);
    expect(decimalToUnits("0.1", 6)).toBe(100_000);
    expect(decimalToUnits("0", 6)).toBe(0);
    expect(Object.is(decimalToUnits("-0", 6), 0)).toBe(true);
    expect(Object.is(decimalToUnits("-0.0000001", 6), 0)).toBe(true);
    expect(decimalToUnits("007.50", 2)).toBe(750);
    expect(decimalToUnits("0.000001", 6)).toBe(1);
    expect(decimalToUnits("1.0000000000000000000000001", 6)).toBe(1_000_000);
  });

  it("rounds half away from zero", () => {
    expect(decimalToUnits("2.5", 0)).toBe(3);
    expect(decimalToUnits("-2.5", 0)).toBe(-3);
    expect(decimalToUnits("2.49999999999", 0)).toBe(2);
    expect(decimalToUnits("0.0000005", 6)).toBe(1);
    expect(decimalToUnits("0.00000049", 6)).toBe(0);
    expect(decimalToUnits("-0.0000005", 6)).toBe(-1);
    expect(decimalToUnits("1.005", 2)).toBe(101);
  });

  it("accepts MAX_UNITS and throws RangeError one past it", () => {
    expect(decimalToUnits("9007199254.740991", 6)).toBe(MAX_UNITS);
    expect(decimalToUnits("-9007199254.740991", 6)).toBe(-MAX_UNITS);
    expect(decimalToUnits("9007199254740991", 0)).toBe(MAX_UNITS);
    expect(() => decimalToUnits("9007199254.740992", 6)).toThrow(RangeError);
    expect(() => decimalToUnits("-9007199254.740992", 6)).toThrow(RangeError);
    expect(() => decimalToUnits("9007199254740992", 0)).toThrow(RangeError);
    expect(() => decimalToUnits("9007199254.7409915", 6)).toThrow(RangeError);
    expect(decimalToUnits("9007199254.7409914999", 6)).toBe(MAX_UNITS);
    expect(() => decimalToUnits("1" + "0".repeat(500), 6)).toThrow(RangeError);
  });

  it("throws on malformed input", () => {
    for (const s of ["", " 1", "1 ", "abc", "1.", ".5", "+1", "1e5", "1,5", "--1", "0x10", "NaN", "Infinity", "1.2.3", "-"]) {
      expect(() => decimalToUnits(s, 6), s).toThrow();
    }
    expect(() => decimalToUnits(1 as unknown as string, 6)).toThrow(TypeError);
  });
});

describe("unitsToDecimal", () => {
  it("gives canonical strings", () => {
    expect(unitsToDecimal(1_000_000, 6)).toBe("1");
    expect(unitsToDecimal(100_000, 6)).toBe("0.1");
    expect(unitsToDecimal(-25, 1)).toBe("-2.5");
    expect(unitsToDecimal(-2_500_000, 6)).toBe("-2.5");
    expect(unitsToDecimal(0, 6)).toBe("0");
    expect(unitsToDecimal(-0, 6)).toBe("0");
    expect(unitsToDecimal(1, 6)).toBe("0.000001");
    expect(unitsToDecimal(-1, 6)).toBe("-0.000001");
    expect(unitsToDecimal(10, 6)).toBe("0.00001");
    expect(unitsToDecimal(123_456_789, 6)).toBe("123.456789");
    expect(unitsToDecimal(120, 2)).toBe("1.2");
    expect(unitsToDecimal(100, 2)).toBe("1");
    expect(unitsToDecimal(42, 0)).toBe("42");
    expect(unitsToDecimal(-42, 0)).toBe("-42");
    expect(unitsToDecimal(MAX_UNITS, 6)).toBe("9007199254.740991");
    expect(unitsToDecimal(-MAX_UNITS, 3)).toBe("-9007199254740.991");
  });

  it("throws on non-integers and unsafe integers", () => {
    expect(() => unitsToDecimal(1.5, 6)).toThrow(RangeError);
    expect(() => unitsToDecimal(MAX_UNITS + 1, 6)).toThrow(RangeError);
    expect(() => unitsToDecimal(Number.NaN, 6)).toThrow(RangeError);
  });

  it("round-trips through decimalToUnits", () => {
    const next = rng(2);
    for (let i = 0; i < 2000; i++) {
      const p = Math.floor(next() * 7);
      const u = Math.round((next() - 0.5) * 2 * MAX_UNITS);
      expect(decimalToUnits(unitsToDecimal(u, p), p)).toBe(u);
    }
  });
});

describe("unitsToNumber", () => {
  it("gives the nearest double", () => {
    expect(unitsToNumber(100_000, 6)).toBe(0.1);
    expect(unitsToNumber(300_000, 6)).toBe(0.3);
    expect(unitsToNumber(1_000_000, 6)).toBe(1);
    expect(unitsToNumber(-25, 1)).toBe(-2.5);
    expect(Object.is(unitsToNumber(0, 6), 0)).toBe(true);
    expect(unitsToNumber(MAX_UNITS, 6)).toBe(9007199254.740991);
    expect(unitsToNumber(MAX_UNITS, 0)).toBe(MAX_UNITS);
  });
});

describe("creditsForUnits", () => {
  it("computes exact credits", () => {
    expect(creditsForUnits(1000, 0, "0.002")).toBe(2_000_000);
    expect(creditsForUnits(1, 0, "0.002")).toBe(2000);
    expect(creditsForUnits(1_000_000, 6, "1")).toBe(1_000_000);
    expect(creditsForUnits(1_500_000, 6, "2")).toBe(3_000_000);
    expect(creditsForUnits(3, 0, "1.5")).toBe(4_500_000);
    expect(creditsForUnits(100_000, 6, "0.1", 6)).toBe(10_000); // 0.1 * 0.1 = 0.01
    expect(creditsForUnits(5, 0, "3", 0)).toBe(15);
    expect(creditsForUnits(0, 6, "5")).toBe(0);
    expect(creditsForUnits(10, 0, "0")).toBe(0);
  });

  it("rounds a charge up, never down to free", () => {
    expect(creditsForUnits(1, 6, "0.000001")).toBe(1); // 1e-12 credits -> 1 unit
    expect(creditsForUnits(1, 6, "0.0000001")).toBe(1);
    expect(creditsForUnits(1, 0, "0.0000001")).toBe(1); // 1e-7 credits -> 1 unit
    expect(creditsForUnits(10, 0, "0.0000001")).toBe(1);
    expect(creditsForUnits(11, 0, "0.0000001")).toBe(2);
    expect(creditsForUnits(3, 0, "0.5", 0)).toBe(2); // 1.5 -> 2
    expect(creditsForUnits(1, 0, "0.1", 0)).toBe(1); // 0.1 -> 1
    expect(creditsForUnits(1_000_001, 6, "1", 0)).toBe(2);
    expect(creditsForUnits(1_000_000, 6, "1", 0)).toBe(1);
  });

  it("refunds a correction exactly what the same charge cost", () => {
    for (const [u, p, cost] of [
      [1, 6, "0.000001"],
      [3, 0, "0.5"],
      [7, 2, "0.333"],
      [1000, 0, "0.002"],
    ] as const) {
      const charge = creditsForUnits(u, p, cost);
      expect(charge).toBeGreaterThan(0);
      expect(creditsForUnits(-u, p, cost)).toBe(-charge);
    }
    expect(Object.is(creditsForUnits(-5, 0, "0"), 0)).toBe(true);
  });

  it("throws RangeError past MAX_UNITS and accepts exactly MAX_UNITS", () => {
    expect(creditsForUnits(MAX_UNITS, 6, "1")).toBe(MAX_UNITS);
    expect(creditsForUnits(MAX_UNITS, 0, "0.000001")).toBe(MAX_UNITS);
    expect(() => creditsForUnits(MAX_UNITS, 6, "1.000001")).toThrow(RangeError);
    expect(() => creditsForUnits(MAX_UNITS, 0, "1")).toThrow(RangeError);
    expect(() => creditsForUnits(-MAX_UNITS, 0, "1")).toThrow(RangeError);
    expect(() => creditsForUnits(MAX_UNITS, 6, "2")).toThrow(RangeError);
    // Rounding up past the bound also throws.
    expect(() => creditsForUnits(MAX_UNITS, 0, "0.0000010000001")).toThrow(RangeError);
  });

  it("throws on bad arguments", () => {
    expect(() => creditsForUnits(1, 0, "abc")).toThrow(TypeError);
    expect(() => creditsForUnits(1, 0, "")).toThrow(TypeError);
    expect(() => creditsForUnits(1.5, 0, "1")).toThrow(RangeError);
    expect(() => creditsForUnits(1, 7, "1")).toThrow(RangeError);
    expect(() => creditsForUnits(1, 0, "1", 7)).toThrow(RangeError);
  });

  it("matches a rational computation for random inputs", () => {
    const next = rng(3);
    for (let i = 0; i < 2000; i++) {
      const up = Math.floor(next() * 7);
      const cp = Math.floor(next() * 7);
      const u = Math.floor(next() * 1e6);
      const costUnits = Math.floor(next() * 1e5);
      const costScale = Math.floor(next() * 9);
      const cost = unitsToDecimalAny(costUnits, costScale);
      // credits * 10^cp = u * 10^-up * costUnits * 10^-costScale * 10^cp
      const num = BigInt(u) * BigInt(costUnits) * 10n ** BigInt(Math.max(0, cp - up - costScale));
      const den = 10n ** BigInt(Math.max(0, up + costScale - cp));
      const expected = (num + den - 1n) / den;
      if (expected > BigInt(MAX_UNITS)) {
        expect(() => creditsForUnits(u, up, cost, cp)).toThrow(RangeError);
      } else {
        expect(creditsForUnits(u, up, cost, cp)).toBe(Number(expected));
        expect(creditsForUnits(-u, up, cost, cp)).toBe(-Number(expected) || 0);
      }
    }
  });
});

function unitsToDecimalAny(units: number, scale: number): string {
  const s = units.toString().padStart(scale + 1, "0");
  return scale === 0 ? s : `${s.slice(0, s.length - scale)}.${s.slice(s.length - scale)}`;
}

describe("parseDecimalString", () => {
  it("accepts decimals and canonicalises them", () => {
    expect(parseDecimalString("123")).toEqual({ ok: true, value: "123" });
    expect(parseDecimalString("-0.5")).toEqual({ ok: true, value: "-0.5" });
    expect(parseDecimalString("1.000000")).toEqual({ ok: true, value: "1" });
    expect(parseDecimalString("007.250")).toEqual({ ok: true, value: "7.25" });
    expect(parseDecimalString("-0.000")).toEqual({ ok: true, value: "0" });
    expect(parseDecimalString("0")).toEqual({ ok: true, value: "0" });
    expect(parseDecimalString("0.002")).toEqual({ ok: true, value: "0.002" });
  });

  it("refuses malformed strings", () => {
    for (const s of ["", "1.", ".5", "+1", "1e3", " 1", "abc", "1,0", "NaN", "-"]) {
      const r = parseDecimalString(s);
      expect(r.ok, s).toBe(false);
      if (!r.ok) expect(r.rule).toContain("decimal number");
    }
  });

  it("checks sign, decimal places and range on request", () => {
    expect(parseDecimalString("-1", { nonNegative: true })).toEqual({ ok: false, rule: "must not be negative" });
    expect(parseDecimalString("-0", { nonNegative: true })).toEqual({ ok: true, value: "0" });
    expect(parseDecimalString("1.25", { precision: 2 })).toEqual({ ok: true, value: "1.25" });
    expect(parseDecimalString("1.2500", { precision: 2 })).toEqual({ ok: true, value: "1.25" });
    expect(parseDecimalString("1.255", { precision: 2 })).toEqual({
      ok: false,
      rule: "must have at most 2 decimal places",
    });
    expect(parseDecimalString("9007199254.740991", { precision: 6 }).ok).toBe(true);
    const r = parseDecimalString("9007199254.740992", { precision: 6 });
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.rule).toContain("9007199254.740991");
  });
});
