// Given a Postgres ledger of a million rows over 1,000 customers and the twelve months of 2025, when
// one customer's usage (QueryUsage) or events (ListEvents) are read, then Postgres reads only that
// customer's rows in the range: EXPLAIN ANALYZE shows the months outside the range pruned, and the
// rows its scans touch (returned, or removed by a filter or a recheck) are no more than that
// customer's rows of those months. And `meterd export` of the million rows runs in flat memory.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventPageStatement } from "../../src/ledger/event-query.js";
import { openLedger, type SqlLedger } from "../../src/ledger/index.js";
import type { SqlClient } from "../../src/ledger/sql.js";
import { usageStatement } from "../../src/ledger/usage-query.js";
import { runCli } from "../support/cli.js";
import { createTestDatabase, postgresSkipReason, type TestDatabase } from "../support/pg.js";

const skip = await postgresSkipReason();
const ROWS = 1_000_000;
const CUSTOMERS = 1000;
const CUSTOMER = "cus_0042";
const FROM = new Date("2025-04-01T00:00:00Z");
const TO = new Date("2025-07-01T00:00:00Z");
const IN_RANGE = ["meterd_events_2025_04", "meterd_events_2025_05", "meterd_events_2025_06"];

interface PlanNode {
  "Node Type": string;
  "Relation Name"?: string;
  "Actual Rows"?: number;
  "Actual Loops"?: number;
  "Rows Removed by Filter"?: number;
  "Rows Removed by Index Recheck"?: number;
  "Index Cond"?: string;
  "Recheck Cond"?: string;
  Plans?: PlanNode[];
}

/** The scans of a plan: what they read, and from which partitions. */
function scansOf(node: PlanNode, out: PlanNode[] = []): PlanNode[] {
  if (node["Node Type"].includes("Scan") && node["Relation Name"] !== undefined) out.push(node);
  for (const child of node.Plans ?? []) scansOf(child, out);
  return out;
}

function rowsTouched(scan: PlanNode): number {
  const loops = scan["Actual Loops"] ?? 1;
  return ((scan["Actual Rows"] ?? 0) + (scan["Rows Removed by Filter"] ?? 0) + (scan["Rows Removed by Index Recheck"] ?? 0)) * loops;
}

