// A Meter with everything behind it, for tests: the example catalogue (examples/catalog.json) on a
// ledger backend of choice ("pglite" in memory, or "pg" on a throwaway database on the machine's
// Postgres), an in-process fast path, and a clock that tests set by hand.
//
// Creating a ledger is slow (PGlite takes seconds), so one harness is meant to serve a whole test
// file: each test uses its own customer ids (newCustomer()), and resets the clock it moved
// (harness.resetClock()).
import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import { Catalog } from "../../src/catalog/catalog.js";
import { applyCatalogFile } from "../../src/catalog/file.js";
import { SqlCatalogStore } from "../../src/catalog/sql-store.js";
import type { Entitlement } from "../../src/catalog/types.js";
import type { FastPath } from "../../src/fastpath/fastpath.js";
import { MemoryFastPath } from "../../src/fastpath/memory.js";
import { RedisFastPath } from "../../src/fastpath/redis/index.js";
import type { Redis } from "ioredis";
import { connectTestRedis, deleteByPrefix, testPrefix } from "./redis.js";
import { openLedger } from "../../src/ledger/index.js";
import type { Ledger } from "../../src/ledger/ledger.js";
import type { SqlClient } from "../../src/ledger/sql.js";
import { UsageChanges } from "../../src/metering/changes.js";
import { Meter } from "../../src/metering/meter.js";
import { Metrics } from "../../src/metering/metrics.js";
import type { TimeWindow } from "../../src/metering/validate.js";
import { createTestDatabase, type TestDatabase } from "./pg.js";

/** "redis": the Postgres ledger with the Redis fast path; each instance() starts on an empty keyspace. */
export type LedgerBackend = "pglite" | "pg" | "redis";

export const EXAMPLE_CATALOG = fileURLToPath(new URL("../../examples/catalog.json", import.meta.url));

/** The clock every harness starts at: the middle of March 2025 (UTC). */
export const T0 = new Date("2025-03-15T12:00:00.000Z");

export const DAY_MS = 86_400_000;

/** The service's defaults: 35 days back, 5 minutes ahead. */
export const DEFAULT_WINDOW: TimeWindow = { maxBackdateMs: 35 * DAY_MS, maxFutureMs: 5 * 60_000 };

/** A mutable clock: set `now` and every Meter and Metrics of the harness reads it. */
export interface TestClock {
  now: Date;
}

/** One service instance: what a process holds in memory over the shared ledger and catalogue. */
export interface MeterInstance {
  meter: Meter;
  metrics: Metrics;
  fastPath: FastPath;
  changes: UsageChanges;
  ledger: Ledger;
}

export interface MeterHarness extends MeterInstance {
  /** The Redis client of the "redis" backend (null otherwise), for tests that tamper with keys. */
  fastPathRedis: Redis | null;
  backend: LedgerBackend;
  /** The real ledger (the instance's `ledger` may be a wrapper of it). */
  sqlLedger: Ledger;
  sql: SqlClient;
  catalog: Catalog;
  clock: TestClock;
  window: TimeWindow;
  /** Sets the clock back to T0. */
  resetClock(): void;
  /**
   * Another service instance over the same ledger and catalogue: a new Meter and Metrics with a fresh,
   * empty MemoryFastPath unless one is given, as after a restart. `ledger` replaces the ledger the
   * Meter writes to (for example a wrapper that injects failures).
   */
  instance(opts?: { ledger?: Ledger; fastPath?: FastPath }): MeterInstance;
  /** A customer id no other test uses. */
  newCustomer(): string;
  /** A new customer whose entitlement to `featureKey` is replaced by an override. */
  customerWith(featureKey: string, over: Partial<Omit<Entitlement, "featureKey">>): Promise<string>;
  close(): Promise<void>;
}

