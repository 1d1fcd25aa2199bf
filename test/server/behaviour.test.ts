// Given the real meterd server (the Meter on PGlite on disk, the example catalogue), when a Connect
// client calls it the way an application would, then the metering rules hold end to end: batches
// answer per event, bad input is refused naming the field and counts nothing, keys are idempotent,
// limits and credits deny, Check writes nothing, the catalogue changes what is enforced, and
// credentials are required everywhere but health.
import { type Timestamp, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError, createClient, type Client, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { errorFromJson } from "@connectrpc/connect/protocol-connect";
import { CatalogService, FeatureKind, ResetInterval } from "../../gen/meterd/v1/catalog_pb.js";
import { EventKind, MeteringService } from "../../gen/meterd/v1/metering_pb.js";
import { Decision, DenyReason, ErrorDetailSchema, LimitKind } from "../../gen/meterd/v1/usage_pb.js";
import { Health, ServingStatus } from "../../src/rpc/health.js";
import type { Server } from "../../src/server.js";
import { auth, currentMonth, errorOf, makeDataDir, ms, removeDir, Sessions, startMeterd } from "./harness.js";

const DAY_MS = 86_400_000;

let server: Server;
let dataDir: string;
const sessions = new Sessions();

/** Connect JSON over HTTP/1.1: what a web or Node application uses by default. */
let json: Transport;
/** Connect binary over HTTP/1.1: carries what JSON cannot, such as a NaN amount. */
let binary: Transport;
let metering: Client<typeof MeteringService>;
let catalog: Client<typeof CatalogService>;

beforeAll(async () => {
  dataDir = await makeDataDir();
  server = await startMeterd(dataDir);
  const baseUrl = `http://127.0.0.1:${server.httpPort}`;
  json = createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: false });
  binary = createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true });
  metering = createClient(MeteringService, json);
  catalog = createClient(CatalogService, json);
});

afterAll(async () => {
  sessions.abortAll();
  await server?.close(1000);
  await removeDir(dataDir);
});

/** The fields of a TrackRequest that these tests set. */
interface TrackInit {
  customerId: string;
  featureKey: string;
  /** undefined: unset. */
  amount: number | undefined;
  idempotencyKey?: string;
  timestamp?: Timestamp;
  properties?: Record<string, string>;
  kind?: EventKind;
}

/** gRPC over h2c to the grpc-js listener. */
function grpcJsTransport(): Transport {
  const baseUrl = `http://127.0.0.1:${server.grpcPort}`;
  return createGrpcTransport({ baseUrl, sessionManager: sessions.h2(baseUrl) });
}

async function consumed(customerId: string, featureKey: string): Promise<number | undefined> {
  const { metrics } = await metering.getMetrics({ customerId, featureKey }, { headers: auth });
  return metrics[0]?.consumed;
}

async function allConsumed(customerId: string): Promise<number[]> {
  const { metrics } = await metering.getMetrics({ customerId }, { headers: auth });
  return metrics.map((m) => m.consumed);
}

function detailOf(err: ConnectError): { reason: string; field: string; rule: string } | undefined {
  const [detail] = err.findDetails(ErrorDetailSchema);
  return detail && { reason: detail.reason, field: detail.field, rule: detail.rule };
}

