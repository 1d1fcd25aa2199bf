// Reconciliation: counters that drifted from the ledger are found and rebuilt; pending events are not
// mistaken for drift.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RedisFastPath } from "../../src/fastpath/redis/index.js";
import { Reconciler } from "../../src/metering/reconcile.js";
import type { Ledger } from "../../src/ledger/ledger.js";
import { openMeterHarness, type MeterHarness } from "../support/meter.js";
import { postgresSkipReason } from "../support/pg.js";
import { redisSkipReason } from "../support/redis.js";

const skip = (await postgresSkipReason()) ?? (await redisSkipReason());

describe.skipIf(skip !== null)("reconcile on Redis and Postgres", () => {
  let h: MeterHarness;
  let fp: RedisFastPath;
  let reconciler: Reconciler;
  const secret = { mayCorrect: true };

  beforeAll(async () => {
    h = await openMeterHarness("redis");
    fp = h.fastPath as RedisFastPath;
    reconciler = new Reconciler(h.catalog, fp, h.sqlLedger);
  });
  afterAll(async () => {
    await h?.close();
  });

  async function track(customerId: string, featureKey: string, amount: number) {
    return h.meter.track({ customerId, featureKey, amount, idempotencyKey: "", timestamp: null, properties: {} }, secret);
  }

  it("given counters that match the ledger, it reports nothing", async () => {
    const c = h.newCustomer();
    await track(c, "api_calls", 3);
    await track(c, "seats", 2);
    expect(await reconciler.check(c, true)).toEqual([]);
  });

  it("given a drifted counter and wallet, it reports both, and the repair rebuilds them from the ledger", async () => {
    const c = h.newCustomer();
    await h.meter.topUp({ customerId: c, amount: 5, idempotencyKey: "t1", description: "" });
    await track(c, "api_calls", 4);
    await track(c, "ai_tokens", 500); // 1 credit
    const [counter] = (await fp.listCounters(c)).filter((x) => x.counter.featureKey === "api_calls");
    await h.fastPathRedis!.incrby(fp.keys.counter(counter!.counter), 7);
    await h.fastPathRedis!.incrby(fp.keys.wallet(c), -3_000_000);

    const dry = await reconciler.check(c, false);
    expect(dry).toEqual([
      { customerId: c, featureKey: "api_calls", periodKey: counter!.counter.periodKey, fastPath: "11", expected: "4" },
      { customerId: c, featureKey: null, periodKey: null, fastPath: "1", expected: "4" },
    ]);
    // A dry run changes nothing.
    expect(await reconciler.check(c, false)).toEqual(dry);

    expect(await reconciler.check(c, true)).toHaveLength(2);
    const metrics = await h.metrics.get(c, "");
    expect(metrics.find((m) => m.featureKey === "api_calls")?.consumed).toBe(4);
    expect(metrics.find((m) => m.featureKey === "ai_tokens")?.creditBalance).toBe(4);
    expect(await reconciler.check(c, false)).toEqual([]);
  });

  it("given an event committed whose settle has not landed, it is counted once, not reported as a difference", async () => {
    const c = h.newCustomer();
    await track(c, "api_calls", 2);
    // A replica whose settles hang: its committed event stays listed as pending in the outbox.
    const unsettled = new Proxy(fp, {
      get(target, prop) {
        if (prop === "settleMany") return () => new Promise(() => {});
        const value: unknown = Reflect.get(target, prop, target);
        return typeof value === "function" ? value.bind(target) : value;
      },
    }) as RedisFastPath;
    const a = h.instance({ fastPath: unsettled, ledger: h.sqlLedger });
    const outcome = await a.meter.track({ customerId: c, featureKey: "api_calls", amount: 5, idempotencyKey: "", timestamp: null, properties: {} }, secret);
    expect(outcome.allowed).toBe(true);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect((await fp.pendingEvents(c)).map((e) => e.delta)).toEqual([5]);
    expect(await h.sqlLedger.findById(outcome.eventId)).not.toBeNull();
    expect(await reconciler.check(c, false)).toEqual([]);
  });

  it("given an event applied and still committing, it is not reported as a difference", async () => {
    const c = h.newCustomer();
    await track(c, "api_calls", 2);
    // A replica whose commits hang: its event stays pending in the outbox.
    const hanging = new Proxy(h.sqlLedger, {
      get(target, prop) {
        if (prop === "append") return () => new Promise(() => {});
        const value: unknown = Reflect.get(target, prop, target);
        return typeof value === "function" ? value.bind(target) : value;
      },
    }) as Ledger;
    const a = h.instance({ fastPath: fp, ledger: hanging });
    void a.meter.track({ customerId: c, featureKey: "api_calls", amount: 5, idempotencyKey: "", timestamp: null, properties: {} }, secret);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect((await fp.pendingEvents(c)).map((e) => e.delta)).toEqual([5]);
    expect(await reconciler.check(c, true)).toEqual([]);
  });

  it("walks every customer of the ledger, page by page", async () => {
    const seen: string[] = [];
    for await (const page of reconciler.customers(2)) seen.push(...page);
    expect(seen.length).toBe(await h.sqlLedger.countCustomers());
    expect([...seen].sort()).toEqual(seen);
    expect(new Set(seen).size).toBe(seen.length);
  });
});
