// One contract for every FastPath implementation (in-process memory and Redis). Each test gets
// a new instance from make() and uses its own customer ids, so that an implementation backed by a
// shared server (Redis) can run it too.
import { randomUUID } from "node:crypto";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { ApplyRequest, ApplyResult, CounterRef, FastPath } from "../../src/fastpath/fastpath.js";

const MAX = Number.MAX_SAFE_INTEGER;

export function fastPathContract(name: string, make: () => Promise<FastPath>): void {
  describe(`FastPath contract: ${name}`, () => {
    let fp: FastPath;
    let customer: string;
    let counter: CounterRef;

    beforeEach(async () => {
      fp = await make();
      customer = `cust_${randomUUID()}`;
      counter = { customerId: customer, featureKey: "api_calls", periodKey: "1740787200000" };
      await fp.markLive(customer);
    });
    afterEach(async () => {
      await fp?.close();
    });

    /** An add of `units` to the test's counter, with a fresh key; `over` replaces any field. */
    function add(units: number, over: Partial<ApplyRequest> = {}): ApplyRequest {
      const eventId = `evt_${randomUUID()}`;
      return {
        customerId: customer,
        eventId,
        dedupeKey: eventId,
        fingerprint: `fp_add_${units}`,
        counter,
        op: { kind: "add", units },
        limit: null,
        walletDelta: 0,
        walletMayGoNegative: false,
        record: JSON.stringify({ customerId: over.customerId ?? customer, dedupeKey: over.dedupeKey ?? eventId, units }),
        ...over,
      };
    }

    function set(target: number, expected: number | null, over: Partial<ApplyRequest> = {}): ApplyRequest {
      return add(0, { op: { kind: "set", target, expected }, fingerprint: `fp_set_${target}_${expected}`, ...over });
    }

    /** A wallet-only movement (a top-up when positive). */
    function wallet(delta: number, over: Partial<ApplyRequest> = {}): ApplyRequest {
      return add(0, { counter: null, walletDelta: delta, fingerprint: `fp_wallet_${delta}`, ...over });
    }

    async function counterValue(ref: CounterRef = counter): Promise<number | null> {
      return (await fp.read([ref], null)).counters[0] ?? null;
    }

    async function walletValue(of = customer): Promise<number | null> {
      return (await fp.read([], of)).wallet;
    }

    type Applied = Extract<ApplyResult, { code: "APPLIED" }>;

    async function applied(req: ApplyRequest): Promise<Applied> {
      const result = await fp.apply(req);
      if (result.code !== "APPLIED") throw new Error(`expected APPLIED, got ${JSON.stringify(result)}`);
      return result;
    }

    /** What the ledger commit is followed by: the event leaves the outbox. */
    function settle(req: ApplyRequest, result: Applied): Promise<void> {
      return fp.settleMany([{ customerId: req.customerId, dedupeKey: req.dedupeKey, ref: result.ref }]);
    }

    /** The DUPLICATE a retry of a settled event gets: what the event was answered. */
    function duplicateOf(req: ApplyRequest, result: Applied): ApplyResult {
      const { before, after, delta, walletAfter } = result;
      return { code: "DUPLICATE", original: { eventId: req.eventId, before, after, delta, walletAfter, walletDelta: req.walletDelta, counted: req.counter !== null } };
    }

    describe("loading", () => {
      it("startFresh makes new customers live with their counters and wallets at 0, keeping what is loaded", async () => {
        const fresh = `cust_${randomUUID()}`;
        const freshCounter = { ...counter, customerId: fresh };
        const other = { ...counter, customerId: fresh, featureKey: "storage_gb" };
        await fp.loadCounter(counter, 7);
        await fp.startFresh([
          { customerId: fresh, counters: [freshCounter, other], wallet: true },
          { customerId: customer, counters: [counter], wallet: false },
        ]);
        expect(await fp.isLive(fresh)).toBe(true);
        expect((await fp.read([freshCounter, other], fresh))).toEqual({ counters: [0, 0], wallet: 0 });
        expect(await counterValue()).toBe(7);
        expect(await fp.apply(add(1, { customerId: fresh, counter: freshCounter, walletDelta: 0 }))).toMatchObject({ code: "APPLIED", after: 1 });
        await fp.startFresh([]);
      });


      it("answers NOT_LOADED for a counter until loadCounter, and changes nothing", async () => {
        expect(await fp.apply(add(1))).toEqual({ code: "NOT_LOADED", counter: true, wallet: false, customer: false });
        expect(await counterValue()).toBeNull();
        await fp.loadCounter(counter, 5);
        expect(await counterValue()).toBe(5);
        expect(await applied(add(1))).toMatchObject({ before: 5, after: 6, delta: 1 });
      });

      it("answers NOT_LOADED for a wallet until loadWallet", async () => {
        await fp.loadCounter(counter, 0);
        expect(await fp.apply(add(1, { walletDelta: -10 }))).toEqual({ code: "NOT_LOADED", counter: false, wallet: true, customer: false });
        expect(await fp.apply(wallet(10))).toEqual({ code: "NOT_LOADED", counter: false, wallet: true, customer: false });
        expect(await walletValue()).toBeNull();
        await fp.loadWallet(customer, 100);
        expect(await walletValue()).toBe(100);
        expect(await applied(add(1, { walletDelta: -10 }))).toMatchObject({ after: 1, walletAfter: 90 });
      });

      it("reports both missing when neither is loaded", async () => {
        expect(await fp.apply(add(1, { walletDelta: -1 }))).toEqual({ code: "NOT_LOADED", counter: true, wallet: true, customer: false });
      });

      it("does not need the wallet when walletDelta is 0, nor the counter when counter is null", async () => {
        await fp.loadCounter(counter, 0);
        expect(await applied(add(2))).toMatchObject({ after: 2, walletAfter: null });
        await fp.loadWallet(customer, 0);
        expect(await applied(wallet(7))).toMatchObject({ walletAfter: 7 });
        expect(await counterValue()).toBe(2);
      });

      it("a NOT_LOADED answer does not remember the key", async () => {
        const req = add(1);
        expect((await fp.apply(req)).code).toBe("NOT_LOADED");
        await fp.loadCounter(counter, 0);
        expect((await fp.apply(req)).code).toBe("APPLIED");
      });

      it("loadCounter does not overwrite a loaded counter", async () => {
        await fp.loadCounter(counter, 3);
        await applied(add(4));
        await fp.loadCounter(counter, 0);
        await fp.loadCounter(counter, 100);
        expect(await counterValue()).toBe(7);
      });

      it("loadWallet does not overwrite a loaded wallet", async () => {
        await fp.loadWallet(customer, 50);
        await applied(wallet(5));
        await fp.loadWallet(customer, 0);
        expect(await walletValue()).toBe(55);
      });

      it("keeps counters apart by customer, feature and period", async () => {
        const other: CounterRef[] = [
          { ...counter, customerId: `cust_${randomUUID()}` },
          { ...counter, featureKey: "storage_gb" },
          { ...counter, periodKey: "1743465600000" },
          { ...counter, periodKey: "p" },
        ];
        await fp.loadCounter(counter, 1);
        await fp.markLive(other[0]!.customerId);
        for (const [i, ref] of other.entries()) await fp.loadCounter(ref, 10 + i);
        await applied(add(5));
        const readings = await fp.read([counter, ...other], null);
        expect(readings.counters).toEqual([6, 10, 11, 12, 13]);
        expect(readings.wallet).toBeNull();
      });
    });

    describe("hard limits", () => {
      beforeEach(async () => {
        await fp.loadCounter(counter, 0);
      });

      it("admits consumed + amount <= limit, denies the event that would pass it, and leaves the counter alone", async () => {
        expect(await applied(add(7, { limit: 10 }))).toMatchObject({ before: 0, after: 7, delta: 7 });
        expect(await fp.apply(add(4, { limit: 10 }))).toEqual({ code: "DENIED_LIMIT", consumed: 7 });
        expect(await counterValue()).toBe(7);
        expect(await applied(add(3, { limit: 10 }))).toMatchObject({ before: 7, after: 10, delta: 3 });
        expect(await fp.apply(add(1, { limit: 10 }))).toEqual({ code: "DENIED_LIMIT", consumed: 10 });
        expect(await counterValue()).toBe(10);
      });

      it("a limit of 0 denies any growth", async () => {
        expect(await fp.apply(add(1, { limit: 0 }))).toEqual({ code: "DENIED_LIMIT", consumed: 0 });
        expect(await counterValue()).toBe(0);
      });

      it("a null limit caps nothing", async () => {
        expect(await applied(add(1_000_000, { limit: null }))).toMatchObject({ after: 1_000_000 });
      });

      it("a denial does not remember the key: the same request is applied once there is room", async () => {
        await applied(add(10, { limit: 10 }));
        const req = add(1, { limit: 10 });
        expect((await fp.apply(req)).code).toBe("DENIED_LIMIT");
        await applied(add(-1, { limit: 10 }));
        expect(await applied(req)).toMatchObject({ before: 9, after: 10 });
      });

      it("always admits a negative add, even over the limit", async () => {
        const over: CounterRef = { ...counter, featureKey: "seats" };
        await fp.loadCounter(over, 12);
        expect(await applied(add(-1, { counter: over, limit: 10 }))).toMatchObject({ before: 12, after: 11, delta: -1 });
        expect(await applied(add(-5, { counter: over, limit: 0 }))).toMatchObject({ before: 11, after: 6, delta: -5 });
      });

      it("refuses a correction that would take the total below zero, and changes nothing", async () => {
        await applied(add(3));
        expect(await fp.apply(add(-4))).toEqual({ code: "OUT_OF_RANGE", consumed: 3 });
        expect(await counterValue()).toBe(3);
        expect(await applied(add(-3))).toMatchObject({ before: 3, after: 0 });
      });

      it("admits exactly the limit out of 1,000 concurrent applies", async () => {
        const results = await Promise.all(Array.from({ length: 1000 }, () => fp.apply(add(1, { limit: 100 }))));
        const codes = results.map((r) => r.code);
        expect(codes.filter((c) => c === "APPLIED")).toHaveLength(100);
        expect(codes.filter((c) => c === "DENIED_LIMIT")).toHaveLength(900);
        expect(await counterValue()).toBe(100);
        // Each admitted apply saw a distinct before value: the check and the increment were one step.
        const befores = results.flatMap((r) => (r.code === "APPLIED" ? [r.before] : []));
        expect(new Set(befores).size).toBe(100);
        expect(Math.max(...befores)).toBe(99);
      });
    });

    describe("set", () => {
      beforeEach(async () => {
        await fp.loadCounter(counter, 30);
      });

      it("computes the delta from the current total", async () => {
        expect(await applied(set(50, null))).toMatchObject({ before: 30, after: 50, delta: 20 });
        expect(await applied(set(45, null))).toMatchObject({ before: 50, after: 45, delta: -5 });
        expect(await applied(set(45, null))).toMatchObject({ before: 45, after: 45, delta: 0 });
        expect(await counterValue()).toBe(45);
      });

      it("honours expected: EXPECTED_MISMATCH with the current total, and nothing changes", async () => {
        expect(await fp.apply(set(50, 29))).toEqual({ code: "EXPECTED_MISMATCH", consumed: 30 });
        expect(await counterValue()).toBe(30);
        expect(await applied(set(50, 30))).toMatchObject({ before: 30, after: 50, delta: 20 });
        expect(await fp.apply(set(60, 30))).toEqual({ code: "EXPECTED_MISMATCH", consumed: 50 });
      });

      it("is denied above a hard limit, and admitted at it or when it lowers the total", async () => {
        expect(await fp.apply(set(41, null, { limit: 40 }))).toEqual({ code: "DENIED_LIMIT", consumed: 30 });
        expect(await counterValue()).toBe(30);
        expect(await applied(set(40, null, { limit: 40 }))).toMatchObject({ after: 40, delta: 10 });
        // Over the limit already (the limit was lowered): a set that lowers the total is a release.
        expect(await applied(set(35, null, { limit: 20 }))).toMatchObject({ after: 35, delta: -5 });
      });
    });

    describe("wallet", () => {
      beforeEach(async () => {
        await fp.loadCounter(counter, 0);
        await fp.loadWallet(customer, 5);
      });

      it("denies a charge the wallet cannot cover, and changes nothing", async () => {
        expect(await fp.apply(add(1, { walletDelta: -6 }))).toEqual({ code: "DENIED_CREDITS", consumed: 0, wallet: 5 });
        expect(await counterValue()).toBe(0);
        expect(await walletValue()).toBe(5);
      });

      it("admits a charge down to exactly zero", async () => {
        expect(await applied(add(1, { walletDelta: -5 }))).toMatchObject({ after: 1, walletAfter: 0 });
        expect(await fp.apply(add(1, { walletDelta: -1 }))).toEqual({ code: "DENIED_CREDITS", consumed: 1, wallet: 0 });
      });

      it("lets the wallet go negative when walletMayGoNegative", async () => {
        expect(await applied(add(1, { walletDelta: -8, walletMayGoNegative: true }))).toMatchObject({ walletAfter: -3 });
        expect(await walletValue()).toBe(-3);
      });

      it("checks the limit and the credits in the same step: a limit denial charges nothing", async () => {
        expect(await fp.apply(add(2, { limit: 1, walletDelta: -1 }))).toEqual({ code: "DENIED_LIMIT", consumed: 0 });
        expect(await walletValue()).toBe(5);
      });

      it("a refund (positive walletDelta) is always admitted", async () => {
        await applied(add(1, { walletDelta: -5 }));
        expect(await applied(add(-1, { walletDelta: 5 }))).toMatchObject({ after: 0, walletAfter: 5 });
      });

      it("admits exactly what the wallet covers out of many concurrent charges", async () => {
        const results = await Promise.all(Array.from({ length: 200 }, () => fp.apply(add(1, { walletDelta: -1 }))));
        expect(results.filter((r) => r.code === "APPLIED")).toHaveLength(5);
        expect(results.filter((r) => r.code === "DENIED_CREDITS")).toHaveLength(195);
        expect(await walletValue()).toBe(0);
        expect(await counterValue()).toBe(5);
      });
    });

    describe("rebuild", () => {
      it("a live customer needs no rebuild; loads and applies work once live", async () => {
        expect(await fp.isLive(customer)).toBe(true);
        expect(await fp.beginRebuild(customer, Date.now() + 60_000)).toBe(0);
        await fp.loadCounter(counter, 4);
        expect(await applied(add(1))).toMatchObject({ before: 4, after: 5 });
      });
    });

    describe("outbox", () => {
      beforeEach(async () => {
        await fp.loadCounter(counter, 0);
        await fp.loadWallet(customer, 100);
      });

      it("lists an applied event as stale until it is settled or reverted, with its deltas and record", async () => {
        const settled = add(2, { dedupeKey: "out-1", walletDelta: -5 });
        const reverted = add(3, { dedupeKey: "out-2" });
        const first = await applied(settled);
        const second = await applied(reverted);
        // Nothing is stale yet for a generous age.
        expect((await fp.staleEvents(60_000, 100)).filter((s) => s.customerId === customer)).toEqual([]);
        await new Promise((resolve) => setTimeout(resolve, 20));
        const stale = (await fp.staleEvents(5, 100)).filter((s) => s.customerId === customer);
        expect(stale.map((s) => s.eventId).sort()).toEqual([settled.eventId, reverted.eventId].sort());
        const entry = stale.find((s) => s.eventId === settled.eventId);
        expect(entry).toEqual({ ref: first.ref, customerId: customer, dedupeKey: "out-1", eventId: settled.eventId, delta: 2, walletDelta: -5, record: settled.record });
        await settle(settled, first);
        await fp.revert(reverted, second);
        expect((await fp.staleEvents(0, 100)).filter((s) => s.customerId === customer)).toEqual([]);
        expect(first.after).toBe(2);
      });

      it("settleMany settles each event: no longer stale, and replays get their own answer", async () => {
        const a = add(1, { dedupeKey: "sm-a" });
        const b = add(2, { dedupeKey: "sm-b", walletDelta: -3 });
        const [ra, rb] = (await fp.applyMany([a, b])) as [Applied, Applied];
        await fp.settleMany([
          { customerId: customer, dedupeKey: "sm-a", ref: ra.ref },
          { customerId: customer, dedupeKey: "sm-b", ref: rb.ref },
        ]);
        expect((await fp.staleEvents(0, 100)).filter((s) => s.customerId === customer)).toEqual([]);
        expect(await fp.apply({ ...a, eventId: `evt_${randomUUID()}` })).toEqual(duplicateOf(a, ra));
        expect(await fp.apply({ ...b, eventId: `evt_${randomUUID()}` })).toEqual(duplicateOf(b, rb));
        expect(await counterValue()).toBe(3);
        expect(await walletValue()).toBe(97);
      });

      it("an event left NOT_LOADED by one call is applied by the next, with its own answer", async () => {
        const other = `cust_${randomUUID()}`;
        const otherCounter = { ...counter, customerId: other };
        await fp.markLive(other);
        const waiting = add(1, { customerId: other, counter: otherCounter, dedupeKey: "nl-a" });
        const [first, second] = await fp.applyMany([waiting, add(2, { dedupeKey: "nl-b" })]);
        expect(first).toMatchObject({ code: "NOT_LOADED", counter: true });
        expect(second).toMatchObject({ code: "APPLIED", after: 2 });
        await fp.loadCounter(otherCounter, 10);
        expect(await fp.applyMany([waiting])).toEqual([expect.objectContaining({ code: "APPLIED", before: 10, after: 11 })]);
      });

      it("an event of a batch settled alone leaves the others pending", async () => {
        const a = add(1, { dedupeKey: "part-a" });
        const b = add(1, { dedupeKey: "part-b" });
        const [ra, rb] = (await fp.applyMany([a, b])) as [Applied, Applied];
        await settle(a, ra);
        expect((await fp.staleEvents(0, 100)).filter((s) => s.customerId === customer).map((s) => s.eventId)).toEqual([b.eventId]);
        expect(await fp.apply({ ...b, eventId: `evt_${randomUUID()}` })).toEqual({ code: "PENDING" });
        await settle(b, rb);
        expect((await fp.staleEvents(0, 100)).filter((s) => s.customerId === customer)).toEqual([]);
        expect(await fp.apply({ ...b, eventId: `evt_${randomUUID()}` })).toEqual(duplicateOf(b, rb));
      });

      it("returns at most `max` stale events", async () => {
        for (let i = 0; i < 5; i++) await applied(add(1, { dedupeKey: `many-${i}` }));
        await new Promise((resolve) => setTimeout(resolve, 20));
        expect((await fp.staleEvents(5, 3)).length).toBeLessThanOrEqual(3);
      });
    });

    describe("idempotency", () => {
      beforeEach(async () => {
        await fp.loadCounter(counter, 0);
        await fp.loadWallet(customer, 100);
      });

      it("the same key and fingerprint is PENDING until settled, then DUPLICATE with the stored result", async () => {
        const req = add(3, { dedupeKey: "order-1" });
        const first = await applied(req);
        // The same event again (a client library resending a command whose reply was lost): the same
        // answer, counted once.
        expect(await fp.apply(req)).toEqual(first);
        expect(await counterValue()).toBe(3);
        // A retry carries a new event id but the same key and payload.
        expect(await fp.apply({ ...req, eventId: `evt_${randomUUID()}` })).toEqual({ code: "PENDING" });
        await settle(req, first);
        expect(await fp.apply(req)).toEqual(duplicateOf(req, first));
        expect(await fp.apply({ ...req, eventId: `evt_${randomUUID()}` })).toEqual(duplicateOf(req, first));
        expect(await counterValue()).toBe(3);
      });

      it("a duplicate is answered even when the limit is now reached", async () => {
        const req = add(5, { dedupeKey: "k", limit: 5 });
        const first = await applied(req);
        await settle(req, first);
        expect(await fp.apply(req)).toEqual(duplicateOf(req, first));
      });

      it("the same key with another fingerprint is KEY_CONFLICT, pending or settled, and changes nothing", async () => {
        const req = add(3, { dedupeKey: "k" });
        const first = await applied(req);
        expect(await fp.apply(add(4, { dedupeKey: "k" }))).toEqual({ code: "KEY_CONFLICT" });
        await settle(req, first);
        expect(await fp.apply(add(4, { dedupeKey: "k" }))).toEqual({ code: "KEY_CONFLICT" });
        expect(await fp.apply(set(9, null, { dedupeKey: "k" }))).toEqual({ code: "KEY_CONFLICT" });
        expect(await counterValue()).toBe(3);
      });

      it("scopes keys by customer", async () => {
        const other = `cust_${randomUUID()}`;
        const otherCounter = { ...counter, customerId: other };
        await fp.markLive(other);
        await fp.loadCounter(otherCounter, 0);
        await applied(add(1, { dedupeKey: "shared" }));
        expect(await applied(add(1, { dedupeKey: "shared", customerId: other, counter: otherCounter }))).toMatchObject({ after: 1 });
      });

      it("concurrent applies of one key apply once", async () => {
        const req = add(1, { dedupeKey: "once" });
        const results = await Promise.all(Array.from({ length: 50 }, () => fp.apply({ ...req, eventId: `evt_${randomUUID()}` })));
        expect(results.filter((r) => r.code === "APPLIED")).toHaveLength(1);
        expect(results.filter((r) => r.code === "PENDING")).toHaveLength(49);
        expect(await counterValue()).toBe(1);
      });

      it("revert undoes the counter and the wallet, and forgets the key", async () => {
        const req = add(4, { dedupeKey: "rev", walletDelta: -10 });
        const first = await applied(req);
        expect(await counterValue()).toBe(4);
        expect(await walletValue()).toBe(90);
        await fp.revert(req, first);
        expect(await counterValue()).toBe(0);
        expect(await walletValue()).toBe(100);
        expect(await applied(req)).toMatchObject({ before: 0, after: 4, walletAfter: 90 });
        expect(await fp.apply({ ...req, eventId: `evt_${randomUUID()}` })).toEqual({ code: "PENDING" });
      });

      it("revert of a set undoes the delta it applied, not the target", async () => {
        await applied(add(10));
        const req = set(4, null, { dedupeKey: "set-rev" });
        const result = await applied(req);
        expect(result.delta).toBe(-6);
        await applied(add(1));
        await fp.revert(req, result);
        expect(await counterValue()).toBe(11);
      });

      it("revert of a settled event changes nothing: the ledger holds it", async () => {
        const req = wallet(25, { dedupeKey: "topup-1" });
        const result = await applied(req);
        await settle(req, result);
        await fp.revert(req, result);
        expect(await walletValue()).toBe(125);
        expect(await fp.apply({ ...req, eventId: `evt_${randomUUID()}` })).toEqual(duplicateOf(req, result));
      });

      it("revert of one event of a batch leaves the others pending", async () => {
        const a = add(2, { dedupeKey: "rb-a" });
        const b = add(3, { dedupeKey: "rb-b" });
        const [ra, rb] = (await fp.applyMany([a, b])) as [Applied, Applied];
        await fp.revert(a, ra);
        expect(await counterValue()).toBe(3);
        expect((await fp.staleEvents(0, 100)).filter((s) => s.customerId === customer).map((s) => s.eventId)).toEqual([b.eventId]);
        expect(await fp.apply({ ...a, eventId: `evt_${randomUUID()}` })).toMatchObject({ code: "APPLIED", after: 5 });
        await settle(b, rb);
        expect(await fp.apply({ ...b, eventId: `evt_${randomUUID()}` })).toEqual(duplicateOf(b, rb));
      });
    });

    describe("waitSettled", () => {
      beforeEach(async () => {
        await fp.loadCounter(counter, 0);
      });

      /** Whether the promise has settled within `ms`. */
      async function settledWithin(p: Promise<void>, ms: number): Promise<boolean> {
        let timer: NodeJS.Timeout | undefined;
        const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
        try {
          return await Promise.race([p.then(() => true as const), timeout]);
        } finally {
          clearTimeout(timer);
        }
      }

      it("resolves at once for an unknown or settled key", async () => {
        expect(await settledWithin(fp.waitSettled(customer, "unknown", 10_000), 1000)).toBe(true);
        const req = add(1, { dedupeKey: "done" });
        await settle(req, await applied(req));
        expect(await settledWithin(fp.waitSettled(customer, "done", 10_000), 1000)).toBe(true);
      });

      it("resolves when the pending key is settled", async () => {
        const req = add(1, { dedupeKey: "w" });
        const result = await applied(req);
        const waiting = fp.waitSettled(customer, "w", 10_000);
        expect(await settledWithin(waiting, 100)).toBe(false);
        await settle(req, result);
        expect(await settledWithin(waiting, 2000)).toBe(true);
      });

      it("resolves when the pending key is reverted", async () => {
        const req = add(1, { dedupeKey: "w" });
        const result = await applied(req);
        const waiters = [fp.waitSettled(customer, "w", 10_000), fp.waitSettled(customer, "w", 10_000)];
        expect(await settledWithin(Promise.all(waiters).then(() => {}), 100)).toBe(false);
        await fp.revert(req, result);
        expect(await settledWithin(Promise.all(waiters).then(() => {}), 2000)).toBe(true);
      });

      it("resolves on timeout when nothing happens", async () => {
        await applied(add(1, { dedupeKey: "w" }));
        const started = Date.now();
        expect(await settledWithin(fp.waitSettled(customer, "w", 150), 5000)).toBe(true);
        expect(Date.now() - started).toBeGreaterThanOrEqual(140);
        // Still pending afterwards: a timeout is not a settle.
        expect(await fp.apply(add(1, { dedupeKey: "w" }))).toEqual({ code: "PENDING" });
      });
    });

    describe("bounds", () => {
      it("answers OUT_OF_RANGE for a counter past Number.MAX_SAFE_INTEGER, and changes nothing", async () => {
        await fp.loadCounter(counter, MAX - 1);
        expect(await fp.apply(add(2))).toEqual({ code: "OUT_OF_RANGE", consumed: MAX - 1 });
        expect(await fp.apply(add(MAX))).toEqual({ code: "OUT_OF_RANGE", consumed: MAX - 1 });
        expect(await counterValue()).toBe(MAX - 1);
        expect(await applied(add(1))).toMatchObject({ after: MAX });
        expect(await fp.apply(set(MAX, null))).toMatchObject({ code: "APPLIED", delta: 0 });
      });

      it("answers OUT_OF_RANGE below -Number.MAX_SAFE_INTEGER", async () => {
        await fp.loadCounter(counter, -(MAX - 1));
        expect(await fp.apply(add(-2))).toEqual({ code: "OUT_OF_RANGE", consumed: -(MAX - 1) });
        expect(await counterValue()).toBe(-(MAX - 1));
      });

      it("answers OUT_OF_RANGE for a wallet past Number.MAX_SAFE_INTEGER, and changes nothing", async () => {
        await fp.loadWallet(customer, MAX - 1);
        expect((await fp.apply(wallet(2))).code).toBe("OUT_OF_RANGE");
        expect(await walletValue()).toBe(MAX - 1);
        expect(await applied(wallet(1))).toMatchObject({ walletAfter: MAX });
      });
    });
  });
}