describe.skipIf(skip !== null && !process.env.CI)("read plans on a ledger of a million rows", () => {
  let db: TestDatabase;
  let sql: SqlClient;
  let ledger: SqlLedger;
  /** The customer's rows in the range, per feature. */
  let expected: { all: number; apiCalls: number };

  async function explain(statement: { text: string; values: unknown[] }): Promise<PlanNode> {
    const res = await sql.query<{ "QUERY PLAN": Array<{ Plan: PlanNode }> }>(`EXPLAIN (ANALYZE, FORMAT JSON) ${statement.text}`, statement.values);
    return res.rows[0]!["QUERY PLAN"][0]!.Plan;
  }

  function expectOnlyTheCustomerRows(plan: PlanNode, limit: number): void {
    const scans = scansOf(plan);
    expect(scans.length).toBeGreaterThan(0);
    for (const scan of scans) {
      expect(IN_RANGE).toContain(scan["Relation Name"]);
      expect(scan["Node Type"]).not.toBe("Seq Scan");
    }
    expect(scans.reduce((sum, s) => sum + rowsTouched(s), 0)).toBeLessThanOrEqual(limit);
  }

  beforeAll(async () => {
    db = await createTestDatabase("meterd_plans");
    ({ ledger, sql } = await openLedger({ databaseUrl: db.url, dataDir: null }));
    await sql.query("SELECT meterd_ensure_partitions($1::timestamptz, 12)", ["2025-01-01T00:00:00Z"]);
    // A row every 31.5 seconds of 2025, customers in turn; a third of them storage, the rest API calls.
    await sql.query(
      `INSERT INTO meterd_events (id, customer_id, feature_key, kind, amount, fingerprint, occurred_at, properties)
       SELECT 'evt-' || g, 'cus_' || lpad((g % ${CUSTOMERS})::text, 4, '0'), CASE WHEN g % 3 = 0 THEN 'storage_gb' ELSE 'api_calls' END,
         'track', 1, 'fp', timestamptz '2025-01-01' + (g * 31.5) * interval '1 second', jsonb_build_object('region', CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END)
       FROM generate_series(1, ${ROWS}) g`,
    );
    await sql.query("ANALYZE meterd_events");
    const counts = await sql.query<{ all: string; api: string }>(
      `SELECT count(*)::text AS all, count(*) FILTER (WHERE feature_key = 'api_calls')::text AS api FROM meterd_events
       WHERE customer_id = $1 AND occurred_at >= $2 AND occurred_at < $3`,
      [CUSTOMER, FROM, TO],
    );
    expected = { all: Number(counts.rows[0]!.all), apiCalls: Number(counts.rows[0]!.api) };
  }, 300_000);

  afterAll(async () => {
    await ledger?.close();
    await db?.drop();
  });

  it("holds the rows it was meant to", async () => {
    const res = await sql.query<{ n: string }>("SELECT count(*)::text AS n FROM meterd_events");
    expect(Number(res.rows[0]!.n)).toBe(ROWS);
    expect(expected.all).toBeGreaterThan(200);
    expect(expected.apiCalls).toBeLessThan(expected.all);
  });

  it("QueryUsage, a day at a time over the range: one customer's rows of the feature, index only", async () => {
    const bounds = [FROM, ...(await ledger.calendarBounds("day", "UTC", FROM, TO, 10_000)), TO];
    expect(bounds).toHaveLength(92);
    const statement = usageStatement({ customerId: CUSTOMER, featureKeys: ["api_calls"], bounds, groupBy: [], filter: [] });
    expectOnlyTheCustomerRows(await explain(statement), expected.apiCalls);
    const rows = await ledger.queryUsage({ customerId: CUSTOMER, featureKeys: ["api_calls"], bounds, groupBy: [], filter: [] });
    expect(rows.reduce((sum, r) => sum + Number(r.value), 0)).toBe(expected.apiCalls);
  });

  it("QueryUsage grouped and filtered by a property: still only that customer's rows", async () => {
    const statement = usageStatement({ customerId: CUSTOMER, featureKeys: ["api_calls"], bounds: [FROM, TO], groupBy: ["region"], filter: [["region", ["eu", "us"]]] });
    expectOnlyTheCustomerRows(await explain(statement), expected.apiCalls);
  });

  it("ListEvents, first and a later page, with and without a feature: only that customer's rows", async () => {
    const query = { customerId: CUSTOMER, featureKeys: null, from: FROM, to: TO, kinds: [], idempotencyKey: null, newestFirst: true, after: null, limit: 100 };
    expectOnlyTheCustomerRows(await explain(eventPageStatement("e.id", query)), expected.all);
    const first = await ledger.queryEvents(query);
    expect(first.events).toHaveLength(100);
    expectOnlyTheCustomerRows(await explain(eventPageStatement("e.id", { ...query, after: first.next })), expected.all);
    expectOnlyTheCustomerRows(await explain(eventPageStatement("e.id", { ...query, featureKeys: ["api_calls"] })), expected.apiCalls);
  });

  /** Runs meterd export to /dev/null: the events it wrote and its peak RSS. */
  async function exportPeak(...flags: string[]): Promise<{ events: number; seconds: number; peakMiB: number }> {
    const { code, stderr } = await runCli(["export", "--out", "/dev/null", ...flags], { DATABASE_URL: db.url });
    expect(code).toBe(0);
    const summary = /^exported (\d+) events \(ndjson\) in ([\d.]+) s; peak RSS (\d+) MiB$/m.exec(stderr);
    expect(summary).not.toBeNull();
    return { events: Number(summary![1]), seconds: Number(summary![2]), peakMiB: Number(summary![3]) };
  }

  it("meterd export writes the million rows in flat memory: about what it takes for one customer's", async () => {
    const one = await exportPeak("--customer", CUSTOMER);
    const all = await exportPeak();
    expect(all.events).toBe(ROWS);
    process.stdout.write(`meterd export: ${one.events} rows, peak RSS ${one.peakMiB} MiB; ${all.events} rows in ${all.seconds} s, peak RSS ${all.peakMiB} MiB\n`);
    // A million rows held at once would take gigabytes; a cursor keeps it to the process's own size.
    expect(all.peakMiB).toBeLessThan(one.peakMiB + 150);
  }, 180_000);
});
