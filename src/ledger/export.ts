// `meterd export`: the ledger's events, streamed through a cursor in one read-only snapshot, so that
// memory stays flat whatever the size and the file is one consistent picture of the ledger even while
// events keep arriving. Rows come in (occurred_at, seq) order, as ListEvents's oldest-first order.
import type { EventKind } from "./ledger.js";
import type { SqlClient } from "./sql.js";

export interface ExportFilter {
  customerId: string | null;
  featureKey: string | null;
  /** occurred_at >= from. */
  from: Date | null;
  /** occurred_at < to. */
  to: Date | null;
}

/** An event as exported: amounts and credits as the ledger's exact decimals, times in ISO 8601. */
export interface ExportedEvent {
  id: string;
  customer_id: string;
  feature_key: string | null;
  kind: EventKind;
  amount: string;
  credits: string;
  idempotency_key: string | null;
  occurred_at: string;
  recorded_at: string;
  properties: Record<string, string>;
}

/** Rows fetched from the cursor at a time. */
const FETCH = 1000;

function where(f: ExportFilter): { text: string; values: unknown[] } {
  const values: unknown[] = [];
  const param = (v: unknown) => `$${values.push(v)}`;
  const conditions: string[] = [];
  if (f.customerId !== null) conditions.push(`customer_id = ${param(f.customerId)}`);
  if (f.featureKey !== null) conditions.push(`feature_key = ${param(f.featureKey)}`);
  if (f.from !== null) conditions.push(`occurred_at >= ${param(f.from)}::timestamptz`);
  if (f.to !== null) conditions.push(`occurred_at < ${param(f.to)}::timestamptz`);
  return { text: conditions.length === 0 ? "" : `WHERE ${conditions.join(" AND ")}`, values };
}

/** How many events the filter selects (for a progress bar). */
export async function countExport(sql: SqlClient, filter: ExportFilter): Promise<number> {
  const w = where(filter);
  const res = await sql.query<{ n: string }>(`SELECT count(*)::text AS n FROM meterd_events ${w.text}`, w.values);
  return Number(res.rows[0]?.n ?? 0);
}

/**
 * Calls `write` with the selected events, FETCH at a time, and waits for it before fetching more: a
 * slow disk or pipe holds the cursor back instead of filling memory. Resolves with the count.
 */
export async function exportEvents(sql: SqlClient, filter: ExportFilter, write: (events: ExportedEvent[]) => Promise<void>): Promise<number> {
  const w = where(filter);
  return sql.transaction(async (tx) => {
    // One snapshot for the whole file, and no writes by mistake.
    await tx.query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY");
    await tx.query(
      `DECLARE meterd_export NO SCROLL CURSOR FOR
       SELECT id, customer_id, feature_key, kind, trim_scale(amount)::text AS amount, trim_scale(credits)::text AS credits,
         idempotency_key, occurred_at, recorded_at, properties
       FROM meterd_events ${w.text} ORDER BY occurred_at, seq`,
      w.values,
    );
    let total = 0;
    for (;;) {
      const res = await tx.query<Omit<ExportedEvent, "occurred_at" | "recorded_at"> & { occurred_at: Date; recorded_at: Date }>(`FETCH FORWARD ${FETCH} FROM meterd_export`);
      if (res.rows.length === 0) break;
      await write(res.rows.map((r) => ({ ...r, occurred_at: r.occurred_at.toISOString(), recorded_at: r.recorded_at.toISOString() })));
      total += res.rows.length;
    }
    await tx.query("CLOSE meterd_export");
    return total;
  });
}

export const CSV_COLUMNS = ["id", "customer_id", "feature_key", "kind", "amount", "credits", "idempotency_key", "occurred_at", "recorded_at", "properties"] as const;

/** RFC 4180: a field with a comma, a quote or a line break is quoted, its quotes doubled. */
function csvField(value: string): string {
  return /[",\r\n]/.test(value) ? `"${value.replaceAll('"', '""')}"` : value;
}

/** One CSV line (properties as a JSON object in one field; an absent value is empty). */
export function csvLine(e: ExportedEvent): string {
  return CSV_COLUMNS.map((c) => {
    const v = e[c];
    return csvField(v === null ? "" : typeof v === "string" ? v : JSON.stringify(v));
  }).join(",");
}
