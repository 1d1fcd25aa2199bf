// The Postgres part of meterd's ledger write, without meterd: the same rows inserted with pg into meterd's
// own two ledger tables (meterd_event_keys, meterd_events), each a plain INSERT ... SELECT FROM unnest, in
// one statement and so one round trip and one commit. No ON CONFLICT, no RETURNING: the least work that
// stores the same rows in the same schema.
import pg from "pg";
import { closedLoop, type ClosedLoopResult, type Timing } from "../lib/load.js";
import { batchEvents } from "./customers.js";
import { benchRow, rowArrays } from "./rows.js";

const INSERT = `WITH k AS (
    INSERT INTO meterd_event_keys (event_id, customer_id, idempotency_key, occurred_at)
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[])
  )
  INSERT INTO meterd_events (id, customer_id, feature_key, kind, amount, credits, idempotency_key, fingerprint,
    occurred_at, properties)
  SELECT * FROM unnest($1::text[], $2::text[], $5::text[], $6::text[], $7::numeric[], $8::numeric[], $3::text[],
    $9::text[], $4::timestamptz[], $10::jsonb[])`;

/** `batch` rows per statement over `perBatchCustomers` customers, `concurrency` statements in flight. Units: rows. */
export async function pgFloor(
  options: Timing & { databaseUrl: string; runId: string; customers: number; batch: number; perBatchCustomers: number; concurrency: number },
): Promise<ClosedLoopResult> {
  const pool = new pg.Pool({ connectionString: options.databaseUrl, max: options.concurrency });
  pool.on("error", () => {});
  try {
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
