// Wiring, in one place: the configuration decides which fast path and which ledger run, and every
// request-path object is given its clients here.
import path from "node:path";
import type { Logger } from "pino";
import { Catalog } from "./catalog/catalog.js";
import { applyCatalogFile } from "./catalog/file.js";
import { RedisCatalogSync } from "./catalog/redis-sync.js";
import { SqlCatalogStore } from "./catalog/sql-store.js";
import { type Config, ConfigError } from "./config.js";
import type { FastPath } from "./fastpath/fastpath.js";
import { MemoryFastPath } from "./fastpath/memory.js";
import { RedisFastPath } from "./fastpath/redis/index.js";
import { Redis } from "ioredis";
import { ensurePartitions, type Ledger, openLedger } from "./ledger/index.js";
import { loadMigrations } from "./ledger/migrate.js";
import type { SqlClient } from "./ledger/sql.js";
import { UsageChanges } from "./metering/changes.js";
import { Meter } from "./metering/meter.js";
import { Metrics } from "./metering/metrics.js";
import { RedisUsageRelay } from "./metering/redis-relay.js";
import type { Dependency } from "./ops/readiness.js";

export interface App {
  catalog: Catalog;
  meter: Meter;
  metrics: Metrics;
  ledger: Ledger;
  fastPath: FastPath;
  changes: UsageChanges;
  /** Which fast path and ledger run: in-process and PGlite, in-process and Postgres, or Redis and Postgres. */
  storage: "embedded" | "postgres" | "redis + postgres";
  /** What readiness checks: the ledger (with its migrations applied), and Redis when it is used. */
  dependencies: Dependency[];
  /** Flushes the ledger, then releases every client. */
  close(): Promise<void>;
}

/** The ledger answers, and its schema is at least at the newest migration this meterd knows. */
function ledgerDependency(name: string, sql: SqlClient, version: number): Dependency {
  return {
    name,
    async check() {
      const res = await sql.query<{ version: number | null }>("SELECT max(version) AS version FROM meterd_schema_version");
      const at = res.rows[0]?.version ?? 0;
      if (at < version) throw new Error(`the schema is at migration ${at}, this meterd needs ${version}: run meterd migrate`);
    },
  };
}

/** Connects before serving, so that a wrong REDIS_URL fails the start instead of the first Track. */
async function connectRedis(url: string, commandTimeoutMs: number, logger: Logger): Promise<Redis> {
  // No offline queue: while Redis is away, calls fail at once with UNAVAILABLE instead of piling up.
  // A command timeout, so that a Redis that stops answering (a partition, not a reset) fails closed in
  // seconds. An apply whose reply never came may still have been applied: it stays in the outbox, and
  // the sweeper commits it, so a retry with the same key finds it.
  const redis = new Redis(url, {
    lazyConnect: true,
    maxRetriesPerRequest: 2,
    enableOfflineQueue: false,
    commandTimeout: commandTimeoutMs,
    // Commands issued in the same tick (concurrent Tracks) go out in one write.
    enableAutoPipelining: true,
    keepAlive: 10_000,
    // Reconnect within a second once Redis is back, rather than ioredis' default backoff of up to 5 s.
    retryStrategy: (attempt: number) => Math.min(attempt * 100, 1_000),
  });
  redis.on("error", (error: Error) => logger.warn({ err: error }, "redis connection error"));
  try {
    await redis.connect();
  } catch (error) {
    redis.disconnect();
    throw new ConfigError(`cannot connect to REDIS_URL: ${(error as Error).message}`);
  }
  return redis;
}

const PARTITIONS_EVERY_MS = 6 * 3600_000;

/** Every `everyMs`, commits the events pending over `afterMs` (a replica that stopped left them). */
function startSweeper(meter: Meter, afterMs: number, everyMs: number, logger: Logger): { stop(): Promise<void> } {
  let running: Promise<void> | null = null;
  const timer = setInterval(() => {
    running ??= meter
      .sweep(afterMs)
      .then(
        (settled) => {
          if (settled > 0) logger.warn({ settled }, "committed events left pending by a replica that stopped");
        },
        (error: unknown) => logger.error({ err: error }, "outbox sweep failed"),
      )
      .finally(() => {
        running = null;
      });
  }, everyMs);
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}

