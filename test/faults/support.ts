// Shared pieces of the fault tests: meterd on the production path (Redis fast path + Postgres ledger),
// in-process or as a real process, with its own database and Redis prefix; clients for both listeners;
// and direct reads of the ledger, which is the ground truth every invariant is checked against.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { Code, ConnectError, createClient, type Client, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import pg from "pg";
import { pino } from "pino";
import { CatalogService } from "../../gen/meterd/v1/catalog_pb.js";
import { MeteringService } from "../../gen/meterd/v1/metering_pb.js";
import { LimitKind } from "../../gen/meterd/v1/usage_pb.js";
import { loadConfig } from "../../src/config.js";
import { type Server, startServer } from "../../src/server.js";
import { createTestDatabase, postgresSkipReason, type TestDatabase } from "../support/pg.js";
import { connectTestRedis, REDIS_URL, redisSkipReason, type TestRedis } from "../support/redis.js";

export { Code, ConnectError };

export const ROOT = path.resolve(import.meta.dirname, "../..");
export const EXAMPLE_CATALOG = path.join(ROOT, "examples/catalog.json");
export const KEY = "sk_test_faults_0123456789abcdef";
export const headers = { authorization: `Bearer ${KEY}` };

/**
 * The client's message that commits a ledger batch: the ledger writes each group commit as one named
 * statement outside any BEGIN, so it commits when Postgres runs it. Every use sends Bind with the
 * statement's name (the first use also sends Parse with its text).
 */
export const isLedgerCommit = (chunk: Buffer): boolean => chunk.toString("latin1").includes("meterd_ledger_insert\u0000");

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Why the fault suites should skip (Redis or Postgres unreachable), or null; always null in CI. */
export async function faultsSkipReason(): Promise<string | null> {
  const [pgReason, redisReason] = await Promise.all([postgresSkipReason(), redisSkipReason()]);
  return pgReason ?? redisReason;
}

/** What one test file runs meterd on: its own database and Redis prefix, and direct clients of both. */
export interface Backing {
  db: TestDatabase;
  /** A direct connection (not through any proxy) and the prefix meterd is given. */
  redis: TestRedis;
  /** A direct pool on the test database, to read the ledger. */
  pool: pg.Pool;
  dataDir: string;
  /** Drops the database, deletes the prefix, removes the data directory. Safe to call twice. */
  cleanup(): Promise<void>;
}

export async function openBacking(): Promise<Backing> {
  const db = await createTestDatabase("meterd_faults");
  let redis: TestRedis | undefined;
  let pool: pg.Pool | undefined;
  try {
    redis = await connectTestRedis();
    pool = new pg.Pool({ connectionString: db.url, max: 3, connectionTimeoutMillis: 5000 });
    pool.on("error", () => {});
    const dataDir = await mkdtemp(path.join(tmpdir(), "meterd-faults-"));
    let cleaned: Promise<void> | null = null;
    const [r, p] = [redis, pool];
    return {
      db,
      redis: r,
      pool: p,
      dataDir,
      cleanup() {
        cleaned ??= (async () => {
          await p.end().catch(() => {});
          await Promise.allSettled([r.cleanup(), db.drop(), rm(dataDir, { recursive: true, force: true })]);
        })();
        return cleaned;
      },
    };
  } catch (error) {
    await pool?.end().catch(() => {});
    await redis?.cleanup().catch(() => {});
    await db.drop().catch(() => {});
    throw error;
  }
}

/** meterd's environment on the production path; `over` replaces the URLs (for example with a proxy's). */
export function meterdEnv(b: Backing, over: { redisUrl?: string; databaseUrl?: string } = {}): Record<string, string> {
  return {
    REDIS_URL: over.redisUrl ?? REDIS_URL,
    DATABASE_URL: over.databaseUrl ?? b.db.url,
    METERD_REDIS_PREFIX: b.redis.prefix,
    METERD_SECRET_KEYS: KEY,
    METERD_CATALOG: EXAMPLE_CATALOG,
    METERD_GRPC_PORT: "0",
    METERD_HTTP_PORT: "0",
    METERD_DATA_DIR: b.dataDir,
  };
}