describe("TrackBatch", () => {
  it("answers one result per event, in order: invalid events carry an error, the valid ones around them count", async () => {
    const client = createClient(MeteringService, binary);
    const customerId = "cust-batch";
    const events: TrackInit[] = [
      { customerId, featureKey: "api_calls", amount: 1, idempotencyKey: "b-0" },
      { customerId, featureKey: "api_calls", amount: Number.NaN, idempotencyKey: "b-1" },
      { customerId, featureKey: "api_calls", amount: 2, idempotencyKey: "b-2" },
      { customerId, featureKey: "nope", amount: 1, idempotencyKey: "b-3" },
      { customerId, featureKey: "api_calls", amount: 4, idempotencyKey: "b-4" },
      { customerId, featureKey: "api_calls", amount: 1, idempotencyKey: "has space" },
    ];
    const { results } = await client.trackBatch({ events }, { headers: auth });
    expect(results.map((r) => r.outcome.case)).toEqual(["tracked", "error", "tracked", "error", "tracked", "error"]);

    const errors = results.flatMap((r) => (r.outcome.case === "error" ? [r.outcome.value] : []));
    expect(errors.map(({ code, field, reason }) => ({ code, field, reason }))).toEqual([
      { code: "invalid_argument", field: "events[1].amount", reason: "AMOUNT_NOT_FINITE" },
      { code: "invalid_argument", field: "events[3].feature_key", reason: "UNKNOWN_FEATURE" },
      { code: "invalid_argument", field: "events[5].idempotency_key", reason: "IDEMPOTENCY_KEY_INVALID" },
    ]);
    for (const e of errors) expect(e.message.startsWith(`${e.field} `)).toBe(true);

    const tracked = results.flatMap((r) => (r.outcome.case === "tracked" ? [r.outcome.value] : []));
    for (const t of tracked) {
      expect(t.decision).toBe(Decision.ALLOWED);
      expect(t.duplicate).toBe(false);
    }
    expect(new Set(tracked.map((t) => t.eventId)).size).toBe(3);
    expect(await consumed(customerId, "api_calls")).toBe(7);

    // The same batch again: the valid events are replays with their event ids, nothing counts twice.
    const again = await client.trackBatch({ events }, { headers: auth });
    expect(again.results.map((r) => r.outcome.case)).toEqual(["tracked", "error", "tracked", "error", "tracked", "error"]);
    const replayed = again.results.flatMap((r) => (r.outcome.case === "tracked" ? [r.outcome.value] : []));
    expect(replayed.map((t) => [t.eventId, t.duplicate])).toEqual(tracked.map((t) => [t.eventId, true]));
    expect(await consumed(customerId, "api_calls")).toBe(7);
  });

  it("refuses 0 events and 1,001 events with INVALID_ARGUMENT, counting nothing", async () => {
    const empty = await errorOf(() => metering.trackBatch({ events: [] }, { headers: auth }));
    expect(empty.code).toBe(Code.InvalidArgument);
    expect(detailOf(empty)).toMatchObject({ field: "events", reason: "BATCH_EMPTY" });

    const customerId = "cust-batch-big";
    const events = Array.from({ length: 1001 }, (_, i) => ({ customerId, featureKey: "api_calls", amount: 1, idempotencyKey: `big-${i}` }));
    const big = await errorOf(() => metering.trackBatch({ events }, { headers: auth }));
    expect(big.code).toBe(Code.InvalidArgument);
    expect(big.rawMessage).toMatch(/^events /);
    expect(detailOf(big)).toMatchObject({ field: "events", reason: "BATCH_TOO_LARGE" });
    expect(await consumed(customerId, "api_calls")).toBe(0);

    // 1,000 is the largest batch, and is taken whole.
    const { results } = await metering.trackBatch({ events: events.slice(0, 1000) }, { headers: auth });
    expect(results.filter((r) => r.outcome.case === "tracked" && r.outcome.value.decision === Decision.ALLOWED)).toHaveLength(1000);
    expect(await consumed(customerId, "api_calls")).toBe(1000);
  });
});

const now = Date.now();
const badTracks: Array<{ name: string; req: Partial<TrackInit>; field: string; reason: string }> = [
  { name: "an unknown feature", req: { featureKey: "nope" }, field: "feature_key", reason: "UNKNOWN_FEATURE" },
  { name: "an empty feature key", req: { featureKey: "" }, field: "feature_key", reason: "FEATURE_KEY_EMPTY" },
  { name: "an empty customer", req: { customerId: "" }, field: "customer_id", reason: "CUSTOMER_ID_EMPTY" },
  { name: "a NaN amount", req: { amount: Number.NaN }, field: "amount", reason: "AMOUNT_NOT_FINITE" },
  { name: "an infinite amount", req: { amount: Number.POSITIVE_INFINITY }, field: "amount", reason: "AMOUNT_NOT_FINITE" },
  { name: "an amount finer than the feature's precision", req: { featureKey: "storage_gb", amount: 0.0000001 }, field: "amount", reason: "AMOUNT_ROUNDS_TO_ZERO" },
  { name: "an amount that rounds to no whole call", req: { amount: 0.49 }, field: "amount", reason: "AMOUNT_ROUNDS_TO_ZERO" },
  { name: "an explicit amount of 0", req: { amount: 0 }, field: "amount", reason: "AMOUNT_ZERO" },
  { name: "kind TRACK with a negative amount", req: { kind: EventKind.TRACK, amount: -1 }, field: "kind", reason: "KIND_MISMATCH" },
  { name: "kind ADJUSTMENT with a positive amount", req: { kind: EventKind.ADJUSTMENT, amount: 1 }, field: "kind", reason: "KIND_MISMATCH" },
  { name: "kind TOP_UP", req: { kind: EventKind.TOP_UP }, field: "kind", reason: "KIND_NOT_TRACKABLE" },
  { name: "kind SET without an amount", req: { kind: EventKind.SET, amount: undefined }, field: "amount", reason: "AMOUNT_REQUIRED" },
  { name: "a timestamp 36 days back", req: { timestamp: timestampFromMs(now - 36 * DAY_MS) }, field: "timestamp", reason: "TIMESTAMP_TOO_OLD" },
  { name: "a timestamp 10 minutes ahead", req: { timestamp: timestampFromMs(now + 10 * 60_000) }, field: "timestamp", reason: "TIMESTAMP_IN_FUTURE" },
  { name: "an idempotency key with a space", req: { idempotencyKey: "order 42" }, field: "idempotency_key", reason: "IDEMPOTENCY_KEY_INVALID" },
  { name: "an idempotency key of 256 characters", req: { idempotencyKey: "k".repeat(256) }, field: "idempotency_key", reason: "IDEMPOTENCY_KEY_INVALID" },
];

