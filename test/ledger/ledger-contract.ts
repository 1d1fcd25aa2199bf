// One contract for every SqlClient adapter behind SqlLedger. Each adapter's test file calls it with a
// migrated database that all its tests share; each test uses its own customer ids.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { LedgerEvent } from "../../src/ledger/ledger.js";
import { isPermanentLedgerRefusal } from "../../src/ledger/refusal.js";
import { DECIMAL, InvalidEventError, LedgerClosedError, SqlLedger, type SqlLedgerOptions } from "../../src/ledger/sql-ledger.js";
import type { SqlClient } from "../../src/ledger/sql.js";
import { CountingSql } from "./counting-sql.js";

export interface LedgerFixture {
  sql: SqlClient;
  close(): Promise<void>;
}

const T0 = new Date("2025-03-01T00:00:00.000Z");
const at = (minutes: number) => new Date(T0.getTime() + minutes * 60_000);
const newCustomer = () => `cust_${randomUUID()}`;

function event(customerId: string, over: Partial<LedgerEvent> = {}): LedgerEvent {
  return {
    id: `evt_${randomUUID()}`,
    customerId,
    featureKey: "api_calls",
    kind: "track",
    amount: "1",
    credits: "0",
    idempotencyKey: null,
    fingerprint: "fp",
    occurredAt: T0,
    properties: {},
    ...over,
  };
}

