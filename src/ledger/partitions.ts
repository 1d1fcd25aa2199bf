// Monthly partitions of meterd_events, made ahead of time. migrate() calls ensurePartitions at start-up;
// a long-running server should call it again from time to time (daily is plenty), so that next
// month's partition exists before its first event. The work is done by the SQL function
// meterd_ensure_partitions (migration 002), in one statement under the migration advisory lock: any
// number of replicas may call it at once.
import type { SqlExecutor } from "./sql.js";

/** Months kept ready before the current one (late events) and after it. */
export const MONTHS_BEHIND = 2;
export const MONTHS_AHEAD = 3;

/** The partition that holds events of the UTC month of `at`, for example "meterd_events_2025_03". */
export function partitionName(at: Date): string {
  const month = String(at.getUTCMonth() + 1).padStart(2, "0");
  return `meterd_events_${String(at.getUTCFullYear()).padStart(4, "0")}_${month}`;
}

/**
 * Creates the missing monthly partitions from MONTHS_BEHIND months before `now` through MONTHS_AHEAD
 * months after it, moving any rows of those months out of the DEFAULT partition. Returns the names
 * of the partitions it created, oldest first (empty when all existed).
 */
export async function ensurePartitions(sql: SqlExecutor, now: Date = new Date()): Promise<string[]> {
  const from = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - MONTHS_BEHIND, 1));
  const res = await sql.query<{ name: string }>(
    "SELECT name FROM meterd_ensure_partitions($1::timestamptz, $2::int) AS name",
    [from.toISOString(), MONTHS_BEHIND + 1 + MONTHS_AHEAD],
  );
  return res.rows.map((r) => r.name);
}

/** True once migration 002 has run: the schema has the function that ensurePartitions calls. */
export async function hasPartitions(sql: SqlExecutor): Promise<boolean> {
  const res = await sql.query<{ ok: boolean }>(
    "SELECT to_regprocedure('meterd_ensure_partitions(timestamptz, integer)') IS NOT NULL AS ok",
  );
  return res.rows[0]?.ok === true;
}
