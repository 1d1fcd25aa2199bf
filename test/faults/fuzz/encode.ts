// A fuzz case's events as they go on the wire (protobuf-es messages, protobuf JSON written by hand so
// that it can carry what protobuf-es would refuse to write), and as the server will see them: which
// are certainly invalid, which key and customer a ledger row of theirs would carry.
import { create, toBinary, type DescMessage } from "@bufbuild/protobuf";
import {
  CheckRequestSchema,
  GetMetricsRequestSchema,
  TrackBatchRequestSchema,
  TrackRequestSchema,
  TrackStreamRequestSchema,
  WatchUsageRequestSchema,
} from "../../../gen/meterd/v1/metering_pb.js";
import type { Event, Method } from "./cases.js";

/** One event as the server receives it, and what the fuzz test learns of it. */
export interface SentEvent {
  customerId: string;
  featureKey: string;
  /** The idempotency key as sent; "" for none. */
  key: string;
  /** Certain to break an input rule: it must never be answered ALLOWED. */
  invalid: boolean;
}

const MAX_BACKDATE_S = 35 * 86_400;
const MAX_FUTURE_S = 300;
const MIN_SECONDS = -62_135_596_800;
const MAX_SECONDS = 253_402_300_799;
const LONE_SURROGATE = /\p{Cs}/u;
const LONE_SURROGATES = /\p{Cs}/gu;
/** What customer ids may not hold (C0 and DEL), and what property keys may not hold (C1 as well). */
const CUSTOMER_CONTROL = /[\u0000-\u001f\u007f]/;
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
const KNOWN_FEATURES = new Set(["api_calls", "storage_gb"]);

/** protobuf binary has no unpaired surrogates: TextEncoder writes U+FFFD instead. */
function asBinaryText(s: string): string {
  return s.replace(LONE_SURROGATES, "\ufffd");
}

/** An event with its key assigned and its times resolved against `nowSeconds`, as `format` carries it. */
export function resolveEvent(e: Event, format: "binary" | "json", nextKey: () => string, nowSeconds: number) {
  const text = format === "binary" ? asBinaryText : (s: string) => s;
  const key = e.idempotencyKey === "@" ? nextKey() : e.idempotencyKey;
  const properties = Object.fromEntries(Object.entries(e.properties).map(([k, v]) => [text(k), text(v)]));
  const seconds = e.timestamp === null ? null : Math.floor(nowSeconds + e.timestamp.offsetSeconds);
  const sent: SentEvent = { customerId: text(e.customerId), featureKey: text(e.featureKey), key, invalid: false };

  const badCustomer = sent.customerId === "" || sent.customerId.length > 255 || CUSTOMER_CONTROL.test(sent.customerId) || LONE_SURROGATE.test(sent.customerId);
  const badFeature = !KNOWN_FEATURES.has(sent.featureKey);
  const badAmount = !Number.isFinite(e.amount) || Math.abs(e.amount) > 2 ** 53 - 1;
  const badKey = key !== "" && !/^[\x21-\x7e]{1,255}$/.test(key);
  const badTime =
    e.timestamp !== null &&
    (e.timestamp.nanos < 0 ||
      e.timestamp.nanos > 999_999_999 ||
      seconds! < MIN_SECONDS ||
      seconds! > MAX_SECONDS ||
      e.timestamp.offsetSeconds < -MAX_BACKDATE_S ||
      e.timestamp.offsetSeconds > MAX_FUTURE_S);
  const badProperties = Object.entries(properties).some(
    ([k, v]) => k === "" || k.length > 64 || CONTROL.test(k) || LONE_SURROGATE.test(k) || v.includes("\u0000") || LONE_SURROGATE.test(v) || v.length > 1024,
  );
  sent.invalid = badCustomer || badFeature || badAmount || badKey || badTime || badProperties;

  const binary = {
    customerId: e.customerId,
    featureKey: e.featureKey,
    amount: e.amount,
    idempotencyKey: key,
    properties: e.properties,
    ...(e.timestamp === null ? {} : { timestamp: { seconds: BigInt(seconds!), nanos: e.timestamp.nanos } }),
  };
  return { sent, binary, json: trackJson(e, key, seconds) };
}

