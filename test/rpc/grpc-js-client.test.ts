// Given both listeners, when a @grpc/grpc-js client built from the .proto files (proto-loader) calls
// them, then unary, server-streaming and bidi calls work, and errors keep their gRPC status.
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { service as healthServiceDefinition } from "grpc-health-check";
import { keyIdOf } from "../../src/auth/secret-keys.js";
import { ServingStatus } from "../../src/rpc/health.js";
import { KEY, MAX_MESSAGE_BYTES, startServers, type Servers } from "./fixture.js";

const PROTO_DIR = path.resolve(import.meta.dirname, "../../proto");

type Callback<T> = (err: grpc.ServiceError | null, res?: T) => void;
interface TrackReply {
  eventId: string;
  thresholdsCrossed: number[];
}
interface MeteringClient extends grpc.Client {
  track(req: object, metadata: grpc.Metadata, callback: Callback<TrackReply>): grpc.ClientUnaryCall;
  watchUsage(req: object, metadata: grpc.Metadata): grpc.ClientReadableStream<{ metrics: Array<{ consumed: number }> }>;
  trackStream(metadata: grpc.Metadata): grpc.ClientDuplexStream<object, { sequence: string; results: Array<{ tracked?: TrackReply }> }>;
}
interface HealthClient extends grpc.Client {
  check(req: { service: string }, callback: Callback<{ status: string }>): grpc.ClientUnaryCall;
  watch(req: { service: string }): grpc.ClientReadableStream<{ status: string }>;
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
const HealthClientConstructor = grpc.makeGenericClientConstructor(
  healthServiceDefinition as unknown as grpc.ServiceDefinition,
  "Health",
) as unknown as new (address: string, credentials: grpc.ChannelCredentials) => HealthClient;

let servers: Servers;
const clients: grpc.Client[] = [];

beforeAll(async () => {
  servers = await startServers();
});

afterAll(async () => {
  for (const client of clients) client.close();
  await servers.close(500);
});

function withKey(key = KEY): grpc.Metadata {
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${key}`);
  return metadata;
}

function track(client: MeteringClient, req: object, metadata: grpc.Metadata): Promise<{ res: TrackReply; header: grpc.Metadata }> {
  return new Promise((resolve, reject) => {
    let header = new grpc.Metadata();
    const call = client.track(req, metadata, (err, res) => (err === null && res !== undefined ? resolve({ res, header }) : reject(err)));
    call.on("metadata", (m: grpc.Metadata) => (header = m));
  });
}

async function statusOf(call: () => Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await call();
  } catch (err) {
    return err as grpc.ServiceError;
  }
  throw new Error("the call succeeded");
}

describe.each([
  { listener: "grpc-js listener", port: () => servers.grpcPort },
  { listener: "Connect listener (h2c)", port: () => servers.httpPort },
])("grpc-js client -> $listener", ({ port }) => {
  let client: MeteringClient;
  let health: HealthClient;
  beforeAll(() => {
    client = new loaded.meterd.v1.MeteringService(`127.0.0.1:${port()}`, grpc.credentials.createInsecure());
    health = new HealthClientConstructor(`127.0.0.1:${port()}`, grpc.credentials.createInsecure());
    clients.push(client, health);
  });

  it("unary Track", async () => {
    const { res, header } = await track(client, { customerId: "c1", amount: 2, idempotencyKey: "k-1" }, withKey());
    expect(res.eventId).toBe("k-1");
    expect(res.thresholdsCrossed).toEqual([80]);
    expect(header.get("x-key-id")).toEqual([keyIdOf(KEY)]);
  });

  it("server stream WatchUsage", async () => {
    const consumed: number[] = [];
    for await (const res of client.watchUsage({ customerId: "c1" }, withKey())) {
      consumed.push((res as { metrics: Array<{ consumed: number }> }).metrics[0]?.consumed ?? -1);
    }
    expect(consumed).toEqual([1, 2, 3]);
  });

  it("bidi stream TrackStream: one answer per request, as they are sent", async () => {
    const call = client.trackStream(withKey());
    const answers: string[] = [];
    const done = new Promise<void>((resolve, reject) => {
      call.on("data", (res: { sequence: string; results: Array<{ tracked?: TrackReply }> }) => {
        answers.push(`${res.sequence}:${res.results[0]?.tracked?.eventId}`);
        if (answers.length < 3) call.write({ events: [{ customerId: "c1", idempotencyKey: `e${answers.length + 1}` }] });
        else call.end();
      });
      call.on("error", reject);
      call.on("end", resolve);
    });
    call.write({ events: [{ customerId: "c1", idempotencyKey: "e1" }] });
    await done;
    expect(answers).toEqual(["1:e1", "2:e2", "3:e3"]);
  });

  it("UNAUTHENTICATED without a key or with a wrong one", async () => {
    const missing = await statusOf(() => track(client, { customerId: "c1" }, new grpc.Metadata()));
    expect({ code: missing.code, details: missing.details }).toMatchObject({ code: grpc.status.UNAUTHENTICATED });
    expect(missing.details).toMatch(/missing credential/);
    const wrong = await statusOf(() => track(client, { customerId: "c1" }, withKey("sk_wrong")));
    expect(wrong.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(wrong.details).toMatch(/invalid credential/);
  });

  it("keeps a ConnectError's code and message; a plain Error is INTERNAL", async () => {
    const invalid = await statusOf(() => track(client, { customerId: "c1", amount: Number.NaN }, withKey()));
    expect(invalid.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(invalid.details).toBe("amount must be a number");
    const internal = await statusOf(() => track(client, { customerId: "boom" }, withKey()));
    expect(internal.code).toBe(grpc.status.INTERNAL);
    expect(internal.details).toBe("internal error");
  });

  it("RESOURCE_EXHAUSTED for an oversized message", async () => {
    const big = "x".repeat(MAX_MESSAGE_BYTES + 1);
    const err = await statusOf(() => track(client, { customerId: "c1", properties: { big } }, withKey()));
    expect(err.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
  });

  it("health with grpc-health-check's client, without a key", async () => {
    const status = await new Promise<string | undefined>((resolve, reject) =>
      health.check({ service: "" }, (err, res) => (err === null ? resolve(res?.status) : reject(err))),
    );
    expect(status).toBe("SERVING");
    const unknown = await statusOf(
      () => new Promise((resolve, reject) => health.check({ service: "nope" }, (err, res) => (err === null ? resolve(res) : reject(err)))),
    );
    expect(unknown.code).toBe(grpc.status.NOT_FOUND);

    const watched = `grpc-js.Watched.${port()}`;
    const watch = health.watch({ service: watched });
    const seen: string[] = [];
    await new Promise<void>((resolve) => {
      watch.on("data", (res: { status: string }) => {
        seen.push(res.status);
        if (seen.length === 1) servers.health.set(watched, ServingStatus.NOT_SERVING);
        if (seen.length === 2) resolve();
      });
    });
    watch.on("error", () => {}); // CANCELLED, from the cancel below
    watch.cancel();
    servers.health.set(watched, ServingStatus.SERVING);
    expect(seen).toEqual(["SERVICE_UNKNOWN", "NOT_SERVING"]);
  });
});
