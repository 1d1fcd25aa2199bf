// A million events through meterd export and meterd import, as issue 10 asks: a ledger of 1,000,000 rows
// over 1,000 customers (tracks, corrections and set events of both signs, half of them keyed) is
// exported, imported over the network into an empty deployment, and exported again: the two files hold
// the same events (kinds, amounts as decimal strings, keys, times, properties), and a second import of
// the same file counts nothing. The import time is printed (export reports its own peak RSS).
import { mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openLedger } from "../../src/ledger/index.js";
import type { Server } from "../../src/server.js";
import { KEY, makeDataDir, removeDir, startMeterd } from "../server/harness.js";
import { runCli } from "../support/cli.js";
import { createTestDatabase, postgresSkipReason, type TestDatabase } from "../support/pg.js";

const skip = await postgresSkipReason();
const ROWS = 1_000_000;
const MINUTES = 60_000;

/** An export's events as sorted lines, without what a deployment gives anew (ids, commit times). */
async function comparable(file: string): Promise<string[]> {
  return (await readFile(file, "utf8"))
    .trimEnd()
    .split("\n")
    .map((line) => {
      const { id, recorded_at, ...rest } = JSON.parse(line) as Record<string, unknown>;
      void recorded_at;
      return JSON.stringify({ ...rest, idempotency_key: rest["idempotency_key"] ?? `import:${String(id)}` });
    })
    .sort();
}

describe.skipIf(skip !== null && !process.env.CI)("a million events: export, import, export", () => {
  let source: TestDatabase;
  let target: TestDatabase;
  let dataDir: string;
  let dir: string;
  let server: Server;

  beforeAll(async () => {
    [source, target] = await Promise.all([createTestDatabase("meterd_million_src"), createTestDatabase("meterd_million_dst")]);
    dataDir = await makeDataDir();
    dir = await mkdtemp(path.join(os.tmpdir(), "meterd-million-"));
    const { ledger, sql } = await openLedger({ databaseUrl: source.url, dataDir: null });
    // Every event in the current month up to an hour ago, so that each correction and each lower set
    // falls in the period of what it corrects, and every time is inside the target's backdating window.
    const now = Date.now();
    const start = new Date(Date.UTC(new Date(now).getUTCFullYear(), new Date(now).getUTCMonth(), 1));
    const stepSeconds = (now - 3_600_000 - start.getTime()) / 1000 / ROWS;
    await sql.query("SELECT meterd_ensure_partitions($1::timestamptz, 1)", [start.toISOString()]);
    // Customers in turn. Every 100th event a set on seats, +1 then -1 for its customer; every 50th from
    // the second round a correction of storage_gb; the rest storage_gb with six decimal places.
    await sql.query(
      `WITH e AS (
         SELECT g, 'evt-' || g AS id, 'cus_' || lpad((g % 1000)::text, 4, '0') AS customer_id,
           CASE WHEN g % 100 = 0 THEN 'seats' ELSE 'storage_gb' END AS feature_key,
           CASE WHEN g % 100 = 0 THEN 'set' WHEN g % 50 = 25 AND g > 1000 THEN 'adjustment' ELSE 'track' END AS kind,
           CASE WHEN g % 100 = 0 THEN (CASE WHEN ((g - 1) / 1000) % 2 = 0 THEN 1 ELSE -1 END)::numeric
                WHEN g % 50 = 25 AND g > 1000 THEN -0.000001
                ELSE ((g % 997) + 1)::numeric / 1000 + (g % 7)::numeric / 1000000 END AS amount,
           CASE WHEN g % 2 = 0 THEN 'k-' || g END AS idempotency_key,
           $1::timestamptz + (g * ${stepSeconds}) * interval '1 second' AS occurred_at
         FROM generate_series(1, ${ROWS}) g),
       keys AS (
         INSERT INTO meterd_event_keys (event_id, customer_id, idempotency_key, occurred_at)
         SELECT id, customer_id, idempotency_key, occurred_at FROM e WHERE idempotency_key IS NOT NULL)
       INSERT INTO meterd_events (id, customer_id, feature_key, kind, amount, idempotency_key, fingerprint, occurred_at, properties)
       SELECT id, customer_id, feature_key, kind, amount, idempotency_key, 'fp', occurred_at,
         jsonb_build_object('region', CASE WHEN g % 3 = 0 THEN 'eu' ELSE 'us' END)
       FROM e`,
      [start.toISOString()],
    );
    await ledger.close();
    server = await startMeterd(dataDir, { DATABASE_URL: target.url });
  }, 5 * MINUTES);

  afterAll(async () => {
    await server?.close(1000);
    await source?.drop();
    await target?.drop();
    await removeDir(dataDir);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("gives back the same million events, and a second import counts none of them", async () => {
    const file = path.join(dir, "all.ndjson");
    const back = path.join(dir, "back.ndjson");
    const url = `http://127.0.0.1:${server.httpPort}`;
    const exported = await runCli(["export", "--out", file], { DATABASE_URL: source.url }, 5 * MINUTES);
    expect(exported.stderr).toMatch(/^exported 1000000 events \(ndjson\)/m);

    const t0 = Date.now();
    const first = await runCli(["import", file, "--url", url, "--key", KEY], {}, 10 * MINUTES);
    expect(first.stderr).toMatch(/^imported 1000000 events, 0 already there, 0 rejected$/m);
    expect(first.code).toBe(0);
    process.stdout.write(`meterd import: ${ROWS} events in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);

    const again = await runCli(["export", "--out", back], { DATABASE_URL: target.url }, 5 * MINUTES);
    expect(again.stderr).toMatch(/^exported 1000000 events \(ndjson\)/m);
    const [before, after] = await Promise.all([comparable(file), comparable(back)]);
    expect(after.length).toBe(ROWS);
    // Not toEqual on a million lines: the first difference, if any, is what a failure should show.
    const differs = before.findIndex((line, i) => line !== after[i]);
    expect(differs === -1 ? null : { exported: before[differs], back: after[differs] }).toBeNull();

    const second = await runCli(["import", file, "--url", url, "--key", KEY], {}, 10 * MINUTES);
    expect(second.stderr).toMatch(/^imported 0 events, 1000000 already there, 0 rejected$/m);
  }, 30 * MINUTES);
});
