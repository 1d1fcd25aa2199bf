// Given real failures from the ledger's databases (Postgres through pg, and PGlite) and from the ledger
// itself, when isPermanentLedgerRefusal classifies them, then the ones that depend only on the event's
// own values (data exceptions, the ledger's InvalidEventError) are permanent, and the others are not:
// those a retry may get past (lost connections, a terminated backend, a unique conflict, a row that
// fits no partition yet) and those that are meterd's own fault (a syntax error in its SQL, a check or
// not-null violation of a column meterd fills itself).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { migrate } from "../../src/ledger/migrate.js";
import { createPgClient } from "../../src/ledger/pg-client.js";
import { openPgliteClient } from "../../src/ledger/pglite-client.js";
import { isPermanentLedgerRefusal } from "../../src/ledger/refusal.js";
import { InvalidEventError, SqlLedger } from "../../src/ledger/sql-ledger.js";
import type { SqlClient } from "../../src/ledger/sql.js";
import { createTestDatabase, postgresSkipReason, type TestDatabase } from "../support/pg.js";

/** The error `run` rejects with; fails the test if it resolves. */
async function failureOf(run: () => Promise<unknown>): Promise<unknown> {
  try {
    await run();
  } catch (error) {
    return error;
  }
  throw new Error("expected the call to fail");
}

const skip = await postgresSkipReason();

describe.skipIf(skip !== null)("isPermanentLedgerRefusal on Postgres (pg)", () => {
  let db: TestDatabase;
  let sql: SqlClient;

  beforeAll(async () => {
    db = await createTestDatabase("meterd_refusal");
    sql = createPgClient(db.url, { max: 2 });
    await migrate(sql);
    await sql.query("CREATE TABLE checked (n int NOT NULL CHECK (n > 0), k text UNIQUE)");
    await sql.query("CREATE TABLE monthly (at date NOT NULL) PARTITION BY RANGE (at)");
    await sql.query("CREATE TABLE monthly_2026_01 PARTITION OF monthly FOR VALUES FROM ('2026-01-01') TO ('2026-02-01')");
  });

  afterAll(async () => {
    await sql?.close();
    await db?.drop();
  });

  it.each([
    ["22021 invalid byte sequence (a NUL in text)", "SELECT $1::text", ["a\u0000b"]],
    ["22P05 untranslatable character (a NUL escape in jsonb)", "SELECT $1::jsonb", ['{"k":"\\u0000"}']],
    ["22008 datetime field overflow (month 13)", "SELECT $1::timestamptz", ["2026-13-01T00:00:00Z"]],
    ["22003 numeric value out of range", "SELECT $1::int", ["2147483648"]],
  ])("%s is permanent", async (_name, text, values) => {
    const error = await failureOf(() => sql.query(text, values));
    expect(isPermanentLedgerRefusal(error)).toBe(true);
    // The same error wrapped by a caller is still recognised.
    expect(isPermanentLedgerRefusal(new Error("commit failed", { cause: error }))).toBe(true);
  });

  it("the ledger's own InvalidEventError (a NUL in a property) is permanent", async () => {
    const ledger = new SqlLedger(sql);
    const error = await failureOf(() =>
      ledger.append([
        {
          id: "evt-nul",
          customerId: "cus_refusal",
          featureKey: "api_calls",
          kind: "track",
          amount: "1",
          credits: "0",
          idempotencyKey: "k-nul",
          fingerprint: "f",
          occurredAt: new Date(),
          properties: { "region\u0000": "eu" },
        },
      ]),
    );
    expect(error).toBeInstanceOf(InvalidEventError);
    expect(isPermanentLedgerRefusal(error)).toBe(true);
  });

  it.each([
    ["23514 check violation", "INSERT INTO checked (n) VALUES ($1)", [0]],
    ["23502 not-null violation", "INSERT INTO checked (n) VALUES ($1)", [null]],
  ])("%s is not the caller's fault: every such column is filled by meterd", async (_name, text, values) => {
    const error = await failureOf(() => sql.query(text, values));
    expect(isPermanentLedgerRefusal(error)).toBe(false);
  });

  it("a unique violation and a syntax error are not refusals of the event", async () => {
    await sql.query("INSERT INTO checked (n, k) VALUES (1, 'dup')");
    const unique = await failureOf(() => sql.query("INSERT INTO checked (n, k) VALUES (2, 'dup')"));
    expect((unique as { code?: string }).code).toBe("23505");
    expect(isPermanentLedgerRefusal(unique)).toBe(false);
    const syntax = await failureOf(() => sql.query("SELEC 1"));
    expect((syntax as { code?: string }).code).toBe("42601");
    expect(isPermanentLedgerRefusal(syntax)).toBe(false);
  });

  it("a row that fits no partition (23514 without a constraint) is not permanent: the partition can be made", async () => {
    const error = await failureOf(() => sql.query("INSERT INTO monthly (at) VALUES ($1)", ["2030-01-01"]));
    expect((error as { code?: string }).code).toBe("23514");
    expect(isPermanentLedgerRefusal(error)).toBe(false);
    await sql.query("CREATE TABLE monthly_2030_01 PARTITION OF monthly FOR VALUES FROM ('2030-01-01') TO ('2030-02-01')");
    await sql.query("INSERT INTO monthly (at) VALUES ($1)", ["2030-01-01"]);
  });

  it("a terminated backend (57P01) is not permanent", async () => {
    const error = await failureOf(() => sql.query("SELECT pg_terminate_backend(pg_backend_pid())"));
    expect((error as { code?: string }).code).toBe("57P01");
    expect(isPermanentLedgerRefusal(error)).toBe(false);
  });

  it("a refused connection is not permanent", async () => {
    const unreachable = createPgClient("postgres://postgres@127.0.0.1:1/none", { max: 1 });
    try {
      const error = await failureOf(() => unreachable.query("SELECT 1"));
      expect(isPermanentLedgerRefusal(error)).toBe(false);
    } finally {
      await unreachable.close();
    }
  });
});

describe("isPermanentLedgerRefusal on PGlite", () => {
  let sql: SqlClient;

  beforeAll(async () => {
    sql = await openPgliteClient(null);
  });

  afterAll(async () => {
    await sql?.close();
  });

  it("a NUL escape in jsonb (22P05) is permanent; a syntax error is not", async () => {
    const nul = await failureOf(() => sql.query("SELECT $1::jsonb", ['{"k":"\\u0000"}']));
    expect((nul as { code?: string }).code).toBe("22P05");
    expect(isPermanentLedgerRefusal(nul)).toBe(true);
    const syntax = await failureOf(() => sql.query("SELEC 1"));
    expect(isPermanentLedgerRefusal(syntax)).toBe(false);
  });
});

describe("isPermanentLedgerRefusal on values that are not database errors", () => {
  it.each([
    ["a system error", Object.assign(new Error("write EPIPE"), { code: "EPIPE" })],
    ["a connection reset", Object.assign(new Error("read ECONNRESET"), { code: "ECONNRESET" })],
    ["a connection exception (class 08)", Object.assign(new Error("connection failure"), { code: "08006" })],
    ["an error without a code", new Error("Connection terminated unexpectedly")],
    ["a string", "22021"],
    ["null", null],
    ["undefined", undefined],
  ])("%s is not permanent", (_name, value) => {
    expect(isPermanentLedgerRefusal(value)).toBe(false);
  });

  it("a cause chain that loops ends", () => {
    const a = new Error("a") as Error & { cause?: unknown };
    const b = new Error("b", { cause: a });
    a.cause = b;
    expect(isPermanentLedgerRefusal(a)).toBe(false);
  });
});
