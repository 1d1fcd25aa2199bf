// The compiled request decoders read exactly what protobuf-es's fromBinary reads; input they do not cover
// (unknown fields, odd wire types, truncation) goes to fromBinary through the grpc-js deserializer.
import { create, type DescMessage, fromBinary, isMessage, type MessageInitShape, toBinary } from "@bufbuild/protobuf";
import { describe, expect, it } from "vitest";
import { CatalogService } from "../../gen/meterd/v1/catalog_pb.js";
import { MeteringService, TrackBatchRequestSchema, TrackRequestSchema, TrackStreamRequestSchema } from "../../gen/meterd/v1/metering_pb.js";
import { methodDefinition } from "../../src/rpc/grpc/definitions.js";
import { compileDecoder } from "../../src/rpc/grpc/wire-decoder.js";
import { NotCompiled } from "../../src/rpc/grpc/wire-types.js";

function expectSameRead(schema: DescMessage, bytes: Uint8Array): void {
  const decode = compileDecoder(schema);
  expect(decode).not.toBeNull();
  const decoded = decode!(Buffer.from(bytes));
  expect(isMessage(decoded, schema)).toBe(true);
  const expected = fromBinary(schema, bytes);
  expect(decoded).toEqual(expected);
  // toEqual does not tell an unset field from one set to undefined: encoding both again does (presence).
  expect(Buffer.from(toBinary(schema, decoded as never)).toString("hex")).toBe(Buffer.from(toBinary(schema, expected)).toString("hex"));
}

function event(i: number): MessageInitShape<typeof TrackRequestSchema> {
  return {
    customerId: i % 4 === 0 ? `cust-${"ü".repeat(i % 5)}-${i}` : `bench_c${i}`,
    featureKey: i % 3 === 0 ? "" : "api_calls",
    // proto3 optional: unset on some events, 0 and -0 (set) on others.
    ...(i % 7 === 3 ? {} : { amount: [1, -2.5, 0, -0, 1e308, Number.NaN][i % 6]! }),
    idempotencyKey: i % 2 === 0 ? `key-${i}-${"😀".repeat(i % 3)}` : "",
    ...(i % 5 === 0 ? { timestamp: { seconds: BigInt(i % 10 === 0 ? -62_135_596_800 : 1_796_000_000 + i), nanos: i * 7 } } : {}),
    properties: i % 7 === 0 ? {} : { region: "eu-west", [`k${i}`]: "v".repeat(i % 200), "": "empty key" },
  };
}

/** A field's tag and a length-delimited body, written by hand for input toBinary never writes. */
function delimited(field: number, body: Uint8Array): Uint8Array {
  if (body.length >= 128) throw new Error("test helper: short bodies only");
  return Uint8Array.from([(field << 3) | 2, body.length, ...body]);
}
const concat = (...parts: Uint8Array[]) => Uint8Array.from(parts.flatMap((p) => [...p]));

describe("compiled request decoders", () => {
  it("given Track requests of every shape, then the message is fromBinary's", () => {
    for (let i = 0; i < 80; i++) expectSameRead(TrackRequestSchema, toBinary(TrackRequestSchema, create(TrackRequestSchema, event(i))));
    expectSameRead(TrackRequestSchema, new Uint8Array(0));
  });

  it("given batches and stream requests of up to 1,000 events, then the message is fromBinary's", () => {
    for (const n of [1, 10, 1000]) {
      const events = Array.from({ length: n }, (_, i) => event(i));
      expectSameRead(TrackBatchRequestSchema, toBinary(TrackBatchRequestSchema, create(TrackBatchRequestSchema, { events, includeEventUsage: n === 10 })));
      expectSameRead(TrackStreamRequestSchema, toBinary(TrackStreamRequestSchema, create(TrackStreamRequestSchema, { events })));
    }
  });

  it("given input that toBinary does not write but a client may, then it is read as fromBinary reads it", () => {
    const enc = new TextEncoder();
    const customer = (s: string) => delimited(1, enc.encode(s));
    // A scalar sent twice (the last wins), a map key sent twice (the last wins), invalid UTF-8, a bool of 2.
    expectSameRead(TrackRequestSchema, concat(customer("first"), customer("second")));
    const entry = (k: string, v: string) => delimited(6, concat(delimited(1, enc.encode(k)), delimited(2, enc.encode(v))));
    expectSameRead(TrackRequestSchema, concat(entry("a", "1"), entry("a", "2"), delimited(6, delimited(2, enc.encode("no key")))));
    expectSameRead(TrackRequestSchema, delimited(1, enc.encode("ASCII, é, 😀 and \u0000")));
    expectSameRead(TrackBatchRequestSchema, Uint8Array.from([(2 << 3) | 0, 2]));
  });

  it("given unknown fields, odd wire types or truncated input, then the compiled decoder declines and the deserializer gives fromBinary's answer", () => {
    const decode = compileDecoder(TrackRequestSchema)!;
    const deserialize = methodDefinition(MeteringService, MeteringService.method.track).requestDeserialize;
    /** What a reader makes of the bytes: the message, or its error's message. */
    const outcome = (read: () => unknown) => {
      try {
        return { message: read() };
      } catch (error) {
        return { error: (error as Error).message };
      }
    };
    // An unknown field (15), a string field sent as a varint, a truncated string, invalid UTF-8.
    const unknown = concat(delimited(1, new TextEncoder().encode("c")), Uint8Array.from([(15 << 3) | 0, 7]));
    const wrongWire = Uint8Array.from([(1 << 3) | 0, 5]);
    const truncated = Uint8Array.from([(1 << 3) | 2, 10, 0x61]);
    const invalidText = delimited(1, Uint8Array.from([0x61, 0xff, 0xc3, 0x28, 0x62]));
    for (const bytes of [unknown, wrongWire, truncated]) expect(() => decode(Buffer.from(bytes))).toThrow(NotCompiled);
    expect(() => decode(Buffer.from(invalidText))).toThrow(TypeError);
    expect(fromBinary(TrackRequestSchema, unknown).$unknown).toHaveLength(1);
    for (const bytes of [unknown, wrongWire, truncated, invalidText]) {
      expect(outcome(() => deserialize(Buffer.from(bytes)))).toEqual(outcome(() => fromBinary(TrackRequestSchema, Buffer.from(bytes))));
    }
    expect(outcome(() => deserialize(Buffer.from(invalidText)))).toHaveProperty("error");
  });

  it("given every method of both services, then each request type either compiles and reads an empty message as fromBinary does, or is left to fromBinary", () => {
    for (const method of [...MeteringService.methods, ...CatalogService.methods]) {
      if (compileDecoder(method.input) !== null) expectSameRead(method.input, new Uint8Array(0));
    }
    expect(compileDecoder(TrackRequestSchema)).not.toBeNull();
    expect(compileDecoder(TrackBatchRequestSchema)).not.toBeNull();
    expect(compileDecoder(TrackStreamRequestSchema)).not.toBeNull();
  });
});
