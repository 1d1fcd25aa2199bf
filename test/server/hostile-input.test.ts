// Given the real meterd server (the Meter on PGlite, the example catalogue), when callers send what
// the ledger can never store or what is not a valid message, then:
// - long client timeouts on the Connect port do not end streams at once: WatchUsage with
//   connect-timeout-ms 9999999999 (or 11+ digits), or grpc-timeout 8760H, still delivers the next change;
// - a U+0000 in a property key or value, and an unpaired surrogate, are INVALID_ARGUMENT naming the
//   field, on Track, SetUsage, TopUpCredits and per event in batches and streams, and nothing is written;
// - a Timestamp with nanos outside 0..999,999,999 is INVALID_ARGUMENT on both listeners, per event in
//   batches, and on a customer's billing anchor, with no ledger row.
import { create, toBinary } from "@bufbuild/protobuf";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError, createClient, type Client, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { CatalogService, FeatureKind, ResetInterval } from "../../gen/meterd/v1/catalog_pb.js";
import { MeteringService, TrackRequestSchema, type TrackResult } from "../../gen/meterd/v1/metering_pb.js";
import { Decision, ErrorDetailSchema } from "../../gen/meterd/v1/usage_pb.js";
import type { Server } from "../../src/server.js";
import { h1Request, outcomeOf } from "../support/raw-http.js";
import { auth, errorOf, makeDataDir, removeDir, Sessions, startMeterd } from "./harness.js";

let server: Server;
let dataDir: string;
const sessions = new Sessions();
let connectUrl: string;
/** Connect binary over HTTP/2 on the Connect listener: carries what JSON cannot (nanos -1). */
let connect: Client<typeof MeteringService>;
/** gRPC on the grpc-js listener. */
let grpc: Client<typeof MeteringService>;
let catalog: Client<typeof CatalogService>;

beforeAll(async () => {
  dataDir = await makeDataDir();
  server = await startMeterd(dataDir);
  connectUrl = `http://127.0.0.1:${server.httpPort}`;
  const grpcUrl = `http://127.0.0.1:${server.grpcPort}`;
  connect = createClient(
    MeteringService,
    createConnectTransport({ baseUrl: connectUrl, httpVersion: "2", useBinaryFormat: true, sessionManager: sessions.h2(connectUrl) }),
  );
  grpc = createClient(MeteringService, createGrpcTransport({ baseUrl: grpcUrl, sessionManager: sessions.h2(grpcUrl) }));
  catalog = createClient(CatalogService, createConnectTransport({ baseUrl: connectUrl, httpVersion: "1.1" }));
});

afterAll(async () => {
  sessions.abortAll();
  await server?.close(1000);
  await removeDir(dataDir);
});

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Resolves like `promise`, or with "timeout" after `ms`. */
function within<T>(promise: Promise<T>, ms: number): Promise<T | "timeout"> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<"timeout">((resolve) => (timer = setTimeout(() => resolve("timeout"), ms)));
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

function detailOf(err: ConnectError): { reason: string; field: string } | undefined {
  const [detail] = err.findDetails(ErrorDetailSchema);
  return detail && { reason: detail.reason, field: detail.field };
}

async function ledgerRows(customerId: string): Promise<number> {
  return (await server.app.ledger.listEvents(customerId)).length;
}

type BatchResults = TrackResult[];

const nowSeconds = () => BigInt(Math.floor(Date.now() / 1000));

describe("long client timeouts on the Connect listener", () => {
  const cases: Array<{ name: string; transport: () => Transport; header: Record<string, string> }> = [
    { name: "Connect, connect-timeout-ms 9999999999", transport: () => connectH2(), header: { "connect-timeout-ms": "9999999999" } },
    { name: "Connect, connect-timeout-ms 2147483648", transport: () => connectH2(), header: { "connect-timeout-ms": "2147483648" } },
    { name: "Connect, connect-timeout-ms of 11 digits", transport: () => connectH2(), header: { "connect-timeout-ms": "99999999999" } },
    { name: "Connect, connect-timeout-ms 2^40", transport: () => connectH2(), header: { "connect-timeout-ms": String(2 ** 40) } },
    {
      name: "gRPC, grpc-timeout 8760H (a year)",
      transport: () => createGrpcTransport({ baseUrl: connectUrl, sessionManager: sessions.h2(connectUrl) }),
      header: { "grpc-timeout": "8760H" },
    },
    {
      name: "gRPC, grpc-timeout 99999999H",
      transport: () => createGrpcTransport({ baseUrl: connectUrl, sessionManager: sessions.h2(connectUrl) }),
      header: { "grpc-timeout": "99999999H" },
    },
    {
      name: "gRPC-web over HTTP/1.1, grpc-timeout 8760H",
      transport: () => createGrpcWebTransport({ baseUrl: connectUrl, httpVersion: "1.1" }),
      header: { "grpc-timeout": "8760H" },
    },
  ];
  const connectH2 = () => createConnectTransport({ baseUrl: connectUrl, httpVersion: "2", sessionManager: sessions.h2(connectUrl) });

  it.each(cases)("WatchUsage with $name delivers the change after the first message", async ({ name, transport, header }) => {
    const customerId = `cus_watch_${name.replace(/\W+/g, "_")}`;
    const watcher = createClient(MeteringService, transport());
    const abort = new AbortController();
    // The timeout goes in as a raw header: a client's own deadline timer would overflow the same way.
    const stream = watcher.watchUsage({ customerId, featureKey: "api_calls" }, { headers: { ...auth, ...header }, signal: abort.signal });
    const it = stream[Symbol.asyncIterator]();
    try {
      const first = await within(it.next(), 10_000);
      expect(first).not.toBe("timeout");
      expect(first !== "timeout" && first.done !== true ? first.value.metrics[0]?.consumed : "ended").toBe(0);
      // Past the 1 ms an overflowing timer would allow.
      await sleep(200);
      const tracked = await connect.track({ customerId, featureKey: "api_calls", amount: 3, idempotencyKey: "w-1" }, { headers: auth });
      expect(tracked.decision).toBe(Decision.ALLOWED);
      const second = await within(it.next(), 10_000);
      expect(second).not.toBe("timeout");
      expect(second !== "timeout" && second.done !== true ? second.value.metrics[0]?.consumed : "ended").toBe(3);
    } finally {
      abort.abort();
      await it.return?.().catch(() => {});
    }
  });
});

