// Exact quantities. An amount at precision p (0..6 decimal places) is kept as an integer
// number of "units", where 1 unit = 10^-p. Every bound (one amount, one total) is
// MAX_UNITS, so units are always plain JS safe integers and sums of them are exact.
//
// Conversions go through decimal digits and BigInt, never through float multiplication:
// 0.1 at p=6 is exactly 100000 units, and ten of them make exactly 1.

/** The largest magnitude, in units, of one amount and of one total. */
export const MAX_UNITS = Number.MAX_SAFE_INTEGER;

const MAX_UNITS_BIG = BigInt(MAX_UNITS);

/** The highest precision (decimal places) a feature may have. */
export const MAX_PRECISION = 6;

export type UnitsResult =
  | { ok: true; units: number }
  | {
      ok: false;
      /** What the amount must satisfy, for an error detail: "must be a finite number". */
      rule: string;
      reason: "AMOUNT_NOT_FINITE" | "AMOUNT_OUT_OF_RANGE" | "AMOUNT_ROUNDS_TO_ZERO";
    };

/** An exact decimal split into sign, digits and a power of ten: value = sign * digits * 10^exp. */
interface Parsed {
  negative: boolean;
  digits: bigint;
  exp: number;
}

// Accepts what String(number) produces: "123", "-0.5", "1e-7", "1.5e+21".
const NUMBER_STRING = /^(-?)(\d+)(?:\.(\d+))?(?:e([+-]?\d+))?$/;
// Exact decimal strings from the database and the catalogue.
const DECIMAL_STRING = /^(-?)(\d+)(?:\.(\d+))?$/;

function checkPrecision(precision: number, name = "precision"): void {
  if (!Number.isInteger(precision) || precision < 0 || precision > MAX_PRECISION) {
    throw new RangeError(`${name} must be an integer from 0 to ${MAX_PRECISION}, got ${precision}`);
  }
}

function checkUnits(units: number): void {
  if (!Number.isSafeInteger(units)) {
    throw new RangeError(`units must be a safe integer, got ${units}`);
  }
}

function parseWith(re: RegExp, s: string): Parsed | null {
  const m = re.exec(s);
  if (m === null) return null;
  const intPart = m[2] ?? "0";
  const fracPart = m[3] ?? "";
  const expPart = m[4];
  const exp = (expPart === undefined ? 0 : Number(expPart)) - fracPart.length;
  if (!Number.isSafeInteger(exp)) return null;
  return { negative: m[1] === "-", digits: BigInt(intPart + fracPart), exp };
}

function pow10(n: number): bigint {
  return 10n ** BigInt(n);
}

/** Divides a non-negative numerator by a positive divisor, rounding half away from zero. */
function divRoundHalfUp(num: bigint, div: bigint): bigint {
  const q = num / div;
  const r = num % div;
  return r * 2n >= div ? q + 1n : q;
}

/** Divides a non-negative numerator by a positive divisor, rounding up. */
function divCeil(num: bigint, div: bigint): bigint {
  const q = num / div;
  return num % div === 0n ? q : q + 1n;
}

/** The value in units at precision p, rounded half away from zero. */
function toUnitsBig(parsed: Parsed, precision: number): bigint {
  const shift = parsed.exp + precision;
  let magnitude: bigint;
  if (parsed.digits === 0n) {
    magnitude = 0n;
  } else if (shift >= 0) {
    // A guard against absurd exponents: anything this large is out of range anyway.
    if (shift > 400) return parsed.negative ? -(MAX_UNITS_BIG + 1n) : MAX_UNITS_BIG + 1n;
    magnitude = parsed.digits * pow10(shift);
  } else {
    const digitCount = parsed.digits.toString().length;
    // Fewer digits than the shift plus one: the value is below half a unit.
    if (-shift > digitCount + 1) magnitude = 0n;
    else magnitude = divRoundHalfUp(parsed.digits, pow10(-shift));
  }
  return parsed.negative ? -magnitude : magnitude;
}