describe.each([
  { format: "JSON", transport: () => json },
  { format: "binary", transport: () => binary },
])("Track refuses bad input (Connect $format)", ({ format, transport }) => {
  it.each(badTracks)("$name: INVALID_ARGUMENT naming $field, with an ErrorDetail; nothing counted", async ({ req, field, reason }) => {
    const client = createClient(MeteringService, transport());
    const customerId = `cust-bad-${format}-${field}-${reason}`.toLowerCase();
    const full: TrackInit = { customerId, featureKey: "api_calls", amount: 1, idempotencyKey: "bad-1", ...req };
    const err = await errorOf(() => client.track(full, { headers: auth }));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.rawMessage.startsWith(`${field} `)).toBe(true);
    const detail = detailOf(err);
    expect(detail).toMatchObject({ field, reason });
    expect(detail?.rule).not.toBe("");
    expect(err.rawMessage).toBe(`${field} ${detail?.rule}`);
    if (full.customerId !== "") expect(await allConsumed(customerId)).toEqual([0, 0, 0, 0]);
  });
});

describe("Track without an amount counts one use", () => {
  it.each([
    { name: "Connect JSON", transport: () => json },
    { name: "Connect binary", transport: () => binary },
    { name: "gRPC (grpc-js listener)", transport: grpcJsTransport },
  ])("over $name: unset counts 1, its replay counts nothing more, and an explicit 0 writes nothing", async ({ name, transport }) => {
    const client = createClient(MeteringService, transport());
    const customerId = `cust-no-amount-${name.replace(/\W+/g, "-").toLowerCase()}`;
    const first = await client.track({ customerId, featureKey: "api_calls", idempotencyKey: "one" }, { headers: auth });
    expect(first.decision).toBe(Decision.ALLOWED);
    expect(first.usage?.consumed).toBe(1);
    const replay = await client.track({ customerId, featureKey: "api_calls", idempotencyKey: "one" }, { headers: auth });
    expect(replay).toMatchObject({ duplicate: true, eventId: first.eventId });
    const zero = await errorOf(() => client.track({ customerId, featureKey: "api_calls", amount: 0, idempotencyKey: "zero" }, { headers: auth }));
    expect(zero.code).toBe(Code.InvalidArgument);
    expect(detailOf(zero)).toMatchObject({ field: "amount", reason: "AMOUNT_ZERO" });
    const { results } = await client.trackBatch({ events: [{ customerId, featureKey: "api_calls", idempotencyKey: "b1" }, { customerId, featureKey: "api_calls", amount: 0, idempotencyKey: "b2" }] }, { headers: auth });
    expect(results.map((r) => r.outcome.case)).toEqual(["tracked", "error"]);
    expect(results[1]?.outcome.value).toMatchObject({ field: "events[1].amount", reason: "AMOUNT_ZERO" });
    expect(await consumed(customerId, "api_calls")).toBe(2);
  });
});

describe("GetMetrics at a past instant", () => {
  it("answers the period that held it, and refuses an instant in the future or out of range", async () => {
    const customerId = "cust-metrics-at";
    const then = Date.now() - 30 * DAY_MS;
    await metering.track({ customerId, featureKey: "api_calls", amount: 3, idempotencyKey: "then", timestamp: timestampFromMs(then) }, { headers: auth });
    const { metrics } = await metering.getMetrics({ customerId, featureKey: "api_calls", at: timestampFromMs(then) }, { headers: auth });
    expect(metrics[0]).toMatchObject({ featureKey: "api_calls", consumed: 3 });
    expect(Number(metrics[0]!.periodStart!.seconds) * 1000).toBeLessThanOrEqual(then);
    expect(Number(metrics[0]!.periodEnd!.seconds) * 1000).toBeGreaterThan(then);
    const future = await errorOf(() => metering.getMetrics({ customerId, at: timestampFromMs(Date.now() + 3_600_000) }, { headers: auth }));
    expect(future.code).toBe(Code.InvalidArgument);
    expect(detailOf(future)).toMatchObject({ field: "at", reason: "AT_IN_FUTURE" });
    // Binary: JSON could not even carry it.
    const badNanos = await errorOf(() => createClient(MeteringService, binary).getMetrics({ customerId, at: { seconds: 1n, nanos: -1 } }, { headers: auth }));
    expect(detailOf(badNanos)).toMatchObject({ field: "at.nanos", reason: "TIMESTAMP_INVALID" });
  });
});