/** startServer(loadConfig(env)), as `meterd serve` does, with a silent logger (METERD_TEST_LOG=1 shows it). */
export function startInProcess(env: Record<string, string>): Promise<Server> {
  const logger = pino({ level: process.env.METERD_TEST_LOG ? "debug" : "silent" });
  return startServer(loadConfig(env), logger);
}

export interface Endpoints {
  grpcPort: number;
  httpPort: number;
}

export type Metering = Client<typeof MeteringService>;
export type Catalog = Client<typeof CatalogService>;

/** HTTP/2 session managers made by a test file; abortAll() in afterAll. */
export class Sessions {
  private readonly all: Http2SessionManager[] = [];

  h2(url: string): Http2SessionManager {
    const manager = new Http2SessionManager(url);
    this.all.push(manager);
    return manager;
  }

  abortAll(): void {
    for (const manager of this.all) manager.abort();
  }
}

/** Clients of one meterd: gRPC on the grpc-js listener, Connect (HTTP/2) on the Connect listener. */
export interface Clients {
  grpc: Metering;
  connect: Metering;
  catalog: Catalog;
}

export function clientsOf(ep: Endpoints, sessions: Sessions): Clients {
  const grpcUrl = `http://127.0.0.1:${ep.grpcPort}`;
  const httpUrl = `http://127.0.0.1:${ep.httpPort}`;
  const grpc: Transport = createGrpcTransport({ baseUrl: grpcUrl, sessionManager: sessions.h2(grpcUrl) });
  const connect: Transport = createConnectTransport({ baseUrl: httpUrl, httpVersion: "2", sessionManager: sessions.h2(httpUrl) });
  return {
    grpc: createClient(MeteringService, grpc),
    connect: createClient(MeteringService, connect),
    catalog: createClient(CatalogService, connect),
  };
}

/** Gives `customerId` a hard limit of `limit` on `featureKey` through CatalogService.UpsertCustomer. */
export async function setHardLimit(catalog: Catalog, customerId: string, featureKey: string, limit: number): Promise<void> {
  await catalog.upsertCustomer(
    { customer: { id: customerId, overrides: [{ featureKey, limit, limitKind: LimitKind.HARD, thresholds: [80, 100] }] } },
    { headers, timeoutMs: 10_000 },
  );
}

/** The Connect code of a failed call (Internal for anything that is not a ConnectError). */
export function codeOf(error: unknown): Code {
  return ConnectError.from(error).code;
}

export function codeName(code: Code): string {
  return Code[code] ?? String(code);
}

/** A ledger row as the tests read it: amounts as exact text. */
export interface LedgerRow {
  id: string;
  customer_id: string;
  feature_key: string | null;
  idempotency_key: string | null;
  amount: string;
  properties: Record<string, string>;
}

export async function ledgerRows(pool: pg.Pool, customerId: string): Promise<LedgerRow[]> {
  const res = await pool.query<LedgerRow>(
    `SELECT id, customer_id, feature_key, idempotency_key, trim_scale(amount)::text AS amount, properties
       FROM meterd_events WHERE customer_id = $1`,
    [customerId],
  );
  return res.rows;
}

/** The ledger's total of one feature for one customer, exact, as text ("0" when none). */
export async function ledgerSum(pool: pg.Pool, customerId: string, featureKey: string): Promise<string> {
  const res = await pool.query<{ total: string }>(
    `SELECT trim_scale(coalesce(sum(amount), 0))::text AS total FROM meterd_events WHERE customer_id = $1 AND feature_key = $2`,
    [customerId, featureKey],
  );
  return res.rows[0]?.total ?? "0";
}

/** GetMetrics' consumed for one feature, as text to compare with ledgerSum(). */
export async function consumedOf(client: Metering, customerId: string, featureKey: string): Promise<string> {
  const { metrics } = await client.getMetrics({ customerId, featureKey }, { headers, timeoutMs: 10_000 });
  const metric = metrics.find((m) => m.featureKey === featureKey);
  if (!metric) throw new Error(`GetMetrics returned no ${featureKey} metric for ${customerId}`);
  return String(metric.consumed);
}