/** What the server observes of the application (see src/ops/prometheus.ts). */
export interface AppObservers {
  /** Told of each ledger group commit: its events and its duration in seconds. */
  onCommit?: (events: number, seconds: number) => void;
}

export async function openApp(config: Config, logger: Logger, observers: AppObservers = {}): Promise<App> {
  if (config.redisUrl !== null && config.databaseUrl === null) {
    // Replicas sharing Redis must share the ledger that Redis counters are rebuilt from.
    throw new ConfigError("REDIS_URL needs DATABASE_URL: the Redis fast path runs with the Postgres ledger");
  }
  const { ledger, sql } = await openLedger({
    databaseUrl: config.databaseUrl,
    dataDir: config.databaseUrl === null ? path.join(config.dataDir, "ledger") : null,
    onPoolError: (error) => logger.error({ err: error }, "idle database connection failed"),
    poolSize: config.tuning.pgPoolSize,
    ledger: {
      maxBatchEvents: config.tuning.commitMaxEvents,
      // PGlite runs one statement at a time, whatever is sent.
      maxConcurrentCommits: config.databaseUrl === null ? 1 : config.tuning.concurrentCommits,
      ...(observers.onCommit === undefined ? {} : { onCommit: observers.onCommit }),
    },
  });
  try {
    const catalog = await Catalog.open(new SqlCatalogStore(sql));
    if (config.catalogFile !== null) {
      const counts = await applyCatalogFile(catalog, config.catalogFile);
      logger.info({ file: config.catalogFile, ...counts }, "catalogue file applied");
    }
    const redis = config.redisUrl === null ? null : await connectRedis(config.redisUrl, config.tuning.redisCommandTimeoutMs, logger);
    const fastPath: FastPath = redis ? new RedisFastPath({ redis, prefix: config.redisPrefix, settledTtlSeconds: config.tuning.settledTtlSeconds }) : new MemoryFastPath();
    const changes = new UsageChanges();
    const window = { maxBackdateMs: config.maxBackdateMs, maxFutureMs: config.maxFutureMs };
    const meter = new Meter({ catalog, fastPath, ledger, changes, window, logger, rebuildGraceMs: config.tuning.rebuildGraceMs });
    const metrics = new Metrics(meter, changes);
    // The sweeper commits what a commit left unconfirmed (and, on Redis, what a dead replica left in
    // the outbox); with Redis, catalogue and usage changes reach every replica.
    const sweeper = startSweeper(meter, config.tuning.sweepAfterMs, config.tuning.sweepEveryMs, logger);
    const sync = redis ? await RedisCatalogSync.start(catalog, redis, config.redisPrefix, changes, logger) : null;
    const relay = redis ? await RedisUsageRelay.start(changes, redis, config.redisPrefix, logger) : null;
    // Monthly ledger partitions are made months ahead at start-up; a long-running server keeps it so.
    const partitions = setInterval(() => {
      ensurePartitions(sql).catch((error: unknown) => logger.error({ err: error }, "could not create ledger partitions"));
    }, PARTITIONS_EVERY_MS);
    partitions.unref();
    const migrations = await loadMigrations();
    const dependencies = [ledgerDependency(config.databaseUrl === null ? "ledger" : "postgres", sql, migrations.at(-1)?.version ?? 0)];
    if (redis) dependencies.push({ name: "redis", check: async () => void (await redis.ping()) });
    return {
      catalog,
      meter,
      dependencies,
      metrics,
      ledger,
      fastPath,
      changes,
      storage: redis ? "redis + postgres" : config.databaseUrl === null ? "embedded" : "postgres",
      async close() {
        clearInterval(partitions);
        await sweeper.stop();
        await meter.drain();
        await sync?.stop();
        await relay?.stop();
        await ledger.close();
        await fastPath.close();
        await redis?.quit().catch(() => redis.disconnect());
      },
    };
  } catch (error) {
    await ledger.close().catch(() => {});
    throw error;
  }
}
