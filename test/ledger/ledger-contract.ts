// One contract for every SqlClient adapter behind SqlLedger. Each adapter's test file calls it with a
// migrated database that all its tests share; each test uses its own customer ids.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { LedgerEvent } from "../../src/ledger/ledger.js";
import { InvalidEventError, LedgerClosedError, SqlLedger, type SqlLedgerOptions } from "../../src/ledger/sql-ledger.js";
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