/** The largest allowed amount at this precision, as a decimal string: "9007199254.740991". */
export function maxAmount(precision: number): string {
  return unitsToDecimal(MAX_UNITS, precision);
}

/** The smallest non-zero amount at this precision: "0.000001" at 6 places, "1" at 0. */
export function minAmount(precision: number): string {
  return unitsToDecimal(1, precision);
}

/** Half the smallest amount at the precision: "0.5" at 0 places, "0.005" at 2. */
function halfOf(precision: number): string {
  return `0.${"0".repeat(precision)}5`;
}

/**
 * Converts an amount received as a JS double (from protobuf) to units at the given precision.
 * The double is read through its shortest round-trip decimal form (String(value)), so 0.1 is
 * exactly 0.1, and then rounded half away from zero to `precision` places.
 */
export function amountToUnits(value: number, precision: number): UnitsResult {
  checkPrecision(precision);
  if (typeof value !== "number" || !Number.isFinite(value)) {
    return { ok: false, reason: "AMOUNT_NOT_FINITE", rule: "must be a finite number" };
  }
  if (value === 0) return { ok: true, units: 0 };
  const parsed = parseWith(NUMBER_STRING, String(value));
  if (parsed === null) {
    // String(finite number) always matches; this is a guard, not an expected path.
    throw new Error(`unexpected number format: ${String(value)}`);
  }
  const units = toUnitsBig(parsed, precision);
  if (units > MAX_UNITS_BIG) {
    return {
      ok: false,
      reason: "AMOUNT_OUT_OF_RANGE",
      rule: `must be at most ${maxAmount(precision)} at ${precision} decimal places`,
    };
  }
  if (units < -MAX_UNITS_BIG) {
    return {
      ok: false,
      reason: "AMOUNT_OUT_OF_RANGE",
      rule: `must be at least -${maxAmount(precision)} at ${precision} decimal places`,
    };
  }
  if (units === 0n) {
    // 1.4 at 0 places counts 1, but 0.4 would count nothing: an amount is refused only when rounding
    // leaves nothing of it, never for its digits alone.
    return {
      ok: false,
      reason: "AMOUNT_ROUNDS_TO_ZERO",
      rule: `must not round to 0: amounts are rounded half away from zero to ${precision} decimal places, so ${halfOf(precision)} counts as ${minAmount(precision)} and less counts nothing`,
    };
  }
  return { ok: true, units: Number(units) };
}

/**
 * Converts an exact decimal string ("123", "-0.5", "1.000000") to units at the given precision,
 * rounding half away from zero. Throws a TypeError on a malformed string and a RangeError when
 * the result is beyond MAX_UNITS.
 */
export function decimalToUnits(s: string, precision: number): number {
  checkPrecision(precision);
  const parsed = typeof s === "string" ? parseWith(DECIMAL_STRING, s) : null;
  if (parsed === null) {
    throw new TypeError(`not a decimal number: ${JSON.stringify(s)}`);
  }
  const units = toUnitsBig(parsed, precision);
  if (units > MAX_UNITS_BIG || units < -MAX_UNITS_BIG) {
    throw new RangeError(
      `${s} is beyond the largest amount ${maxAmount(precision)} at ${precision} decimal places`,
    );
  }
  return Number(units) || 0; // never -0
}

/** Units as a canonical decimal string with no trailing zeros: "1", "0.1", "-2.5", "0". */
export function unitsToDecimal(units: number, precision: number): string {
  checkPrecision(precision);
  checkUnits(units);
  if (units === 0) return "0";
  if (precision === 0) return String(units);
  const negative = units < 0;
  const digits = Math.abs(units).toString().padStart(precision + 1, "0");
  const intPart = digits.slice(0, digits.length - precision);
  const fracPart = digits.slice(digits.length - precision).replace(/0+$/, "");
  return (negative ? "-" : "") + intPart + (fracPart === "" ? "" : "." + fracPart);
}