describe("Connect JSON refuses keys that name no field", () => {
  it.each([
    { name: "a kebab-case idempotency key", body: { customerId: "cust-json-keys", featureKey: "api_calls", amount: 1, "idempotency-key": "k1" }, key: "idempotency-key" },
    { name: "a key with a trailing space", body: { customerId: "cust-json-keys", featureKey: "api_calls", amount: 1, "idempotencyKey ": "k1" }, key: "idempotencyKey " },
  ])("Track with $name: INVALID_ARGUMENT naming it, nothing counted", async ({ body, key }) => {
    const res = await fetch(`http://127.0.0.1:${server.httpPort}/meterd.v1.MeteringService/Track`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/json" },
      body: JSON.stringify(body),
    });
    expect(res.status).toBe(400);
    const error = errorFromJson(await res.json(), undefined, new ConnectError("no error in the body"));
    expect(error.code).toBe(Code.InvalidArgument);
    expect(error.rawMessage).toBe(`${key} is not a field of meterd.v1.TrackRequest (JSON names are lowerCamelCase or the proto's own)`);
    expect(detailOf(error)).toMatchObject({ field: key, reason: "UNKNOWN_FIELD" });
    expect(await allConsumed("cust-json-keys")).toEqual([0, 0, 0, 0]);
  });

  it("TrackBatch with a misspelt key in one event: the whole call is refused, nothing counted", async () => {
    const res = await fetch(`http://127.0.0.1:${server.httpPort}/meterd.v1.MeteringService/TrackBatch`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/json" },
      body: JSON.stringify({
        events: [
          { customerId: "cust-json-keys-batch", featureKey: "api_calls", amount: 1, idempotencyKey: "k1" },
          { customerId: "cust-json-keys-batch", featureKey: "api_calls", amount: 1, idempotency_Key: "k2" },
        ],
      }),
    });
    expect(res.status).toBe(400);
    const error = errorFromJson(await res.json(), undefined, new ConnectError("no error in the body"));
    expect(detailOf(error)).toMatchObject({ field: "idempotency_Key", reason: "UNKNOWN_FIELD" });
    expect(await allConsumed("cust-json-keys-batch")).toEqual([0, 0, 0, 0]);
  });

  it("the proto's own field names are still accepted", async () => {
    const res = await fetch(`http://127.0.0.1:${server.httpPort}/meterd.v1.MeteringService/Track`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/json" },
      body: JSON.stringify({ customer_id: "cust-json-proto-names", feature_key: "api_calls", idempotency_key: "k1" }),
    });
    expect(res.status).toBe(200);
    expect(await consumed("cust-json-proto-names", "api_calls")).toBe(1);
  });
});

describe("Track, more refusals", () => {
  it('accepts the protobuf JSON string "NaN" for a double, and refuses it as not finite', async () => {
    const res = await fetch(`http://127.0.0.1:${server.httpPort}/meterd.v1.MeteringService/Track`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/json" },
      body: JSON.stringify({ customerId: "cust-nan-string", featureKey: "api_calls", amount: "NaN" }),
    });
    expect(res.status).toBe(400);
    const body = (await res.json()) as { code: string; message: string };
    expect(body).toMatchObject({ code: "invalid_argument", message: "amount must be a finite number" });
    expect(await allConsumed("cust-nan-string")).toEqual([0, 0, 0, 0]);
  });

  it("ALREADY_EXISTS for the same key with a different payload; the first event stands", async () => {
    const customerId = "cust-key-reuse";
    const first = await metering.track({ customerId, featureKey: "api_calls", amount: 1, idempotencyKey: "reuse-1" }, { headers: auth });
    expect(first.decision).toBe(Decision.ALLOWED);
    const changes: Array<[string, Partial<TrackInit>]> = [
      ["amount", { amount: 2 }],
      ["feature", { featureKey: "seats" }],
      ["properties", { properties: { source: "other" } }],
      ["timestamp", { timestamp: timestampFromMs(Date.now() - 60_000) }],
    ];
    for (const [what, changed] of changes) {
      const err = await errorOf(() =>
        metering.track({ customerId, featureKey: "api_calls", amount: 1, idempotencyKey: "reuse-1", ...changed }, { headers: auth }),
      );
      expect(err.code, what).toBe(Code.AlreadyExists);
      expect(detailOf(err)).toMatchObject({ field: "idempotency_key", reason: "IDEMPOTENCY_KEY_REUSED" });
    }
    // The key is scoped to the customer: another customer may use it.
    const other = await metering.track({ customerId: "cust-key-reuse-2", featureKey: "api_calls", amount: 2, idempotencyKey: "reuse-1" }, { headers: auth });
    expect(other).toMatchObject({ decision: Decision.ALLOWED, duplicate: false });
    expect(await allConsumed(customerId)).toEqual([1, 0, 0, 0]);
  });

  it.each([
    { listener: "Connect listener (Connect JSON)", customerId: "cust-big-connect", transport: () => json },
    { listener: "grpc-js listener (gRPC)", customerId: "cust-big-grpc", transport: grpcJsTransport },
  ])("RESOURCE_EXHAUSTED for a message over 4 MiB on the $listener; nothing counted", async ({ customerId, transport }) => {
    const client = createClient(MeteringService, transport());
    const big = "x".repeat(4 * 1024 * 1024 + 1);
    const err = await errorOf(() => client.track({ customerId, featureKey: "api_calls", amount: 1, properties: { big } }, { headers: auth }));
    expect(err.code).toBe(Code.ResourceExhausted);
    expect(await allConsumed(customerId)).toEqual([0, 0, 0, 0]);
  });
});