describe("text the ledger can never store", () => {
  const nul: Array<{ name: string; properties: Record<string, string>; field: string }> = [
    { name: "a NUL in a property key", properties: { "region\u0000": "eu" }, field: 'properties["region\\u0000"]' },
    { name: "a NUL in a property value", properties: { region: "e\u0000u" }, field: 'properties["region"]' },
  ];

  it.each(nul)("Track with $name is INVALID_ARGUMENT on both listeners, and nothing is written", async ({ name, properties, field }) => {
    for (const [listener, client] of [["connect", connect], ["grpc", grpc]] as const) {
      const customerId = `cus_nul_${listener}_${name.replace(/\W+/g, "_")}`;
      const err = await errorOf(() =>
        client.track({ customerId, featureKey: "api_calls", amount: 1, idempotencyKey: "nul-1", properties }, { headers: auth }),
      );
      expect({ listener, code: Code[err.code] }).toEqual({ listener, code: "InvalidArgument" });
      expect(detailOf(err)?.field).toBe(field);
      expect(err.rawMessage.startsWith(`${field} `)).toBe(true);
      expect(await ledgerRows(customerId)).toBe(0);
    }
  });

  it("SetUsage with a NUL in a property value is INVALID_ARGUMENT, and nothing is written", async () => {
    const customerId = "cus_nul_set";
    const err = await errorOf(() =>
      connect.setUsage({ customerId, featureKey: "seats", used: 2, idempotencyKey: "nul-set", properties: { by: "a\u0000" } }, { headers: auth }),
    );
    expect(err.code).toBe(Code.InvalidArgument);
    expect(detailOf(err)?.field).toBe('properties["by"]');
    expect(await ledgerRows(customerId)).toBe(0);
  });

  it("TopUpCredits with a NUL in the description is INVALID_ARGUMENT, and the wallet is untouched", async () => {
    const customerId = "cus_nul_topup";
    const err = await errorOf(() =>
      catalog.topUpCredits({ customerId, amount: 10, idempotencyKey: "nul-topup", description: "promo\u0000" }, { headers: auth }),
    );
    expect(err.code).toBe(Code.InvalidArgument);
    expect(detailOf(err)?.field).toBe("description");
    expect(await ledgerRows(customerId)).toBe(0);
  });

  it("a catalogue title with a NUL is INVALID_ARGUMENT, not a failure of the catalogue store", async () => {
    const err = await errorOf(() =>
      catalog.upsertFeature(
        { feature: { key: "nul_title", title: "Calls\u0000", kind: FeatureKind.CONSUMABLE, resetInterval: ResetInterval.MONTH } },
        { headers: auth },
      ),
    );
    expect(err.code).toBe(Code.InvalidArgument);
    expect(detailOf(err)?.field).toBe("feature.title");
  });

  it("an unpaired surrogate is INVALID_ARGUMENT whether sent as a JSON escape or as CESU-8 bytes, and nothing is written", async () => {
    const customerId = "cus_surrogate";
    const json = await h1Request(server.httpPort, {
      path: "/meterd.v1.MeteringService/Track",
      headers: { ...auth, "content-type": "application/json" },
      body: Buffer.from(`{"customerId":"${customerId}","featureKey":"api_calls","amount":1,"properties":{"k":"v\\ud800"}}`),
    });
    expect(outcomeOf("connect", json)).toMatchObject({ code: "invalid_argument", httpStatus: 400 });

    // The same request in binary, its property value holding ED A0 80 (U+D800 in CESU-8, not UTF-8).
    const valid = Buffer.from(toBinary(TrackRequestSchema, create(TrackRequestSchema, { customerId, featureKey: "api_calls", amount: 1, properties: { k: "v\u00e9\u00e9" } })));
    const at = valid.indexOf(Buffer.from("v\u00e9\u00e9", "utf8"));
    const binary = Buffer.from(valid);
    binary.set([0x76, 0xed, 0xa0, 0x80, 0x41], at); // same length as "v\u00e9\u00e9" in UTF-8 (5 bytes)
    const answer = await h1Request(server.httpPort, {
      path: "/meterd.v1.MeteringService/Track",
      headers: { ...auth, "content-type": "application/proto" },
      body: binary,
    });
    expect(outcomeOf("connect", answer)).toMatchObject({ code: "invalid_argument", httpStatus: 400 });
    expect(await ledgerRows(customerId)).toBe(0);
  });
});

