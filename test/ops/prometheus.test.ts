// GET /metrics on the Connect port, scraped from the real server: the text parses with Prometheus' own
// parser (promtool check metrics), and the counters move with the calls made over gRPC and Connect. On
// the embedded default, and once against Redis and Postgres (in CI these must be up: the test fails, not skips).
import { spawnSync } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { MeteringService } from "../../gen/meterd/v1/metering_pb.js";
import { Decision, DenyReason } from "../../gen/meterd/v1/usage_pb.js";
import type { Server } from "../../src/server.js";
import { createTestDatabase, postgresSkipReason, type TestDatabase } from "../support/pg.js";
import { connectTestRedis, redisSkipReason, REDIS_URL, type TestRedis } from "../support/redis.js";
import { auth, Code, errorOf, makeDataDir, removeDir, Sessions, startMeterd } from "../server/harness.js";

const skip = (await postgresSkipReason()) ?? (await redisSkipReason());
const promtool = spawnSync("promtool", ["--version"]).status === 0;
const TRACK = "/meterd.v1.MeteringService/Track";

async function scrape(server: Server): Promise<{ status: number; type: string | null; text: string }> {
  const res = await fetch(`http://127.0.0.1:${server.httpPort}/metrics`);
  return { status: res.status, type: res.headers.get("content-type"), text: await res.text() };
}

/** Samples by their line's name and labels as written ('name{a="b"}'); enough for what prometheus.ts writes. */
function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const at = line.lastIndexOf(" ");
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

function moved(before: Map<string, number>, after: Map<string, number>, series: string): number {
  return (after.get(series) ?? 0) - (before.get(series) ?? 0);
}

const calls = (protocol: string, code: string, procedure = TRACK) => `meterd_rpc_calls_total{procedure="${procedure}",protocol="${protocol}",code="${code}"}`;
const latencyCount = (protocol: string, procedure = TRACK) => `meterd_rpc_duration_seconds_count{procedure="${procedure}",protocol="${protocol}"}`;
const decisions = (outcome: string) => `meterd_track_decisions_total{outcome="${outcome}"}`;

