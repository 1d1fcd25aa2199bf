// Given the input rules, when text the ledger cannot store (U+0000, unpaired surrogates) or a Timestamp
// that is not one (nanos outside 0..999,999,999, seconds outside years 1 to 9999) is checked, then it is
// refused with INVALID_ARGUMENT naming the field and the rule; ordinary text and times pass.
import { Code } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { MeterError } from "../../src/metering/errors.js";
import {
  checkCustomerId,
  checkName,
  checkProperties,
  checkStorableText,
  checkTimestampFields,
} from "../../src/metering/validate.js";

/** The MeterError `check` throws; fails the test if it throws nothing or something else. */
function refusal(check: () => void): MeterError {
  try {
    check();
  } catch (error) {
    if (error instanceof MeterError) return error;
    throw error;
  }
  throw new Error("the check passed");
}

const LONE_HIGH = "\ud800";
const LONE_LOW = "\udc00";

describe("text the ledger can store", () => {
  it.each([
    ["a NUL in a property key", { "region\u0000": "eu" }, 'properties["region\\u0000"]', "PROPERTY_KEY_INVALID"],
    ["a tab in a property key", { "a\tb": "eu" }, 'properties["a\\tb"]', "PROPERTY_KEY_INVALID"],
    ["a NUL in a property value", { region: "e\u0000u" }, 'properties["region"]', "PROPERTY_VALUE_INVALID"],
    ["an unpaired high surrogate in a key", { [`k${LONE_HIGH}`]: "v" }, 'properties["k\\ud800"]', "PROPERTY_KEY_INVALID"],
    ["an unpaired low surrogate in a value", { k: `v${LONE_LOW}` }, 'properties["k"]', "PROPERTY_VALUE_INVALID"],
  ])("properties: %s is INVALID_ARGUMENT naming the entry", (_name, properties, field, reason) => {
    const error = refusal(() => checkProperties(properties));
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.field).toBe(field);
    expect(error.reason).toBe(reason);
    expect(error.rawMessage.startsWith(`${field} `)).toBe(true);
    // The message names the entry in printable form: it can travel in a grpc-message header.
    expect(/\p{Cs}|\u0000/u.test(error.rawMessage)).toBe(false);
  });

  it("properties: emoji (surrogate pairs), tabs and line breaks in values pass", () => {
    expect(() => checkProperties({ "région 🌍": "line 1\nline 2\tend 😀" })).not.toThrow();
  });

  it("an unpaired surrogate in a customer id is refused; a pair is not", () => {
    const error = refusal(() => checkCustomerId(`cus_${LONE_HIGH}`));
    expect(error.field).toBe("customer_id");
    expect(error.rule).toBe("must be well-formed Unicode (no unpaired surrogate)");
    expect(() => checkCustomerId("cus_😀")).not.toThrow();
  });

  it("free text refuses NUL and unpaired surrogates but keeps line breaks", () => {
    expect(refusal(() => checkStorableText("a\u0000", "description")).rule).toBe("must not contain U+0000 (NUL)");
    expect(refusal(() => checkStorableText(LONE_LOW, "description")).reason).toBe("TEXT_NOT_WELL_FORMED");
    expect(() => checkStorableText("first line\nsecond line", "description")).not.toThrow();
  });

  it("names refuse every control character", () => {
    for (const control of ["\u0000", "\n", "\u001f", "\u007f", "\u0085"]) {
      expect(refusal(() => checkName(`Title${control}`, "feature.title")).reason).toBe("TEXT_CONTAINS_CONTROL");
    }
    expect(() => checkName("API calls (per month) — ü", "feature.title")).not.toThrow();
  });
});

describe("Timestamp fields", () => {
  it.each([
    ["nanos -1", { seconds: 1_700_000_000n, nanos: -1 }, "timestamp.nanos"],
    ["nanos 1,000,000,000", { seconds: 1_700_000_000n, nanos: 1_000_000_000 }, "timestamp.nanos"],
    ["nanos -2^31", { seconds: 0n, nanos: -2_147_483_648 }, "timestamp.nanos"],
    ["seconds before year 1", { seconds: -62_135_596_801n, nanos: 0 }, "timestamp.seconds"],
    ["seconds after year 9999", { seconds: 253_402_300_800n, nanos: 0 }, "timestamp.seconds"],
  ])("%s is INVALID_ARGUMENT", (_name, ts, field) => {
    const error = refusal(() => checkTimestampFields(ts));
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.field).toBe(field);
  });

  it("the message says the rule, and a batch names the event", () => {
    const error = refusal(() => checkTimestampFields({ seconds: 0n, nanos: 1_000_000_000 }));
    expect(error.rawMessage).toBe("timestamp.nanos must be 0 to 999,999,999");
    expect(error.under("events[3]").field).toBe("events[3].timestamp.nanos");
    expect(error.under("events[3]").rawMessage).toBe("events[3].timestamp.nanos must be 0 to 999,999,999");
  });

  it("the edges of the range pass", () => {
    expect(() => checkTimestampFields({ seconds: -62_135_596_800n, nanos: 0 })).not.toThrow();
    expect(() => checkTimestampFields({ seconds: 253_402_300_799n, nanos: 999_999_999 })).not.toThrow();
  });
});