/** Units as the nearest double, for protobuf doubles in responses. */
export function unitsToNumber(units: number, precision: number): number {
  checkPrecision(precision);
  checkUnits(units);
  // units and 10^precision are exact doubles, and IEEE division rounds correctly: the nearest double to
  // the exact decimal, as Number(unitsToDecimal(units, precision)) gives, without the string.
  return precision === 0 ? units : units / 10 ** precision;
}

/**
 * The credits, as units at `creditPrecision`, that `units` of a feature (at `unitPrecision`)
 * cost at `creditCost` credits per feature unit. Computed exactly and rounded away from zero:
 * a charge never rounds down to free, and a correction of the same amount (negative units)
 * refunds exactly what was charged. Throws a RangeError past MAX_UNITS.
 */
export function creditsForUnits(
  units: number,
  unitPrecision: number,
  creditCost: string,
  creditPrecision = MAX_PRECISION,
): number {
  checkPrecision(unitPrecision, "unitPrecision");
  checkPrecision(creditPrecision, "creditPrecision");
  checkUnits(units);
  const cost = typeof creditCost === "string" ? parseWith(DECIMAL_STRING, creditCost) : null;
  if (cost === null) {
    throw new TypeError(`creditCost is not a decimal number: ${JSON.stringify(creditCost)}`);
  }
  // credits = units * 10^-unitPrecision * costDigits * 10^costExp, in units of 10^-creditPrecision.
  const numerator = BigInt(Math.abs(units)) * cost.digits;
  const shift = creditPrecision - unitPrecision + cost.exp;
  const magnitude = shift >= 0 ? numerator * pow10(shift) : divCeil(numerator, pow10(-shift));
  if (magnitude > MAX_UNITS_BIG) {
    throw new RangeError(
      `${unitsToDecimal(units, unitPrecision)} at ${creditCost} credits each is beyond the largest ` +
        `credit amount ${maxAmount(creditPrecision)}`,
    );
  }
  const negative = units < 0 !== cost.negative;
  const n = Number(magnitude);
  return negative && n !== 0 ? -n : n;
}

export type DecimalParseResult = { ok: true; value: string } | { ok: false; rule: string };

export interface DecimalParseOptions {
  /** When set, the value must have at most this many decimal places and fit MAX_UNITS at it. */
  precision?: number | undefined;
  /** When true, a negative value is refused. */
  nonNegative?: boolean | undefined;
}

/**
 * Validates a decimal string from catalogue input (/^-?\d+(\.\d+)?$/) and returns its canonical
 * form (no superfluous leading or trailing zeros, "-0" as "0"), or the rule it broke.
 */
export function parseDecimalString(s: string, options: DecimalParseOptions = {}): DecimalParseResult {
  const parsed = typeof s === "string" ? parseWith(DECIMAL_STRING, s) : null;
  if (parsed === null) {
    return { ok: false, rule: "must be a decimal number such as 12 or 0.5" };
  }
  if (options.nonNegative === true && parsed.negative && parsed.digits !== 0n) {
    return { ok: false, rule: "must not be negative" };
  }
  const m = DECIMAL_STRING.exec(s);
  const fracPart = (m?.[3] ?? "").replace(/0+$/, "");
  const intPart = (m?.[2] ?? "0").replace(/^0+(?=\d)/, "");
  const isZero = parsed.digits === 0n;
  const value = (parsed.negative && !isZero ? "-" : "") + intPart + (fracPart === "" ? "" : "." + fracPart);
  const precision = options.precision;
  if (precision !== undefined) {
    checkPrecision(precision);
    if (fracPart.length > precision) {
      return { ok: false, rule: `must have at most ${precision} decimal places` };
    }
    const units = toUnitsBig(parsed, precision);
    if (units > MAX_UNITS_BIG || units < -MAX_UNITS_BIG) {
      return {
        ok: false,
        rule: `must be at most ${maxAmount(precision)} in magnitude at ${precision} decimal places`,
      };
    }
  }
  return { ok: true, value };
}
