// Given the real meterd server (the Meter on PGlite on disk, both listeners on free ports), when every
// kind of client makes the same Track + GetMetrics round trip, then each gets the same answer: the
// event counted once and ALLOWED with its usage block, a retry with the same key replayed as a
// duplicate with the same event id, and GetMetrics showing the count.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { MeteringService } from "../../gen/meterd/v1/metering_pb.js";
import { Decision, DenyReason, LimitKind } from "../../gen/meterd/v1/usage_pb.js";
import type { Server } from "../../src/server.js";
import { auth, currentMonth, KEY, makeDataDir, ms, PROTO_DIR, removeDir, Sessions, startMeterd } from "./harness.js";

let server: Server;
let dataDir: string;
const sessions = new Sessions();
const grpcClients: grpc.Client[] = [];

beforeAll(async () => {
  dataDir = await makeDataDir();
  server = await startMeterd(dataDir);
});

afterAll(async () => {
  for (const client of grpcClients) client.close();
  sessions.abortAll();
  await server?.close(1000);
  await removeDir(dataDir);
});

const httpUrl = (): string => `http://127.0.0.1:${server.httpPort}`;
const grpcUrl = (): string => `http://127.0.0.1:${server.grpcPort}`;

interface ClientCase {
  name: string;
  customer: string;
  bidi: boolean;
  transport: () => Transport;
}

const cases: ClientCase[] = [
  {
    name: "Connect JSON over HTTP/1.1 -> Connect listener",
    customer: "cust-connect-json",
    bidi: false,
    transport: () => createConnectTransport({ baseUrl: httpUrl(), httpVersion: "1.1", useBinaryFormat: false }),
  },
  {
    name: "Connect binary over HTTP/2 -> Connect listener",
    customer: "cust-connect-h2",
    bidi: true,
    transport: () =>
      createConnectTransport({ baseUrl: httpUrl(), httpVersion: "2", sessionManager: sessions.h2(httpUrl()), useBinaryFormat: true }),
  },
  {
    name: "gRPC-web over HTTP/1.1 -> Connect listener",
    customer: "cust-grpc-web",
    bidi: false,
    transport: () => createGrpcWebTransport({ baseUrl: httpUrl(), httpVersion: "1.1" }),
  },
  {
    name: "gRPC (h2c) -> Connect listener",
    customer: "cust-grpc-h2c-connect",
    bidi: true,
    transport: () => createGrpcTransport({ baseUrl: httpUrl(), sessionManager: sessions.h2(httpUrl()) }),
  },
  {
    name: "gRPC (h2c) -> grpc-js listener",
    customer: "cust-grpc-h2c-grpcjs",
    bidi: true,
    transport: () => createGrpcTransport({ baseUrl: grpcUrl(), sessionManager: sessions.h2(grpcUrl()) }),
  },
];

describe.each(cases)("$name", (c) => {
  let client: ReturnType<typeof createClient<typeof MeteringService>>;
  beforeAll(() => {
    client = createClient(MeteringService, c.transport());
  });

  it("Track is ALLOWED with its usage; a retry with the same key is a duplicate; GetMetrics shows the count", async () => {
    const month = currentMonth();
    const req = { customerId: c.customer, featureKey: "api_calls", amount: 3, idempotencyKey: `${c.customer}-evt-1` };
    const first = await client.track(req, { headers: auth });
    expect(first.decision).toBe(Decision.ALLOWED);
    expect(first.denyReason).toBe(DenyReason.UNSPECIFIED);
    expect(first.duplicate).toBe(false);
    expect(first.eventId).toMatch(/^[0-9a-f-]{36}$/);
    expect(first.usage).toMatchObject({ featureKey: "api_calls", consumed: 3, limit: 1000, remaining: 997, unlimited: false });
    expect(first.usage?.limitKind).toBe(LimitKind.HARD);
    expect(first.usage?.percentageUsed).toBeCloseTo(0.3, 10);
    expect(ms(first.usage?.periodStart)).toBe(month.start);
    expect(ms(first.usage?.periodEnd)).toBe(month.end);

    const retry = await client.track(req, { headers: auth });
    expect(retry.eventId).toBe(first.eventId);
    expect(retry.duplicate).toBe(true);
    expect(retry.decision).toBe(Decision.ALLOWED);
    expect(retry.usage?.consumed).toBe(3);

    const second = await client.track({ ...req, amount: 1, idempotencyKey: `${c.customer}-evt-2` }, { headers: auth });
    expect(second.eventId).not.toBe(first.eventId);
    expect(second.usage).toMatchObject({ consumed: 4, remaining: 996 });

    const { metrics } = await client.getMetrics({ customerId: c.customer, featureKey: "api_calls" }, { headers: auth });
    expect(metrics).toHaveLength(1);
    expect(metrics[0]).toMatchObject({
      featureKey: "api_calls",
      featureTitle: "API calls",
      productName: "Platform",
      unit: "call",
      consumed: 4,
      limit: 1000,
      remaining: 996,
      unlimited: false,
    });
    expect(ms(metrics[0]?.periodStart)).toBe(month.start);
    expect(ms(metrics[0]?.periodEnd)).toBe(month.end);

    // All of the customer's features: the other three have nothing counted.
    const all = await client.getMetrics({ customerId: c.customer }, { headers: auth });
    expect(all.metrics.map((m) => [m.featureKey, m.consumed])).toEqual([
      ["api_calls", 4],
      ["storage_gb", 0],
      ["seats", 0],
      ["ai_tokens", 0],
    ]);
  });

  it.runIf(c.bidi)("TrackStream acknowledges each request in order, with one result per event and the usage per feature", async () => {
    const customerId = `${c.customer}-stream`;
    async function* requests() {
      yield { events: [{ customerId, featureKey: "api_calls", amount: 1, idempotencyKey: "s-1" }] };
      yield {
        events: [
          { customerId, featureKey: "api_calls", amount: 2, idempotencyKey: "s-2" },
          { customerId, featureKey: "nope", amount: 1, idempotencyKey: "s-3" },
        ],
        includeEventUsage: true,
      };
    }
    const acks: Array<{ sequence: bigint; results: string[]; usages: string[] }> = [];
    for await (const res of client.trackStream(requests(), { headers: auth })) {
      acks.push({
        sequence: res.sequence,
        results: res.results.map((r) =>
          r.outcome.case === "tracked" ? `tracked:${r.outcome.value.usage?.consumed ?? "-"}` : `error:${r.outcome.value?.field}`,
        ),
        usages: res.usages.map((u) => `${u.customerId}/${u.usage?.featureKey}:${u.usage?.consumed}`),
      });
    }
    // The first request leaves each event's usage out (the default); the second asked for it.
    expect(acks).toEqual([
      { sequence: 1n, results: ["tracked:-"], usages: [`${customerId}/api_calls:1`] },
      { sequence: 2n, results: ["tracked:3", "error:events[1].feature_key"], usages: [`${customerId}/api_calls:3`] },
    ]);
  });
});