/** protobuf JSON for a TrackRequest, written by hand: NaN as "NaN", an impossible time as a string that is not one. */
function trackJson(e: Event, key: string, seconds: number | null): Record<string, unknown> {
  const amount = Number.isFinite(e.amount) ? e.amount : String(e.amount);
  const out: Record<string, unknown> = { customerId: e.customerId, featureKey: e.featureKey, amount, idempotencyKey: key, properties: e.properties };
  if (e.timestamp !== null) {
    const { nanos } = e.timestamp;
    const ms = seconds! * 1000;
    const valid = nanos >= 0 && nanos <= 999_999_999 && seconds! >= MIN_SECONDS && seconds! <= MAX_SECONDS;
    out["timestamp"] = valid ? `${new Date(ms).toISOString().slice(0, 19)}.${String(nanos).padStart(9, "0")}Z` : `not a time (nanos ${nanos})`;
  }
  return out;
}

type Resolved = ReturnType<typeof resolveEvent>;

/** The request messages of `method` for these events: one, except TrackStream (one per event). */
export function messagesOf(method: Method, events: Resolved[]): { schema: DescMessage; binary: object[]; json: object[] } {
  const first = events[0]!;
  switch (method) {
    case "Track":
      return { schema: TrackRequestSchema, binary: [first.binary], json: [first.json] };
    case "TrackBatch":
      return { schema: TrackBatchRequestSchema, binary: [{ events: events.map((e) => e.binary) }], json: [{ events: events.map((e) => e.json) }] };
    case "TrackStream":
      return { schema: TrackStreamRequestSchema, binary: events.map((e) => ({ events: [e.binary] })), json: events.map((e) => ({ events: [e.json] })) };
    case "Check":
      return {
        schema: CheckRequestSchema,
        binary: [{ customerId: first.binary.customerId, featureKey: first.binary.featureKey, amount: first.binary.amount }],
        json: [{ customerId: first.json["customerId"], featureKey: first.json["featureKey"], amount: first.json["amount"] }],
      };
    case "GetMetrics":
    case "WatchUsage": {
      const schema = method === "GetMetrics" ? GetMetricsRequestSchema : WatchUsageRequestSchema;
      return {
        schema,
        binary: [{ customerId: first.binary.customerId, featureKey: first.binary.featureKey }],
        json: [{ customerId: first.json["customerId"], featureKey: first.json["featureKey"] }],
      };
    }
  }
}

/** Binary bytes of one message; throws nothing for any int32 nanos or double amount. */
export function binaryBytes(schema: DescMessage, init: object): Buffer {
  const bytes = toBinary(schema, create(schema, init as never));
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function varint(n: number): number[] {
  const out: number[] = [];
  while (n > 0x7f) {
    out.push((n & 0x7f) | 0x80);
    n >>>= 7;
  }
  out.push(n);
  return out;
}

/**
 * The first message of `method` with customer_id (field 1 of every request here, or of the nested
 * TrackRequest) holding ED A0 80: an unpaired surrogate in CESU-8, which is not UTF-8.
 */
export function notUtf8Bytes(method: Method, event: Resolved): Buffer {
  const prefix = Buffer.from([0x0a, 0x03, 0xed, 0xa0, 0x80]);
  const track = Buffer.concat([prefix, binaryBytes(TrackRequestSchema, { ...event.binary, customerId: "" })]);
  const nested = Buffer.concat([Buffer.from([0x0a, ...varint(track.length)]), track]);
  switch (method) {
    case "Track":
      return track;
    case "TrackBatch":
    case "TrackStream":
      return nested;
    default:
      return Buffer.concat([prefix, binaryBytes(GetMetricsRequestSchema, { featureKey: event.binary.featureKey })]);
  }
}
