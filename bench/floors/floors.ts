// The floors that need no server of their own: meterd's own apply script called directly with ioredis,
// the same ledger rows inserted directly with pg, and the raw "Redis plus commit" round trip.
// Floor customers are floor_c00000...; their Redis keys live under a prefix of their own.
import { Redis } from "ioredis";
import pg from "pg";
import { RedisFastPath } from "../../src/fastpath/redis/redis-fastpath.js";
import { closedLoop, openLoop, type ClosedLoopResult, type OpenLoopResult, type WindowHooks } from "../lib/load.js";
import { benchEvent, FLOOR_INSERT, floorInsertValues, monthKey, type Row } from "./rows.js";

export const floorCustomer = (i: number) => `floor_c${String(i).padStart(5, "0")}`;

interface Timing extends WindowHooks {
  warmupMs: number;
  durationMs: number;
  maxInFlight?: number;
}

async function connect(url: string): Promise<Redis> {
  const redis = new Redis(url, { lazyConnect: true, connectTimeout: 3000, maxRetriesPerRequest: 2 });
  redis.on("error", () => {});
  await redis.connect();
  return redis;
}

/** Makes the floor customers live, with their api_calls counters loaded, as meterd's first event does. */
async function prepareCustomers(fastPath: RedisFastPath, customers: number): Promise<void> {
  const period = monthKey();
  for (let i = 0; i < customers; i++) {
    await fastPath.markLive(floorCustomer(i));
    await fastPath.loadCounter({ customerId: floorCustomer(i), featureKey: "api_calls", periodKey: period }, 0);
  }
}

let keySeq = 0;
const floorKey = (runId: string) => `${runId}-floor-${keySeq++}`;

/**
 * meterd's apply script (apply-many.lua, through RedisFastPath.applyMany: one script call per customer,
 * all in one pipeline), on batches of `batch` events over `perBatchCustomers` customers, `concurrency`
 * batches in flight. Units: events APPLIED.
 */
export async function redisFloor(
  options: Timing & { redisUrl: string; prefix: string; runId: string; customers: number; batch: number; perBatchCustomers: number; concurrency: number },
): Promise<ClosedLoopResult> {
  const redis = await connect(options.redisUrl);
  try {
    const fastPath = new RedisFastPath({ redis, prefix: options.prefix });
    await prepareCustomers(fastPath, options.customers);
    const period = monthKey();
    let batches = 0;
    return await closedLoop({ ...options }, async () => {
      const first = batches++ * options.perBatchCustomers;
      const reqs = [];
      for (let i = 0; i < options.batch; i++) {
        const customer = floorCustomer((first + (i % options.perBatchCustomers)) % options.customers);
        reqs.push(benchEvent(customer, floorKey(options.runId), period).req);
      }
      const results = await fastPath.applyMany(reqs);
      let applied = 0;
      for (const r of results) if (r.code === "APPLIED") applied++;
      if (applied !== reqs.length) throw new Error(`Redis floor: ${reqs.length - applied} events not APPLIED (${results.find((r) => r.code !== "APPLIED")?.code})`);
      return applied;
    });
  } finally {
    redis.disconnect();
  }
}

/**
 * The same ledger rows inserted directly with pg: FLOOR_INSERT with `batch` rows per statement,
 * `concurrency` statements in flight (each its own connection). Units: rows committed.
 */
export async function pgFloor(
  options: Timing & { databaseUrl: string; runId: string; customers: number; batch: number; concurrency: number },
): Promise<ClosedLoopResult> {
  const pool = new pg.Pool({ connectionString: options.databaseUrl, max: options.concurrency });
  pool.on("error", () => {});
  try {
    let n = 0;
    return await closedLoop({ ...options }, async () => {
      const rows: Row[] = [];
      for (let i = 0; i < options.batch; i++) rows.push(benchEvent(floorCustomer(n++ % options.customers), floorKey(options.runId)).row);
      const res = await pool.query(FLOOR_INSERT, floorInsertValues(rows));
      return res.rowCount ?? 0;
    });
  } finally {
    await pool.end();
  }
}

/**
 * The raw round trip behind one Track, at a fixed offered rate: meterd's apply script for one event
 * (apply.lua, as RedisFastPath.apply calls it), then that event's row committed with pg (FLOOR_INSERT with
 * one row, autocommit: one round trip and one commit). Latency from the scheduled send time.
 */
export async function latencyFloor(
  options: Timing & { redisUrl: string; prefix: string; databaseUrl: string; runId: string; customers: number; rate: number },
): Promise<OpenLoopResult> {
  const redis = await connect(options.redisUrl);
  const pool = new pg.Pool({ connectionString: options.databaseUrl, max: 10 });
  pool.on("error", () => {});
  try {
    const fastPath = new RedisFastPath({ redis, prefix: options.prefix });
    await prepareCustomers(fastPath, options.customers);
    const period = monthKey();
    return await openLoop({ ...options }, async (i) => {
      const { row, req } = benchEvent(floorCustomer(i % options.customers), floorKey(options.runId), period);
      const result = await fastPath.apply(req);
      if (result.code !== "APPLIED") throw new Error(`latency floor: ${result.code}`);
      await pool.query(FLOOR_INSERT, floorInsertValues([row]));
    });
  } finally {
    redis.disconnect();
    await pool.end();
  }
}
