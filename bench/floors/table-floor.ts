// The bare-table floor (issue 9): the same rows as meterd's ledger rows, inserted with
// INSERT ... SELECT FROM unnest, 1,000 rows per statement, 4 pg clients in parallel, into one plain table
// (not partitioned) with one unique index, on (customer_id, idempotency_key). It is what Postgres on this
// machine takes for these rows with nothing but exactly-once by key, so meterd's ratio to it measures how
// lean its whole protocol is, not only the code around it. It deliberately does not follow meterd's schema.
import pg from "pg";
import { closedLoop, type ClosedLoopResult, type Timing } from "../lib/load.js";
import { batchEvents } from "./customers.js";
import { benchRow, rowArrays } from "./rows.js";

const TABLE = "bench_table_floor";

/** The columns and types of meterd's ledger row (migrations 001 and 002), and nothing else. */
const CREATE = `CREATE TABLE IF NOT EXISTS ${TABLE} (
    id              TEXT NOT NULL,
    seq             BIGINT GENERATED ALWAYS AS IDENTITY,
    customer_id     TEXT NOT NULL,
    feature_key     TEXT NULL,
    kind            TEXT NOT NULL,
    amount          NUMERIC NOT NULL,
    credits         NUMERIC NOT NULL DEFAULT 0,
    idempotency_key TEXT NULL,
    fingerprint     TEXT NOT NULL,
    occurred_at     TIMESTAMPTZ NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL DEFAULT now(),
    properties      JSONB NOT NULL DEFAULT '{}'
  );
  CREATE UNIQUE INDEX IF NOT EXISTS ${TABLE}_customer_key ON ${TABLE} (customer_id, idempotency_key)`;

const INSERT = `INSERT INTO ${TABLE} (id, customer_id, feature_key, kind, amount, credits, idempotency_key, fingerprint,
    occurred_at, properties)
  SELECT * FROM unnest($1::text[], $2::text[], $5::text[], $6::text[], $7::numeric[], $8::numeric[], $3::text[],
    $9::text[], $4::timestamptz[], $10::jsonb[])`;

/** `batch` rows per statement over `perBatchCustomers` customers, `concurrency` clients. Units: rows committed. */
export async function tableFloor(
  options: Timing & { databaseUrl: string; runId: string; customers: number; batch: number; perBatchCustomers: number; concurrency: number },
): Promise<ClosedLoopResult> {
  const pool = new pg.Pool({ connectionString: options.databaseUrl, max: options.concurrency });
  pool.on("error", () => {});
  try {
    await pool.query(CREATE);
    let batches = 0;
    return await closedLoop({ ...options }, async () => {
      const at = new Date().toISOString();
      const rows = batchEvents(options.runId, batches++, options.batch, options.perBatchCustomers, options.customers).map((e) => benchRow(e.customerId, e.idempotencyKey, at));
      const res = await pool.query(INSERT, rowArrays(rows));
      return res.rowCount ?? 0;
    });
  } finally {
    await pool.end();
  }
}
