// What the fuzz test sends, as data: which client and protocol, which method, which body (real
// messages with hostile fields, or bytes that are not a message at all), which compression and which
// timeout. fast-check generates these; send.ts turns one into a request.
import fc from "fast-check";

export type Protocol = "connect" | "grpc" | "grpc-web";

/** How the request travels. */
export type Wire =
  /** @grpc/grpc-js with raw-byte serializers, to the grpc-js listener; its deadline as the timeout. */
  | { kind: "grpc-js" }
  /** connect-node's client to the Connect listener. */
  | { kind: "connect-client"; protocol: Protocol; binary: boolean; http: "1.1" | "2" }
  /** A request written by hand: any bytes, any headers. */
  | { kind: "raw"; listener: "grpc-js" | "connect"; protocol: Protocol; binary: boolean; http: "1.1" | "2" };

export type Method = "Track" | "TrackBatch" | "TrackStream" | "Check" | "GetMetrics" | "WatchUsage";

export interface Event {
  customerId: string;
  featureKey: string;
  amount: number;
  /** "" for none; "@" is replaced by a key unique to the run when sent. */
  idempotencyKey: string;
  /** Seconds relative to now, and nanos as sent (any int32). */
  timestamp: { offsetSeconds: number; nanos: number } | null;
  properties: Record<string, string>;
}

export type Body =
  | { kind: "messages"; events: Event[] }
  /** Random bytes as the message. */
  | { kind: "garbage"; bytes: Uint8Array }
  /** Text that is not the JSON of the message. */
  | { kind: "bad-json"; text: string }
  /** A real message whose customer_id holds ED A0 80 (an unpaired surrogate in CESU-8, not UTF-8). */
  | { kind: "not-utf8"; event: Event }
  /** More bytes than METERD_MAX_MESSAGE_BYTES. */
  | { kind: "oversized"; bytes: number }
  /** An envelope whose length prefix promises more (or less) than it holds. */
  | { kind: "lying-length"; claimed: number; actual: Uint8Array };

export type Compression = "identity" | "gzip" | "br" | "gzip-truncated" | "gzip-corrupt" | "flag-without-encoding" | "unknown-encoding";
export type Auth = "key" | "none" | "wrong";

export interface FuzzCase {
  wire: Wire;
  method: Method;
  body: Body;
  compression: Compression;
  /** The client's timeout in ms (0 to 2^40), or null for none. */
  timeoutMs: number | null;
  auth: Auth;
}

/** The test's customers: ordinary ids, so that their ledger rows can be counted. */
export const CUSTOMERS = ["fz_c0", "fz_c1", "fz_c2", "fz_c3"];
const LONE_SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff"];

const hostileText = fc.oneof(
  { weight: 6, arbitrary: fc.string({ maxLength: 12 }) },
  { weight: 2, arbitrary: fc.string({ maxLength: 8 }).map((s) => `${s}\u0000`) },
  { weight: 2, arbitrary: fc.tuple(fc.string({ maxLength: 6 }), fc.constantFrom(...LONE_SURROGATES)).map(([s, l]) => `${s}${l}`) },
  { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 10 }) },
  { weight: 1, arbitrary: fc.constantFrom("\t", "a\nb", "\u007f", "\u0085", "😀", "\u200b") },
);

const customerId = fc.oneof(
  { weight: 12, arbitrary: fc.constantFrom(...CUSTOMERS) },
  { weight: 1, arbitrary: fc.constant("") },
  { weight: 1, arbitrary: fc.constantFrom(...CUSTOMERS).map((c) => `${c}\u0000x`) },
  { weight: 1, arbitrary: fc.constantFrom(...CUSTOMERS).map((c) => `${c}\ud800`) },
  { weight: 1, arbitrary: fc.constant("x".repeat(256)) },
);

const amount = fc.oneof(
  { weight: 8, arbitrary: fc.constantFrom(1, 2, 3) },
  { weight: 1, arbitrary: fc.constantFrom(0, -1, 0.5, Number.NaN, Number.POSITIVE_INFINITY, 1e300, 2 ** 53) },
  { weight: 1, arbitrary: fc.double() },
);

const nanos = fc.oneof(
  { weight: 4, arbitrary: fc.integer({ min: 0, max: 999_999_999 }) },
  { weight: 1, arbitrary: fc.constantFrom(-1, 1_000_000_000, -2_147_483_648, 2_147_483_647) },
  { weight: 1, arbitrary: fc.integer({ min: -2_147_483_648, max: 2_147_483_647 }) },
);

const timestamp = fc.option(
  fc.record({
    offsetSeconds: fc.oneof(
      { weight: 4, arbitrary: fc.integer({ min: -3600, max: 60 }) },
      { weight: 1, arbitrary: fc.constantFrom(-40 * 86_400, 86_400, -1e12, 1e12) },
    ),
    nanos,
  }),
  { freq: 3 },
);