describe("concurrency and periods", () => {
  it("40 concurrent Tracks against a hard limit of 10 seats: exactly 10 are ALLOWED", async () => {
    const customerId = "cust-seats-race";
    const results = await Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        metering.track({ customerId, featureKey: "seats", amount: 1, idempotencyKey: `race-${i}` }, { headers: auth }),
      ),
    );
    expect(results.filter((r) => r.decision === Decision.ALLOWED)).toHaveLength(10);
    expect(results.filter((r) => r.decision === Decision.DENIED && r.denyReason === DenyReason.LIMIT_REACHED)).toHaveLength(30);
    expect(await consumed(customerId, "seats")).toBe(10);
  });

  it("20 concurrent Tracks with one key: one event, counted once, every answer with its id", async () => {
    const customerId = "cust-same-key";
    const results = await Promise.all(
      Array.from({ length: 20 }, () =>
        metering.track({ customerId, featureKey: "api_calls", amount: 3, idempotencyKey: "once" }, { headers: auth }),
      ),
    );
    expect(new Set(results.map((r) => r.eventId)).size).toBe(1);
    expect(results.filter((r) => !r.duplicate)).toHaveLength(1);
    expect(results.every((r) => r.decision === Decision.ALLOWED)).toBe(true);
    expect(await consumed(customerId, "api_calls")).toBe(3);
  });

  it("one key twice in a batch: the second is a duplicate; with another payload, ALREADY_EXISTS for that event only", async () => {
    const customerId = "cust-batch-key";
    const { results } = await metering.trackBatch(
      {
        events: [
          { customerId, featureKey: "api_calls", amount: 1, idempotencyKey: "x" },
          { customerId, featureKey: "api_calls", amount: 1, idempotencyKey: "x" },
          { customerId, featureKey: "api_calls", amount: 2, idempotencyKey: "x" },
        ],
      },
      { headers: auth },
    );
    const [a, b, c] = results.map((r) => r.outcome);
    expect(a?.case === "tracked" && b?.case === "tracked").toBe(true);
    if (a?.case !== "tracked" || b?.case !== "tracked") return;
    expect([a.value.duplicate, b.value.duplicate].sort()).toEqual([false, true]);
    expect(b.value.eventId).toBe(a.value.eventId);
    expect(c?.case === "error" && { code: c.value.code, field: c.value.field }).toEqual({
      code: "already_exists",
      field: "events[2].idempotency_key",
    });
    expect(await consumed(customerId, "api_calls")).toBe(1);
  });

  it("an event backdated into the previous month counts in that month's period, not in the current one", async () => {
    const customerId = "cust-backdated";
    const month = currentMonth();
    const previousStart = Date.UTC(new Date(month.start).getUTCFullYear(), new Date(month.start).getUTCMonth() - 1, 1);
    const res = await metering.track(
      { customerId, featureKey: "api_calls", amount: 3, idempotencyKey: "late", timestamp: timestampFromMs(month.start - 3_600_000) },
      { headers: auth },
    );
    expect(res).toMatchObject({ decision: Decision.ALLOWED, usage: { consumed: 3 } });
    expect(ms(res.usage?.periodStart)).toBe(previousStart);
    expect(ms(res.usage?.periodEnd)).toBe(month.start);
    expect(await consumed(customerId, "api_calls")).toBe(0);
  });

  it("WatchUsage sees a catalogue change: an override lowers the limit it shows", async () => {
    const customerId = "cust-watch-override";
    const abort = new AbortController();
    const limits: number[] = [];
    const watching = (async () => {
      try {
        for await (const res of metering.watchUsage({ customerId, featureKey: "api_calls" }, { headers: auth, signal: abort.signal })) {
          limits.push(res.metrics[0]?.limit ?? -1);
          if (limits.length === 1) {
            await catalog.upsertCustomer(
              { customer: { id: customerId, overrides: [{ featureKey: "api_calls", limit: 50, limitKind: LimitKind.HARD }] } },
              { headers: auth },
            );
          } else {
            abort.abort();
          }
        }
      } catch (err) {
        if (ConnectError.from(err).code !== Code.Canceled) throw err;
      }
    })();
    await watching;
    expect(limits).toEqual([1000, 50]);
  });
});