describe("Timestamps that are not Timestamps", () => {
  it.each([
    { nanos: -1, name: "nanos -1" },
    { nanos: 1_000_000_000, name: "nanos 1,000,000,000" },
  ])("Track with $name is INVALID_ARGUMENT on both listeners, with no ledger row", async ({ nanos }) => {
    for (const [listener, client] of [["connect", connect], ["grpc", grpc]] as const) {
      const customerId = `cus_nanos_${listener}_${nanos < 0 ? "neg" : "big"}`;
      const err = await errorOf(() =>
        client.track(
          { customerId, featureKey: "api_calls", amount: 1, idempotencyKey: "ts-1", timestamp: { seconds: nowSeconds(), nanos } },
          { headers: auth },
        ),
      );
      expect({ listener, code: Code[err.code], message: err.rawMessage }).toEqual({
        listener,
        code: "InvalidArgument",
        message: "timestamp.nanos must be 0 to 999,999,999",
      });
      expect(await ledgerRows(customerId)).toBe(0);
    }
  });

  it("a customer's billing anchor with nanos 1,000,000,000 is INVALID_ARGUMENT", async () => {
    const err = await errorOf(() =>
      catalog.upsertCustomer(
        { customer: { id: "cus_anchor", billingAnchor: { seconds: nowSeconds(), nanos: 1_000_000_000 } } },
        { headers: auth },
      ),
    );
    expect(err.code).toBe(Code.InvalidArgument);
    expect(detailOf(err)?.field).toBe("customer.billing_anchor.nanos");
  });
});

describe("per event in batches and streams", () => {
  const customerId = "cus_batch_hostile";
  const event = (key: string, extra: object = {}) => ({ customerId, featureKey: "api_calls", amount: 1, idempotencyKey: key, ...extra });
  const batch = [
    event("ok-1"),
    event("nul-key", { properties: { "a\u0000": "x" } }),
    event("nul-value", { properties: { a: "x\u0000" } }),
    event("nanos-neg", { timestamp: { seconds: nowSeconds(), nanos: -1 } }),
    event("nanos-big", { timestamp: { seconds: nowSeconds(), nanos: 1_000_000_000 } }),
    event("ok-2"),
  ];
  const expectedErrors = [
    { code: "invalid_argument", field: 'events[1].properties["a\\u0000"]' },
    { code: "invalid_argument", field: 'events[2].properties["a"]' },
    { code: "invalid_argument", field: "events[3].timestamp.nanos" },
    { code: "invalid_argument", field: "events[4].timestamp.nanos" },
  ];

  function check(results: BatchResults): void {
    expect(results.map((r) => r.outcome.case)).toEqual(["tracked", "error", "error", "error", "error", "tracked"]);
    const errors = results.flatMap((r) => (r.outcome.case === "error" ? [{ code: r.outcome.value.code, field: r.outcome.value.field }] : []));
    expect(errors).toEqual(expectedErrors);
    for (const r of results) if (r.outcome.case === "tracked") expect(r.outcome.value.decision).toBe(Decision.ALLOWED);
  }

  it("TrackBatch answers the invalid events alone; the ledger holds exactly the valid ones", async () => {
    for (const client of [connect, grpc]) {
      const { results } = await client.trackBatch({ events: batch }, { headers: auth });
      check(results);
    }
    const rows = await server.app.ledger.listEvents(customerId);
    expect(rows.map((r) => r.idempotencyKey).sort()).toEqual(["ok-1", "ok-2"]);
  });

  it("TrackStream answers the same per event, on both listeners", async () => {
    for (const [listener, client] of [["connect", connect], ["grpc", grpc]] as const) {
      const events = batch.map((e) => ({ ...e, customerId: `${customerId}_stream_${listener}` }));
      async function* requests() {
        yield { events };
      }
      const responses = [];
      for await (const res of client.trackStream(requests(), { headers: auth })) responses.push(res);
      expect(responses).toHaveLength(1);
      check(responses[0]!.results);
      const rows = await server.app.ledger.listEvents(`${customerId}_stream_${listener}`);
      expect(rows.map((r) => r.idempotencyKey).sort()).toEqual(["ok-1", "ok-2"]);
    }
  });
});
