// GET /healthz and GET /readyz on the Connect port, and grpc.health.v1 on both listeners, as a load
// balancer sees them: on the embedded default, and on Redis and Postgres reached through TCP proxies
// that the test cuts, and with a ledger whose schema is behind the code.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { Health, ServingStatus } from "../../src/rpc/health.js";
import type { Server } from "../../src/server.js";
import { postgresSkipReason, createTestDatabase, type TestDatabase } from "../support/pg.js";
import { connectTestRedis, REDIS_URL, redisSkipReason, type TestRedis } from "../support/redis.js";
import { TcpProxy } from "../support/tcp-proxy.js";
import { makeDataDir, meterdForSuite, removeDir, Sessions, startMeterd } from "./harness.js";

const skip = (await postgresSkipReason()) ?? (await redisSkipReason());
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
/** Readiness answers probes from a result up to a second old. */
const FRESH_MS = 1100;

async function probe(server: Server, path: string, method = "GET"): Promise<{ status: number; body: string; type: string | null; cache: string | null }> {
  const res = await fetch(`http://127.0.0.1:${server.httpPort}${path}`, { method });
  return { status: res.status, body: await res.text(), type: res.headers.get("content-type"), cache: res.headers.get("cache-control") };
}

describe("probes on the embedded default", () => {
  const meterd = meterdForSuite();

  it("answer without a key: up, ready with the ledger checked, JSON never cached", async () => {
    const server = meterd.server;
    expect(await probe(server, "/healthz")).toEqual({ status: 200, body: '{"status":"up"}\n', type: "application/json", cache: "no-store" });
    const ready = await probe(server, "/readyz");
    expect(ready.status).toBe(200);
    expect(JSON.parse(ready.body)).toEqual({ status: "ready", checks: { ledger: "ok" } });
    expect(await probe(server, "/readyz", "HEAD")).toMatchObject({ status: 200, body: "" });
    expect((await probe(server, "/readyz", "POST")).status).toBe(405);
  });

  it("grpc.health.v1 says SERVING on both listeners", async () => {
    const { server, sessions } = meterd;
    const grpcUrl = `http://127.0.0.1:${server.grpcPort}`;
    for (const transport of [
      createConnectTransport({ baseUrl: `http://127.0.0.1:${server.httpPort}`, httpVersion: "1.1" }),
      createGrpcTransport({ baseUrl: grpcUrl, sessionManager: sessions.h2(grpcUrl) }),
    ]) {
      const health = createClient(Health, transport);
      expect((await health.check({ service: "" })).status).toBe(ServingStatus.SERVING);
      expect((await health.check({ service: "meterd.v1.MeteringService" })).status).toBe(ServingStatus.SERVING);
    }
  });
});

describe.skipIf(skip !== null && !process.env.CI)("probes with Redis and Postgres", () => {
  let server: Server;
  let dataDir: string;
  let db: TestDatabase;
  let redis: TestRedis;
  let redisProxy: TcpProxy;
  const sessions = new Sessions();
  let health: ReturnType<typeof createClient<typeof Health>>;

  beforeAll(async () => {
    [db, redis, redisProxy, dataDir] = await Promise.all([createTestDatabase("meterd_probes"), connectTestRedis(), TcpProxy.forUrl(REDIS_URL), makeDataDir()]);
    server = await startMeterd(dataDir, { DATABASE_URL: db.url, REDIS_URL: redisProxy.url(REDIS_URL), METERD_REDIS_PREFIX: redis.prefix });
    const grpcUrl = `http://127.0.0.1:${server.grpcPort}`;
    health = createClient(Health, createGrpcTransport({ baseUrl: grpcUrl, sessionManager: sessions.h2(grpcUrl) }));
  }, 60_000);

  afterAll(async () => {
    sessions.abortAll();
    redisProxy?.restore();
    await server?.close(500);
    await redisProxy?.close();
    await redis?.cleanup();
    await db?.drop();
    await removeDir(dataDir);
  });

  it("is ready when both answer", async () => {
    const ready = await probe(server, "/readyz");
    expect([ready.status, JSON.parse(ready.body)]).toEqual([200, { status: "ready", checks: { postgres: "ok", redis: "ok" } }]);
  });

  it("turns 503 and NOT_SERVING when Redis is cut, and back when it returns; /healthz stays 200", async () => {
    redisProxy.cut();
    await sleep(FRESH_MS);
    const down = await probe(server, "/readyz");
    expect(down.status).toBe(503);
    const body = JSON.parse(down.body) as { status: string; checks: Record<string, string> };
    expect(body.status).toBe("not ready");
    expect(body.checks.postgres).toBe("ok");
    expect(body.checks.redis).not.toBe("ok");
    expect((await health.check({ service: "" })).status).toBe(ServingStatus.NOT_SERVING);
    expect((await probe(server, "/healthz")).status).toBe(200);

    redisProxy.restore();
    let back = 0;
    for (let waited = 0; back !== 200 && waited < 15_000; waited += FRESH_MS) {
      await sleep(FRESH_MS);
      back = (await probe(server, "/readyz")).status;
    }
    expect(back).toBe(200);
    expect((await health.check({ service: "" })).status).toBe(ServingStatus.SERVING);
  }, 30_000);

  it("is not ready while the ledger's schema is behind this meterd's migrations", async () => {
    const { default: pg } = await import("pg");
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      const top = await client.query<{ version: number; name: string }>("SELECT version, name FROM meterd_schema_version ORDER BY version DESC LIMIT 1");
      const { version, name } = top.rows[0]!;
      await client.query("DELETE FROM meterd_schema_version WHERE version = $1", [version]);
      await sleep(FRESH_MS);
      const behind = await probe(server, "/readyz");
      expect(behind.status).toBe(503);
      expect((JSON.parse(behind.body) as { checks: Record<string, string> }).checks.postgres).toBe(
        `the schema is at migration ${version - 1}, this meterd needs ${version}: run meterd migrate`,
      );
      await client.query("INSERT INTO meterd_schema_version (version, name) VALUES ($1, $2)", [version, name]);
      await sleep(FRESH_MS);
      expect((await probe(server, "/readyz")).status).toBe(200);
    } finally {
      await client.end();
    }
  }, 20_000);
});