function scrapeTests(start: () => Promise<{ server: Server; cleanup: () => Promise<void> }>): void {
  let server: Server;
  let cleanup: () => Promise<void>;
  const sessions = new Sessions();
  const customer = `cust_metrics_${Date.now()}`;

  beforeAll(async () => {
    ({ server, cleanup } = await start());
  }, 60_000);

  afterAll(async () => {
    sessions.abortAll();
    await cleanup?.();
  });

  it.skipIf(!promtool && !process.env.CI)("serves a scrape that Prometheus' own parser reads (promtool check metrics)", async () => {
    // Some calls first, so that labelled series and histograms are in the scrape.
    const client = createClient(MeteringService, createConnectTransport({ baseUrl: `http://127.0.0.1:${server.httpPort}`, httpVersion: "1.1" }));
    await client.track({ customerId: customer, featureKey: "api_calls" }, { headers: auth });
    const { status, type, text } = await scrape(server);
    expect(status).toBe(200);
    expect(type).toMatch(/^text\/plain; version=0\.0\.4/);
    const check = spawnSync("promtool", ["check", "metrics"], { input: text, encoding: "utf8" });
    // 0: clean; 3: parsed, with lint remarks (naming advice); 1: the text does not parse.
    expect([0, 3], `promtool: ${check.stdout}${check.stderr}${check.error?.message ?? ""}`).toContain(check.status);
    for (const name of [
      "meterd_rpc_calls_total",
      "meterd_rpc_duration_seconds_bucket",
      "meterd_track_decisions_total",
      "meterd_fastpath_errors_total",
      "meterd_ledger_errors_total",
      "meterd_ledger_commit_events_bucket",
      "meterd_ledger_commit_duration_seconds_bucket",
      "meterd_outbox_entries",
      "meterd_outbox_oldest_age_seconds",
      "meterd_sweeper_committed_events_total",
      "meterd_rebuilds_total",
      "meterd_watch_usage_subscribers",
      "nodejs_eventloop_lag_seconds",
      "nodejs_heap_size_used_bytes",
      "process_cpu_seconds_total",
    ]) {
      expect(text).toMatch(new RegExp(`^${name}[{ ]`, "m"));
    }
  });

  it("counts calls per procedure, protocol and code, and decisions by outcome", async () => {
    const grpcUrl = `http://127.0.0.1:${server.grpcPort}`;
    const overGrpc = createClient(MeteringService, createGrpcTransport({ baseUrl: grpcUrl, sessionManager: sessions.h2(grpcUrl) }));
    const overConnect = createClient(MeteringService, createConnectTransport({ baseUrl: `http://127.0.0.1:${server.httpPort}`, httpVersion: "1.1" }));
    const before = samples((await scrape(server)).text);

    for (const client of [overGrpc, overConnect]) {
      const key = `k_${Math.random()}`;
      expect((await client.track({ customerId: customer, featureKey: "api_calls", idempotencyKey: key }, { headers: auth })).decision).toBe(Decision.ALLOWED);
      expect((await client.track({ customerId: customer, featureKey: "api_calls", idempotencyKey: key }, { headers: auth })).duplicate).toBe(true);
      const denied = await client.track({ customerId: customer, featureKey: "api_calls", amount: 5000 }, { headers: auth });
      expect([denied.decision, denied.denyReason]).toEqual([Decision.DENIED, DenyReason.LIMIT_REACHED]);
      expect((await errorOf(() => client.track({ customerId: customer, featureKey: "api_calls", amount: 0 }, { headers: auth }))).code).toBe(Code.InvalidArgument);
      expect((await errorOf(() => client.track({ customerId: customer, featureKey: "api_calls" }))).code).toBe(Code.Unauthenticated);
    }
    const after = samples((await scrape(server)).text);

    for (const protocol of ["grpc", "connect"]) {
      expect(moved(before, after, calls(protocol, "OK")), protocol).toBe(3);
      expect(moved(before, after, calls(protocol, "INVALID_ARGUMENT")), protocol).toBe(1);
      expect(moved(before, after, calls(protocol, "UNAUTHENTICATED")), protocol).toBe(1);
      // Refusals from the headers alone are counted, not timed.
      expect(moved(before, after, latencyCount(protocol)), protocol).toBe(4);
    }
    expect(moved(before, after, decisions("allowed"))).toBe(2);
    expect(moved(before, after, decisions("duplicate"))).toBe(2);
    expect(moved(before, after, decisions("limit_reached"))).toBe(2);
    expect(moved(before, after, decisions("error"))).toBe(2);
    expect(moved(before, after, "meterd_ledger_commit_events_count")).toBeGreaterThanOrEqual(1);
    expect(after.get("meterd_outbox_entries")).toBeGreaterThanOrEqual(0);
  });
}

describe("/metrics on the embedded default", () => {
  scrapeTests(async () => {
    const dataDir = await makeDataDir();
    const server = await startMeterd(dataDir);
    return { server, cleanup: async () => (await server.close(500), await removeDir(dataDir)) };
  });
});

describe.skipIf(skip !== null && !process.env.CI)("/metrics with Redis and Postgres", () => {
  scrapeTests(async () => {
    let db: TestDatabase | undefined;
    let redis: TestRedis | undefined;
    const dataDir = await makeDataDir();
    [db, redis] = await Promise.all([createTestDatabase("meterd_metrics"), connectTestRedis()]);
    const server = await startMeterd(dataDir, { DATABASE_URL: db.url, REDIS_URL, METERD_REDIS_PREFIX: redis.prefix });
    return {
      server,
      cleanup: async () => {
        await server.close(500);
        await redis?.cleanup();
        await db?.drop();
        await removeDir(dataDir);
      },
    };
  });
});
