import { afterAll, describe, expect, it } from "vitest";
import { loadMigrations, migrate, splitStatements } from "../../src/ledger/migrate.js";
import { createPgClient } from "../../src/ledger/pg-client.js";
import { openPgliteClient } from "../../src/ledger/pglite-client.js";
import type { SqlClient } from "../../src/ledger/sql.js";
import { createTestDatabase, postgresSkipReason } from "../support/pg.js";

describe("splitStatements", () => {
  it("splits at top-level semicolons only", () => {
    const script = `-- comment; not a statement
      CREATE TABLE a (x TEXT DEFAULT 'a;b''c');
      /* block; /* nested; */ still comment */
      CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql;
      SELECT E'\\';', "odd;name", $$;$$ FROM t;
      -- trailing comment`;
    expect(splitStatements(script)).toEqual([
      "-- comment; not a statement\n      CREATE TABLE a (x TEXT DEFAULT 'a;b''c')",
      "/* block; /* nested; */ still comment */\n      CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql",
      `SELECT E'\\';', "odd;name", $$;$$ FROM t`,
    ]);
  });

  it("rejects unterminated quotes", () => {
    expect(() => splitStatements("SELECT 'x;")).toThrow(/unterminated/);
  });
});

/** Two clients on one fresh, unmigrated database, and how to dispose of them. */
interface FreshDatabase {
  a: SqlClient;
  b: SqlClient;
  close(): Promise<void>;
}

function migrationContract(name: string, fresh: () => Promise<FreshDatabase>, skip: string | null = null) {
  describe.skipIf(skip !== null)(`migrate: ${name}`, () => {
    const opened: FreshDatabase[] = [];
    afterAll(async () => {
      for (const db of opened) await db.close();
    });

    it("given two starters racing on an empty database, then each migration is applied exactly once", async () => {
      const db = await fresh();
      opened.push(db);
      const files = await loadMigrations();
      const [x, y] = await Promise.all([migrate(db.a), migrate(db.b)]);
      expect([...x.applied, ...y.applied].sort()).toEqual(files.map((f) => f.name));
      expect(x.version).toBe(files.at(-1)!.version);
      expect(y.version).toBe(files.at(-1)!.version);

      const versions = await db.a.query<{ version: number; name: string }>(
        "SELECT version, name FROM meterd_schema_version ORDER BY version",
      );
      expect(versions.rows.map((r) => r.name)).toEqual(files.map((f) => f.name));

      // Idempotent: running again changes nothing.
      expect(await migrate(db.b)).toEqual({ applied: [], version: files.at(-1)!.version });
      // Partitions are listed by the partition tests; here, the tables the code names.
      const tables = await db.a.query<{ table_name: string }>(
        `SELECT relname AS table_name FROM pg_class
          WHERE relname LIKE 'meterd\\_%' AND relkind IN ('r', 'p') AND NOT relispartition ORDER BY relname`,
      );
      expect(tables.rows.map((r) => r.table_name)).toEqual([
        "meterd_catalog",
        "meterd_event_keys",
        "meterd_events",
        "meterd_schema_version",
      ]);
    });
  });
}

migrationContract("PGlite in memory", async () => {
  const sql = await openPgliteClient(null);
  return { a: sql, b: sql, close: () => sql.close() };
});

migrationContract(
  "Postgres (pg), two pools",
  async () => {
    const db = await createTestDatabase();
    const a = createPgClient(db.url);
    const b = createPgClient(db.url);
    return {
      a,
      b,
      async close() {
        await Promise.all([a.close(), b.close()]);
        await db.drop();
      },
    };
  },
  await postgresSkipReason(),
);
