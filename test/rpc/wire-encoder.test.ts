// The compiled response encoders write exactly what protobuf-es's toBinary writes, for created messages
// and for the plain init objects handlers return; types they do not cover get no encoder.
import { create, type DescMessage, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { type Timestamp, TimestampSchema } from "@bufbuild/protobuf/wkt";
import { describe, expect, it } from "vitest";
import { CatalogService } from "../../gen/meterd/v1/catalog_pb.js";
import {
  MeteringService,
  TrackBatchResponseSchema,
  TrackRequestSchema,
  TrackResponseSchema,
  TrackStreamResponseSchema,
} from "../../gen/meterd/v1/metering_pb.js";
import { Decision, DenyReason, LimitKind } from "../../gen/meterd/v1/usage_pb.js";
import { compileEncoder } from "../../src/rpc/grpc/wire-encoder.js";

function expectSameBytes(schema: DescMessage, init: MessageInitShape<DescMessage>): void {
  const encode = compileEncoder(schema);
  expect(encode).not.toBeNull();
  const expected = Buffer.from(toBinary(schema, create(schema, init)));
  expect(encode!(create(schema, init)).toString("hex")).toBe(expected.toString("hex"));
  expect(encode!(init).toString("hex")).toBe(expected.toString("hex"));
}

const ts = (seconds: bigint, nanos = 0): Timestamp => create(TimestampSchema, { seconds, nanos });

function usage(i: number) {
  return {
    featureKey: i % 3 === 0 ? "api_calls" : `feature-${"é".repeat(i % 7)}-${i}`,
    consumed: i * 1.5,
    limit: i % 2 === 0 ? 0 : 1e9,
    remaining: i % 5 === 0 ? -0 : 12.25,
    unlimited: i % 2 === 0,
    percentageUsed: i % 4 === 0 ? Number.NaN : i / 7,
    periodStart: i % 6 === 0 ? undefined : ts(BigInt(1_700_000_000 + i), i * 1000),
    periodEnd: ts(i % 2 === 0 ? -62_135_596_800n : 253_402_300_799n, 999_999_999),
    overage: i % 3 === 1 ? Number.MAX_VALUE : 0,
    limitKind: i % 2 === 0 ? LimitKind.HARD : LimitKind.SOFT,
    creditBalance: -i,
    creditsCharged: i % 9 === 0 ? Number.POSITIVE_INFINITY : 0,
  };
}

function tracked(i: number, withUsage: boolean) {
  return {
    eventId: `0192f3a4-${String(i).padStart(4, "0")}-7000-8000-000000000000`,
    decision: i % 3 === 0 ? Decision.DENIED : Decision.ALLOWED,
    denyReason: i % 3 === 0 ? DenyReason.LIMIT_REACHED : DenyReason.UNSPECIFIED,
    duplicate: i % 4 === 0,
    thresholdsCrossed: i % 5 === 0 ? [80, 100, -0, 0.5] : [],
    ...(withUsage ? { usage: usage(i) } : {}),
  };
}

function batchResponse(n: number, withUsage: boolean) {
  return {
    results: Array.from({ length: n }, (_, i) =>
      i % 11 === 10
        ? { outcome: { case: "error" as const, value: { code: "invalid_argument", message: `events[${i}].amount: must be finite ${"x".repeat(i)}`, field: `events[${i}].amount`, reason: "AMOUNT_NOT_FINITE" } } }
        : i % 13 === 12
          ? { outcome: { case: "tracked" as const, value: {} } }
          : { outcome: { case: "tracked" as const, value: tracked(i, withUsage) } },
    ),
    usages: Array.from({ length: Math.ceil(n / 10) }, (_, i) => ({ customerId: `customer-${i}-${"€".repeat(i % 4)}`, usage: usage(i) })),
  };
}

describe("compiled response encoders", () => {
  it("given Track answers of every shape, then the bytes are toBinary's", () => {
    for (let i = 0; i < 60; i++) expectSameBytes(TrackResponseSchema, tracked(i, i % 2 === 0));
    expectSameBytes(TrackResponseSchema, {});
  });

  it("given TrackBatch answers with errors, empty results, usages and long fields, then the bytes are toBinary's", () => {
    for (const n of [0, 1, 12, 200, 1000]) {
      expectSameBytes(TrackBatchResponseSchema, batchResponse(n, false));
      expectSameBytes(TrackBatchResponseSchema, batchResponse(n, true));
    }
  });

  it("given TrackStream answers, then the 64-bit sequence and the rest are toBinary's", () => {
    for (const sequence of [0n, 1n, 127n, 128n, 2n ** 53n + 1n, 2n ** 64n - 1n]) {
      expectSameBytes(TrackStreamResponseSchema, { sequence, ...batchResponse(30, sequence % 2n === 0n) });
    }
  });

  it("given a body of more than 2 MB, then lengths of three and more bytes are written as toBinary writes them", () => {
    const long = "z".repeat(2_100_000);
    expectSameBytes(TrackBatchResponseSchema, { results: [{ outcome: { case: "error", value: { code: "internal", message: long } } }] });
  });

  it("given every method of both services, then each response type either compiles or is left to toBinary", () => {
    for (const method of [...MeteringService.methods, ...CatalogService.methods]) {
      const encode = compileEncoder(method.output);
      if (encode === null) continue;
      expectSameBytes(method.output, {});
    }
    expect(compileEncoder(TrackResponseSchema)).not.toBeNull();
    expect(compileEncoder(TrackBatchResponseSchema)).not.toBeNull();
    expect(compileEncoder(TrackStreamResponseSchema)).not.toBeNull();
    expect(compileEncoder(TrackRequestSchema)).not.toBeNull();
  });

  it("given Track requests with properties, timestamps and unusual text, then the bytes are toBinary's", () => {
    for (let i = 0; i < 40; i++) {
      expectSameBytes(TrackRequestSchema, {
        customerId: `c-${"ß".repeat(i % 3)}${i}`,
        featureKey: i % 4 === 0 ? "" : "api_calls",
        // Explicit presence: an amount set to 0 or -0 is written, an unset one is not.
        ...(i % 6 === 5 ? {} : { amount: [1, -0, 0, 2.5, Number.NaN][i % 5]! }),
        idempotencyKey: i % 2 === 0 ? `k${i}` : "",
        ...(i % 3 === 0 ? { timestamp: ts(BigInt(1_796_000_000 - i * 1_000_000_000), i) } : {}),
        properties: i % 6 === 0 ? {} : { region: "eu-west", "": "", "7": "index key", [`p${i}`]: "😀".repeat(i) },
      });
    }
  });
});