const properties = fc.oneof(
  { weight: 4, arbitrary: fc.constant({}) },
  { weight: 2, arbitrary: fc.dictionary(fc.constantFrom("region", "plan", "tier"), fc.string({ maxLength: 8 }), { maxKeys: 3 }) },
  { weight: 3, arbitrary: fc.dictionary(hostileText, hostileText, { maxKeys: 3 }) },
);

export const event: fc.Arbitrary<Event> = fc.record({
  customerId,
  featureKey: fc.oneof(
    { weight: 8, arbitrary: fc.constantFrom("api_calls", "storage_gb") },
    { weight: 1, arbitrary: fc.constantFrom("", "nope", "api_calls\u0000", "api\ud800") },
  ),
  amount,
  idempotencyKey: fc.oneof({ weight: 10, arbitrary: fc.constant("@") }, { weight: 1, arbitrary: fc.constantFrom("", "has space") }),
  timestamp,
  properties,
});

const body: fc.Arbitrary<Body> = fc.oneof(
  { weight: 10, arbitrary: fc.array(event, { minLength: 1, maxLength: 4 }).map((events) => ({ kind: "messages" as const, events })) },
  { weight: 2, arbitrary: fc.uint8Array({ maxLength: 64 }).map((bytes) => ({ kind: "garbage" as const, bytes })) },
  { weight: 1, arbitrary: fc.constantFrom("{", "[]", "null", '{"customerId": 5}', '{"amount": "x"}', '{"nope": 1}', "\u0000").map((text) => ({ kind: "bad-json" as const, text })) },
  { weight: 1, arbitrary: event.map((e) => ({ kind: "not-utf8" as const, event: e })) },
  { weight: 1, arbitrary: fc.integer({ min: 65_537, max: 200_000 }).map((bytes) => ({ kind: "oversized" as const, bytes })) },
  {
    weight: 1,
    arbitrary: fc
      .record({ claimed: fc.constantFrom(0, 1, 100, 65_537, 2 ** 31, 2 ** 32 - 1), actual: fc.uint8Array({ maxLength: 16 }) })
      .map((b) => ({ kind: "lying-length" as const, ...b })),
  },
);

const protocol = fc.constantFrom<Protocol>("connect", "grpc", "grpc-web");
const wire: fc.Arbitrary<Wire> = fc.oneof(
  { weight: 3, arbitrary: fc.constant({ kind: "grpc-js" as const }) },
  {
    weight: 3,
    arbitrary: fc.record({ kind: fc.constant("connect-client" as const), protocol, binary: fc.boolean(), http: fc.constantFrom<"1.1" | "2">("1.1", "2") }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      kind: fc.constant("raw" as const),
      listener: fc.constantFrom<"grpc-js" | "connect">("grpc-js", "connect", "connect"),
      protocol,
      binary: fc.boolean(),
      http: fc.constantFrom<"1.1" | "2">("1.1", "2"),
    }),
  },
);

const timeoutMs = fc.oneof(
  { weight: 4, arbitrary: fc.constant(null) },
  { weight: 2, arbitrary: fc.integer({ min: 0, max: 5 }) },
  { weight: 2, arbitrary: fc.integer({ min: 1000, max: 60_000 }) },
  { weight: 2, arbitrary: fc.constantFrom(2 ** 31 - 1, 2 ** 31, 30 * 86_400_000, 365 * 86_400_000, 9_999_999_999, 2 ** 40) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 2 ** 40 }) },
);

export const fuzzCase: fc.Arbitrary<FuzzCase> = fc.record({
  wire,
  method: fc.oneof(
    { weight: 5, arbitrary: fc.constant<Method>("Track") },
    { weight: 3, arbitrary: fc.constant<Method>("TrackBatch") },
    { weight: 2, arbitrary: fc.constant<Method>("TrackStream") },
    { weight: 1, arbitrary: fc.constantFrom<Method>("Check", "GetMetrics") },
    { weight: 1, arbitrary: fc.constant<Method>("WatchUsage") },
  ),
  body,
  compression: fc.oneof(
    { weight: 8, arbitrary: fc.constant<Compression>("identity") },
    { weight: 2, arbitrary: fc.constantFrom<Compression>("gzip", "br") },
    { weight: 3, arbitrary: fc.constantFrom<Compression>("gzip-truncated", "gzip-corrupt", "flag-without-encoding", "unknown-encoding") },
  ),
  timeoutMs,
  auth: fc.oneof({ weight: 20, arbitrary: fc.constant<Auth>("key") }, { weight: 1, arbitrary: fc.constantFrom<Auth>("none", "wrong") }),
});
