import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { openLedger } from "../../src/ledger/index.js";
import type { LedgerEvent } from "../../src/ledger/ledger.js";
import { migrate } from "../../src/ledger/migrate.js";
import { createTestDatabase, postgresSkipReason } from "../support/pg.js";

const topup: LedgerEvent = {
  id: "evt_1",
  customerId: "acme",
  featureKey: null,
  kind: "topup",
  amount: "0",
  credits: "12.5",
  idempotencyKey: "topup-1",
  fingerprint: "fp",
  occurredAt: new Date("2025-01-01T00:00:00Z"),
  properties: {},
};

const pgSkip = await postgresSkipReason();

describe("openLedger", () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterAll(async () => {
    for (const cleanup of cleanups) await cleanup();
  });

  it("given a data directory, then PGlite keeps the ledger across a restart", async () => {
    const root = await mkdtemp(path.join(tmpdir(), "meterd-ledger-"));
    cleanups.push(() => rm(root, { recursive: true, force: true }));
    const dataDir = path.join(root, "nested", "pglite");

    const first = await openLedger({ databaseUrl: null, dataDir });
    expect(await first.ledger.append([topup])).toEqual([{ inserted: true }]);
    await first.ledger.close();

    const second = await openLedger({ databaseUrl: null, dataDir });
    expect(await migrate(second.sql)).toMatchObject({ applied: [] });
    expect(await second.ledger.walletBalance("acme")).toBe("12.5");
    expect(await second.ledger.append([{ ...topup, id: "evt_2" }])).toMatchObject([{ inserted: false }]);
    await second.ledger.close();
  });

  it.skipIf(pgSkip !== null)("given a database URL, then it uses Postgres", async () => {
    const db = await createTestDatabase();
    cleanups.push(() => db.drop());
    const { ledger, sql } = await openLedger({ databaseUrl: db.url, dataDir: "/nonexistent/unused" });
    expect(await ledger.append([topup])).toEqual([{ inserted: true }]);
    const version = await sql.query<{ v: string }>("SELECT version() AS v");
    expect(version.rows[0]!.v).not.toMatch(/PGlite/);
    await ledger.close();
  });
});