// ---------------------------------------------------------------------------------------------------
// @grpc/grpc-js with proto-loader, against the grpc-js listener: the client most gRPC users have.

type Callback<T> = (err: grpc.ServiceError | null, res?: T) => void;
interface PlainTimestamp {
  seconds: string;
  nanos: number;
}
interface PlainUsage {
  featureKey: string;
  consumed: number;
  limit: number;
  remaining: number;
  periodStart: PlainTimestamp | null;
  periodEnd: PlainTimestamp | null;
}
interface PlainTrackResponse {
  eventId: string;
  decision: string;
  denyReason: string;
  duplicate: boolean;
  usage: PlainUsage;
}
interface PlainStreamResponse {
  sequence: string;
  results: PlainTrackResult[];
  usages: Array<{ customerId: string; usage: PlainUsage }>;
}
interface PlainTrackResult {
  outcome: "tracked" | "error";
  tracked?: PlainTrackResponse;
  error?: { code: string; field: string; reason: string };
}
interface PlainMetric extends PlainUsage {
  featureTitle: string;
}
interface MeteringClient extends grpc.Client {
  track(req: object, metadata: grpc.Metadata, callback: Callback<PlainTrackResponse>): grpc.ClientUnaryCall;
  getMetrics(req: object, metadata: grpc.Metadata, callback: Callback<{ metrics: PlainMetric[] }>): grpc.ClientUnaryCall;
  trackStream(metadata: grpc.Metadata): grpc.ClientDuplexStream<object, PlainStreamResponse>;
  watchUsage(req: object, metadata: grpc.Metadata): grpc.ClientReadableStream<{ metrics: PlainMetric[] }>;
}

