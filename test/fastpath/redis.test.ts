// RedisFastPath against the machine's Redis: the shared FastPath contract, then what only Redis has
// (the key layout and its hash tags, pipelined batches, several connections). Each FastPath gets its own
// connection and key prefix, and deletes its keys when closed.
import { randomUUID } from "node:crypto";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { ApplyRequest, ApplyResult, CounterRef } from "../../src/fastpath/fastpath.js";
import { RedisFastPath, type RedisFastPathOptions } from "../../src/fastpath/redis/index.js";
import { connectTestRedis, deleteByPrefix, keysByPrefix, redisSkipReason, type TestRedis } from "../support/redis.js";
import { fastPathContract } from "./contract.js";

const MAX = Number.MAX_SAFE_INTEGER;
const skipReason = await redisSkipReason();

/** A RedisFastPath on a fresh connection and prefix; its close() also deletes its keys and disconnects. */
async function openFastPath(options: Partial<RedisFastPathOptions> = {}): Promise<RedisFastPath> {
  return closing(await connectTestRedis(), options);
}

function closing(t: TestRedis, options: Partial<RedisFastPathOptions> = {}): RedisFastPath {
  const fp = new RedisFastPath({ redis: t.redis, prefix: t.prefix, ...options });
  const close = fp.close.bind(fp);
  fp.close = async () => {
    await close();
    await t.cleanup();
  };
  return fp;
}

/** The hash tag Redis Cluster hashes: the text between the first "{" and the first "}" after it. */
function hashTag(key: string): string {
  const open = key.indexOf("{");
  const close = open < 0 ? -1 : key.indexOf("}", open + 1);
  return close > open + 1 ? key.slice(open + 1, close) : key;
}

