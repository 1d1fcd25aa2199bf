// A crash is retryable. Given a meterd process whose ledger stalls (Postgres behind a proxy that stops
// forwarding), so that Track calls are in flight and unanswered:
// - SIGTERM, whose drain gives up on them after its grace period: every call is answered UNAVAILABLE,
//   on both listeners, whatever the client (grpc-js; connect-node over Connect HTTP/2 and HTTP/1.1 and
//   gRPC);
// - SIGKILL: nothing answers; each client reports the dropped connection in its own way, and the README's
//   retry rule names each of these codes: grpc-js says UNAVAILABLE, connect-node CANCELED over HTTP/2
//   and ABORTED over HTTP/1.1.
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import path from "node:path";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { MeteringService } from "../../gen/meterd/v1/metering_pb.js";
import { TcpProxy } from "../support/tcp-proxy.js";
import {
  type Backing,
  Code,
  codeName,
  codeOf,
  faultsSkipReason,
  headers,
  KEY,
  killAllSpawned,
  meterdEnv,
  type MeterdProcess,
  openBacking,
  ROOT,
  Sessions,
  sleep,
  spawnMeterd,
} from "./support.js";

const skip = await faultsSkipReason();

interface GrpcJsMetering extends grpc.Client {
  track(req: object, metadata: grpc.Metadata, callback: (err: grpc.ServiceError | null) => void): grpc.ClientUnaryCall;
}
const loaded = grpc.loadPackageDefinition(
  protoLoader.loadSync("meterd/v1/metering.proto", { includeDirs: [path.join(ROOT, "proto")], longs: String, enums: String, defaults: true, oneofs: true }),
) as unknown as { meterd: { v1: { MeteringService: new (address: string, credentials: grpc.ChannelCredentials) => GrpcJsMetering } } };

/** One Track from each kind of client; each resolves with the code it ended with ("OK" if answered). */
function tracksInFlight(p: MeterdProcess, sessions: Sessions, grpcJs: GrpcJsMetering[], tag: string): Record<string, Promise<string>> {
  const grpcUrl = `http://127.0.0.1:${p.grpcPort}`;
  const httpUrl = `http://127.0.0.1:${p.httpPort}`;
  const req = (client: string) => ({ customerId: "cus_crash", featureKey: "api_calls", amount: 1, idempotencyKey: `${tag}-${client}` });
  const viaConnect = (client: string, transport: Parameters<typeof createClient>[1]) =>
    createClient(MeteringService, transport)
      .track(req(client), { headers, timeoutMs: 60_000 })
      .then(
        () => "OK",
        (error: unknown) => codeName(codeOf(error)),
      );
  const js = new loaded.meterd.v1.MeteringService(`127.0.0.1:${p.grpcPort}`, grpc.credentials.createInsecure());
  grpcJs.push(js);
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${KEY}`);
  return {
    "grpc-js client, gRPC listener": new Promise((resolve) =>
      js.track(req("grpc-js"), metadata, (err) => resolve(err === null ? "OK" : codeName(err.code as unknown as Code))),
    ),
    "connect-node gRPC, gRPC listener": viaConnect("grpc", createGrpcTransport({ baseUrl: grpcUrl, sessionManager: sessions.h2(grpcUrl) })),
    "connect-node Connect HTTP/2, Connect listener": viaConnect("connect-h2", createConnectTransport({ baseUrl: httpUrl, httpVersion: "2", sessionManager: sessions.h2(httpUrl) })),
    "connect-node Connect HTTP/1.1, Connect listener": viaConnect("connect-h1", createConnectTransport({ baseUrl: httpUrl, httpVersion: "1.1" })),
    "connect-node gRPC, Connect listener": viaConnect("grpc-on-http", createGrpcTransport({ baseUrl: httpUrl, sessionManager: sessions.h2(httpUrl) })),
  };
}

describe.skipIf(skip !== null && !process.env.CI)("a crash reaches every client as UNAVAILABLE", () => {
  let backing: Backing;
  let pgProxy: TcpProxy;
  const sessions = new Sessions();
  const grpcJs: GrpcJsMetering[] = [];

  beforeAll(async () => {
    backing = await openBacking();
    pgProxy = await TcpProxy.forUrl(backing.db.url);
  }, 60_000);

  afterEach(() => {
    pgProxy.restore();
    killAllSpawned();
  });

  afterAll(async () => {
    sessions.abortAll();
    for (const client of grpcJs) client.close();
    killAllSpawned();
    await pgProxy?.close();
    await backing?.cleanup();
  });

  for (const stop of ["SIGKILL", "SIGTERM"] as const) {
    it(`${stop} with Tracks in flight`, async () => {
      const p = await spawnMeterd(meterdEnv(backing, { databaseUrl: pgProxy.url(backing.db.url) }));
      // Warm: connections made and the customer loaded, so that the calls below wait only for the ledger.
      const warm = tracksInFlight(p, sessions, grpcJs, `${stop}-warm`);
      expect(Object.values(await Promise.all(Object.values(warm)))).toEqual(Object.keys(warm).map(() => "OK"));

      pgProxy.stall();
      const calls = tracksInFlight(p, sessions, grpcJs, stop);
      await sleep(500); // every call has reached the server and waits for its commit
      p.child.kill(stop);
      const codes = Object.fromEntries(await Promise.all(Object.entries(calls).map(async ([name, code]) => [name, await code] as const)));
      if (stop === "SIGTERM") {
        expect(codes).toEqual(Object.fromEntries(Object.keys(calls).map((name) => [name, "Unavailable"])));
      } else {
        expect(codes).toEqual({
          "grpc-js client, gRPC listener": "Unavailable",
          "connect-node gRPC, gRPC listener": "Canceled",
          "connect-node Connect HTTP/2, Connect listener": "Canceled",
          "connect-node Connect HTTP/1.1, Connect listener": "Aborted",
          "connect-node gRPC, Connect listener": "Canceled",
        });
      }
    }, 60_000);
  }
});
