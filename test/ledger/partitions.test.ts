// The ledger's monthly partitions (migration 002 and partitions.ts), on PGlite and on Postgres: made
// ahead of time, rows routed to their month, DEFAULT for the rest, exactly-once across partitions,
// the move out of DEFAULT, the 001 -> 002 upgrade, and pruning by time.
import { randomUUID } from "node:crypto";
import { copyFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { LedgerEvent } from "../../src/ledger/ledger.js";
import { MIGRATIONS_DIR, loadMigrations, migrate } from "../../src/ledger/migrate.js";
import { ensurePartitions, MONTHS_AHEAD, MONTHS_BEHIND, partitionName } from "../../src/ledger/partitions.js";
import { createPgClient } from "../../src/ledger/pg-client.js";
import { openPgliteClient } from "../../src/ledger/pglite-client.js";
import { SqlLedger, sumUsageQuery } from "../../src/ledger/sql-ledger.js";
import type { SqlClient, SqlExecutor } from "../../src/ledger/sql.js";
import { createTestDatabase, postgresSkipReason } from "../support/pg.js";
import { CountingSql } from "./counting-sql.js";

/** Two clients on one fresh, unmigrated database (the same client twice on PGlite). */
interface FreshDatabase {
  a: SqlClient;
  b: SqlClient;
  close(): Promise<void>;
}

const utc = (iso: string) => new Date(`${iso}Z`);
const newCustomer = () => `cust_${randomUUID()}`;

function event(customerId: string, occurredAt: Date, over: Partial<LedgerEvent> = {}): LedgerEvent {
  return {
    id: `evt_${randomUUID()}`,
    customerId,
    featureKey: "api_calls",
    kind: "track",
    amount: "1",
    credits: "0",
    idempotencyKey: null,
    fingerprint: "fp",
    occurredAt,
    properties: {},
    ...over,
  };
}

/** The partitions attached to meterd_events, by name. */
async function partitions(sql: SqlExecutor): Promise<string[]> {
  const res = await sql.query<{ name: string }>(
    `SELECT c.relname AS name FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
      WHERE i.inhparent = 'meterd_events'::regclass ORDER BY c.relname`,
  );
  return res.rows.map((r) => r.name);
}

/** The partition that holds each event, by id. */
async function whereAre(sql: SqlExecutor, ids: string[]): Promise<Record<string, string>> {
  const res = await sql.query<{ id: string; part: string }>(
    "SELECT id, tableoid::regclass::text AS part FROM meterd_events WHERE id = ANY($1::text[])",
    [ids],
  );
  return Object.fromEntries(res.rows.map((r) => [r.id, r.part]));
}

/** Every relation a plan reads. */
function relationsOf(plan: unknown): string[] {
  if (Array.isArray(plan)) return plan.flatMap(relationsOf);
  if (plan === null || typeof plan !== "object") return [];
  const node = plan as Record<string, unknown>;
  const own = typeof node["Relation Name"] === "string" ? [node["Relation Name"]] : [];
  return [...own, ...Object.values(node).flatMap(relationsOf)];
}

async function explainSum(sql: SqlExecutor, from: Date | null, to: Date | null): Promise<string[]> {
  const { text, values } = sumUsageQuery("cust_explain", "api_calls", from, to);
  const res = await sql.query<{ "QUERY PLAN": unknown }>(`EXPLAIN (FORMAT JSON) ${text}`, values);
  const plan = res.rows[0]!["QUERY PLAN"];
  return [...new Set(relationsOf(typeof plan === "string" ? JSON.parse(plan) : plan))].sort();
}

function partitionContract(name: string, fresh: () => Promise<FreshDatabase>, skip: string | null = null) {
  describe.skipIf(skip !== null)(`ledger partitions: ${name}`, () => {
    let db: FreshDatabase;
    let ledger: SqlLedger;
    const cleanups: (() => Promise<void>)[] = [];

    beforeAll(async () => {
      db = await fresh();
      cleanups.push(() => db.close());
      await migrate(db.a);
      ledger = new SqlLedger(new CountingSql(db.a));
    });
    afterAll(async () => {
      for (const cleanup of cleanups.reverse()) await cleanup();
    });

    it("given a migrated database, then the months around now have partitions, and there is a DEFAULT", async () => {
      const now = new Date();
      const expected = Array.from({ length: MONTHS_BEHIND + 1 + MONTHS_AHEAD }, (_, i) =>
        partitionName(new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - MONTHS_BEHIND + i, 1))),
      );
      const names = await partitions(db.a);
      expect(names).toEqual(expect.arrayContaining([...expected, "meterd_events_default"]));
      expect(await ensurePartitions(db.a)).toEqual([]);
    });

    it("given any session time zone, when partitions are made, then they are UTC months, made once", async () => {
      const created = await db.a.transaction(async (tx) => {
        await tx.query("SET LOCAL TimeZone = 'America/New_York'");
        return ensurePartitions(tx, utc("2030-06-15T12:00:00"));
      });
      expect(created).toEqual([
        "meterd_events_2030_04",
        "meterd_events_2030_05",
        "meterd_events_2030_06",
        "meterd_events_2030_07",
        "meterd_events_2030_08",
        "meterd_events_2030_09",
      ]);
      expect(await ensurePartitions(db.b, utc("2030-06-01T00:00:00"))).toEqual([]);

      const c = newCustomer();
      const lastOfJune = event(c, utc("2030-06-30T23:59:59.999"));
      const firstOfJuly = event(c, utc("2030-07-01T00:00:00"));
      const firstOfApril = event(c, utc("2030-04-01T00:00:00"));
      await ledger.append([lastOfJune, firstOfJuly, firstOfApril]);
      expect(await whereAre(db.a, [lastOfJune.id, firstOfJuly.id, firstOfApril.id])).toEqual({
        [lastOfJune.id]: "meterd_events_2030_06",
        [firstOfJuly.id]: "meterd_events_2030_07",
        [firstOfApril.id]: "meterd_events_2030_04",
      });
    });

    it("given events of several months, then each lands in its month's partition, and one far in the past in DEFAULT, still found and summed", async () => {
      await ensurePartitions(db.a, utc("2031-02-10T00:00:00"));
      const c = newCustomer();
      const jan = event(c, utc("2031-01-31T10:00:00"), { amount: "0.1", idempotencyKey: "jan" });
      const feb = event(c, utc("2031-02-01T10:00:00"), { amount: "0.2" });
      const old = event(c, utc("1999-12-31T23:00:00"), { amount: "9007199254740993", idempotencyKey: "old" });
      expect(await ledger.append([jan, feb, old])).toEqual([{ inserted: true }, { inserted: true }, { inserted: true }]);

      expect(await whereAre(db.a, [jan.id, feb.id, old.id])).toEqual({
        [jan.id]: "meterd_events_2031_01",
        [feb.id]: "meterd_events_2031_02",
        [old.id]: "meterd_events_default",
      });
      expect(await ledger.findById(old.id)).toMatchObject({ id: old.id, amount: "9007199254740993" });
      expect(await ledger.findByKey(c, "old")).toMatchObject({ id: old.id });
      expect(await ledger.findByKey(c, "jan")).toMatchObject({ id: jan.id });
      expect(await ledger.sumUsage(c, "api_calls", null, null)).toBe("9007199254740993.3");
      expect(await ledger.sumUsage(c, "api_calls", utc("1999-12-01T00:00:00"), utc("2000-01-01T00:00:00"))).toBe(
        "9007199254740993",
      );
      expect(await ledger.sumUsage(c, "api_calls", utc("2031-01-01T00:00:00"), null)).toBe("0.3");
      expect((await ledger.listEvents(c)).map((e) => e.id)).toEqual([old.id, jan.id, feb.id]);
    });

    it("given a key used in one month, when it comes again in another month or in DEFAULT, then the first row is reported", async () => {
      await ensurePartitions(db.a, utc("2031-02-10T00:00:00"));
      const c = newCustomer();
      const first = event(c, utc("2031-01-05T00:00:00"), { idempotencyKey: "order-1", fingerprint: "fp-a" });
      await ledger.append([first]);
      const stored = await ledger.findByKey(c, "order-1");
      expect(stored).toMatchObject({ id: first.id, fingerprint: "fp-a" });

      const laterMonth = event(c, utc("2031-03-05T00:00:00"), { idempotencyKey: "order-1", fingerprint: "fp-b" });
      const inDefault = event(c, utc("1990-01-01T00:00:00"), { idempotencyKey: "order-1", fingerprint: "fp-c" });
      // The same event written again (a sweeper and a slow replica): same id, same time.
      const sameEventAgain = { ...event(c, first.occurredAt), id: first.id };
      expect(await ledger.append([laterMonth, inDefault, sameEventAgain])).toEqual([
        { inserted: false, existing: stored },
        { inserted: false, existing: stored },
        { inserted: false, existing: stored },
      ]);

      // A keyless event written again, and a key twice in one batch across months.
      const keyless = event(c, utc("2031-01-20T00:00:00"));
      await ledger.append([keyless]);
      const keylessStored = await ledger.findById(keyless.id);
      const a = event(c, utc("2031-02-01T00:00:00"), { idempotencyKey: "batch" });
      const b = event(c, utc("1980-01-01T00:00:00"), { idempotencyKey: "batch" });
      const outcomes = await ledger.append([{ ...keyless }, a, b]);
      expect(outcomes).toEqual([
        { inserted: false, existing: keylessStored },
        { inserted: true },
        { inserted: false, existing: await ledger.findByKey(c, "batch") },
      ]);
      expect((await ledger.listEvents(c)).map((e) => e.id)).toEqual([first.id, keyless.id, a.id]);
    });

    it("given rows of a month in DEFAULT, when its partition is made, then they move into it unchanged and stay deduplicated", async () => {
      const c = newCustomer();
      const topup = event(c, utc("2035-02-03T00:00:00"), {
        kind: "topup",
        featureKey: null,
        amount: "0",
        credits: "12.5",
        idempotencyKey: "t1",
      });
      const use = event(c, utc("2035-02-28T23:59:59.999"), { amount: "3", credits: "-0.3", properties: { r: "eu" } });
      const otherMonth = event(c, utc("2036-01-01T00:00:00"));
      await ledger.append([topup, use, otherMonth]);
      expect(Object.values(await whereAre(db.a, [topup.id, use.id, otherMonth.id]))).toEqual([
        "meterd_events_default",
        "meterd_events_default",
        "meterd_events_default",
      ]);
      const seqs = "SELECT id, seq, recorded_at FROM meterd_events WHERE customer_id = $1 ORDER BY seq";
      const before = { events: await ledger.listEvents(c), seqs: (await db.a.query(seqs, [c])).rows };

      expect(await ensurePartitions(db.b, utc("2035-04-15T00:00:00"))).toContain("meterd_events_2035_02");

      expect(await whereAre(db.a, [topup.id, use.id, otherMonth.id])).toEqual({
        [topup.id]: "meterd_events_2035_02",
        [use.id]: "meterd_events_2035_02",
        [otherMonth.id]: "meterd_events_default",
      });
      expect(await ledger.listEvents(c)).toEqual(before.events);
      expect((await db.a.query(seqs, [c])).rows).toEqual(before.seqs);
      expect(await ledger.walletBalance(c)).toBe("12.2");
      expect(await ledger.append([{ ...topup, id: "evt_retry" }, use])).toEqual([
        { inserted: false, existing: before.events[0] },
        { inserted: false, existing: before.events[1] },
      ]);

      // DEFAULT is attached again: a month without a partition still has somewhere to go.
      const stray = event(c, utc("1970-01-01T00:00:00"));
      await ledger.append([stray]);
      expect(await whereAre(db.a, [stray.id])).toEqual({ [stray.id]: "meterd_events_default" });
      expect(await partitions(db.a)).toContain("meterd_events_default");
    });

    it("given appends into DEFAULT while replicas make that month's partition, then every row ends in it, once", async () => {
      const c = newCustomer();
      const writer = new SqlLedger(new CountingSql(db.a), { maxBatchEvents: 10 });
      const appends = Array.from({ length: 50 }, (_, i) =>
        writer.append([event(c, utc(`2037-01-${String((i % 28) + 1).padStart(2, "0")}T00:00:00`), {
          idempotencyKey: `k${i}`,
        })]),
      );
      const makers = [db.a, db.b, db.a, db.b].map((sql) => ensurePartitions(sql, utc("2037-03-01T00:00:00")));
      const [outcomes, created] = await Promise.all([Promise.all(appends), Promise.all(makers)]);
      expect(outcomes.flat().every((o) => o.inserted)).toBe(true);
      expect(created.flat().sort()).toEqual([
        "meterd_events_2037_01",
        "meterd_events_2037_02",
        "meterd_events_2037_03",
        "meterd_events_2037_04",
        "meterd_events_2037_05",
        "meterd_events_2037_06",
      ]);
      const ids = (await ledger.listEvents(c)).map((e) => e.id);
      expect(ids).toHaveLength(50);
      expect(new Set(Object.values(await whereAre(db.a, ids)))).toEqual(new Set(["meterd_events_2037_01"]));
    });

    it("given a time range, then sumUsage reads only the partitions of that range", async () => {
      await ensurePartitions(db.a, utc("2034-04-15T00:00:00"));
      const c = newCustomer();
      await ledger.append([event(c, utc("2034-03-10T00:00:00")), event(c, utc("2034-04-10T00:00:00"))]);

      expect(await explainSum(db.a, utc("2034-03-01T00:00:00"), utc("2034-04-01T00:00:00"))).toEqual([
        "meterd_events_2034_03",
      ]);
      expect(await explainSum(db.a, utc("2034-03-15T00:00:00"), utc("2034-05-01T00:00:00"))).toEqual([
        "meterd_events_2034_03",
        "meterd_events_2034_04",
      ]);
      // A range beyond every partition can only be in DEFAULT.
      expect(await explainSum(db.a, utc("1900-01-01T00:00:00"), utc("1900-02-01T00:00:00"))).toEqual([
        "meterd_events_default",
      ]);
      const all = await explainSum(db.a, null, null);
      expect(all).toEqual((await partitions(db.a)).sort());
    });

    it("given rows written under 001, when migrated to the latest version, then 002 keeps them, in their months, deduplicated", async () => {
      const old = await fresh();
      cleanups.push(() => old.close());
      const onlyFirst = await mkdtemp(path.join(tmpdir(), "meterd-001-"));
      cleanups.push(() => rm(onlyFirst, { recursive: true, force: true }));
      await copyFile(new URL("001_init.sql", MIGRATIONS_DIR), path.join(onlyFirst, "001_init.sql"));
      expect(await migrate(old.a, pathToFileURL(`${onlyFirst}/`))).toEqual({ applied: ["001_init.sql"], version: 1 });

      // Written as the 001 ledger wrote them.
      const thisMonth = new Date();
      await old.a.query(
        `INSERT INTO meterd_events
            (id, customer_id, feature_key, kind, amount, credits, idempotency_key, fingerprint, occurred_at,
             recorded_at, properties)
          SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::numeric[], $6::numeric[],
            $7::text[], $8::text[], $9::timestamptz[], $10::timestamptz[], $11::jsonb[])`,
        [
          ["e1", "e2", "e3", "e4", "e5"],
          ["acme", "acme", "acme", "acme", "beta"],
          ["api_calls", null, "api_calls", "api_calls", "api_calls"],
          ["track", "topup", "track", "track", "track"],
          ["0.10", "0", "123456789012345678901234567890.123456", "2", "5"],
          ["0", "100", "-0.3", "0", "0"],
          ["order-1", "t1", null, null, "order-1"],
          ["fp1", "fp2", "fp3", "fp4", "fp5"],
          ["2024-02-29T23:59:59.999Z", "2024-02-01T00:00:00Z", "2024-05-10T00:00:00Z", thisMonth.toISOString(),
            "1999-01-01T00:00:00Z"],
          ["2024-03-01T00:00:00Z", "2024-03-01T00:00:01Z", "2024-05-10T00:00:00Z", "2024-06-01T00:00:00Z",
            "2024-06-01T00:00:00Z"],
          ['{"region":"eu"}', "{}", "{}", "{}", "{}"],
        ],
      );
      const dump = `SELECT id, seq, customer_id, feature_key, kind, amount::text, credits::text, idempotency_key,
          fingerprint, occurred_at, recorded_at, properties FROM meterd_events ORDER BY seq`;
      const before = (await old.a.query(dump)).rows;
      const maxSeq = (await old.a.query<{ max: string }>("SELECT max(seq) AS max FROM meterd_events")).rows[0]!.max;

      const latest = (await loadMigrations()).at(-1)!;
      expect(await migrate(old.b)).toEqual({
        applied: (await loadMigrations()).filter((m) => m.version > 1).map((m) => m.name),
        version: latest.version,
      });

      expect((await old.a.query(dump)).rows).toEqual(before);
      expect(await whereAre(old.a, ["e1", "e2", "e3", "e4", "e5"])).toEqual({
        e1: "meterd_events_2024_02",
        e2: "meterd_events_2024_02",
        e3: "meterd_events_2024_05",
        e4: partitionName(thisMonth),
        e5: "meterd_events_1999_01",
      });
      // Only keyed events keep a row there (migration 003).
      const keys = await old.a.query<{ n: string }>("SELECT count(*) AS n FROM meterd_event_keys");
      const keyed = await old.a.query<{ n: string }>("SELECT count(*) AS n FROM meterd_events WHERE idempotency_key IS NOT NULL");
      expect(keys.rows[0]!.n).toBe(keyed.rows[0]!.n);

      const l = new SqlLedger(new CountingSql(old.a));
      const e1 = await l.findByKey("acme", "order-1");
      expect(e1).toMatchObject({ id: "e1", amount: "0.1", properties: { region: "eu" } });
      expect(await l.walletBalance("acme")).toBe("99.7");
      expect(await l.sumUsage("acme", "api_calls", utc("2024-02-01T00:00:00"), utc("2024-03-01T00:00:00"))).toBe("0.1");
      const retry = event("acme", utc("2024-07-01T00:00:00"), { idempotencyKey: "order-1" });
      const resentId = { ...event("acme", utc("2024-05-10T00:00:00")), id: "e3" };
      const fresh1 = event("acme", utc("2024-05-11T00:00:00"));
      expect(await l.append([retry, resentId, fresh1])).toEqual([
        { inserted: false, existing: e1 },
        { inserted: false, existing: await l.findById("e3") },
        { inserted: true },
      ]);
      const seq = await old.a.query<{ seq: string }>("SELECT seq FROM meterd_events WHERE id = $1", [fresh1.id]);
      expect(BigInt(seq.rows[0]!.seq)).toBeGreaterThan(BigInt(maxSeq));
    });
  });
}

partitionContract("PGlite in memory", async () => {
  const sql = await openPgliteClient(null);
  return { a: sql, b: sql, close: () => sql.close() };
});

partitionContract(
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