/**
 * Polls until GetMetrics' consumed equals the ledger's sum for every customer, or `timeoutMs` passes;
 * returns the last [customer, consumed, ledger] readings so the test can assert on them.
 */
export async function settleCounters(
  client: Metering,
  pool: pg.Pool,
  customers: string[],
  featureKey: string,
  timeoutMs: number,
): Promise<Array<{ customer: string; consumed: string; ledger: string }>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const readings = [];
    for (const customer of customers) {
      const ledger = await ledgerSum(pool, customer, featureKey);
      const consumed = await consumedOf(client, customer, featureKey).catch((e: unknown) => `error: ${String(e)}`);
      readings.push({ customer, consumed, ledger });
    }
    if (readings.every((r) => r.consumed === r.ledger) || Date.now() >= deadline) return readings;
    await sleep(250);
  }
}

/** Runs fn(0..count-1) with at most `concurrency` in flight; stops starting new ones after `deadline`. */
export async function runBounded(count: number, concurrency: number, deadline: number, fn: (i: number) => Promise<void>): Promise<number> {
  let next = 0;
  let started = 0;
  const lane = async () => {
    while (next < count && Date.now() < deadline) {
      const i = next++;
      started++;
      await fn(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, lane));
  return started;
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface MeterdProcess extends Endpoints {
  child: ChildProcess;
  pid: number;
  output: () => string;
  exited: Promise<Exit>;
}

const running = new Set<ChildProcess>();

/** Kills (SIGKILL, by PID) every process spawnMeterd() started that is still running. */
export function killAllSpawned(): void {
  for (const child of running) {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  }
}

/** Spawns `node --import tsx src/cli.ts serve` with `env` (ports 0) and waits for its printed addresses. */
export async function spawnMeterd(env: Record<string, string>, startupTimeoutMs = 60_000): Promise<MeterdProcess> {
  const childEnv: NodeJS.ProcessEnv = { ...process.env };
  for (const name of Object.keys(childEnv)) {
    if (name.startsWith("METERD_") || name === "DATABASE_URL" || name === "REDIS_URL") delete childEnv[name];
  }
  Object.assign(childEnv, { METERD_LOG_LEVEL: "warn", ...env });
  const child = spawn(process.execPath, ["--import", "tsx", "src/cli.ts", "serve"], {
    cwd: ROOT,
    env: childEnv,
    stdio: ["ignore", "pipe", "pipe"],
  });
  running.add(child);
  let output = "";
  const keep = (chunk: string) => {
    output += chunk;
    if (output.length > 200_000) output = output.slice(-100_000);
  };
  child.stdout!.setEncoding("utf8").on("data", keep);
  child.stderr!.setEncoding("utf8").on("data", keep);
  const exited = new Promise<Exit>((resolve) =>
    child.once("exit", (code, signal) => {
      running.delete(child);
      resolve({ code, signal });
    }),
  );
  const ports = await new Promise<Endpoints>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`meterd did not start in ${startupTimeoutMs} ms\n${output}`));
    }, startupTimeoutMs);
    const look = (): void => {
      const grpc = /^ {2}gRPC +127\.0\.0\.1:(\d+)\s/m.exec(output);
      const http = /^ {2}Connect +http:\/\/127\.0\.0\.1:(\d+)\s/m.exec(output);
      if (grpc && http) {
        clearTimeout(timer);
        child.stdout!.off("data", look);
        child.stderr!.off("data", look);
        resolve({ grpcPort: Number(grpc[1]), httpPort: Number(http[1]) });
      }
    };
    // The banner is on stderr, the log lines on stdout.
    child.stdout!.on("data", look);
    child.stderr!.on("data", look);
    void exited.then((exit) => {
      clearTimeout(timer);
      reject(new Error(`meterd exited (${JSON.stringify(exit)}) before it was ready\n${output}`));
    });
  });
  return { child, pid: child.pid!, ...ports, output: () => output, exited };
}

/** Resolves with the exit, or with null if the process is still running after `ms`. */
export function exitWithin(p: MeterdProcess, ms: number): Promise<Exit | null> {
  return Promise.race([p.exited, sleep(ms).then(() => null)]);
}