export async function openMeterHarness(
  backend: LedgerBackend,
  opts: { catalogFile?: string; window?: TimeWindow } = {},
): Promise<MeterHarness> {
  let db: TestDatabase | null = null;
  if (backend !== "pglite") db = await createTestDatabase("meterd_meter");
  const redis = backend === "redis" ? await connectTestRedis() : null;
  const prefixes: string[] = [];
  /** A fast path with nothing in it: in memory, or a Redis keyspace of its own (Redis come back empty). */
  const emptyFastPath = (): FastPath => {
    if (!redis) return new MemoryFastPath();
    const prefix = testPrefix();
    prefixes.push(prefix);
    return new RedisFastPath({ redis: redis.redis, prefix });
  };
  let opened: Awaited<ReturnType<typeof openLedger>>;
  try {
    opened = await openLedger({ databaseUrl: db?.url ?? null, dataDir: null });
  } catch (err) {
    await db?.drop().catch(() => {});
    throw err;
  }
  const { ledger, sql } = opened;
  try {
    const catalog = await Catalog.open(new SqlCatalogStore(sql));
    await applyCatalogFile(catalog, opts.catalogFile ?? EXAMPLE_CATALOG);
    const clock: TestClock = { now: new Date(T0) };
    const window = opts.window ?? DEFAULT_WINDOW;
    const read = () => new Date(clock.now);

    const instance = (o: { ledger?: Ledger; fastPath?: FastPath } = {}): MeterInstance => {
      const fastPath = o.fastPath ?? emptyFastPath();
      const changes = new UsageChanges();
      const target = o.ledger ?? ledger;
      // A short rebuild grace: these tests have no commits in flight when a fast path starts empty.
      const meter = new Meter({ catalog, fastPath, ledger: target, changes, window, clock: read, rebuildGraceMs: 50 });
      return { meter, metrics: new Metrics(meter, changes, read), fastPath, changes, ledger: target };
    };

    const main = instance();
    let closing: Promise<void> | null = null;
    return {
      ...main,
      backend,
      fastPathRedis: redis?.redis ?? null,
      sqlLedger: ledger,
      sql,
      catalog,
      clock,
      window,
      resetClock() {
        clock.now = new Date(T0);
      },
      instance,
      newCustomer: () => `cust_${randomUUID()}`,
      async customerWith(featureKey, over) {
        const id = `cust_${randomUUID()}`;
        const base = catalog.entitlement(catalog.customer(id), featureKey);
        const entitlement: Entitlement = {
          featureKey,
          limit: base?.limit ?? null,
          hard: base?.hard ?? true,
          thresholds: base?.thresholds ?? [],
          ...over,
        };
        await catalog.putCustomer({ id, planKey: null, overrides: [entitlement], billingAnchor: null });
        return id;
      },
      close() {
        closing ??= (async () => {
          try {
            await main.fastPath.close();
            await ledger.close();
          } finally {
            if (redis) {
              for (const prefix of prefixes) await deleteByPrefix(redis.redis, prefix);
              await redis.cleanup();
            }
            await db?.drop();
          }
        })();
        return closing;
      },
    };
  } catch (err) {
    await ledger.close().catch(() => {});
    await db?.drop().catch(() => {});
    throw err;
  }
}

/** Faults that a faultyLedger() injects into append(). */
export interface LedgerFaults {
  /** The next n append() calls reject without writing (a clean failure). */
  failNextAppends: number;
  /** The next n append() calls commit, then reject (the reply was lost). */
  loseNextReplies: number;
  appendCalls: number;
}

/**
 * A ledger that delegates every method to `inner` (whatever the Ledger interface holds), except that
 * append() fails on demand and close() leaves the inner ledger, which the harness owns, open.
 */
export function faultyLedger(inner: Ledger): { ledger: Ledger; faults: LedgerFaults } {
  const faults: LedgerFaults = { failNextAppends: 0, loseNextReplies: 0, appendCalls: 0 };
  const append: Ledger["append"] = async (events) => {
    faults.appendCalls++;
    if (faults.failNextAppends > 0) {
      faults.failNextAppends--;
      throw new Error("injected: connection reset before commit");
    }
    if (faults.loseNextReplies > 0) {
      faults.loseNextReplies--;
      await inner.append(events);
      throw new Error("injected: connection reset after commit");
    }
    return inner.append(events);
  };
  const ledger = new Proxy(inner, {
    get(target, prop) {
      if (prop === "append") return append;
      if (prop === "close") return async () => {};
      const value: unknown = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return { ledger, faults };
}
