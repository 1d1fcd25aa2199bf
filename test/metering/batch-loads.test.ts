// A batch of customers the fast path has not loaded (new customers, a new period, a restart) is loaded
// in groups: one ledger query tells which customers have history, one sums every counter, and the
// events are applied again in one round trip, instead of a rebuild, a load and a commit per event.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RedisFastPath } from "../../src/fastpath/redis/index.js";
import type { Ledger } from "../../src/ledger/ledger.js";
import { openMeterHarness, type MeterHarness } from "../support/meter.js";
import { postgresSkipReason } from "../support/pg.js";
import { deleteByPrefix, redisSkipReason, testPrefix } from "../support/redis.js";

const pgSkip = await postgresSkipReason();
const redisSkip = await redisSkipReason();

/** Counts the ledger calls made through it, by method name. */
function countingLedger(inner: Ledger): { ledger: Ledger; calls: Map<string, number>; sums: number[] } {
  const calls = new Map<string, number>();
  const sums: number[] = [];
  const ledger = new Proxy(inner, {
    get(target, prop) {
      const value: unknown = Reflect.get(target, prop, target);
      if (typeof value !== "function") return value;
      return (...args: unknown[]) => {
        calls.set(String(prop), (calls.get(String(prop)) ?? 0) + 1);
        if (prop === "sumUsageMany") sums.push((args[0] as unknown[]).length);
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
  return { ledger, calls, sums };
}

describe.each(["pglite", "redis"] as const)("a batch of customers not loaded, on the %s backend", (backend) => {
  describe.skipIf(backend === "redis" && (pgSkip !== null || redisSkip !== null) && !process.env.CI)("", () => {
    let h: MeterHarness;
    const prefix = testPrefix();
    beforeAll(async () => {
      h = await openMeterHarness(backend);
    });
    afterAll(async () => {
      if (h?.fastPathRedis) await deleteByPrefix(h.fastPathRedis, prefix);
      await h?.close();
    });

    it("given 200 events over 100 new customers and 20 with history, then loads are grouped and every count is exact", async () => {
      const known = Array.from({ length: 20 }, () => h.newCustomer());
      // History in the ledger, then a fresh fast path (as after a restart) that has none of it loaded.
      await h.meter.trackMany(known.map((customerId) => ({ customerId, featureKey: "api_calls", amount: 5, idempotencyKey: `${customerId}-h`, timestamp: null, properties: {} })), { mayCorrect: true });
      const fresh = Array.from({ length: 100 }, () => h.newCustomer());
      const { ledger, calls, sums } = countingLedger(h.sqlLedger);
      // On Redis: a keyspace of its own, empty, as a Redis that came back without its data.
      const fastPath = h.fastPathRedis === null ? undefined : new RedisFastPath({ redis: h.fastPathRedis, prefix });
      const restarted = h.instance({ ledger, ...(fastPath ? { fastPath } : {}) });
      const customers = [...fresh, ...known];
      const inputs = [...customers, ...customers].map((customerId, i) => ({
        customerId,
        featureKey: "api_calls",
        amount: 1,
        idempotencyKey: `b-${i}`,
        timestamp: null,
        properties: {},
      }));

      const outcomes = await restarted.meter.trackMany(inputs, { mayCorrect: true });

      for (const o of outcomes) expect(o).toMatchObject({ allowed: true, duplicate: false });
      // The in-process fast path never loses a customer, so only Redis asks which have history.
      expect(calls.get("customersWithEvents") ?? 0).toBe(backend === "redis" ? 1 : 0);
      expect(calls.get("sumUsageMany")).toBe(1);
      // On Redis, the 100 customers the ledger has never seen start at 0: only the 20 with history are summed.
      expect(sums).toEqual([backend === "redis" ? 20 : 120]);
      expect(calls.get("hasEvents") ?? 0).toBe(0);
      expect(calls.get("sumUsage") ?? 0).toBe(0);
      expect(calls.get("append")).toBe(1);
      const metrics = await restarted.metrics.get(known[0]!, "api_calls");
      expect(metrics[0]?.consumed).toBe(7);
      const fresh0 = await restarted.metrics.get(fresh[0]!, "api_calls");
      expect(fresh0[0]?.consumed).toBe(2);
    });

    it("given customers with different billing anchors in one batch, then each event counts in its own customer's period", async () => {
      const featureKey = `billed_${h.newCustomer()}`;
      await h.catalog.putFeature({ key: featureKey, title: "Billed", productName: "Acme API", kind: "consumable", interval: "month", anchor: "billing", unit: "call", precision: 0, creditCost: null });
      const now = h.clock.now.getTime();
      const anchors = [null, new Date(now - 3 * 86_400_000), new Date(now - 20 * 86_400_000), new Date(now - 3 * 86_400_000)];
      const customers = anchors.map(() => h.newCustomer());
      for (const [i, id] of customers.entries()) {
        await h.catalog.putCustomer({ id, planKey: null, overrides: [{ featureKey, limit: null, hard: true, thresholds: [] }], billingAnchor: anchors[i]! });
      }
      const outcomes = await h.meter.trackMany(
        customers.map((customerId) => ({ customerId, featureKey, amount: 1, idempotencyKey: "", timestamp: null, properties: {} })),
        { mayCorrect: true },
      );
      const starts = outcomes.map((o) => (o instanceof Error ? o : o.usage.periodStart));
      const alone = await Promise.all(customers.map((id) => h.meter.check(id, featureKey, 1)));
      expect(starts).toEqual(alone.map((c) => c.usage.periodStart));
      expect(new Set(starts).size).toBe(3);
      expect(starts[1]).toBe(starts[3]);
    });
  });
});
