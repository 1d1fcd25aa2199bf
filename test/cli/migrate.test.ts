// meterd migrate says what it did: each migration it applied, then the schema's version; run again,
// that the schema is up to date.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadMigrations } from "../../src/ledger/migrate.js";
import { runCli } from "../support/cli.js";
import { createTestDatabase, postgresSkipReason, type TestDatabase } from "../support/pg.js";

const skip = await postgresSkipReason();

describe.skipIf(skip !== null && !process.env.CI)("meterd migrate", () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase("meterd_migrate_cli");
  });

  afterAll(async () => {
    await db?.drop();
  });

  it("lists the migrations it applied, then says the schema is up to date", async () => {
    const migrations = await loadMigrations();
    const top = migrations.at(-1)!.version;
    const first = await runCli(["migrate"], { DATABASE_URL: db.url });
    expect(first.code).toBe(0);
    expect(first.stdout).toBe(`${migrations.map((m) => `applied ${m.name}\n`).join("")}ledger schema is now at migration ${top}\n`);
    const again = await runCli(["migrate"], { DATABASE_URL: db.url });
    expect([again.code, again.stdout]).toEqual([0, `ledger schema is up to date (migration ${top})\n`]);
  });
});
