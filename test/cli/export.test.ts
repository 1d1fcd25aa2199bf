// meterd export as a user runs it: the ledger's events as NDJSON or CSV, exact decimals and all, with
// its filters, to stdout or a file; a mistaken flag is one line and exit code 2.
import { mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../support/cli.js";
import { openLedger, type SqlLedger } from "../../src/ledger/index.js";
import type { LedgerEvent } from "../../src/ledger/ledger.js";
import { createTestDatabase, postgresSkipReason, type TestDatabase } from "../support/pg.js";

const skip = await postgresSkipReason();


/** RFC 4180 records, for checking what the export wrote. */
function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let field = "";
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (quoted) {
      if (ch === '"' && text[i + 1] === '"') (field += '"'), i++;
      else if (ch === '"') quoted = false;
      else field += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === ",") row.push(field), (field = "");
    else if (ch === "\n") row.push(field), rows.push(row), (row = []), (field = "");
    else field += ch;
  }
  return rows;
}

const event = (i: number, over: Partial<LedgerEvent> = {}): LedgerEvent => ({
  id: `evt-${String(i).padStart(4, "0")}`,
  customerId: i % 2 === 0 ? "cus_a" : "cus_b",
  featureKey: "api_calls",
  kind: "track",
  amount: "1",
  credits: "0",
  idempotencyKey: `k${i}`,
  fingerprint: "fp",
  occurredAt: new Date(Date.UTC(2025, 2, 1) + i * 60_000),
  properties: {},
  ...over,
});

describe.skipIf(skip !== null && !process.env.CI)("meterd export", () => {
  let db: TestDatabase;
  let ledger: SqlLedger;
  let dir: string;
  let env: Record<string, string>;

  beforeAll(async () => {
    db = await createTestDatabase("meterd_export");
    ({ ledger } = await openLedger({ databaseUrl: db.url, dataDir: null }));
    const events = Array.from({ length: 2500 }, (_, i) => event(i));
    events[3] = event(3, { featureKey: "storage_gb", amount: "0.000001", properties: { note: 'a "quoted", comma\nand a line' } });
    events[5] = event(5, { featureKey: null, kind: "topup", amount: "0", credits: "12.5", idempotencyKey: null });
    events[7] = event(7, { kind: "adjustment", amount: "-3", properties: { region: "eu" } });
    await ledger.append(events);
    dir = await mkdtemp(path.join(os.tmpdir(), "meterd-export-"));
    env = { DATABASE_URL: db.url };
  }, 60_000);

  afterAll(async () => {
    await ledger?.close();
    await db?.drop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("writes every event as NDJSON to stdout, oldest first, decimals exact; progress and a summary on stderr", async () => {
    const { code, stdout, stderr } = await runCli(["export"], env);
    expect(code).toBe(0);
    const lines = stdout.trimEnd().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines).toHaveLength(2500);
    expect(lines.map((l) => l["id"])).toEqual(Array.from({ length: 2500 }, (_, i) => `evt-${String(i).padStart(4, "0")}`));
    expect(lines[3]).toMatchObject({ feature_key: "storage_gb", amount: "0.000001", properties: { note: 'a "quoted", comma\nand a line' } });
    expect(lines[5]).toMatchObject({ feature_key: null, kind: "topup", credits: "12.5", idempotency_key: null });
    expect(lines[7]).toMatchObject({ kind: "adjustment", amount: "-3", occurred_at: "2025-03-01T00:07:00.000Z" });
    expect(stderr).toMatch(/^export 2500\/2500 events \(100%\) \| [\d,]+ events\/s \| \d+s left$/m);
    expect(stderr).toMatch(/^exported 2500 events \(ndjson\) in [\d.]+ s; peak RSS \d+ MiB$/m);
  });

  it("writes CSV to a file, with the filters: one customer, one feature, a time range", async () => {
    const out = path.join(dir, "a.csv");
    const { code } = await runCli(["export", "--format", "csv", "--out", out, "--customer", "cus_b", "--feature", "api_calls", "--from", "2025-03-01T00:01:00Z", "--to", "2025-03-01T00:09:00Z"], env);
    expect(code).toBe(0);
    const rows = parseCsv(await readFile(out, "utf8"));
    expect(rows[0]).toEqual(["id", "customer_id", "feature_key", "kind", "amount", "credits", "idempotency_key", "occurred_at", "recorded_at", "properties"]);
    expect(rows.slice(1).map((r) => [r[0], r[3], r[4], r[9]])).toEqual([
      ["evt-0001", "track", "1", "{}"],
      ["evt-0007", "adjustment", "-3", '{"region":"eu"}'],
    ]);
    const quoted = parseCsv((await runCli(["export", "--format", "csv", "--feature", "storage_gb"], env)).stdout);
    expect(JSON.parse(quoted[1]![9]!)).toEqual({ note: 'a "quoted", comma\nand a line' });
  });

  it.each([
    [["--format", "xml"], /--format must be csv or ndjson/],
    [["--from", "yesterday"], /--from must be an ISO 8601 date/],
    [["--from", "2025-03-02", "--to", "2025-03-01"], /--to must be after --from/],
    [["--customer", "a", "--customer", "b"], /export takes one customer/],
  ])("refuses %j in one line, exit code 2", async (flags, message) => {
    const { code, stderr, stdout } = await runCli(["export", ...flags], env);
    expect(code).toBe(2);
    expect(stderr).toMatch(message);
    expect(stderr.trim().split("\n")).toHaveLength(1);
    expect(stdout).toBe("");
  });
});