export function ledgerContract(name: string, open: () => Promise<LedgerFixture>, skip: string | null = null): void {
  describe.skipIf(skip !== null)(`SqlLedger contract: ${name}`, () => {
    let fixture: LedgerFixture;

    beforeAll(async () => {
      fixture = await open();
    });
    afterAll(async () => {
      await fixture?.close();
    });

    /** A ledger over a counting wrapper; closing it leaves the shared client open. */
    function ledger(options: SqlLedgerOptions = {}) {
      const sql = new CountingSql(fixture.sql);
      return { sql, ledger: new SqlLedger(sql, options) };
    }

    it("returns int8 and NUMERIC as exact strings and timestamptz as Date", async () => {
      const res = await fixture.sql.query<{ big: unknown; dec: unknown; ts: unknown; n: unknown }>(
        "SELECT 9007199254740993::int8 AS big, 0.10::numeric AS dec, now() AS ts, count(*) AS n",
      );
      expect(res.rows[0]).toMatchObject({ big: "9007199254740993", dec: "0.10", n: "1" });
      expect(res.rows[0]!.ts).toBeInstanceOf(Date);
    });

    it("given new events, when appended, then each is inserted and stored as given", async () => {
      const { ledger: l, sql } = ledger();
      const c = newCustomer();
      const events = [
        event(c, { amount: "2.5", occurredAt: at(1), properties: { region: "eu" }, idempotencyKey: "k1" }),
        event(c, { kind: "topup", featureKey: null, amount: "0", credits: "10", occurredAt: at(2) }),
      ];
      const before = Date.now();
      expect(await l.append(events)).toEqual([{ inserted: true }, { inserted: true }]);
      expect(sql.commits).toBe(1);

      const stored = await l.listEvents(c);
      expect(stored.map(({ recordedAt, ...rest }) => rest)).toEqual(events);
      for (const s of stored) {
        expect(s.recordedAt).toBeInstanceOf(Date);
        expect(s.recordedAt.getTime()).toBeGreaterThanOrEqual(before - 60_000);
      }
      expect(await l.findByKey(c, "k1")).toEqual(stored[0]);
      expect(await l.findByKey(c, "nope")).toBeNull();
      expect(await l.append([])).toEqual([]);
      await l.close();
    });

    it("given an event already stored, when one with the same id is appended, then it reports the stored row", async () => {
      const { ledger: l } = ledger();
      const c = newCustomer();
      const first = event(c, { fingerprint: "fp-original" });
      await l.append([first]);
      const [stored] = await l.listEvents(c);

      const fresh = event(c);
      const outcomes = await l.append([fresh, { ...first, fingerprint: "fp-other", amount: "7" }, event(c)]);
      expect(outcomes).toEqual([{ inserted: true }, { inserted: false, existing: stored }, { inserted: true }]);
      expect(outcomes[1]).toMatchObject({ existing: { fingerprint: "fp-original", amount: "1" } });
      expect(await l.listEvents(c)).toHaveLength(3);
    });

    it("given a stored idempotency key, when another event reuses it, then it reports the first row; other customers are separate", async () => {
      const { ledger: l } = ledger();
      const c = newCustomer();
      const other = newCustomer();
      await l.append([event(c, { idempotencyKey: "order-1", fingerprint: "fp-a" })]);
      const original = await l.findByKey(c, "order-1");

      const outcomes = await l.append([
        event(c, { idempotencyKey: "order-1", fingerprint: "fp-b" }),
        event(other, { idempotencyKey: "order-1", fingerprint: "fp-b" }),
      ]);
      expect(outcomes).toEqual([{ inserted: false, existing: original }, { inserted: true }]);
      expect(original).toMatchObject({ fingerprint: "fp-a" });
      expect(await l.listEvents(c)).toHaveLength(1);
      expect(await l.listEvents(other)).toHaveLength(1);
    });

    it("given two events with the same key in one call, then the first is inserted and the second reports it", async () => {
      const { ledger: l } = ledger();
      const c = newCustomer();
      const a = event(c, { idempotencyKey: "dup", fingerprint: "fp-a" });
      const b = event(c, { idempotencyKey: "dup", fingerprint: "fp-b" });
      const sameId = { ...event(c), id: a.id, idempotencyKey: null };
      const outcomes = await l.append([a, b, sameId]);
      const stored = await l.findByKey(c, "dup");
      expect(stored).toMatchObject({ id: a.id, fingerprint: "fp-a" });
      expect(outcomes).toEqual([
        { inserted: true },
        { inserted: false, existing: stored },
        { inserted: false, existing: stored },
      ]);
    });

    it("given two concurrent callers with the same key, then they share a commit and the first wins", async () => {
      const { ledger: l, sql } = ledger();
      const c = newCustomer();
      const [x, y] = await Promise.all([
        l.append([event(c, { idempotencyKey: "race", fingerprint: "fp-x" })]),
        l.append([event(c, { idempotencyKey: "race", fingerprint: "fp-y" })]),
      ]);
      expect(sql.transactions).toBe(1);
      expect(x).toEqual([{ inserted: true }]);
      expect(y).toEqual([{ inserted: false, existing: await l.findByKey(c, "race") }]);
      expect(y[0]).toMatchObject({ existing: { fingerprint: "fp-x" } });
    });

    it("given 500 concurrent callers, then far fewer transactions run and each caller is answered after its commit", async () => {
      const { ledger: l, sql } = ledger();
      const c = newCustomer();
      const commitsSeen: number[] = [];
      const calls = Array.from({ length: 500 }, (_, i) =>
        l.append([event(c, { idempotencyKey: `k${i}` })]).then((outcome) => {
          commitsSeen.push(sql.commits);
          return outcome;
        }),
      );
      const outcomes = await Promise.all(calls);
      expect(outcomes.every((o) => o.length === 1 && o[0]!.inserted)).toBe(true);
      expect(sql.transactions).toBeLessThan(50);
      expect(commitsSeen.every((n) => n >= 1)).toBe(true);
      expect(await l.listEvents(c)).toHaveLength(500);
    });

    it("given a batch cap, then callers beyond it wait for the next transaction, and a larger caller goes alone", async () => {
      const { ledger: l, sql } = ledger({ maxBatchEvents: 100 });
      const c = newCustomer();
      const singles = Array.from({ length: 300 }, () => l.append([event(c)]));
      const big = l.append(Array.from({ length: 250 }, () => event(c)));
      await Promise.all([...singles, big]);
      expect(sql.transactions).toBeGreaterThanOrEqual(4);
      expect(await l.listEvents(c)).toHaveLength(550);
    });

    it("given two commits allowed in flight, then two run at once, and callers whose keys overlap in any order get one row per key", async () => {
      const { ledger: l, sql } = ledger({ maxConcurrentCommits: 2, maxBatchEvents: 50 });
      const c = newCustomer();
      const keys = Array.from({ length: 100 }, (_, i) => `k${i}`);
      // 40 callers of 25 keys each, every key sought by ten of them, half of them in reverse order.
      const calls = Array.from({ length: 40 }, (_, n) => {
        const mine = Array.from({ length: 25 }, (_, i) => keys[(n * 25 + i * 4) % 100]!);
        if (n % 2 === 1) mine.reverse();
        return l.append(mine.map((key) => event(c, { idempotencyKey: key, fingerprint: `fp-${key}` }))).then((outcomes) => ({ mine, outcomes }));
      });
      const results = await Promise.all(calls);
      expect(sql.maxInFlight).toBe(2);
      const inserted = new Map<string, number>();
      for (const { mine, outcomes } of results) {
        outcomes.forEach((o, i) => {
          if (o.inserted) inserted.set(mine[i]!, (inserted.get(mine[i]!) ?? 0) + 1);
          else expect(o.existing).toMatchObject({ customerId: c, idempotencyKey: mine[i] });
        });
      }
      expect([...inserted.keys()].sort()).toEqual([...keys].sort());
      expect([...inserted.values()].every((n) => n === 1)).toBe(true);
      expect(await l.listEvents(c)).toHaveLength(100);
    });

    it("given a commit that fails, then every caller of that batch gets the error and none of it is written", async () => {
      const { ledger: l, sql } = ledger();
      const c = newCustomer();
      await l.append([event(c, { idempotencyKey: "before" })]);
      const failure = new Error("injected commit failure");
      sql.failNextCommit = failure;
      const results = await Promise.allSettled([
        l.append([event(c, { idempotencyKey: "a" }), event(c, { idempotencyKey: "before" })]),
        l.append([event(c, { idempotencyKey: "b" })]),
        l.append([event(c, { amount: "5" })]),
      ]);
      expect(results.map((r) => r.status)).toEqual(["rejected", "rejected", "rejected"]);
      for (const r of results) expect((r as PromiseRejectedResult).reason).toBe(failure);
      expect((await l.listEvents(c)).map((e) => e.idempotencyKey)).toEqual(["before"]);

      // The ledger keeps working, and a retry of the failed events is inserted once.
      expect(await l.append([event(c, { idempotencyKey: "a" })])).toEqual([{ inserted: true }]);
    });

    it("given an invalid event, then only its caller is rejected and the batch commits", async () => {
      const { ledger: l } = ledger();
      const c = newCustomer();
      const [good, badAmount, badText, badKey] = await Promise.allSettled([
        l.append([event(c)]),
        l.append([event(c, { amount: "1e5" })]),
        l.append([event(c, { properties: { note: "nul\u0000" } })]),
        l.append([event(c, { idempotencyKey: "" })]),
      ]);
      expect(good).toEqual({ status: "fulfilled", value: [{ inserted: true }] });
      for (const r of [badAmount, badText, badKey]) {
        expect(r!.status).toBe("rejected");
        expect((r as PromiseRejectedResult).reason).toBeInstanceOf(InvalidEventError);
      }
      expect(await l.listEvents(c)).toHaveLength(1);
    });

    it("keeps decimals exact and canonical", async () => {
      const { ledger: l } = ledger();
      const c = newCustomer();
      await l.append(Array.from({ length: 10 }, () => event(c, { amount: "0.1" })));
      expect(await l.sumUsage(c, "api_calls", null, null)).toBe("1");

      const big = newCustomer();
      await l.append([
        event(big, { amount: "9007199254740991.5" }),
        event(big, { amount: "0.5" }),
        event(big, { amount: "1.000000", featureKey: "seats" }),
        event(big, { amount: "-3.50", featureKey: "seats" }),
        event(big, { amount: "0.000001", featureKey: "tiny" }),
        event(big, { amount: "123456789012345678901234567890.123456", featureKey: "huge" }),
      ]);
      expect((await l.listEvents(big)).map((e) => e.amount)).toEqual([
        "9007199254740991.5",
        "0.5",
        "1",
        "-3.5",
        "0.000001",
        "123456789012345678901234567890.123456",
      ]);
      expect(await l.sumUsage(big, "api_calls", null, null)).toBe("9007199254740992");
      expect(await l.sumUsage(big, "seats", null, null)).toBe("-2.5");
      expect(await l.sumUsage(big, "tiny", null, null)).toBe("0.000001");
      expect(await l.sumUsage(big, "none", null, null)).toBe("0");
    });

    it("sums usage over [from, to)", async () => {
      const { ledger: l } = ledger();
      const c = newCustomer();
      await l.append([
        event(c, { amount: "1", occurredAt: at(0) }),
        event(c, { amount: "10", occurredAt: at(10) }),
        event(c, { amount: "100", occurredAt: at(20) }),
        event(c, { amount: "1000", occurredAt: at(20), featureKey: "other" }),
      ]);
      expect(await l.sumUsage(c, "api_calls", null, null)).toBe("111");
      expect(await l.sumUsage(c, "api_calls", at(10), null)).toBe("110");
      expect(await l.sumUsage(c, "api_calls", null, at(20))).toBe("11");
      expect(await l.sumUsage(c, "api_calls", at(10), at(20))).toBe("10");
      expect(await l.sumUsage(c, "api_calls", at(0), at(0))).toBe("0");
    });

    it("keeps the wallet balance exact and lists its history newest first", async () => {
      const { ledger: l } = ledger();
      const c = newCustomer();
      expect(await l.walletBalance(c)).toBe("0");
      const topup = (credits: string, key: string) =>
        event(c, { kind: "topup", featureKey: null, amount: "0", credits, idempotencyKey: key });
      await l.append([topup("100", "t1")]);
      await l.append([event(c, { amount: "3", credits: "-0.3", idempotencyKey: "u1" }), event(c, { amount: "2" })]);
      await l.append([topup("0.1", "t2")]);
      await l.append([topup("0.1", "t2")]); // a retry: counted once

      expect(await l.walletBalance(c)).toBe("99.8");
      const history = await l.walletHistory(c, 10);
      expect(history.map((e) => [e.idempotencyKey, e.credits])).toEqual([
        ["t2", "0.1"],
        ["u1", "-0.3"],
        ["t1", "100"],
      ]);
      expect((await l.walletHistory(c, 2)).map((e) => e.idempotencyKey)).toEqual(["t2", "u1"]);
      expect(await l.walletHistory(c, 0)).toEqual([]);
    });

    it("keeps unusual text exactly, in every text column and in properties, within a shared commit", async () => {
      const { ledger: l, sql } = ledger();
      const c = `${newCustomer()} ü 😀 "q" \\ \u2028 \u0001`;
      const odd = 'a "quoted" \\ backslash, \\u0000 as text, \u0001\u001f, \u2028\u2029, é, 中文, 😀, \ud83d\ude00, \ufeff';
      const events = [
        event(c, {
          featureKey: `feature ${odd}`,
          idempotencyKey: `key ${odd}`,
          fingerprint: `fp ${odd}`,
          occurredAt: at(1),
          properties: { [`key ${odd}`]: `value ${odd}`, "": "", "0": "index-like", plain: "x" },
        }),
        event(c, { occurredAt: at(2), properties: { "\\u0000": "\\", "😀": "\u0000".replace("\u0000", "nul-free") } }),
      ];
      const other = newCustomer();
      const [outcomes, others] = await Promise.all([l.append(events), l.append([event(other)])]);
      expect(outcomes).toEqual([{ inserted: true }, { inserted: true }]);
      expect(others).toEqual([{ inserted: true }]);
      expect(sql.commits).toBe(1);
      expect((await l.listEvents(c)).map(({ recordedAt, ...rest }) => rest)).toEqual(events);
      expect(await l.findByKey(c, `key ${odd}`)).toMatchObject({ id: events[0]!.id });
    });

    it("given a NUL in one caller's strings, then only that caller is refused, with the first field at fault, and its group commits", async () => {
      const { ledger: l, sql } = ledger();
      const c = newCustomer();
      const bad = event(c, { idempotencyKey: "bad-key" });
      const results = await Promise.allSettled([
        l.append([event(c, { idempotencyKey: "good-1" })]),
        l.append([event(c), { ...bad, customerId: `${c}\u0000`, fingerprint: "f\u0000" }]),
        l.append([event(c, { properties: { "a\u0000": "b" } })]),
        // Text that JSON writes with "\u" but that is no NUL: stored as given.
        l.append([event(c, { idempotencyKey: "good-2", properties: { note: "\\u0000 \u0001" } })]),
      ]);
      expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "rejected", "fulfilled"]);
      const refused = (results[1] as PromiseRejectedResult).reason as InvalidEventError;
      expect(refused).toBeInstanceOf(InvalidEventError);
      expect(refused).toMatchObject({ eventId: bad.id, field: "customerId" });
      expect((results[2] as PromiseRejectedResult).reason).toMatchObject({ field: "properties.a\u0000" });
      expect(sql.commits).toBe(1);
      const stored = await l.listEvents(c);
      expect(stored.map((e) => e.idempotencyKey).sort()).toEqual(["good-1", "good-2"]);
      expect(stored.find((e) => e.idempotencyKey === "good-2")!.properties).toEqual({ note: "\\u0000 \u0001" });
    });

    it("given lone surrogates, then text columns store U+FFFD as before, and properties are refused by the database for that caller only", async () => {
      const { ledger: l } = ledger();
      const c = newCustomer();
      const lone = event(`${c}\ud800`, { idempotencyKey: "k\udc00", fingerprint: "f\ud800x" });
      const [stored, refused, fine] = await Promise.allSettled([
        l.append([lone]),
        l.append([event(c, { properties: { note: "\ud800" } })]),
        l.append([event(c)]),
      ]);
      expect(stored).toEqual({ status: "fulfilled", value: [{ inserted: true }] });
      expect(await l.findById(lone.id)).toMatchObject({
        customerId: `${c}\ufffd`,
        idempotencyKey: "k\ufffd",
        fingerprint: "f\ufffdx",
      });
      expect(refused.status).toBe("rejected");
      expect(isPermanentLedgerRefusal((refused as PromiseRejectedResult).reason)).toBe(true);
      expect(fine).toEqual({ status: "fulfilled", value: [{ inserted: true }] });
      expect(await l.listEvents(c)).toHaveLength(1);
    });

    it("stores every column as given, whether a call repeats a value or varies it", async () => {
      const { ledger: l } = ledger();
      const c = newCustomer();
      const shared = { plan: "pro" };
      const mixed = [
        event(c, { occurredAt: at(1), idempotencyKey: "m1", properties: shared }),
        event(c, { occurredAt: at(2), kind: "topup", featureKey: null, amount: "0", credits: "5", properties: shared }),
        event(c, { occurredAt: at(3), kind: "set", featureKey: "seats", amount: "3", idempotencyKey: "m3", properties: {} }),
        event(c, { occurredAt: at(4), kind: "adjustment", amount: "-1.5", fingerprint: "fp-2", properties: { plan: "pro" } }),
      ];
      const keyless = [event(c, { occurredAt: at(5) }), event(c, { occurredAt: at(6) })];
      const topups = [1, 2].map((i) =>
        event(c, { occurredAt: at(6 + i), kind: "topup", featureKey: null, amount: "0", credits: "1", idempotencyKey: `t${i}` }),
      );
      const single = [event(c, { occurredAt: at(9), idempotencyKey: "s", properties: { a: "1", b: "2" } })];
      for (const call of [mixed, keyless, topups, single]) expect((await l.append(call)).every((o) => o.inserted)).toBe(true);
      expect((await l.listEvents(c)).map(({ recordedAt, ...rest }) => rest)).toEqual([...mixed, ...keyless, ...topups, ...single]);
    });

    it("stores occurredAt exactly, from year 1 to 9999, around 1970, all in one call", async () => {
      const { ledger: l } = ledger();
      const c = newCustomer();
      const times = [
        "2025-03-01T00:00:00.001Z",
        "0001-01-01T00:00:00.000Z",
        "9999-12-31T23:59:59.999Z",
        "1969-12-31T23:59:59.999Z",
        "1969-12-31T23:59:58.500Z",
        "1970-01-01T00:00:00.000Z",
        "1900-02-28T12:34:56.789Z",
      ].map((iso) => new Date(iso));
      await l.append(times.map((occurredAt) => event(c, { occurredAt })));
      // Read as epoch milliseconds in SQL: PGlite's own Date parser reads year 1 as 2001.
      const stored = await fixture.sql.query<{ ms: string }>(
        "SELECT (extract(epoch FROM occurred_at) * 1000)::bigint::text AS ms FROM meterd_events WHERE customer_id = $1",
        [c],
      );
      expect(stored.rows.map((r) => Number(r.ms)).sort()).toEqual(times.map((t) => t.getTime()).sort());
    });

    it("accepts exactly the amounts DECIMAL accepts", async () => {
      const { ledger: l } = ledger();
      const c = newCustomer();
      const candidates = [
        "0", "-0", "7", "-7", "00", "007", "1.", ".5", "-.5", "1.50", "-", "", "+1", "1e5", " 1", "1 ", "1.2.3", "1,5",
        "\uff11", "٣", "0x10", "NaN", "Infinity", `${"9".repeat(100)}`, `${"9".repeat(101)}`, `1.${"0".repeat(99)}1`,
        `1.${"1".repeat(101)}`, "-123.456",
      ];
      const results = await Promise.allSettled(candidates.map((amount) => l.append([event(c, { amount, credits: amount })])));
      results.forEach((r, i) => {
        const valid = DECIMAL.test(candidates[i]!);
        expect([candidates[i], r.status]).toEqual([candidates[i], valid ? "fulfilled" : "rejected"]);
        if (!valid) expect((r as PromiseRejectedResult).reason).toBeInstanceOf(InvalidEventError);
      });
      expect((await l.listEvents(c)).map((e) => e.amount).sort()).toEqual(
        ["0", "0", "7", "-7", "0", "7", "1.5", "9".repeat(100), `1.${"0".repeat(99)}1`, "-123.456"].sort(),
      );
    });

    it("writes the events as they were when append() was called, whatever the caller changes afterwards", async () => {
      const { ledger: l } = ledger();
      const c = newCustomer();
      const properties: Record<string, string> = { region: "eu" };
      const events = [event(c, { idempotencyKey: "snap", properties }), event(c, { properties })];
      const expected = structuredClone(events);
      const pending = l.append(events);
      events[0]!.amount = "99";
      events[0]!.idempotencyKey = "changed";
      events[1]!.occurredAt.setTime(0);
      properties.region = "us";
      events.push(event(c));
      expect(await pending).toEqual([{ inserted: true }, { inserted: true }]);
      expect((await l.listEvents(c)).map(({ recordedAt, ...rest }) => rest)).toEqual(expected);
    });

    it("given repeats across the callers of one commit and a stored conflict, then each event reports its own outcome", async () => {
      const { ledger: l, sql } = ledger();
      const c = newCustomer();
      const stored = event(c, { idempotencyKey: "kx", fingerprint: "fp-x" });
      await l.append([stored]);
      const x = await l.findById(stored.id);
      const a1 = event(c, { idempotencyKey: "k1", fingerprint: "fp-a1" });
      const a2 = event(c, { idempotencyKey: "k2", fingerprint: "fp-a2" });
      const b2 = event(c, { idempotencyKey: "kb" });
      const [a, b, cc] = await Promise.all([
        l.append([a1, a2]),
        l.append([{ ...event(c), id: a1.id, idempotencyKey: "other" }, b2, event(c, { idempotencyKey: "kx" })]),
        l.append([event(c, { idempotencyKey: "k2" })]),
      ]);
      expect(sql.commits).toBe(2);
      const [r1, r2] = [await l.findById(a1.id), await l.findById(a2.id)];
      expect(r1).toMatchObject({ fingerprint: "fp-a1" });
      expect(a).toEqual([{ inserted: true }, { inserted: true }]);
      expect(b).toEqual([{ inserted: false, existing: r1 }, { inserted: true }, { inserted: false, existing: x }]);
      expect(cc).toEqual([{ inserted: false, existing: r2 }]);
      expect(await l.findByKey(c, "other")).toBeNull();
      expect(await l.listEvents(c)).toHaveLength(4);
    });

    it("given queued appends, when closed, then they commit first, the client closes, and later appends fail", async () => {
      const { ledger: l, sql } = ledger();
      const c = newCustomer();
      const pending = l.append([event(c)]);
      const closed = l.close();
      await expect(l.append([event(c)])).rejects.toBeInstanceOf(LedgerClosedError);
      expect(await pending).toEqual([{ inserted: true }]);
      await closed;
      expect(sql.closed).toBe(true);
      expect(await new SqlLedger(fixture.sql).listEvents(c)).toHaveLength(1);
    });
  });
}
