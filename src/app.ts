// Wiring, in one place: the configuration decides which fast path and which ledger run, and every
// request-path object is given its clients here.
import path from "node:path";
import type { Logger } from "pino";
import { Catalog } from "./catalog/catalog.js";
import { applyCatalogFile } from "./catalog/file.js";
import { SqlCatalogStore } from "./catalog/sql-store.js";
import { type Config, ConfigError } from "./config.js";
import type { FastPath } from "./fastpath/fastpath.js";
import { MemoryFastPath } from "./fastpath/memory.js";
import { type Ledger, openLedger } from "./ledger/index.js";
import { UsageChanges } from "./metering/changes.js";
import { Meter } from "./metering/meter.js";
import { Metrics } from "./metering/metrics.js";

export interface App {
  catalog: Catalog;
  meter: Meter;
  metrics: Metrics;
  ledger: Ledger;
  fastPath: FastPath;
  changes: UsageChanges;
  /** "embedded" (in-process fast path, PGlite) or "postgres" (in-process fast path, Postgres). */
  storage: string;
  /** Flushes the ledger, then releases every client. */
  close(): Promise<void>;
}

export async function openApp(config: Config, logger: Logger): Promise<App> {
  if (config.redisUrl !== null) {
    throw new ConfigError("REDIS_URL is set, but this build runs the in-process fast path only; unset REDIS_URL");
  }
  const { ledger, sql } = await openLedger({
    databaseUrl: config.databaseUrl,
    dataDir: config.databaseUrl === null ? path.join(config.dataDir, "ledger") : null,
    onPoolError: (error) => logger.error({ err: error }, "idle database connection failed"),
  });
  try {
    const catalog = await Catalog.open(new SqlCatalogStore(sql));
    if (config.catalogFile !== null) {
      const counts = await applyCatalogFile(catalog, config.catalogFile);
      logger.info({ file: config.catalogFile, ...counts }, "catalogue file applied");
    }
    const fastPath = new MemoryFastPath();
    const changes = new UsageChanges();
    const window = { maxBackdateMs: config.maxBackdateMs, maxFutureMs: config.maxFutureMs };
    const meter = new Meter({ catalog, fastPath, ledger, changes, window });
    const metrics = new Metrics(meter, changes);
    return {
      catalog,
      meter,
      metrics,
      ledger,
      fastPath,
      changes,
      storage: config.databaseUrl === null ? "embedded" : "postgres",
      async close() {
        await ledger.close();
        await fastPath.close();
      },
    };
  } catch (error) {
    await ledger.close().catch(() => {});
    throw error;
  }
}
