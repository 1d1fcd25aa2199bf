// meterd's own storage adapters, opened for the floors as src/app.ts opens them: RedisFastPath over an
// ioredis client with meterd's batching options, and SqlLedger (group commit) over a pg SqlClient,
// through openLedger. A floor built on them does the same Redis and Postgres work as meterd, and follows
// their changes.
import { Redis } from "ioredis";
import { RedisFastPath } from "../../src/fastpath/redis/redis-fastpath.js";
import { openLedger, type SqlLedger } from "../../src/ledger/index.js";
import { floorCustomer } from "./customers.js";
import { warmCustomer } from "./protocol-events.js";

export async function openFastPath(redisUrl: string, prefix: string): Promise<{ fastPath: RedisFastPath; close(): void }> {
  const redis = new Redis(redisUrl, {
    lazyConnect: true,
    connectTimeout: 3000,
    maxRetriesPerRequest: 2,
    // As meterd's client: commands issued in the same tick (concurrent Tracks) go out in one write.
    enableAutoPipelining: true,
  });
  redis.on("error", () => {});
  await redis.connect();
  return { fastPath: new RedisFastPath({ redis, prefix }), close: () => redis.disconnect() };
}

/**
 * Has meterd's Redis scripts read now. RedisFastPath's code is loaded when the harness starts, but its
 * scripts only when the first fast path is made: a run takes minutes, and if meterd's sources change
 * meanwhile, a floor would call the new scripts with the old code. Call it once, at the start of a run.
 */
export async function loadFastPathScripts(redisUrl: string): Promise<void> {
  (await openFastPath(redisUrl, "meterd_bench_unused:")).close();
}

/** The ledger on the bench database (meterd has migrated it already: openLedger finds nothing to do). */
export async function openSqlLedger(databaseUrl: string): Promise<SqlLedger> {
  const { ledger } = await openLedger({ databaseUrl, dataDir: null });
  return ledger;
}

/**
 * Makes floor customers 0..count-1 live with their counters loaded, so that a floor measures warm work
 * as meterd's warmed-up phases do. Idempotent: floors that share customers may each call it.
 */
export async function warmFloorCustomers(fastPath: RedisFastPath, count: number): Promise<void> {
  const CHUNK = 100;
  for (let from = 0; from < count; from += CHUNK) {
    await Promise.all(Array.from({ length: Math.min(CHUNK, count - from) }, (_, i) => warmCustomer(fastPath, floorCustomer(from + i))));
  }
}