const packageDefinition = protoLoader.loadSync("meterd/v1/metering.proto", {
  includeDirs: [PROTO_DIR],
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
const loaded = grpc.loadPackageDefinition(packageDefinition) as unknown as {
  meterd: { v1: { MeteringService: new (address: string, credentials: grpc.ChannelCredentials) => MeteringClient } };
};

function withKey(): grpc.Metadata {
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${KEY}`);
  return metadata;
}

function unary<T>(fn: (callback: Callback<T>) => unknown): Promise<T> {
  return new Promise((resolve, reject) => {
    fn((err, res) => (err === null && res !== undefined ? resolve(res) : reject(err)));
  });
}

const tsMs = (ts: PlainTimestamp | null): number | null => (ts === null ? null : Number(ts.seconds) * 1000 + ts.nanos / 1e6);

describe("@grpc/grpc-js client from the .proto files -> grpc-js listener", () => {
  let client: MeteringClient;
  beforeAll(() => {
    client = new loaded.meterd.v1.MeteringService(`127.0.0.1:${server.grpcPort}`, grpc.credentials.createInsecure());
    grpcClients.push(client);
  });

  it("unary Track: ALLOWED with its usage; a retry is a duplicate with the same event id; GetMetrics agrees", async () => {
    const month = currentMonth();
    const req = { customerId: "cust-grpc-js", featureKey: "api_calls", amount: 5, idempotencyKey: "gj-1" };
    const first = await unary<PlainTrackResponse>((cb) => client.track(req, withKey(), cb));
    expect(first).toMatchObject({ decision: "DECISION_ALLOWED", denyReason: "DENY_REASON_UNSPECIFIED", duplicate: false });
    expect(first.usage).toMatchObject({ featureKey: "api_calls", consumed: 5, limit: 1000, remaining: 995 });
    expect(tsMs(first.usage.periodStart)).toBe(month.start);
    expect(tsMs(first.usage.periodEnd)).toBe(month.end);

    const retry = await unary<PlainTrackResponse>((cb) => client.track(req, withKey(), cb));
    expect(retry).toMatchObject({ eventId: first.eventId, duplicate: true, decision: "DECISION_ALLOWED" });
    expect(retry.usage.consumed).toBe(5);

    const { metrics } = await unary<{ metrics: PlainMetric[] }>((cb) =>
      client.getMetrics({ customerId: "cust-grpc-js", featureKey: "api_calls" }, withKey(), cb),
    );
    expect(metrics).toHaveLength(1);
    expect(metrics[0]).toMatchObject({ featureKey: "api_calls", featureTitle: "API calls", consumed: 5, limit: 1000, remaining: 995 });
    expect(tsMs(metrics[0]!.periodStart)).toBe(month.start);
  });

  it("bidi TrackStream: two requests, each acknowledged in order with per-event results", async () => {
    const customerId = "cust-grpc-js-stream";
    const call = client.trackStream(withKey());
    const acks: PlainStreamResponse[] = [];
    const done = new Promise<void>((resolve, reject) => {
      call.on("data", (res: PlainStreamResponse) => {
        acks.push(res);
        // The second request is sent only after the first is acknowledged: acks follow requests.
        if (acks.length === 1) {
          call.write({
            events: [
              { customerId, featureKey: "api_calls", amount: 2, idempotencyKey: "gjs-2" },
              { customerId, featureKey: "api_calls", amount: 0.4, idempotencyKey: "gjs-3" },
              { customerId, featureKey: "seats", amount: 1, idempotencyKey: "gjs-4" },
            ],
            includeEventUsage: true,
          });
        } else {
          call.end();
        }
      });
      call.on("error", reject);
      call.on("end", resolve);
    });
    call.write({ events: [{ customerId, featureKey: "api_calls", amount: 1, idempotencyKey: "gjs-1" }] });
    await done;

    expect(acks.map((a) => a.sequence)).toEqual(["1", "2"]);
    expect(acks[0]!.results).toHaveLength(1);
    // By default a result has no usage of its own: the ack's usages has it, once per feature.
    expect(acks[0]!.results[0]).toMatchObject({ outcome: "tracked", tracked: { decision: "DECISION_ALLOWED", usage: null } });
    expect(acks[0]!.usages).toHaveLength(1);
    expect(acks[0]!.usages[0]).toMatchObject({ customerId, usage: { featureKey: "api_calls", consumed: 1 } });
    // The second request asked for include_event_usage: each tracked event carries its usage too.
    const second = acks[1]!.results;
    expect(second.map((r) => r.outcome)).toEqual(["tracked", "error", "tracked"]);
    expect(second[0]!.tracked).toMatchObject({ decision: "DECISION_ALLOWED", usage: { featureKey: "api_calls", consumed: 3 } });
    expect(second[1]!.error).toMatchObject({ code: "invalid_argument", field: "events[1].amount", reason: "AMOUNT_ROUNDS_TO_ZERO" });
    expect(second[2]!.tracked).toMatchObject({ decision: "DECISION_ALLOWED", usage: { featureKey: "seats", consumed: 1, limit: 10 } });
    // Seats never reset: no period.
    expect(second[2]!.tracked!.usage.periodStart).toBeNull();
    expect(acks[1]!.usages.map((u) => [u.customerId, u.usage.featureKey, u.usage.consumed])).toEqual([
      [customerId, "api_calls", 3],
      [customerId, "seats", 1],
    ]);
  });

  it("server stream WatchUsage: the current metrics first, then the change a Track makes", async () => {
    const customerId = "cust-grpc-js-watch";
    await unary((cb) => client.track({ customerId, featureKey: "api_calls", amount: 7, idempotencyKey: "w-1" }, withKey(), cb));
    const watch = client.watchUsage({ customerId, featureKey: "api_calls" }, withKey());
    const seen: PlainMetric[][] = [];
    await new Promise<void>((resolve, reject) => {
      watch.on("data", (res: { metrics: PlainMetric[] }) => {
        seen.push(res.metrics);
        if (seen.length === 1) {
          unary((cb) => client.track({ customerId, featureKey: "api_calls", amount: 2, idempotencyKey: "w-2" }, withKey(), cb)).catch(reject);
        } else {
          resolve();
        }
      });
      watch.on("error", reject);
    });
    watch.on("error", () => {}); // CANCELLED, from the cancel below
    watch.cancel();

    expect(seen).toHaveLength(2);
    expect(seen[0]!.map((m) => [m.featureKey, m.consumed, m.remaining])).toEqual([["api_calls", 7, 993]]);
    expect(seen[1]!.map((m) => [m.featureKey, m.consumed, m.remaining])).toEqual([["api_calls", 9, 991]]);
  });
});
