// The ledger folder: the Ledger interface, its SQL implementation, both database adapters, and the
// one place that picks an adapter from the configuration.
import { migrate, type MigrateResult } from "./migrate.js";
import { createPgClient } from "./pg-client.js";
import { openPgliteClient } from "./pglite-client.js";
import type { SqlClient } from "./sql.js";
import { SqlLedger, type SqlLedgerOptions } from "./sql-ledger.js";

export type { AppendOutcome, EventKind, Ledger, LedgerEvent, StoredEvent } from "./ledger.js";
export type { SqlClient, SqlExecutor, SqlResult } from "./sql.js";
export { migrate, type MigrateResult } from "./migrate.js";
export { createPgClient, type PgClientOptions } from "./pg-client.js";
export { openPgliteClient } from "./pglite-client.js";
export { ensurePartitions, MONTHS_AHEAD, MONTHS_BEHIND, partitionName } from "./partitions.js";
export {
  DECIMAL,
  InvalidEventError,
  LedgerClosedError,
  SqlLedger,
  type SqlLedgerOptions,
  sumUsageQuery,
} from "./sql-ledger.js";

/** Group commits in flight at once on Postgres (see SqlLedgerOptions.maxConcurrentCommits). */
export const PG_CONCURRENT_COMMITS = 2;

export interface OpenLedgerOptions {
  /** Postgres connection string; when set, pg is used and dataDir is ignored. */
  databaseUrl: string | null;
  /** PGlite's directory when databaseUrl is null; null means in memory (tests). */
  dataDir: string | null;
  ledger?: SqlLedgerOptions;
  /** Postgres connections in the pool (default 10). */
  poolSize?: number;
  /** Failures of idle pg connections; see PgClientOptions.onError. */
  onPoolError?: (err: Error) => void;
}

/**
 * Opens the database, applies pending migrations and returns the ledger with its SqlClient, which the
 * catalogue store shares. ledger.close() closes that SqlClient too, so close the ledger last.
 */
export async function openLedger(opts: OpenLedgerOptions): Promise<{ ledger: SqlLedger; sql: SqlClient; migrated: MigrateResult }> {
  const sql =
    opts.databaseUrl !== null
      ? createPgClient(opts.databaseUrl, { ...(opts.onPoolError ? { onError: opts.onPoolError } : {}), ...(opts.poolSize === undefined ? {} : { max: opts.poolSize }) })
      : await openPgliteClient(opts.dataDir);
  let migrated: MigrateResult;
  try {
    migrated = await migrate(sql);
  } catch (err) {
    await sql.close().catch(() => {});
    throw err;
  }
  // Postgres takes two group commits at once, one per core of a small machine; PGlite runs one statement
  // at a time whatever is sent.
  const defaults: SqlLedgerOptions = { maxConcurrentCommits: opts.databaseUrl !== null ? PG_CONCURRENT_COMMITS : 1 };
  return { ledger: new SqlLedger(sql, { ...defaults, ...opts.ledger }), sql, migrated };
}