describe("hard limits and SetUsage", () => {
  it("SetUsage seats to the limit of 10, then Track +1 is DENIED (LIMIT_REACHED) and counts nothing", async () => {
    const customerId = "cust-seats";
    const set = await metering.setUsage({ customerId, featureKey: "seats", used: 10, idempotencyKey: "set-10" }, { headers: auth });
    expect(set).toMatchObject({ decision: Decision.ALLOWED, delta: 10, duplicate: false });
    expect(set.usage).toMatchObject({ featureKey: "seats", consumed: 10, limit: 10, remaining: 0, limitKind: LimitKind.HARD });
    expect(set.usage?.periodStart).toBeUndefined();

    const denied = await metering.track({ customerId, featureKey: "seats", amount: 1, idempotencyKey: "seat-11" }, { headers: auth });
    expect(denied).toMatchObject({ decision: Decision.DENIED, denyReason: DenyReason.LIMIT_REACHED, duplicate: false });
    expect(denied.usage).toMatchObject({ consumed: 10, remaining: 0 });
    expect(await consumed(customerId, "seats")).toBe(10);

    // SetUsage above the hard limit is denied too.
    const over = await metering.setUsage({ customerId, featureKey: "seats", used: 11, idempotencyKey: "set-11" }, { headers: auth });
    expect(over).toMatchObject({ decision: Decision.DENIED, denyReason: DenyReason.LIMIT_REACHED });
    expect(await consumed(customerId, "seats")).toBe(10);
  });

  it("SetUsage with a mismatching expected_used is FAILED_PRECONDITION; a matching one applies", async () => {
    const customerId = "cust-seats-cas";
    await metering.setUsage({ customerId, featureKey: "seats", used: 4, idempotencyKey: "cas-1" }, { headers: auth });
    const err = await errorOf(() =>
      metering.setUsage({ customerId, featureKey: "seats", used: 2, expectedUsed: 3, idempotencyKey: "cas-2" }, { headers: auth }),
    );
    expect(err.code).toBe(Code.FailedPrecondition);
    expect(detailOf(err)).toMatchObject({ field: "expected_used", reason: "EXPECTED_USED_MISMATCH" });
    expect(err.rawMessage).toMatch(/4/);
    expect(await consumed(customerId, "seats")).toBe(4);

    const ok = await metering.setUsage({ customerId, featureKey: "seats", used: 2, expectedUsed: 4, idempotencyKey: "cas-3" }, { headers: auth });
    expect(ok).toMatchObject({ decision: Decision.ALLOWED, delta: -2 });
    expect(await consumed(customerId, "seats")).toBe(2);
    // expected_used 0 is a real comparison, not "unset".
    const zero = await errorOf(() =>
      metering.setUsage({ customerId, featureKey: "seats", used: 5, expectedUsed: 0, idempotencyKey: "cas-4" }, { headers: auth }),
    );
    expect(zero.code).toBe(Code.FailedPrecondition);
    expect(await consumed(customerId, "seats")).toBe(2);
  });
});

describe("Check", () => {
  it("writes nothing, and amount 0 means 1", async () => {
    const customerId = "cust-check";
    await metering.setUsage({ customerId, featureKey: "api_calls", used: 999, idempotencyKey: "chk-1" }, { headers: auth });

    const one = await metering.check({ customerId, featureKey: "api_calls", amount: 0 }, { headers: auth });
    expect(one).toMatchObject({ allowed: true, denyReason: DenyReason.UNSPECIFIED });
    expect(one.usage).toMatchObject({ consumed: 999, remaining: 1, limit: 1000 });
    const two = await metering.check({ customerId, featureKey: "api_calls", amount: 2 }, { headers: auth });
    expect(two).toMatchObject({ allowed: false, denyReason: DenyReason.LIMIT_REACHED });
    for (let i = 0; i < 3; i++) await metering.check({ customerId, featureKey: "api_calls", amount: 1 }, { headers: auth });
    expect(await consumed(customerId, "api_calls")).toBe(999);

    // At the limit, amount 0 is refused: it asks about 1 more, not about nothing.
    await metering.setUsage({ customerId, featureKey: "api_calls", used: 1000, expectedUsed: 999, idempotencyKey: "chk-2" }, { headers: auth });
    const atLimit = await metering.check({ customerId, featureKey: "api_calls", amount: 0 }, { headers: auth });
    expect(atLimit).toMatchObject({ allowed: false, denyReason: DenyReason.LIMIT_REACHED });
    expect(await consumed(customerId, "api_calls")).toBe(1000);

    const bad = await errorOf(() => metering.check({ customerId, featureKey: "api_calls", amount: -1 }, { headers: auth }));
    expect(bad.code).toBe(Code.InvalidArgument);
    expect(detailOf(bad)).toMatchObject({ field: "amount" });
  });
});