/** CLUSTER KEYSLOT, computed locally: CRC16/XMODEM of the hash tag, modulo 16384. */
function keySlot(key: string): number {
  let crc = 0;
  for (const byte of Buffer.from(hashTag(key), "utf8")) {
    crc ^= byte << 8;
    for (let bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc % 16384;
}

/** For tests about other things: every customer it loads is made live first. */
class LiveRedisFastPath extends RedisFastPath {
  override async loadCounter(counter: CounterRef, units: number): Promise<void> {
    await this.markLive(counter.customerId);
    return super.loadCounter(counter, units);
  }

  override async loadWallet(customerId: string, units: number): Promise<void> {
    await this.markLive(customerId);
    return super.loadWallet(customerId, units);
  }
}

describe.skipIf(skipReason !== null)("RedisFastPath", () => {
  fastPathContract("RedisFastPath", () => openFastPath());

  describe("Redis specifics", () => {
    let t: TestRedis;
    let fp: RedisFastPath;
    let customer: string;
    let counter: CounterRef;

    beforeEach(async () => {
      t = await connectTestRedis();
      fp = new LiveRedisFastPath({ redis: t.redis, prefix: t.prefix });
      customer = `cust_${randomUUID()}`;
      counter = { customerId: customer, featureKey: "api_calls", periodKey: "1740787200000" };
    });
    afterEach(async () => {
      await fp?.close();
      await t?.cleanup();
    });

    function add(units: number, over: Partial<ApplyRequest> = {}): ApplyRequest {
      const eventId = `evt_${randomUUID()}`;
      const customerId = over.customerId ?? customer;
      return {
        customerId,
        eventId,
        dedupeKey: eventId,
        fingerprint: `fp_add_${units}`,
        counter: { ...counter, customerId },
        op: { kind: "add", units },
        limit: null,
        walletDelta: 0,
        walletMayGoNegative: false,
        record: JSON.stringify({ customerId, dedupeKey: over.dedupeKey ?? eventId }),
        ...over,
      };
    }

    it("applyMany answers a duplicate with a stored result of an earlier version exactly, line breaks, tabs and backslashes included", async () => {
      await fp.loadCounter(counter, 0);
      const req = add(1, { dedupeKey: "odd-result" });
      const result = 'line one\nline two\ttabbed \\ back\\n not a break';
      // A settled record as meterd before 0.2 wrote it: state, fingerprint, event id, delta, walletDelta, counter key, result.
      await t.redis.set(fp.keys.record(customer, "odd-result"), ["S", req.fingerprint, "evt_old", "1", "0", fp.keys.counter(counter), result].join("\t"));
      expect(await fp.applyMany([add(1), { ...req, eventId: "evt_retry" }, add(1)])).toMatchObject([
        { code: "APPLIED" },
        { code: "DUPLICATE", original: result },
        { code: "APPLIED" },
      ]);
    });

    it("reads idempotency records that meterd 0.1 wrote as hashes: their answers survive an upgrade", async () => {
      await fp.loadCounter(counter, 7);
      const pending = add(2, { dedupeKey: "old-pending" });
      const settled = add(3, { dedupeKey: "old-settled" });
      const pendingKey = fp.keys.record(customer, "old-pending");
      const settledKey = fp.keys.record(customer, "old-settled");
      const counterKey = fp.keys.counter(counter);
      // As 0.1's apply.lua and settle.lua left them.
      await t.redis.hset(pendingKey, { fp: pending.fingerprint, eid: pending.eventId, delta: "2", wdelta: "0", ckey: counterKey, applied: JSON.stringify(["APPLIED", "5", "7", "2", false]), row: pending.record });
      await t.redis.hset(settledKey, { fp: settled.fingerprint, eid: settled.eventId, delta: "3", wdelta: "0", ckey: counterKey, result: "old-result" });

      // The same event again gets its answer; it names no batch, so there is nothing to settle or undo by it.
      expect(await fp.apply(pending)).toEqual({ code: "APPLIED", before: 5, after: 7, delta: 2, walletAfter: null, ref: "" });
      expect(await fp.apply({ ...pending, eventId: "evt_other" })).toEqual({ code: "PENDING" });
      expect(await fp.apply({ ...pending, fingerprint: "other" })).toEqual({ code: "KEY_CONFLICT" });
      expect(await fp.apply(settled)).toEqual({ code: "DUPLICATE", original: "old-result" });
      // Its outbox entry, in a version before batches, is not swept (a clean shutdown settles everything).
      expect(await fp.pendingEvents(customer)).toEqual([]);
      expect(await t.redis.type(pendingKey)).toBe("hash");
    });

    it("computes key slots as Redis does (the examples of the CLUSTER KEYSLOT documentation)", () => {
      expect(keySlot("somekey")).toBe(11058);
      expect(keySlot("foo{hash_tag}")).toBe(2515);
      expect(keySlot("123456789")).toBe(0x31c3 % 16384);
    });

    it("puts every key of a customer under the customer's hash tag, so that one slot holds them all", async () => {
      const other = `cust_${randomUUID()}`;
      for (const id of [customer, other]) {
        await fp.loadCounter({ ...counter, customerId: id }, 0);
        await fp.loadWallet(id, 10);
        const req = add(1, { customerId: id, walletDelta: -1, dedupeKey: "order-1" });
        expect((await fp.apply(req)).code).toBe("APPLIED");
      }
      const keys = await keysByPrefix(t.redis, t.prefix);
      // Per customer: counter, wallet, idempotency record, marker, and the batch of its call; and the outbox.
      expect(keys.filter((key) => key !== fp.keys.outbox())).toHaveLength(10);
      expect(keys).toContain(fp.keys.outbox());
      const byTag = new Map<string, string[]>();
      for (const key of keys) if (key !== fp.keys.outbox()) byTag.set(hashTag(key), [...(byTag.get(hashTag(key)) ?? []), key]);
      expect([...byTag.keys()].sort()).toEqual([`c:${customer}`, `c:${other}`].sort());
      for (const [tag, ofOne] of byTag) {
        const names = ofOne.map((key) => key.slice(t.prefix.length).replace(`{${tag}}`, ""));
        const isBatch = (name: string) => name.startsWith(":b:");
        expect(names.filter((name) => !isBatch(name)).sort()).toEqual([":k:order-1", ":m", ":u:api_calls:1740787200000", ":w"]);
        expect(names.filter(isBatch)).toHaveLength(1);
        expect(new Set(ofOne.map(keySlot))).toEqual(new Set([keySlot(`{${tag}}`)]));
      }
      expect(fp.keys.tag(customer)).toBe(`c:${customer}`);
    });

    it("after Redis loses a customer's keys, nothing loads or applies until the rebuild marks the customer live", async () => {
      const plain = new RedisFastPath({ redis: t.redis, prefix: t.prefix });
      await plain.markLive(customer);
      await plain.loadCounter(counter, 5);
      expect((await plain.apply(add(1))).code).toBe("APPLIED");
      // Redis comes back empty for this deployment.
      await deleteByPrefix(t.redis, t.prefix);
      expect(await plain.apply(add(1))).toEqual({ code: "NOT_LOADED", counter: true, wallet: true, customer: true });
      expect(await plain.isLive(customer)).toBe(false);
      await plain.loadCounter(counter, 6);
      expect((await plain.read([counter], null)).counters).toEqual([null]);
      // The first to notice sets the time before which nothing may load; others join it.
      const notBefore = Date.now() + 3000;
      expect(await plain.beginRebuild(customer, notBefore)).toBe(notBefore);
      expect(await plain.beginRebuild(customer, notBefore + 1000)).toBe(notBefore);
      await plain.markLive(customer);
      expect(await plain.beginRebuild(customer, notBefore)).toBe(0);
      await plain.loadCounter(counter, 6);
      expect(await plain.apply(add(1))).toMatchObject({ code: "APPLIED", before: 6, after: 7 });
    });

    it("a customer id holding '}' and ':' cannot pose as another customer's keys", async () => {
      // Concatenated as is, customer "x}:k:d"'s wallet would be "<prefix>{c:x}:k:d}:w", which is also
      // customer "x"'s idempotency record for the key "d}:w" (and would hash by the tag "c:x").
      const mallory = "x}:k:d";
      const victim = "x";
      expect(fp.keys.wallet(mallory)).not.toBe(fp.keys.record(victim, "d}:w"));
      expect(hashTag(fp.keys.wallet(mallory))).not.toBe(hashTag(fp.keys.wallet(victim)));
      expect(hashTag(fp.keys.wallet(mallory))).toBe(fp.keys.tag(mallory));

      const victimCounter = { ...counter, customerId: victim };
      await fp.loadWallet(mallory, 100);
      await fp.loadCounter(victimCounter, 0);
      const victimEvent = add(1, { customerId: victim, counter: victimCounter, dedupeKey: "d}:w" });
      expect(await fp.apply(victimEvent)).toMatchObject({ code: "APPLIED", after: 1 });
      expect(await fp.apply(add(0, { customerId: mallory, counter: null, walletDelta: -10 }))).toMatchObject({
        code: "APPLIED",
        walletAfter: 90,
      });
      expect(await fp.apply({ ...victimEvent, eventId: `evt_${randomUUID()}` })).toEqual({ code: "PENDING" });
      expect(await fp.read([victimCounter], mallory)).toEqual({ counters: [1], wallet: 90 });
      expect(await fp.read([], victim)).toEqual({ counters: [], wallet: null });
    });

    it("keeps feature and period apart even when they hold ':'", async () => {
      const a = { ...counter, featureKey: "f:1", periodKey: "2" };
      const b = { ...counter, featureKey: "f", periodKey: "1:2" };
      expect(fp.keys.counter(a)).not.toBe(fp.keys.counter(b));
      await fp.loadCounter(a, 1);
      await fp.loadCounter(b, 2);
      expect((await fp.read([a, b], null)).counters).toEqual([1, 2]);
    });

    it("applyMany sends a batch of several customers in one script call, and answers what apply answers one by one", async () => {
      const second = await connectTestRedis();
      const batched = new LiveRedisFastPath({ redis: second.redis, prefix: second.prefix });
      try {
        const [a, b, unloaded] = [customer, `cust_${randomUUID()}`, `cust_${randomUUID()}`];
        const on = (customerId: string) => ({ ...counter, customerId });
        for (const path of [fp, batched]) {
          await path.loadCounter(on(a), 0);
          await path.loadCounter(on(b), 8);
          await path.loadWallet(b, 3);
        }
        const retried = add(2, { customerId: a, counter: on(a), dedupeKey: "order-7" });
        const batch: ApplyRequest[] = [
          add(3, { customerId: a, counter: on(a), limit: 4 }),
          add(1, { customerId: b, counter: on(b), walletDelta: -2 }),
          add(2, { customerId: a, counter: on(a), limit: 4 }),
          retried,
          add(1, { customerId: unloaded, counter: on(unloaded) }),
          add(1, { customerId: b, counter: on(b), walletDelta: -2 }),
          { ...retried, eventId: `evt_${randomUUID()}` },
          add(0, { customerId: a, counter: on(a), op: { kind: "set", target: 1, expected: 5 }, fingerprint: "set" }),
          add(-1, { customerId: a, counter: on(a), limit: 4 }),
        ];

        const writes = vi.spyOn(t.redis.stream, "write");
        const oneByOne: ApplyResult[] = [];
        for (const req of batch) oneByOne.push(await fp.apply(req));
        expect(writes).toHaveBeenCalledTimes(batch.length);

        const batchWrites = vi.spyOn(second.redis.stream, "write");
        const scriptCalls = vi.spyOn(second.redis, "meterdApplyMany");
        const together = await batched.applyMany(batch);
        // One script call for the whole batch, whatever the number of customers.
        expect(scriptCalls).toHaveBeenCalledTimes(1);
        expect(batchWrites).toHaveBeenCalledTimes(1);

        // The same answers, but for the pending entries they name (one batch, or one per call).
        const withoutRef = (results: ApplyResult[]) => results.map((r) => (r.code === "APPLIED" ? { ...r, ref: "" } : r));
        expect(withoutRef(together)).toEqual(withoutRef(oneByOne));
        expect(together.map((r) => r.code)).toEqual([
          "APPLIED",
          "APPLIED",
          "DENIED_LIMIT",
          "APPLIED",
          "NOT_LOADED",
          "DENIED_CREDITS",
          "PENDING",
          "APPLIED",
          "APPLIED",
        ]);
        const readings = async (path: RedisFastPath) => path.read([on(a), on(b), on(unloaded)], b);
        expect(await readings(batched)).toEqual(await readings(fp));
        expect(await readings(batched)).toEqual({ counters: [0, 9, null], wallet: 1 });
        expect(await batched.applyMany([])).toEqual([]);
      } finally {
        await second.cleanup();
      }
    });

    it("admits exactly the limit out of 1,000 concurrent applies from two connections", async () => {
      const second = await connectTestRedis(t.prefix);
      const other = new LiveRedisFastPath({ redis: second.redis, prefix: t.prefix });
      try {
        await fp.loadCounter(counter, 0);
        const results = await Promise.all(
          Array.from({ length: 1000 }, (_, i) => (i % 2 === 0 ? fp : other).apply(add(1, { limit: 100 }))),
        );
        expect(results.filter((r) => r.code === "APPLIED")).toHaveLength(100);
        expect(results.filter((r) => r.code === "DENIED_LIMIT")).toHaveLength(900);
        const befores = results.flatMap((r) => (r.code === "APPLIED" ? [r.before] : []));
        expect(new Set(befores).size).toBe(100);
        expect((await other.read([counter], null)).counters).toEqual([100]);
      } finally {
        await second.redis.quit();
      }
    });

    it("a late revert cannot undo another event that has since taken the key", async () => {
      await fp.loadCounter(counter, 0);
      const first = add(5, { dedupeKey: "order-9" });
      const applied = await fp.apply(first);
      if (applied.code !== "APPLIED") throw new Error(`expected APPLIED, got ${applied.code}`);
      await fp.revert(first, applied);
      const retry = { ...first, eventId: `evt_${randomUUID()}` };
      expect(await fp.apply(retry)).toMatchObject({ code: "APPLIED", after: 5 });
      // The first event's revert arrives again, late: the key is now the retry's.
      await fp.revert(first, applied);
      expect((await fp.read([counter], null)).counters).toEqual([5]);
      expect(await fp.apply({ ...retry, eventId: `evt_${randomUUID()}` })).toEqual({ code: "PENDING" });
    });

    it("a revert leaves a counter that Redis lost unloaded, for the ledger to rebuild", async () => {
      await fp.loadCounter(counter, 0);
      await fp.loadWallet(customer, 10);
      const req = add(2, { walletDelta: -3 });
      const applied = await fp.apply(req);
      if (applied.code !== "APPLIED") throw new Error(`expected APPLIED, got ${applied.code}`);
      await t.redis.del(fp.keys.counter(counter));
      await fp.revert(req, applied);
      expect(await fp.read([counter], customer)).toEqual({ counters: [null], wallet: 10 });
    });

    it("gives a settled record the configured TTL, and a pending one a leak guard", async () => {
      const short = new LiveRedisFastPath({ redis: t.redis, prefix: t.prefix, settledTtlSeconds: 60 });
      await short.loadCounter(counter, 0);
      const req = add(1, { dedupeKey: "ttl" });
      const applied = await short.apply(req);
      if (applied.code !== "APPLIED") throw new Error(`expected APPLIED, got ${applied.code}`);
      const key = short.keys.record(customer, "ttl");
      expect(await t.redis.ttl(key)).toBeGreaterThan(0);
      await short.settleMany([{ customerId: customer, dedupeKey: "ttl", ref: applied.ref }]);
      const ttl = await t.redis.ttl(key);
      expect(ttl).toBeGreaterThan(0);
      expect(ttl).toBeLessThanOrEqual(60);
      expect(() => new RedisFastPath({ redis: t.redis, settledTtlSeconds: 0 })).toThrow(RangeError);
    });

    it("completes a batch when its events are settled, all at once or in parts, an index named twice counting once", async () => {
      await fp.loadCounter(counter, 0);
      const settle = (results: ApplyResult[]) =>
        fp.settleMany(results.map((r) => ({ customerId: customer, dedupeKey: "", ref: r.code === "APPLIED" ? r.ref : "" })));
      const batchOf = (r: ApplyResult) => (r.code === "APPLIED" ? r.ref.slice(0, r.ref.lastIndexOf("#")) : "");
      const pending = async () => (await fp.staleEvents(-60_000, 10_000)).length;

      // Every event at once: complete, a tombstone left, nothing pending.
      const whole = await fp.applyMany([add(1), add(2), add(3, { limit: 1 }), add(4)]);
      expect(whole.map((r) => r.code)).toEqual(["APPLIED", "APPLIED", "DENIED_LIMIT", "APPLIED"]);
      expect(await pending()).toBe(3);
      await settle([whole[0]!, whole[1]!, whole[3]!]);
      expect(await t.redis.hkeys(batchOf(whole[0]!))).toEqual(["t"]);
      expect(await pending()).toBe(0);

      // In parts, with an index named twice: as many indexes as the batch applied, but not all of them.
      const parts = await fp.applyMany([add(1), add(1), add(1)]);
      await settle([parts[0]!, parts[0]!, parts[1]!]);
      expect(await pending()).toBe(1);
      expect(await t.redis.hkeys(batchOf(parts[0]!))).not.toEqual(["t"]);
      await settle([parts[2]!]);
      expect(await t.redis.hkeys(batchOf(parts[0]!))).toEqual(["t"]);
      expect(await pending()).toBe(0);
      expect(await fp.read([counter], null)).toEqual({ counters: [10], wallet: null });
    });

    it("waitSettled sees a settle made through another connection", async () => {
      const second = await connectTestRedis(t.prefix);
      try {
        const other = new LiveRedisFastPath({ redis: second.redis, prefix: t.prefix });
        await fp.loadCounter(counter, 0);
        const applied = await fp.apply(add(1, { dedupeKey: "w" }));
        if (applied.code !== "APPLIED") throw new Error(`expected APPLIED, got ${applied.code}`);
        const started = Date.now();
        const waiting = fp.waitSettled(customer, "w", 10_000);
        setTimeout(() => void other.settleMany([{ customerId: customer, dedupeKey: "w", ref: applied.ref }]), 50);
        await waiting;
        expect(Date.now() - started).toBeLessThan(1000);
      } finally {
        await second.redis.quit();
      }
    });

    it("answers totals next to 2^53 exactly (ioredis 6.0.0 decodes integer replies there inexactly)", async () => {
      await fp.loadCounter(counter, MAX - 57);
      await fp.loadWallet(customer, MAX - 1);
      expect(await fp.apply(add(50, { walletDelta: 1 }))).toEqual({
        code: "APPLIED",
        before: MAX - 57,
        after: MAX - 7,
        delta: 50,
        walletAfter: MAX,
        ref: expect.any(String),
      });
      expect(await fp.apply(add(7, { limit: MAX - 1 }))).toEqual({ code: "DENIED_LIMIT", consumed: MAX - 7 });
      expect(await fp.apply(add(8))).toEqual({ code: "OUT_OF_RANGE", consumed: MAX - 7 });
      expect(await fp.apply(add(0, { op: { kind: "set", target: MAX - 1, expected: MAX - 7 }, fingerprint: "s" }))).toMatchObject({
        delta: 6,
        after: MAX - 1,
      });
      expect(await fp.read([counter], customer)).toEqual({ counters: [MAX - 1], wallet: MAX });
    });

    it("refuses a prefix that would break the hash tag, and units that are not integers", async () => {
      expect(() => new RedisFastPath({ redis: t.redis, prefix: "a{b}:" })).toThrow(RangeError);
      await fp.loadCounter(counter, 0);
      await expect(fp.apply(add(0.5))).rejects.toThrow(RangeError);
      await expect(fp.loadCounter(counter, Number.NaN)).rejects.toThrow(RangeError);
    });

    it("close() leaves the client it was given open", async () => {
      await fp.close();
      expect(t.redis.status).toBe("ready");
      expect(await t.redis.ping()).toBe("PONG");
    });
  });
});
