// The outbox sweeper: an event whose process died after the fast path and before its commit is still
// committed by another replica, once, and a client's retry then gets the original event as a duplicate.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Ledger } from "../../src/ledger/ledger.js";
import { openMeterHarness, type MeterHarness } from "../support/meter.js";
import { postgresSkipReason } from "../support/pg.js";
import { redisSkipReason } from "../support/redis.js";

const pgSkip = await postgresSkipReason();
const redisSkip = await redisSkipReason();

/** A ledger whose append never returns: the process "dies" between the fast path and its commit. */
function deadLedger(inner: Ledger): Ledger {
  return new Proxy(inner, {
    get(target, prop) {
      if (prop === "append") return () => new Promise(() => {});
      const value: unknown = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

describe.each(["pglite", "redis"] as const)("the outbox sweeper with the %s backend", (backend) => {
  describe.skipIf(backend === "redis" && (pgSkip !== null || redisSkip !== null))("", () => {
    let h: MeterHarness;
    beforeAll(async () => {
      h = await openMeterHarness(backend);
    });
    afterAll(async () => {
      await h?.close();
    });

    it("given a replica that died after the fast path, when another sweeps, then the event is committed once and a retry is its duplicate", async () => {
      const customerId = h.newCustomer();
      // Replica A shares the fast path but its ledger never answers.
      const a = h.instance({ fastPath: h.fastPath, ledger: deadLedger(h.sqlLedger) });
      const input = { customerId, featureKey: "api_calls", amount: 3, idempotencyKey: "dies-1", timestamp: null, properties: { from: "a" } };
      void a.meter.track(input, { mayCorrect: true });
      const keyless = { ...input, idempotencyKey: "", amount: 2 };
      void a.meter.track(keyless, { mayCorrect: true });
      await new Promise((resolve) => setTimeout(resolve, 50));
      expect(await h.sqlLedger.listEvents(customerId)).toHaveLength(0);

      // Nothing is stale for a long threshold; with a short one, both events are swept.
      expect(await h.meter.sweep(60_000)).toBe(0);
      expect(await h.meter.sweep(10)).toBe(2);
      const rows = await h.sqlLedger.listEvents(customerId);
      expect(rows.map((r) => r.amount).sort()).toEqual(["2", "3"]);
      expect(rows.find((r) => r.idempotencyKey === "dies-1")?.properties).toEqual({ from: "a" });
      expect(await h.sqlLedger.sumUsage(customerId, "api_calls", null, null)).toBe("5");

      // Sweeping again finds nothing; the counter equals the ledger.
      expect(await h.meter.sweep(0)).toBe(0);
      const [metric] = await h.metrics.get(customerId, "api_calls");
      expect(metric?.consumed).toBe(5);

      // The client's retry of the keyed event is the swept event, counted once.
      const retry = await h.meter.track(input, { mayCorrect: true });
      expect(retry).toMatchObject({ allowed: true, duplicate: true, eventId: rows.find((r) => r.idempotencyKey === "dies-1")?.id });
      expect(await h.sqlLedger.sumUsage(customerId, "api_calls", null, null)).toBe("5");
    });

    it("given a commit so slow that another replica swept the event first, when it lands, then the event is counted once and not undone", async () => {
      const customerId = h.newCustomer();
      let release!: () => void;
      const gate = new Promise<void>((resolve) => (release = resolve));
      // Replica A's ledger holds its append until the sweeper has committed the same event.
      const slow = new Proxy(h.sqlLedger, {
        get(target, prop) {
          if (prop === "append") return async (...args: Parameters<Ledger["append"]>) => (await gate, target.append(...args));
          const value: unknown = Reflect.get(target, prop, target);
          return typeof value === "function" ? value.bind(target) : value;
        },
      });
      const a = h.instance({ fastPath: h.fastPath, ledger: slow });
      const answer = a.meter.track({ customerId, featureKey: "api_calls", amount: 4, idempotencyKey: "slow-1", timestamp: null, properties: {} }, { mayCorrect: true });
      for (let i = 0; i < 100 && (await h.fastPath.pendingEvents(customerId)).length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 20));
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect(await h.meter.sweep(10)).toBe(1);
      release();

      expect(await answer).toMatchObject({ allowed: true });
      expect(await h.sqlLedger.sumUsage(customerId, "api_calls", null, null)).toBe("4");
      const [metric] = await h.metrics.get(customerId, "api_calls");
      expect(metric?.consumed).toBe(4);
    });
  });
});