describe("credits through the CatalogService", () => {
  it("a top-up of 1 credit (once, however often retried) pays for 500 ai_tokens, then the wallet is empty", async () => {
    const customerId = "cust-credits";
    const broke = await metering.track({ customerId, featureKey: "ai_tokens", amount: 1, idempotencyKey: "t-0" }, { headers: auth });
    expect(broke).toMatchObject({ decision: Decision.DENIED, denyReason: DenyReason.INSUFFICIENT_CREDITS });

    const top = await catalog.topUpCredits({ customerId, amount: 1, idempotencyKey: "top-1", description: "welcome" }, { headers: auth });
    expect(top).toMatchObject({ duplicate: false, balance: 1 });
    const retry = await catalog.topUpCredits({ customerId, amount: 1, idempotencyKey: "top-1", description: "welcome" }, { headers: auth });
    expect(retry).toMatchObject({ entryId: top.entryId, duplicate: true, balance: 1 });

    const spend = await metering.track({ customerId, featureKey: "ai_tokens", amount: 500, idempotencyKey: "t-1" }, { headers: auth });
    expect(spend).toMatchObject({ decision: Decision.ALLOWED, duplicate: false });
    expect(spend.usage).toMatchObject({ featureKey: "ai_tokens", consumed: 500, unlimited: true, creditsCharged: 1, creditBalance: 0 });

    const more = await metering.track({ customerId, featureKey: "ai_tokens", amount: 1, idempotencyKey: "t-2" }, { headers: auth });
    expect(more).toMatchObject({ decision: Decision.DENIED, denyReason: DenyReason.INSUFFICIENT_CREDITS });
    expect(more.usage).toMatchObject({ consumed: 500, creditBalance: 0 });

    const wallet = await catalog.getWallet({ customerId }, { headers: auth });
    expect(wallet.balance).toBe(0);
    expect(wallet.entries.map((e) => ({ kind: e.kind, amount: e.amount, featureKey: e.featureKey, description: e.description }))).toEqual([
      { kind: "usage", amount: -1, featureKey: "ai_tokens", description: "" },
      { kind: "top_up", amount: 1, featureKey: "", description: "welcome" },
    ]);
    expect(wallet.entries[0]?.id).toBe(spend.eventId);
    expect(wallet.entries[1]?.id).toBe(top.entryId);

    const { metrics } = await metering.getMetrics({ customerId, featureKey: "ai_tokens" }, { headers: auth });
    expect(metrics[0]).toMatchObject({ consumed: 500, creditBalance: 0, unlimited: true });
  });

  it("refuses a top-up without a key or with a non-positive amount", async () => {
    const noKey = await errorOf(() => catalog.topUpCredits({ customerId: "cust-credits-bad", amount: 1 }, { headers: auth }));
    expect(noKey.code).toBe(Code.InvalidArgument);
    expect(detailOf(noKey)).toMatchObject({ field: "idempotency_key", reason: "IDEMPOTENCY_KEY_REQUIRED" });
    const zero = await errorOf(() => catalog.topUpCredits({ customerId: "cust-credits-bad", amount: 0, idempotencyKey: "z" }, { headers: auth }));
    expect(zero.code).toBe(Code.InvalidArgument);
    expect(detailOf(zero)).toMatchObject({ field: "amount" });
    expect((await catalog.getWallet({ customerId: "cust-credits-bad" }, { headers: auth })).balance).toBe(0);
  });
});

