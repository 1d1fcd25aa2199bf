// Given both listeners with calls in flight, when they are closed, then the calls finish first, and
// calls still running after the grace period end with UNAVAILABLE.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { Health, ServingStatus } from "../../src/rpc/health.js";
import { MeteringService } from "../../gen/meterd/v1/metering_pb.js";
import { KEY, startServers, type Servers } from "./fixture.js";

let servers: Servers;
let sessions: Http2SessionManager[];

beforeEach(async () => {
  servers = await startServers();
  sessions = [];
});

afterEach(() => {
  for (const session of sessions) session.abort();
});

function transports(): Record<string, Transport> {
  const http = `http://127.0.0.1:${servers.httpPort}`;
  const grpc = `http://127.0.0.1:${servers.grpcPort}`;
  const h2 = (url: string): Http2SessionManager => {
    const manager = new Http2SessionManager(url);
    sessions.push(manager);
    return manager;
  };
  return {
    "Connect HTTP/1.1": createConnectTransport({ baseUrl: http, httpVersion: "1.1" }),
    "Connect HTTP/2": createConnectTransport({ baseUrl: http, httpVersion: "2", sessionManager: h2(http) }),
    "gRPC to grpc-js": createGrpcTransport({ baseUrl: grpc, sessionManager: h2(grpc) }),
  };
}

const headers = { authorization: `Bearer ${KEY}` };
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Waits until `n` Track calls have reached the implementation: on a busy machine 100 ms may not do. */
async function untilTracking(n: number): Promise<void> {
  for (let waited = 0; servers.observed.trackCalls < n && waited < 10_000; waited += 10) await sleep(10);
}

describe("close(graceMs)", () => {
  it("lets in-flight calls finish before it resolves, then refuses new connections", async () => {
    const calls = Object.entries(transports()).map(async ([name, transport]) => {
      const res = await createClient(MeteringService, transport).track({ customerId: "slow", idempotencyKey: name }, { headers });
      return { eventId: res.eventId, at: Date.now() };
    });
    await untilTracking(3);
    const started = Date.now();
    await servers.close(10_000);
    const closedAt = Date.now();

    const results = await Promise.all(calls);
    expect(results.map((r) => r.eventId).sort()).toEqual(["Connect HTTP/1.1", "Connect HTTP/2", "gRPC to grpc-js"]);
    for (const r of results) expect(r.at).toBeLessThanOrEqual(closedAt);
    expect(closedAt - started).toBeLessThan(5000); // it did not wait for the grace period

    const late = createClient(MeteringService, createConnectTransport({ baseUrl: `http://127.0.0.1:${servers.httpPort}`, httpVersion: "1.1" }));
    await expect(late.track({}, { headers })).rejects.toThrow();
  });

  it("after the grace period, aborts what is still running with UNAVAILABLE", async () => {
    const outcomes = Object.values(transports()).map((transport) =>
      createClient(MeteringService, transport)
        .track({ customerId: "hang" }, { headers })
        .then(
          () => "ok",
          (err: unknown) => ConnectError.from(err).code,
        ),
    );
    await untilTracking(3);
    const started = Date.now();
    await servers.close(300);
    expect(Date.now() - started).toBeLessThan(2500);
    expect(await Promise.all(outcomes)).toEqual([Code.Unavailable, Code.Unavailable, Code.Unavailable]);
  });

  it("holds many calls in flight without a MaxListenersExceededWarning, and still cuts each with UNAVAILABLE", async () => {
    const warnings: string[] = [];
    const onWarning = (warning: Error): void => void warnings.push(`${warning.name}: ${warning.message}`);
    process.on("warning", onWarning);
    try {
      // Node warns past 10 listeners on one AbortSignal: 25 calls per listener are well past it.
      const outcomes = Object.values(transports()).flatMap((transport) =>
        Array.from({ length: 25 }, () =>
          createClient(MeteringService, transport)
            .track({ customerId: "hang" }, { headers })
            .then(
              () => "ok",
              (err: unknown) => ConnectError.from(err).code,
            ),
        ),
      );
      await untilTracking(75);
      await servers.close(300);
      expect(new Set(await Promise.all(outcomes))).toEqual(new Set([Code.Unavailable]));
      await sleep(50); // a warning is emitted on the next tick
      expect(warnings.filter((w) => w.startsWith("MaxListenersExceededWarning"))).toEqual([]);
    } finally {
      process.off("warning", onWarning);
    }
  });

  it("tells health watchers NOT_SERVING, then ends their streams", async () => {
    const watching: ServingStatus[][] = [];
    const seen = Object.values(transports())
      .slice(1) // the HTTP/2 ones
      .map(async (transport) => {
        const statuses: ServingStatus[] = [];
        watching.push(statuses);
        try {
          for await (const res of createClient(Health, transport).watch({ service: "" })) statuses.push(res.status);
        } catch (err) {
          statuses.push(-ConnectError.from(err).code);
        }
        return statuses;
      });
    // Every watcher has its first status before the server closes.
    for (let waited = 0; watching.some((statuses) => statuses.length === 0) && waited < 10_000; waited += 10) await sleep(10);
    await servers.close(300);
    for (const statuses of await Promise.all(seen)) {
      expect(statuses.slice(0, 2)).toEqual([ServingStatus.SERVING, ServingStatus.NOT_SERVING]);
    }
  });
});