describe("CatalogService", () => {
  it('a plan "pro" with 5 api_calls, assigned to a customer: the 6th Track is denied', async () => {
    const plan = await catalog.upsertPlan(
      { plan: { key: "pro", title: "Pro", entitlements: [{ featureKey: "api_calls", limit: 5, limitKind: LimitKind.HARD }] } },
      { headers: auth },
    );
    expect(plan.plan?.entitlements).toHaveLength(1);
    const customerId = "cust-pro";
    const assigned = await catalog.upsertCustomer({ customer: { id: customerId, planKey: "pro" } }, { headers: auth });
    expect(assigned.customer).toMatchObject({ id: customerId, planKey: "pro" });
    expect((await catalog.getCustomer({ customerId }, { headers: auth })).customer?.planKey).toBe("pro");

    const decisions: Decision[] = [];
    for (let i = 1; i <= 6; i++) {
      const res = await metering.track({ customerId, featureKey: "api_calls", amount: 1, idempotencyKey: `pro-${i}` }, { headers: auth });
      decisions.push(res.decision);
      if (i === 6) expect(res).toMatchObject({ denyReason: DenyReason.LIMIT_REACHED, usage: { consumed: 5, limit: 5, remaining: 0 } });
    }
    expect(decisions).toEqual([...Array(5).fill(Decision.ALLOWED), Decision.DENIED]);

    const { metrics } = await metering.getMetrics({ customerId }, { headers: auth });
    expect(metrics.map((m) => [m.featureKey, m.consumed, m.limit])).toEqual([["api_calls", 5, 5]]);
    // Seats are not in "pro".
    const seats = await metering.track({ customerId, featureKey: "seats", amount: 1 }, { headers: auth });
    expect(seats).toMatchObject({ decision: Decision.DENIED, denyReason: DenyReason.NOT_ENTITLED });
  });

  it("UpsertFeature with a bad key is INVALID_ARGUMENT naming feature.key; a good one is listed", async () => {
    const err = await errorOf(() =>
      catalog.upsertFeature(
        { feature: { key: "Bad-Key", kind: FeatureKind.CONSUMABLE, resetInterval: ResetInterval.MONTH } },
        { headers: auth },
      ),
    );
    expect(err.code).toBe(Code.InvalidArgument);
    expect(detailOf(err)).toMatchObject({ field: "feature.key", reason: "BAD_FEATURE_KEY" });
    expect(err.rawMessage).toMatch(/^feature\.key /);
    const listed = await catalog.listFeatures({}, { headers: auth });
    expect(listed.features.map((f) => f.key)).not.toContain("Bad-Key");

    await catalog.upsertFeature(
      { feature: { key: "exports", kind: FeatureKind.CONSUMABLE, resetInterval: ResetInterval.DAY, precision: 0 } },
      { headers: auth },
    );
    expect((await catalog.listFeatures({}, { headers: auth })).features.map((f) => f.key)).toContain("exports");
  });

  it("GetCustomer of an unknown customer shows the default plan", async () => {
    const res = await catalog.getCustomer({ customerId: "cust-never-seen" }, { headers: auth });
    expect(res.customer).toMatchObject({ id: "cust-never-seen", planKey: "", overrides: [] });
    expect(res.customer?.billingAnchor).toBeUndefined();
    const { metrics } = await metering.getMetrics({ customerId: "cust-never-seen" }, { headers: auth });
    expect(metrics.map((m) => [m.featureKey, m.limit, m.unlimited])).toEqual([
      ["api_calls", 1000, false],
      ["storage_gb", 100, false],
      ["seats", 10, false],
      ["ai_tokens", 0, true],
    ]);
  });
});

describe.each([
  { listener: "Connect listener", transport: () => json },
  { listener: "grpc-js listener", transport: grpcJsTransport },
])("credentials on the $listener", ({ transport }) => {
  it("refuses a wrong or missing key with UNAUTHENTICATED, on both services; counts nothing", async () => {
    const t = transport();
    const m = createClient(MeteringService, t);
    const c = createClient(CatalogService, t);
    const customerId = "cust-auth";
    const wrong = await errorOf(() => m.track({ customerId, featureKey: "api_calls", amount: 1 }, { headers: { authorization: "Bearer sk_wrong" } }));
    expect(wrong.code).toBe(Code.Unauthenticated);
    const missing = await errorOf(() => m.track({ customerId, featureKey: "api_calls", amount: 1 }));
    expect(missing.code).toBe(Code.Unauthenticated);
    const catalogWrong = await errorOf(() => c.topUpCredits({ customerId, amount: 5, idempotencyKey: "x" }, { headers: { "x-api-key": "sk_wrong" } }));
    expect(catalogWrong.code).toBe(Code.Unauthenticated);
    expect(await allConsumed(customerId)).toEqual([0, 0, 0, 0]);
    expect((await catalog.getWallet({ customerId }, { headers: auth })).balance).toBe(0);
  });

  it("serves health Check without a key", async () => {
    const health = createClient(Health, transport());
    expect((await health.check({ service: "" })).status).toBe(ServingStatus.SERVING);
    expect((await health.check({ service: MeteringService.typeName })).status).toBe(ServingStatus.SERVING);
    expect((await health.check({ service: CatalogService.typeName })).status).toBe(ServingStatus.SERVING);
  });
});

describe("corrections", () => {
  // Regression: a correction far below zero once made `remaining` overflow, answered INTERNAL after the
  // commit and left the customer's metrics unreadable. Totals are now never negative.
  it("a correction that would take a total below zero is refused with OUT_OF_RANGE, and the customer's metrics stay readable", async () => {
    const customerId = "cust-deep-correction";
    const amount = -(Number.MAX_SAFE_INTEGER - 10);
    const outcome = await metering
      .track({ customerId, featureKey: "api_calls", amount, idempotencyKey: "deep-1" }, { headers: auth })
      .then(
        (res) => ({ code: null, decision: res.decision }),
        (err: unknown) => ({ code: ConnectError.from(err).code, decision: null }),
      );
    expect(outcome.code).toBe(Code.OutOfRange);
    const { metrics } = await metering.getMetrics({ customerId, featureKey: "api_calls" }, { headers: auth });
    expect(metrics).toHaveLength(1);
    const check = await metering.check({ customerId, featureKey: "api_calls", amount: 1 }, { headers: auth });
    expect(check.usage?.featureKey).toBe("api_calls");
  });
});
