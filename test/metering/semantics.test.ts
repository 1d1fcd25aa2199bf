// DESIGN.md "Semantics" and the consistency invariants, proven through Meter and Metrics and checked in
// the ledger itself, on both ledger backends. One harness (ledger + catalogue) per backend; every test
// uses its own customers and puts the clock back to T0.
import { randomUUID } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ErrorDetailSchema } from "../../gen/meterd/v1/usage_pb.js";
import { invalid, ledgerUnavailable, MeterError } from "../../src/metering/errors.js";
import type { EventListing } from "../../src/metering/event-list.js";
import type { UsageBucket, UsageHistoryQuery } from "../../src/metering/usage-history.js";
import type { MetricView, SetUsageInput, TopUpInput, TrackInput, TrackOutcome } from "../../src/metering/types.js";
import { toConnectError } from "../../src/rpc/errors.js";
import { DAY_MS, faultyLedger, type LedgerBackend, type MeterHarness, openMeterHarness, T0 } from "../support/meter.js";
import { postgresSkipReason } from "../support/pg.js";
import { redisSkipReason } from "../support/redis.js";

const SECRET = { mayCorrect: true };
const PUBLISHABLE = { mayCorrect: false };

const pgSkip = await postgresSkipReason();
const redisSkip = await redisSkipReason();
const backends: LedgerBackend[] = ["pglite", "pg", "redis"];

function track(customerId: string, featureKey: string, amount: number, over: Partial<TrackInput> = {}): TrackInput {
  return { customerId, featureKey, amount, idempotencyKey: "", timestamp: null, properties: {}, ...over };
}

function setUsage(customerId: string, featureKey: string, used: number, over: Partial<SetUsageInput> = {}): SetUsageInput {
  return { customerId, featureKey, used, idempotencyKey: "", expectedUsed: null, properties: {}, ...over };
}

function topUp(customerId: string, amount: number, idempotencyKey: string): TopUpInput {
  return { customerId, amount, idempotencyKey, description: "" };
}

/** The rejection of a promise that must reject, as a ConnectError. */
async function rejection(p: Promise<unknown>): Promise<ConnectError> {
  const outcome = await p.then(
    (value) => ({ ok: true as const, value }),
    (error: unknown) => ({ ok: false as const, error }),
  );
  if (outcome.ok) throw new Error(`expected a rejection, got ${JSON.stringify(outcome.value)}`);
  // Not `instanceof ConnectError`: that is pinned once, in "errors are ConnectErrors" below.
  expect(outcome.error).toMatchObject({ code: expect.any(Number), rawMessage: expect.any(String) });
  return outcome.error as ConnectError;
}

/** The metrics of a watch step that must not be the end. */
function metricsOf(step: IteratorResult<MetricView[], void>): MetricView[] {
  if (step.done) throw new Error("the watch ended early");
  return step.value;
}

/** Resolves with the promise's value, or rejects after `ms` (a hang becomes a clear failure). */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

describe("metering errors", () => {
  const quiet = { debug() {}, info() {}, warn() {}, error() {} };

  it("are ConnectErrors, so the RPC layer sends their code and detail instead of INTERNAL", () => {
    const err = invalid("amount", "must be a finite number", "AMOUNT_NOT_FINITE");
    // ConnectError has a Symbol.hasInstance that accepts only its own prototype or name "ConnectError".
    expect(err instanceof ConnectError).toBe(true);
    expect(ConnectError.from(err)).toBe(err);
    const sent = toConnectError(err, "/meterd.v1.MeteringService/Track", quiet);
    expect(sent.code).toBe(Code.InvalidArgument);
    expect(sent.findDetails(ErrorDetailSchema)[0]).toMatchObject({ field: "amount", reason: "AMOUNT_NOT_FINITE" });
    expect(toConnectError(ledgerUnavailable(new Error("x")), "/p/M", quiet).code).toBe(Code.Unavailable);
  });

  it("instanceof MeterError tells a MeterError from any other ConnectError", () => {
    expect(invalid("amount", "must be a finite number", "AMOUNT_NOT_FINITE") instanceof MeterError).toBe(true);
    expect(new ConnectError("not a metering error", Code.Internal) instanceof MeterError).toBe(false);
  });
});

describe.each(backends)("semantics on the %s ledger", (backend) => {
  describe.skipIf((backend !== "pglite" && pgSkip !== null) || (backend === "redis" && redisSkip !== null))("", () => {
    let h: MeterHarness;

    beforeAll(async () => {
      h = await openMeterHarness(backend);
    });
    afterAll(async () => {
      await h?.close();
    });
    afterEach(() => {
      h?.resetClock();
    });

    async function metric(customerId: string, featureKey: string, metrics = h.metrics): Promise<MetricView> {
      const [m] = await metrics.get(customerId, featureKey);
      if (!m) throw new Error(`no metric for ${featureKey}`);
      return m;
    }

    /** The ledger's own view: the exact sum for the period around `at` (or all time) and the rows. */
    async function ledgerSum(customerId: string, featureKey: string, from: Date | null, to: Date | null): Promise<string> {
      return h.sqlLedger.sumUsage(customerId, featureKey, from, to);
    }
    const MARCH = [new Date("2025-03-01T00:00:00Z"), new Date("2025-04-01T00:00:00Z")] as const;
    const FEBRUARY = [new Date("2025-02-01T00:00:00Z"), new Date("2025-03-01T00:00:00Z")] as const;

    async function rows(customerId: string): Promise<number> {
      return (await h.sqlLedger.listEvents(customerId)).length;
    }

    describe("exact quantities", () => {
      it("ten tracks of 0.1 on storage_gb make exactly 1", async () => {
        const c = h.newCustomer();
        for (let i = 0; i < 10; i++) {
          const out = await h.meter.track(track(c, "storage_gb", 0.1), SECRET);
          expect(out.allowed).toBe(true);
        }
        const m = await metric(c, "storage_gb");
        expect(m.consumed).toBe(1);
        expect(await ledgerSum(c, "storage_gb", ...MARCH)).toBe("1");
        const events = await h.sqlLedger.listEvents(c);
        expect(events.map((e) => e.amount)).toEqual(Array(10).fill("0.1"));
      });

      it("amounts are rounded to the feature's precision, and summed exactly", async () => {
        const c = h.newCustomer();
        await h.meter.track(track(c, "storage_gb", 0.1234564), SECRET);
        await h.meter.track(track(c, "storage_gb", 0.2000005), SECRET);
        expect((await metric(c, "storage_gb")).consumed).toBe(0.323457);
        expect(await ledgerSum(c, "storage_gb", ...MARCH)).toBe("0.323457");
      });
    });

    describe("hard limits", () => {
      it("a 1,000-way race of 1-unit tracks against limit 100 admits exactly 100, and the ledger holds exactly 100 events", async () => {
        const c = await h.customerWith("api_calls", { limit: "100", hard: true });
        const outcomes = await Promise.all(
          Array.from({ length: 1000 }, (_, i) => h.meter.track(track(c, "api_calls", 1, { idempotencyKey: `race-${i}` }), SECRET)),
        );
        const allowed = outcomes.filter((o) => o.allowed);
        expect(allowed).toHaveLength(100);
        expect(outcomes.filter((o) => !o.allowed).every((o) => o.denyReason === "limit_reached")).toBe(true);
        expect(outcomes.some((o) => o.duplicate)).toBe(false);
        // Each admitted event saw its own total: 1..100, once each.
        expect(allowed.map((o) => o.usage.consumed).sort((a, b) => a - b)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));

        const events = await h.sqlLedger.listEvents(c);
        expect(events).toHaveLength(100);
        expect(new Set(events.map((e) => e.id))).toEqual(new Set(allowed.map((o) => o.eventId)));
        expect(await ledgerSum(c, "api_calls", ...MARCH)).toBe("100");
        const m = await metric(c, "api_calls");
        expect(m).toMatchObject({ consumed: 100, limit: 100, remaining: 0, percentageUsed: 100 });
      });

      it("a plan limit works the same as a customer override", async () => {
        const planKey = `plan_${randomUUID()}`;
        await h.catalog.putPlan({ key: planKey, title: "Tiny", entitlements: [{ featureKey: "api_calls", limit: "100", hard: true, thresholds: [] }] });
        const c = h.newCustomer();
        await h.catalog.putCustomer({ id: c, planKey, overrides: [], billingAnchor: null });
        const outcomes = await Promise.all(Array.from({ length: 300 }, () => h.meter.track(track(c, "api_calls", 1), SECRET)));
        expect(outcomes.filter((o) => o.allowed)).toHaveLength(100);
        expect(await rows(c)).toBe(100);
      });

      it("a denial is an answer, not an error, and writes nothing", async () => {
        const c = await h.customerWith("api_calls", { limit: "5", hard: true });
        expect((await h.meter.track(track(c, "api_calls", 5), SECRET)).allowed).toBe(true);
        const denied = await h.meter.track(track(c, "api_calls", 1, { idempotencyKey: "denied-1" }), SECRET);
        expect(denied).toMatchObject({ allowed: false, denyReason: "limit_reached", duplicate: false });
        expect(denied.usage).toMatchObject({ consumed: 5, limit: 5, remaining: 0 });
        expect(await rows(c)).toBe(1);
        expect(await h.sqlLedger.findByKey(c, "denied-1")).toBeNull();
      });
    });

    describe("idempotency", () => {
      it("a retried key returns the original event_id with duplicate=true and counts once", async () => {
        const c = h.newCustomer();
        const input = track(c, "api_calls", 3, { idempotencyKey: "order-42:line-1", properties: { region: "eu" } });
        const first = await h.meter.track(input, SECRET);
        expect(first).toMatchObject({ allowed: true, duplicate: false });
        const again = await h.meter.track(input, SECRET);
        expect(again).toMatchObject({ allowed: true, duplicate: true, eventId: first.eventId });
        expect(again.usage.consumed).toBe(3);
        expect(await rows(c)).toBe(1);
        expect(await ledgerSum(c, "api_calls", ...MARCH)).toBe("3");
        expect((await metric(c, "api_calls")).consumed).toBe(3);
        const stored = await h.sqlLedger.findByKey(c, "order-42:line-1");
        expect(stored).toMatchObject({ id: first.eventId, amount: "3", properties: { region: "eu" } });
      });

      it("the same key with another payload is ALREADY_EXISTS naming the key, and counts nothing", async () => {
        const c = h.newCustomer();
        await h.meter.track(track(c, "api_calls", 3, { idempotencyKey: "k-1" }), SECRET);
        for (const other of [
          track(c, "api_calls", 4, { idempotencyKey: "k-1" }),
          track(c, "storage_gb", 3, { idempotencyKey: "k-1" }),
          track(c, "api_calls", 3, { idempotencyKey: "k-1", properties: { a: "b" } }),
        ]) {
          const err = await rejection(h.meter.track(other, SECRET));
          expect(err.code).toBe(Code.AlreadyExists);
          expect(err.rawMessage).toContain('"k-1"');
        }
        expect(await rows(c)).toBe(1);
        expect((await metric(c, "api_calls")).consumed).toBe(3);
      });

      it("keys are scoped per customer", async () => {
        const [a, b] = [h.newCustomer(), h.newCustomer()];
        const ra = await h.meter.track(track(a, "api_calls", 1, { idempotencyKey: "same" }), SECRET);
        const rb = await h.meter.track(track(b, "api_calls", 1, { idempotencyKey: "same" }), SECRET);
        expect(ra.duplicate || rb.duplicate).toBe(false);
        expect(ra.eventId).not.toBe(rb.eventId);
      });

      it("50 concurrent duplicates of one key count once", async () => {
        const c = h.newCustomer();
        const input = track(c, "api_calls", 1, { idempotencyKey: "burst" });
        const outcomes = await Promise.all(Array.from({ length: 50 }, () => h.meter.track(input, SECRET)));
        expect(new Set(outcomes.map((o) => o.eventId)).size).toBe(1);
        expect(outcomes.filter((o) => !o.duplicate)).toHaveLength(1);
        expect(outcomes.every((o) => o.allowed)).toBe(true);
        expect(await rows(c)).toBe(1);
        expect((await metric(c, "api_calls")).consumed).toBe(1);
      });

      it("a key twice in one batch, for customers not loaded: the first occurrence in request order is the original", async () => {
        // New customers, and customers with history whose fast path starts empty (a restart, a flush):
        // both go through the grouped loads before either occurrence is decided.
        const withHistory = Array.from({ length: 5 }, () => h.newCustomer());
        for (const c of withHistory) await h.meter.track(track(c, "api_calls", 1, { idempotencyKey: "history" }), SECRET);
        const restarted = h.instance();
        for (const c of [...withHistory, ...Array.from({ length: 5 }, () => h.newCustomer())]) {
          const other = h.newCustomer();
          const batch = [
            track(c, "api_calls", 1, { idempotencyKey: "twice" }),
            track(other, "api_calls", 1, { idempotencyKey: "between" }),
            track(c, "api_calls", 1, { idempotencyKey: "twice" }),
          ];
          const [first, , second] = (await restarted.meter.trackMany(batch, SECRET)) as TrackOutcome[];
          expect(first).toMatchObject({ allowed: true, duplicate: false });
          expect(second).toMatchObject({ allowed: true, duplicate: true, eventId: first!.eventId });
        }
      });

      it("a retry after a restart (new Meter and fast path, same ledger) is still a duplicate", async () => {
        const c = h.newCustomer();
        const input = track(c, "api_calls", 2, { idempotencyKey: "before-restart" });
        const first = await h.meter.track(input, SECRET);
        const restarted = h.instance();
        const again = await restarted.meter.track(input, SECRET);
        expect(again).toMatchObject({ allowed: true, duplicate: true, eventId: first.eventId });
        expect(await rows(c)).toBe(1);
        expect((await metric(c, "api_calls", restarted.metrics)).consumed).toBe(2);
        expect(await ledgerSum(c, "api_calls", ...MARCH)).toBe("2");
        // The restarted instance still refuses the key for another payload.
        const err = await rejection(restarted.meter.track(track(c, "api_calls", 5, { idempotencyKey: "before-restart" }), SECRET));
        expect(err.code).toBe(Code.AlreadyExists);
      });

      it("a retry after a restart is a replay, not a denial, when the counter is at its hard limit", async () => {
        const c = await h.customerWith("api_calls", { limit: "3", hard: true });
        const outcomes = [];
        for (let i = 0; i < 3; i++) outcomes.push(await h.meter.track(track(c, "api_calls", 1, { idempotencyKey: `k${i}` }), SECRET));
        const restarted = h.instance();
        const again = await restarted.meter.track(track(c, "api_calls", 1, { idempotencyKey: "k2" }), SECRET);
        expect(again).toMatchObject({ allowed: true, duplicate: true, eventId: outcomes[2]!.eventId, denyReason: null });
        const fresh = await restarted.meter.track(track(c, "api_calls", 1, { idempotencyKey: "k3" }), SECRET);
        expect(fresh).toMatchObject({ allowed: false, denyReason: "limit_reached" });
        expect(await rows(c)).toBe(3);
        expect((await metric(c, "api_calls", restarted.metrics)).consumed).toBe(3);
      });

      it("50 concurrent duplicates of one key after a restart count once and all get the original event", async () => {
        const c = h.newCustomer();
        const input = track(c, "api_calls", 1, { idempotencyKey: "burst-after-restart" });
        const first = await h.meter.track(input, SECRET);
        const restarted = h.instance();
        const settled = await Promise.allSettled(Array.from({ length: 50 }, () => restarted.meter.track(input, SECRET)));
        const failures = settled.flatMap((s) => (s.status === "rejected" ? [String((s.reason as Error).message)] : []));
        expect(failures).toEqual([]);
        const outcomes = settled.flatMap((s) => (s.status === "fulfilled" ? [s.value] : []));
        expect(outcomes.every((o) => o.duplicate && o.eventId === first.eventId)).toBe(true);
        expect(await rows(c)).toBe(1);
        expect((await metric(c, "api_calls", restarted.metrics)).consumed).toBe(1);
      });

      it("a top-up retried with its key adds once, also after a restart", async () => {
        const c = h.newCustomer();
        const first = await h.meter.topUp(topUp(c, 2.5, "topup-1"));
        expect(first).toMatchObject({ duplicate: false, balance: 2.5 });
        const again = await h.meter.topUp(topUp(c, 2.5, "topup-1"));
        expect(again).toMatchObject({ duplicate: true, entryId: first.entryId, balance: 2.5 });
        const restarted = h.instance();
        expect(await restarted.meter.topUp(topUp(c, 2.5, "topup-1"))).toMatchObject({ duplicate: true, entryId: first.entryId, balance: 2.5 });
        expect(await h.sqlLedger.walletBalance(c)).toBe("2.5");
        const err = await rejection(h.meter.topUp(topUp(c, 3, "topup-1")));
        expect(err.code).toBe(Code.AlreadyExists);
        expect(await h.sqlLedger.walletBalance(c)).toBe("2.5");
      });
    });

    describe("SetUsage", () => {
      it("racing 200 concurrent 1-unit tracks ends at an exact total that matches the ledger", async () => {
        const c = h.newCustomer();
        for (let i = 0; i < 30; i++) await h.meter.track(track(c, "api_calls", 1), SECRET);
        const before = Array.from({ length: 100 }, () => h.meter.track(track(c, "api_calls", 1), SECRET));
        const set = h.meter.setUsage(setUsage(c, "api_calls", 50, { idempotencyKey: "set-50" }));
        const after = Array.from({ length: 100 }, () => h.meter.track(track(c, "api_calls", 1), SECRET));
        const tracks = await Promise.all([...before, ...after]);
        const setOutcome = await set;
        expect(tracks.every((t) => t.allowed)).toBe(true);
        expect(setOutcome).toMatchObject({ allowed: true, duplicate: false });
        expect(setOutcome.usage.consumed).toBe(50);
        // The set's delta was computed atomically: 50 - (the total just before it). Every track counted,
        // so the total is 30 + 200 + delta, whatever the interleaving.
        const totalBeforeSet = 50 - setOutcome.delta;
        expect(totalBeforeSet).toBeGreaterThanOrEqual(30);
        expect(totalBeforeSet).toBeLessThanOrEqual(230);
        const expected = 30 + 200 + setOutcome.delta;
        expect((await metric(c, "api_calls")).consumed).toBe(expected);
        expect(await ledgerSum(c, "api_calls", ...MARCH)).toBe(String(expected));
        // Exactly: the tracks before the set saw the totals 31..totalBeforeSet, those after it 51..expected.
        const range = (from: number, to: number) => Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);
        const seen = tracks.map((t) => t.usage.consumed).sort((a, b) => a - b);
        expect(seen).toEqual([...range(31, totalBeforeSet), ...range(51, expected)].sort((a, b) => a - b));
        const setRow = (await h.sqlLedger.listEvents(c)).find((e) => e.kind === "set");
        expect(setRow?.amount).toBe(String(setOutcome.delta));
        expect(await rows(c)).toBe(231);
      });

      it("sets the total, records the delta, and is idempotent by key", async () => {
        const c = h.newCustomer();
        await h.meter.track(track(c, "storage_gb", 10.5), SECRET);
        const out = await h.meter.setUsage(setUsage(c, "storage_gb", 4.25, { idempotencyKey: "set-1" }));
        expect(out).toMatchObject({ allowed: true, delta: -6.25 });
        expect(out.usage.consumed).toBe(4.25);
        await h.meter.track(track(c, "storage_gb", 1), SECRET);
        const again = await h.meter.setUsage(setUsage(c, "storage_gb", 4.25, { idempotencyKey: "set-1" }));
        expect(again).toMatchObject({ duplicate: true, eventId: out.eventId, delta: -6.25 });
        expect((await metric(c, "storage_gb")).consumed).toBe(5.25);
        expect(await ledgerSum(c, "storage_gb", ...MARCH)).toBe("5.25");
      });

      it("expected_used is a compare-and-set: FAILED_PRECONDITION on mismatch, nothing written", async () => {
        const c = h.newCustomer();
        await h.meter.track(track(c, "api_calls", 7), SECRET);
        const err = await rejection(h.meter.setUsage(setUsage(c, "api_calls", 20, { expectedUsed: 6 })));
        expect(err.code).toBe(Code.FailedPrecondition);
        expect(err.rawMessage).toContain("expected_used");
        expect(err.findDetails(ErrorDetailSchema)[0]?.field).toBe("expected_used");
        expect(await rows(c)).toBe(1);
        const ok = await h.meter.setUsage(setUsage(c, "api_calls", 20, { expectedUsed: 7 }));
        expect(ok).toMatchObject({ allowed: true, delta: 13 });
        expect((await metric(c, "api_calls")).consumed).toBe(20);
      });

      it("a SetUsage that would pass a hard limit is denied", async () => {
        const c = await h.customerWith("api_calls", { limit: "10", hard: true });
        const out = await h.meter.setUsage(setUsage(c, "api_calls", 11));
        expect(out).toMatchObject({ allowed: false, denyReason: "limit_reached" });
        expect(await rows(c)).toBe(0);
      });

      it("a Track of kind set replays a SetUsage's delta: recorded as a set, under a set's rules", async () => {
        const c = await h.customerWith("api_calls", { limit: "10", hard: true });
        const setKind = { kind: "set" as const };
        const up = await h.meter.track(track(c, "api_calls", 6, { ...setKind, idempotencyKey: "s-up" }), SECRET);
        expect(up).toMatchObject({ allowed: true, duplicate: false });
        expect(await h.meter.track(track(c, "api_calls", 0, { ...setKind, idempotencyKey: "s-zero" }), SECRET)).toMatchObject({ allowed: true });
        expect(await h.meter.track(track(c, "api_calls", -2, { ...setKind, idempotencyKey: "s-down" }), SECRET)).toMatchObject({ allowed: true });
        // Growth past the hard limit is denied, as SetUsage's is; a retry is the original event.
        expect(await h.meter.track(track(c, "api_calls", 7, { ...setKind, idempotencyKey: "s-over" }), SECRET)).toMatchObject({ allowed: false, denyReason: "limit_reached" });
        expect(await h.meter.track(track(c, "api_calls", 6, { ...setKind, idempotencyKey: "s-up" }), SECRET)).toMatchObject({ duplicate: true, eventId: up.eventId });
        // The same key as a plain Track of the same amount is another event.
        expect((await rejection(h.meter.track(track(c, "api_calls", 6, { idempotencyKey: "s-up" }), SECRET))).code).toBe(Code.AlreadyExists);
        expect((await metric(c, "api_calls")).consumed).toBe(4);
        const events = (await h.sqlLedger.listEvents(c)).map((e) => [e.kind, e.amount]);
        expect(events).toEqual([["set", "6"], ["set", "0"], ["set", "-2"]]);

        const refusals: Array<[Promise<unknown>, Code, string]> = [
          [h.meter.track(track(c, "api_calls", 1, setKind), PUBLISHABLE), Code.PermissionDenied, "SECRET_KEY_REQUIRED"],
          [h.meter.track(track(c, "ai_tokens", 1, setKind), SECRET), Code.InvalidArgument, "SET_USAGE_CREDIT_FUNDED"],
          [h.meter.track(track(c, "api_calls", 0.2, setKind), SECRET), Code.InvalidArgument, "AMOUNT_ROUNDS_TO_ZERO"],
        ];
        for (const [p, code, reason] of refusals) {
          const err = await rejection(p);
          expect([err.code, err.findDetails(ErrorDetailSchema)[0]?.reason]).toEqual([code, reason]);
        }
        expect(await rows(c)).toBe(3);
      });

      it("a retried compare-and-set after a restart is a replay, not FAILED_PRECONDITION", async () => {
        const c = h.newCustomer();
        const input = setUsage(c, "api_calls", 5, { idempotencyKey: "cas-1", expectedUsed: 0 });
        const first = await h.meter.setUsage(input);
        expect(first).toMatchObject({ allowed: true, delta: 5 });
        const restarted = h.instance();
        const again = await restarted.meter.setUsage(input);
        expect(again).toMatchObject({ allowed: true, duplicate: true, eventId: first.eventId });
        expect(await rows(c)).toBe(1);
      });
    });

    describe("periods", () => {
      it("a backdated event lands in its own period", async () => {
        const c = h.newCustomer();
        await h.meter.track(track(c, "api_calls", 4), SECRET);
        const feb20 = new Date("2025-02-20T08:00:00Z"); // 23 days before T0, inside the 35-day window
        const out = await h.meter.track(track(c, "api_calls", 5, { timestamp: feb20 }), SECRET);
        expect(out.allowed).toBe(true);
        expect(out.usage).toMatchObject({ consumed: 5, periodStart: FEBRUARY[0].getTime(), periodEnd: FEBRUARY[1].getTime() });

        expect((await metric(c, "api_calls")).consumed).toBe(4);
        expect(await ledgerSum(c, "api_calls", ...MARCH)).toBe("4");
        expect(await ledgerSum(c, "api_calls", ...FEBRUARY)).toBe("5");
        const [row] = (await h.sqlLedger.listEvents(c)).filter((e) => e.amount === "5");
        expect(row?.occurredAt.getTime()).toBe(feb20.getTime());

        // Seen from February, it counts there, in this instance and in one loading from the ledger.
        h.clock.now = new Date("2025-02-25T00:00:00Z");
        expect((await metric(c, "api_calls")).consumed).toBe(5);
        expect((await metric(c, "api_calls", h.instance().metrics)).consumed).toBe(5);
      });

      it("a consumable feature resets at the month end", async () => {
        const c = h.newCustomer();
        await h.meter.track(track(c, "api_calls", 9), SECRET);
        h.clock.now = new Date("2025-04-01T00:00:00Z");
        const m = await metric(c, "api_calls");
        expect(m).toMatchObject({ consumed: 0, periodStart: Date.parse("2025-04-01T00:00:00Z"), periodEnd: Date.parse("2025-05-01T00:00:00Z") });
      });

      it("a persistent feature (seats) never resets", async () => {
        const c = h.newCustomer();
        await h.meter.track(track(c, "seats", 3), SECRET);
        for (const when of ["2025-04-01T00:00:00Z", "2025-07-31T23:59:59Z", "2026-01-01T00:00:00Z", "2027-03-15T12:00:00Z"]) {
          h.clock.now = new Date(when);
          const m = await metric(c, "seats");
          expect(m).toMatchObject({ consumed: 3, limit: 10, periodStart: null, periodEnd: null, resetsInDays: 0 });
          expect((await metric(c, "seats", h.instance().metrics)).consumed).toBe(3);
        }
        // The limit still holds across periods: 3 + 8 > 10.
        expect(await h.meter.track(track(c, "seats", 8), SECRET)).toMatchObject({ allowed: false, denyReason: "limit_reached" });
        expect(await h.meter.track(track(c, "seats", 7), SECRET)).toMatchObject({ allowed: true });
        expect(await ledgerSum(c, "seats", null, null)).toBe("10");
      });
    });

    describe("thresholds", () => {
      it("api_calls reports 80 then 100, once each", async () => {
        const c = h.newCustomer();
        const steps: Array<[number, number[], number[]]> = [
          // amount, thresholds crossed by it, thresholds reached after it
          [700, [], []],
          [99, [], []],
          [1, [80], [80]],
          [1, [], [80]],
          [150, [], [80]],
          [48, [], [80]],
          [1, [100], [80, 100]],
        ];
        for (const [amount, crossed, reached] of steps) {
          const out = await h.meter.track(track(c, "api_calls", amount), SECRET);
          expect(out.allowed).toBe(true);
          expect(out.thresholdsCrossed).toEqual(crossed);
          expect((await metric(c, "api_calls")).thresholdsReached).toEqual(reached);
        }
        expect(await h.meter.track(track(c, "api_calls", 1), SECRET)).toMatchObject({ allowed: false, thresholdsCrossed: [] });
      });

      it("a jump past both reports both at once", async () => {
        const c = h.newCustomer();
        expect((await h.meter.track(track(c, "api_calls", 1000), SECRET)).thresholdsCrossed).toEqual([80, 100]);
      });

      it("1,000 concurrent tracks report 80 and 100 exactly once each", async () => {
        const c = h.newCustomer();
        const outcomes = await Promise.all(Array.from({ length: 1000 }, () => h.meter.track(track(c, "api_calls", 1), SECRET)));
        expect(outcomes.every((o) => o.allowed)).toBe(true);
        const crossed = outcomes.flatMap((o) => o.thresholdsCrossed).sort((a, b) => a - b);
        expect(crossed).toEqual([80, 100]);
        expect(outcomes.find((o) => o.thresholdsCrossed.includes(80))?.usage.consumed).toBe(800);
        expect(outcomes.find((o) => o.thresholdsCrossed.includes(100))?.usage.consumed).toBe(1000);
        expect((await metric(c, "api_calls")).thresholdsReached).toEqual([80, 100]);
      });

      it("a retry replays the original result, marked duplicate, and crosses nothing anew", async () => {
        const c = h.newCustomer();
        const input = track(c, "api_calls", 800, { idempotencyKey: "t80" });
        expect((await h.meter.track(input, SECRET)).thresholdsCrossed).toEqual([80]);
        // The original result (it says what that event crossed), flagged as a replay.
        expect(await h.meter.track(input, SECRET)).toMatchObject({ duplicate: true, thresholdsCrossed: [80] });
        // After a restart the original result is gone from memory: the replay reports no crossing.
        expect(await h.instance().meter.track(input, SECRET)).toMatchObject({ duplicate: true, thresholdsCrossed: [] });
        expect((await h.meter.track(track(c, "api_calls", 1), SECRET)).thresholdsCrossed).toEqual([]);
      });
    });

    describe("credits", () => {
      it("a top-up may be dated back within the window, as a Track; its retry must repeat the time", async () => {
        const c = h.newCustomer();
        const twoDaysAgo = new Date(T0.getTime() - 2 * DAY_MS);
        await h.meter.topUp({ ...topUp(c, 3, "backdated"), timestamp: twoDaysAgo });
        const [row] = (await h.sqlLedger.listEvents(c)).filter((e) => e.kind === "topup");
        expect(row?.occurredAt).toEqual(twoDaysAgo);
        expect((await h.meter.topUp({ ...topUp(c, 3, "backdated"), timestamp: twoDaysAgo })).duplicate).toBe(true);
        expect((await rejection(h.meter.topUp(topUp(c, 3, "backdated")))).code).toBe(Code.AlreadyExists);
        const old = await rejection(h.meter.topUp({ ...topUp(c, 3, "too-old"), timestamp: new Date(T0.getTime() - 36 * DAY_MS) }));
        expect(old.findDetails(ErrorDetailSchema)[0]).toMatchObject({ field: "timestamp", reason: "TIMESTAMP_TOO_OLD" });
        expect(await h.meter.walletUnits(c)).toBe(3_000_000);
      });

      it("ai_tokens stops at an empty wallet: 1 credit buys exactly 500 tokens at 0.002", async () => {
        const c = h.newCustomer();
        expect(await h.meter.topUp(topUp(c, 1, "topup-a"))).toMatchObject({ balance: 1, duplicate: false });
        const out = await h.meter.track(track(c, "ai_tokens", 500), SECRET);
        expect(out).toMatchObject({ allowed: true, denyReason: null });
        expect(out.usage).toMatchObject({ consumed: 500, creditBalance: 0, creditsCharged: 1, limit: null });
        const next = await h.meter.track(track(c, "ai_tokens", 1), SECRET);
        expect(next).toMatchObject({ allowed: false, denyReason: "insufficient_credits" });
        expect(next.usage.creditBalance).toBe(0);

        expect(await h.meter.walletUnits(c)).toBe(0);
        expect(await h.sqlLedger.walletBalance(c)).toBe("0");
        expect(await ledgerSum(c, "ai_tokens", ...MARCH)).toBe("500");
        const m = await metric(c, "ai_tokens");
        expect(m).toMatchObject({ consumed: 500, creditBalance: 0 });
        expect((await h.sqlLedger.walletHistory(c, 10)).map((e) => e.credits)).toEqual(["-1", "1"]);
      });

      it("concurrent 1-token tracks stop exactly when the wallet is empty", async () => {
        const c = h.newCustomer();
        await h.meter.topUp(topUp(c, 1, "topup-b"));
        const outcomes = await Promise.all(Array.from({ length: 600 }, () => h.meter.track(track(c, "ai_tokens", 1), SECRET)));
        expect(outcomes.filter((o) => o.allowed)).toHaveLength(500);
        expect(outcomes.filter((o) => o.denyReason === "insufficient_credits")).toHaveLength(100);
        expect(await h.sqlLedger.walletBalance(c)).toBe("0");
        expect(await h.meter.walletUnits(c)).toBe(0);
        expect(await rows(c)).toBe(501);
      });

      it("a wallet loaded from the ledger after a restart holds the same balance", async () => {
        const c = h.newCustomer();
        await h.meter.topUp(topUp(c, 1, "topup-c"));
        await h.meter.track(track(c, "ai_tokens", 250), SECRET);
        const restarted = h.instance();
        expect(await restarted.meter.track(track(c, "ai_tokens", 251), SECRET)).toMatchObject({ allowed: false, denyReason: "insufficient_credits" });
        expect(await restarted.meter.track(track(c, "ai_tokens", 250), SECRET)).toMatchObject({ allowed: true });
        expect(await h.sqlLedger.walletBalance(c)).toBe("0");
      });

      it("a correction refunds exactly what was charged", async () => {
        const c = h.newCustomer();
        await h.meter.topUp(topUp(c, 1, "topup-d"));
        await h.meter.track(track(c, "ai_tokens", 123), SECRET);
        const out = await h.meter.track(track(c, "ai_tokens", -123), SECRET);
        expect(out.allowed).toBe(true);
        expect(await h.sqlLedger.walletBalance(c)).toBe("1");
        expect(await ledgerSum(c, "ai_tokens", ...MARCH)).toBe("0");
      });
    });

    describe("soft limits", () => {
      it("storage_gb admits events past 100 and reports the overage", async () => {
        const c = h.newCustomer();
        await h.meter.track(track(c, "storage_gb", 100), SECRET);
        const out = await h.meter.track(track(c, "storage_gb", 5.5), SECRET);
        expect(out).toMatchObject({ allowed: true, denyReason: null });
        expect(out.usage).toMatchObject({ consumed: 105.5, limit: 100, remaining: 0, overage: 5.5, hard: false });
        expect(out.thresholdsCrossed).toEqual([]);
        const m = await metric(c, "storage_gb");
        expect(m).toMatchObject({ consumed: 105.5, overage: 5.5, percentageUsed: 105.5, thresholdsReached: [80, 100] });
        expect(await ledgerSum(c, "storage_gb", ...MARCH)).toBe("105.5");
      });
    });

    describe("amount sign", () => {
      it("a negative amount is a correction, allowed with a secret key", async () => {
        const c = h.newCustomer();
        await h.meter.track(track(c, "seats", 3), SECRET);
        const out = await h.meter.track(track(c, "seats", -1), SECRET);
        expect(out).toMatchObject({ allowed: true });
        expect(out.usage.consumed).toBe(2);
        const events = await h.sqlLedger.listEvents(c);
        expect(events.map((e) => [e.kind, e.amount])).toEqual([
          ["track", "3"],
          ["adjustment", "-1"],
        ]);
        expect((await metric(c, "seats")).consumed).toBe(2);
      });

      it("a negative amount is refused (PERMISSION_DENIED) with a customer token, and writes nothing", async () => {
        const c = h.newCustomer();
        await h.meter.track(track(c, "seats", 3), PUBLISHABLE);
        const err = await rejection(h.meter.track(track(c, "seats", -1), PUBLISHABLE));
        expect(err.code).toBe(Code.PermissionDenied);
        expect(err.findDetails(ErrorDetailSchema)[0]).toMatchObject({ field: "amount", reason: "NEGATIVE_AMOUNT_FORBIDDEN" });
        expect(await rows(c)).toBe(1);
        expect((await metric(c, "seats")).consumed).toBe(3);
      });
    });

    describe("entitlement", () => {
      it("a feature outside the customer's plan is denied not_entitled, and nothing is written", async () => {
        const planKey = `plan_${randomUUID()}`;
        await h.catalog.putPlan({ key: planKey, title: "Calls only", entitlements: [{ featureKey: "api_calls", limit: "10", hard: true, thresholds: [] }] });
        const c = h.newCustomer();
        await h.catalog.putCustomer({ id: c, planKey, overrides: [], billingAnchor: null });
        const out = await h.meter.track(track(c, "storage_gb", 1, { idempotencyKey: "ne-1" }), SECRET);
        expect(out).toMatchObject({ allowed: false, denyReason: "not_entitled", duplicate: false });
        expect(await rows(c)).toBe(0);
        expect(await h.sqlLedger.findByKey(c, "ne-1")).toBeNull();
        expect((await h.meter.setUsage(setUsage(c, "storage_gb", 1))).denyReason).toBe("not_entitled");
        expect(await rows(c)).toBe(0);
        expect((await h.metrics.get(c, "")).map((m) => m.featureKey)).toEqual(["api_calls"]);
      });
    });

    describe("QueryUsage", () => {
      const query = (customerId: string, over: Partial<UsageHistoryQuery> = {}): UsageHistoryQuery => ({
        customerId,
        featureKeys: ["api_calls"],
        from: FEBRUARY[0],
        to: MARCH[1],
        window: "day",
        timeZone: "",
        groupBy: [],
        filter: [],
        ...over,
      });
      const total = (buckets: Array<{ value: string }>) => buckets.reduce((sum, b) => sum + Number(b.value), 0);
      const inRange = (buckets: UsageBucket[], [from, to]: readonly [Date, Date]) => buckets.filter((b) => b.start >= from && b.end <= to);

      it("buckets add up to GetMetrics for each period, across a period boundary, with backdated events and corrections", async () => {
        const c = h.newCustomer();
        h.clock.now = new Date("2025-02-20T12:00:00Z");
        await h.meter.track(track(c, "api_calls", 2, { properties: { region: "eu" } }), SECRET);
        h.resetClock();
        await h.meter.track(track(c, "api_calls", 1, { timestamp: new Date("2025-02-27T10:00:00Z"), properties: { region: "us" } }), SECRET);
        await h.meter.track(track(c, "api_calls", 1, { timestamp: new Date("2025-03-01T00:00:00Z") }), SECRET);
        await h.meter.track(track(c, "api_calls", 4, { properties: { region: "eu" } }), SECRET);
        await h.meter.track(track(c, "api_calls", -1, { properties: { region: "eu" } }), SECRET);
        await h.meter.track(track(c, "storage_gb", 0.1), SECRET);
        await h.meter.track(track(c, "storage_gb", 0.2), SECRET);

        const days = await h.meter.queryUsage(query(c));
        expect(days).toHaveLength(28 + 31);
        expect(days[0]).toMatchObject({ featureKey: "api_calls", start: FEBRUARY[0], end: new Date("2025-02-02T00:00:00Z"), value: "0", group: {} });
        expect(days.find((b) => b.start.getTime() === Date.parse("2025-03-15T00:00:00Z"))?.value).toBe("3");
        expect(total(inRange(days, FEBRUARY))).toBe((await h.metrics.get(c, "api_calls", FEBRUARY[0]))[0]!.consumed);
        expect(total(inRange(days, MARCH))).toBe((await h.metrics.get(c, "api_calls"))[0]!.consumed);
        expect(total(inRange(days, FEBRUARY))).toBe(3);
        expect(total(inRange(days, MARCH))).toBe(4);

        const periods = await h.meter.queryUsage(query(c, { window: "period", featureKeys: ["api_calls", "storage_gb"] }));
        expect(periods.map((b) => [b.featureKey, b.start.toISOString(), b.value])).toEqual([
          ["api_calls", FEBRUARY[0].toISOString(), "3"],
          ["api_calls", MARCH[0].toISOString(), "4"],
          ["storage_gb", FEBRUARY[0].toISOString(), "0"],
          ["storage_gb", MARCH[0].toISOString(), "0.3"],
        ]);
        // Calendar buckets of several features come from one statement, each feature's sums its own.
        const months = await h.meter.queryUsage(query(c, { window: "month", featureKeys: ["api_calls", "storage_gb"] }));
        expect(months.map((b) => [b.featureKey, b.start.toISOString(), b.value])).toEqual(periods.map((b) => [b.featureKey, b.start.toISOString(), b.value]));
        // A range cut inside a period: the first bucket starts at `from`.
        const cut = await h.meter.queryUsage(query(c, { window: "period", from: new Date("2025-02-25T00:00:00Z") }));
        expect(cut.map((b) => [b.start.toISOString(), b.value])).toEqual([["2025-02-25T00:00:00.000Z", "1"], [MARCH[0].toISOString(), "4"]]);

        const byRegion = await h.meter.queryUsage(query(c, { window: "month", groupBy: ["region"] }));
        expect(byRegion.map((b) => [b.group["region"], b.start.toISOString(), b.value])).toEqual([
          ["", MARCH[0].toISOString(), "1"],
          ["eu", FEBRUARY[0].toISOString(), "2"],
          ["eu", MARCH[0].toISOString(), "3"],
          ["us", FEBRUARY[0].toISOString(), "1"],
        ]);
        const usOnly = await h.meter.queryUsage(query(c, { window: "month", filter: [["region", ["us"]]] }));
        expect(usOnly.map((b) => b.value)).toEqual(["1", "0"]);
      });

      it("days and months follow the time zone, daylight saving included", async () => {
        const c = h.newCustomer();
        // 23:30 UTC on 9 March is 00:30 on 10 March in Paris.
        await h.meter.track(track(c, "api_calls", 5, { timestamp: new Date("2025-03-09T23:30:00Z") }), SECRET);
        const paris = await h.meter.queryUsage(query(c, { timeZone: "Europe/Paris", from: new Date("2025-03-09T00:00:00Z"), to: new Date("2025-03-11T00:00:00Z") }));
        expect(paris.map((b) => [b.start.toISOString(), b.value])).toEqual([
          ["2025-03-09T00:00:00.000Z", "0"],
          ["2025-03-09T23:00:00.000Z", "5"],
          ["2025-03-10T23:00:00.000Z", "0"],
        ]);
        const months = await h.meter.queryUsage(query(c, { window: "month", timeZone: "Europe/Paris", from: FEBRUARY[0], to: new Date("2025-05-01T00:00:00Z") }));
        // Paris is UTC+1 until 30 March, then UTC+2.
        expect(months.map((b) => b.start.toISOString())).toEqual([
          "2025-02-01T00:00:00.000Z",
          "2025-02-28T23:00:00.000Z",
          "2025-03-31T22:00:00.000Z",
          "2025-04-30T22:00:00.000Z",
        ]);
        expect(months.map((b) => b.value)).toEqual(["0", "5", "0", "0"]);
        expect(months.at(-1)?.end.toISOString()).toBe("2025-05-01T00:00:00.000Z");
      });

      it("bad requests are INVALID_ARGUMENT naming the field", async () => {
        const c = h.newCustomer();
        const cases: Array<[Partial<UsageHistoryQuery>, string, string]> = [
          [{ from: null }, "from", "RANGE_REQUIRED"],
          [{ to: FEBRUARY[0] }, "to", "RANGE_EMPTY"],
          [{ featureKeys: [] }, "feature_keys", "FEATURE_KEYS_COUNT"],
          [{ featureKeys: ["api_calls", "nope"] }, "feature_keys[1]", "UNKNOWN_FEATURE"],
          [{ timeZone: "Mars/Olympus" }, "time_zone", "TIME_ZONE_UNKNOWN"],
          [{ customerId: "", window: "period" }, "window", "PERIOD_NEEDS_CUSTOMER"],
          [{ window: "hour", from: new Date("2023-01-01T00:00:00Z") }, "window", "TOO_MANY_BUCKETS"],
          [{ groupBy: ["a", "b", "c", "d", "e", "f"] }, "group_by", "GROUP_BY_TOO_LONG"],
          [{ filter: [["region", []]] }, "filter[region]", "FILTER_VALUES_COUNT"],
        ];
        for (const [over, field, reason] of cases) {
          const err = await rejection(h.meter.queryUsage(query(c, over)));
          expect(err.code).toBe(Code.InvalidArgument);
          expect(err.findDetails(ErrorDetailSchema)[0]).toMatchObject({ field, reason });
        }
      });
    });

    describe("ListEvents", () => {
      const listing = (customerId: string, over: Partial<EventListing> = {}): EventListing => ({
        customerId,
        featureKey: "",
        onlyFeatures: null,
        from: null,
        to: null,
        kinds: [],
        idempotencyKey: "",
        newestFirst: true,
        pageSize: 0,
        pageToken: "",
        ...over,
      });
      /** Every page, following the tokens. */
      async function all(l: EventListing): Promise<string[]> {
        const ids: string[] = [];
        let token = "";
        for (let pages = 0; pages < 50; pages++) {
          const page = await h.meter.listEvents({ ...l, pageToken: token });
          ids.push(...page.events.map((e) => e.id));
          if (page.nextPageToken === "") return ids;
          token = page.nextPageToken;
        }
        throw new Error("more than 50 pages");
      }

      it("pages through one customer's events in either order, with every filter, amounts exact", async () => {
        const c = h.newCustomer();
        const other = h.newCustomer();
        h.clock.now = new Date("2025-02-20T12:00:00Z");
        await h.meter.track(track(c, "api_calls", 2, { idempotencyKey: "feb" }), SECRET);
        h.resetClock();
        await h.meter.track(track(c, "api_calls", 1, { timestamp: new Date("2025-03-01T00:00:00Z"), idempotencyKey: "mar-1" }), SECRET);
        await h.meter.track(track(c, "storage_gb", 0.1, { properties: { region: "eu" } }), SECRET);
        await h.meter.track(track(c, "api_calls", -1, { idempotencyKey: "fix" }), SECRET);
        await h.meter.setUsage(setUsage(c, "seats", 3));
        await h.meter.topUp(topUp(c, 5, "credits-1"));
        await h.meter.track(track(other, "api_calls", 7), SECRET);

        const oldest = await all(listing(c, { newestFirst: false, pageSize: 2 }));
        const stored = (await h.sqlLedger.listEvents(c)).map((e) => e.id);
        expect(oldest).toEqual(stored);
        expect(await all(listing(c, { pageSize: 4 }))).toEqual([...stored].reverse());

        const [gb] = (await h.meter.listEvents(listing(c, { featureKey: "storage_gb" }))).events;
        expect(gb).toMatchObject({ kind: "track", amount: "0.1", credits: "0", properties: { region: "eu" }, customerId: c });
        const calls = (await h.meter.listEvents(listing(c, { featureKey: "api_calls", newestFirst: false }))).events;
        expect(calls.map((e) => [e.kind, e.amount])).toEqual([["track", "2"], ["track", "1"], ["adjustment", "-1"]]);
        expect((await h.meter.listEvents(listing(c, { kinds: ["topup"] }))).events.map((e) => [e.kind, e.credits, e.featureKey])).toEqual([["topup", "5", null]]);
        expect((await h.meter.listEvents(listing(c, { kinds: ["set", "adjustment"] }))).events.map((e) => e.kind).sort()).toEqual(["adjustment", "set"]);
        expect((await h.meter.listEvents(listing(c, { idempotencyKey: "mar-1" }))).events.map((e) => e.amount)).toEqual(["1"]);
        const february = await h.meter.listEvents(listing(c, { from: FEBRUARY[0], to: FEBRUARY[1] }));
        expect(february.events.map((e) => e.idempotencyKey)).toEqual(["feb"]);
        // A customer token's features: no top-ups, nothing of other features.
        const scoped = await all(listing(c, { onlyFeatures: ["storage_gb", "seats"] }));
        expect(scoped).toHaveLength(2);
        expect((await h.meter.listEvents(listing(c, { featureKey: "api_calls", onlyFeatures: ["seats"] }))).events).toEqual([]);
      });

      it("a page token is bound to its filters; bad requests are INVALID_ARGUMENT naming the field", async () => {
        const c = h.newCustomer();
        for (let i = 0; i < 3; i++) await h.meter.track(track(c, "api_calls", 1), SECRET);
        const first = await h.meter.listEvents(listing(c, { pageSize: 1 }));
        expect(first.nextPageToken).not.toBe("");
        // The page size may change between pages; the filters and the order may not.
        expect((await h.meter.listEvents(listing(c, { pageSize: 5, pageToken: first.nextPageToken }))).events).toHaveLength(2);
        const cases: Array<[Partial<EventListing>, string, string]> = [
          [{ newestFirst: false, pageToken: first.nextPageToken }, "page_token", "PAGE_TOKEN_MISMATCH"],
          [{ featureKey: "api_calls", pageToken: first.nextPageToken }, "page_token", "PAGE_TOKEN_MISMATCH"],
          [{ pageToken: "not-a-token" }, "page_token", "PAGE_TOKEN_INVALID"],
          [{ pageSize: 1001 }, "page_size", "PAGE_SIZE_OUT_OF_RANGE"],
          [{ pageSize: -1 }, "page_size", "PAGE_SIZE_OUT_OF_RANGE"],
          [{ from: T0, to: T0 }, "to", "RANGE_EMPTY"],
          [{ featureKey: "nope" }, "feature_key", "UNKNOWN_FEATURE"],
          [{ idempotencyKey: "has space" }, "idempotency_key", "IDEMPOTENCY_KEY_INVALID"],
        ];
        for (const [over, field, reason] of cases) {
          const err = await rejection(h.meter.listEvents(listing(c, over)));
          expect(err.code).toBe(Code.InvalidArgument);
          expect(err.findDetails(ErrorDetailSchema)[0]).toMatchObject({ field, reason });
        }
        const otherCustomer = await rejection(h.meter.listEvents(listing(h.newCustomer(), { pageToken: first.nextPageToken })));
        expect(otherCustomer.findDetails(ErrorDetailSchema)[0]).toMatchObject({ reason: "PAGE_TOKEN_MISMATCH" });
      });
    });

    describe("bad input writes nothing and names the field", () => {
      const cases: Array<{ name: string; field: string; reason: string; input: (c: string) => TrackInput }> = [
        { name: "an unknown feature", field: "feature_key", reason: "UNKNOWN_FEATURE", input: (c) => track(c, "no_such_feature", 1) },
        { name: "an empty feature", field: "feature_key", reason: "FEATURE_KEY_EMPTY", input: (c) => track(c, "", 1) },
        { name: "an empty customer", field: "customer_id", reason: "CUSTOMER_ID_EMPTY", input: () => track("", "api_calls", 1) },
        { name: "a NaN amount", field: "amount", reason: "AMOUNT_NOT_FINITE", input: (c) => track(c, "api_calls", Number.NaN) },
        { name: "an infinite amount", field: "amount", reason: "AMOUNT_NOT_FINITE", input: (c) => track(c, "api_calls", Number.POSITIVE_INFINITY) },
        { name: "a negative infinite amount", field: "amount", reason: "AMOUNT_NOT_FINITE", input: (c) => track(c, "api_calls", Number.NEGATIVE_INFINITY) },
        { name: "an amount that rounds to 0 at the feature's precision", field: "amount", reason: "AMOUNT_ROUNDS_TO_ZERO", input: (c) => track(c, "storage_gb", 1e-9) },
        { name: "an amount of 0", field: "amount", reason: "AMOUNT_ZERO", input: (c) => track(c, "api_calls", 0) },
        { name: "an amount of -0", field: "amount", reason: "AMOUNT_ZERO", input: (c) => track(c, "storage_gb", -0) },
        { name: "an amount beyond the bound", field: "amount", reason: "AMOUNT_OUT_OF_RANGE", input: (c) => track(c, "storage_gb", 1e300) },
        { name: "an amount just beyond the bound", field: "amount", reason: "AMOUNT_OUT_OF_RANGE", input: (c) => track(c, "storage_gb", 9007199254.741) },
        { name: "a bad idempotency key", field: "idempotency_key", reason: "IDEMPOTENCY_KEY_INVALID", input: (c) => track(c, "api_calls", 1, { idempotencyKey: "has space" }) },
        { name: "a too long idempotency key", field: "idempotency_key", reason: "IDEMPOTENCY_KEY_INVALID", input: (c) => track(c, "api_calls", 1, { idempotencyKey: "k".repeat(256) }) },
        { name: "a timestamp 36 days back", field: "timestamp", reason: "TIMESTAMP_TOO_OLD", input: (c) => track(c, "api_calls", 1, { timestamp: new Date(T0.getTime() - 36 * DAY_MS) }) },
        { name: "a timestamp 10 minutes ahead", field: "timestamp", reason: "TIMESTAMP_IN_FUTURE", input: (c) => track(c, "api_calls", 1, { timestamp: new Date(T0.getTime() + 10 * 60_000) }) },
        { name: "an invalid timestamp", field: "timestamp", reason: "TIMESTAMP_INVALID", input: (c) => track(c, "api_calls", 1, { timestamp: new Date(Number.NaN) }) },
        {
          name: "too many properties",
          field: "properties",
          reason: "TOO_MANY_PROPERTIES",
          input: (c) => track(c, "api_calls", 1, { properties: Object.fromEntries(Array.from({ length: 51 }, (_, i) => [`p${i}`, "v"])) }),
        },
      ];

      it.each(cases)("$name: INVALID_ARGUMENT naming $field", async ({ field, reason, input }) => {
        const c = h.newCustomer();
        await h.meter.track(track(c, "api_calls", 1), SECRET);
        await h.meter.track(track(c, "storage_gb", 1), SECRET);
        const bad = input(c);
        const err = await rejection(h.meter.track(bad, SECRET));
        expect(err.code).toBe(Code.InvalidArgument);
        expect(err.rawMessage).toContain(field);
        const details = err.findDetails(ErrorDetailSchema);
        expect(details).toHaveLength(1);
        expect(details[0]).toMatchObject({ field, reason });
        expect(details[0]?.rule).not.toBe("");
        expect(await rows(c)).toBe(2);
        if (bad.customerId !== "") expect(await rows(bad.customerId)).toBe(2);
        expect((await metric(c, "api_calls")).consumed).toBe(1);
        expect((await metric(c, "storage_gb")).consumed).toBe(1);
      });

      it("the window edges themselves are accepted: 35 days back and 5 minutes ahead", async () => {
        const c = h.newCustomer();
        expect((await h.meter.track(track(c, "api_calls", 1, { timestamp: new Date(T0.getTime() - 35 * DAY_MS) }), SECRET)).allowed).toBe(true);
        expect((await h.meter.track(track(c, "api_calls", 1, { timestamp: new Date(T0.getTime() + 5 * 60_000) }), SECRET)).allowed).toBe(true);
        expect(await rows(c)).toBe(2);
      });

      it("bad SetUsage and top-up input is refused the same way", async () => {
        const c = h.newCustomer();
        await h.meter.track(track(c, "api_calls", 1), SECRET);
        const refusals: Array<[() => Promise<unknown>, string]> = [
          [() => h.meter.setUsage(setUsage(c, "api_calls", -1)), "used"],
          [() => h.meter.setUsage(setUsage(c, "api_calls", Number.NaN)), "used"],
          [() => h.meter.setUsage(setUsage(c, "api_calls", 1, { expectedUsed: Number.POSITIVE_INFINITY })), "expected_used"],
          [() => h.meter.setUsage(setUsage(c, "ai_tokens", 1)), "feature_key"],
          [() => h.meter.topUp(topUp(c, 0, "t0")), "amount"],
          [() => h.meter.topUp(topUp(c, 1, "")), "idempotency_key"],
          [() => h.meter.topUp(topUp(c, 1, "has space")), "idempotency_key"],
        ];
        for (const [call, field] of refusals) {
          const err = await rejection(call());
          expect(err.code).toBe(Code.InvalidArgument);
          expect(err.findDetails(ErrorDetailSchema)[0]?.field).toBe(field);
        }
        expect(await rows(c)).toBe(1);
      });
    });

    describe("ledger failures", () => {
      it("a failed commit is UNAVAILABLE, leaves the counter unchanged, and a retry counts once", async () => {
        const c = h.newCustomer();
        const { ledger, faults: faulty } = faultyLedger(h.sqlLedger);
        const inst = h.instance({ ledger });
        await inst.meter.track(track(c, "api_calls", 2), SECRET);
        faulty.failNextAppends = 1;
        const input = track(c, "api_calls", 5, { idempotencyKey: "flaky-1" });
        const err = await rejection(inst.meter.track(input, SECRET));
        expect(err.code).toBe(Code.Unavailable);
        expect((await metric(c, "api_calls", inst.metrics)).consumed).toBe(2);
        expect(await rows(c)).toBe(1);

        const retry = await inst.meter.track(input, SECRET);
        expect(retry).toMatchObject({ allowed: true, duplicate: false });
        expect(await inst.meter.track(input, SECRET)).toMatchObject({ duplicate: true, eventId: retry.eventId });
        expect((await metric(c, "api_calls", inst.metrics)).consumed).toBe(7);
        expect(await ledgerSum(c, "api_calls", ...MARCH)).toBe("7");
        expect(await rows(c)).toBe(2);
      });

      it("a failed commit of a credit-funded event leaves the wallet unchanged", async () => {
        const c = h.newCustomer();
        const { ledger, faults: faulty } = faultyLedger(h.sqlLedger);
        const inst = h.instance({ ledger });
        await inst.meter.topUp(topUp(c, 1, "topup-e"));
        faulty.failNextAppends = 1;
        expect((await rejection(inst.meter.track(track(c, "ai_tokens", 500), SECRET))).code).toBe(Code.Unavailable);
        expect(await inst.meter.walletUnits(c)).toBe(1_000_000);
        expect((await inst.meter.track(track(c, "ai_tokens", 500), SECRET)).allowed).toBe(true);
        expect(await h.sqlLedger.walletBalance(c)).toBe("0");
      });

      it("a commit whose reply was lost: the retry is a duplicate and the counter still equals the ledger", async () => {
        const c = h.newCustomer();
        const { ledger, faults: faulty } = faultyLedger(h.sqlLedger);
        const inst = h.instance({ ledger });
        await inst.meter.track(track(c, "api_calls", 2), SECRET);
        faulty.loseNextReplies = 1;
        const input = track(c, "api_calls", 5, { idempotencyKey: "lost-reply" });
        // UNAVAILABLE, or ALLOWED if the service finds out that the commit went through; never a denial.
        const first = await inst.meter.track(input, SECRET).then(
          (outcome) => ({ code: null, outcome }),
          (error: ConnectError) => ({ code: error.code, outcome: null }),
        );
        if (first.outcome) expect(first.outcome).toMatchObject({ allowed: true, duplicate: false });
        else expect(first.code).toBe(Code.Unavailable);
        // The event is in the ledger either way (acked <= ledger <= attempted).
        expect(await ledgerSum(c, "api_calls", ...MARCH)).toBe("7");
        const retry = await inst.meter.track(input, SECRET);
        expect(retry).toMatchObject({ allowed: true, duplicate: true });
        expect(await rows(c)).toBe(2);
        // I4: the counter converges to the ledger.
        expect((await metric(c, "api_calls", inst.metrics)).consumed).toBe(7);
        expect((await metric(c, "api_calls", h.instance().metrics)).consumed).toBe(7);
      });
    });

    describe("Metrics", () => {
      it("get returns every feature of the plan with its period and titles", async () => {
        const c = h.newCustomer();
        const all = await h.metrics.get(c, "");
        expect(all.map((m) => m.featureKey)).toEqual(["api_calls", "storage_gb", "seats", "ai_tokens"]);
        const calls = all[0]!;
        expect(calls).toMatchObject({
          featureTitle: "API calls",
          productName: "Platform",
          unit: "call",
          consumed: 0,
          limit: 1000,
          remaining: 1000,
          periodStart: MARCH[0].getTime(),
          periodEnd: MARCH[1].getTime(),
          resetsInDays: 17,
          thresholdsReached: [],
        });
        expect(all[3]).toMatchObject({ featureKey: "ai_tokens", limit: null, creditBalance: 0 });
        const err = await rejection(h.metrics.get(c, "nope"));
        expect(err.code).toBe(Code.InvalidArgument);
      });

      it("get at a past instant: the period that holds it, summed from the ledger; a persistent feature as it stood", async () => {
        const c = h.newCustomer();
        // February: 3 API calls (one backdated from March) and 2 seats; March: 4 calls and 1 more seat.
        h.clock.now = new Date("2025-02-20T12:00:00Z");
        await h.meter.track(track(c, "api_calls", 2), SECRET);
        await h.meter.track(track(c, "seats", 2), SECRET);
        h.resetClock();
        await h.meter.track(track(c, "api_calls", 1, { timestamp: new Date("2025-02-27T00:00:00Z") }), SECRET);
        await h.meter.track(track(c, "api_calls", 4), SECRET);
        await h.meter.track(track(c, "seats", 1), SECRET);

        const feb = await h.metrics.get(c, "", new Date("2025-02-10T00:00:00Z"));
        expect(feb.find((m) => m.featureKey === "api_calls")).toMatchObject({
          consumed: 3,
          periodStart: FEBRUARY[0].getTime(),
          periodEnd: FEBRUARY[1].getTime(),
          resetsInDays: 0,
        });
        expect(feb.find((m) => m.featureKey === "seats")?.consumed).toBe(0);
        expect((await h.metrics.get(c, "seats", new Date("2025-02-25T00:00:00Z")))[0]?.consumed).toBe(2);
        // The same answers from a fresh fast path that has loaded nothing: the ledger is the source.
        const restarted = h.instance();
        expect((await restarted.metrics.get(c, "api_calls", new Date("2025-02-28T23:59:59Z")))[0]?.consumed).toBe(3);
        // An instant in the current period reads the current counters.
        expect((await h.metrics.get(c, "api_calls", new Date("2025-03-02T00:00:00Z")))[0]?.consumed).toBe(4);
        expect((await h.metrics.get(c, "seats", T0))[0]?.consumed).toBe(3);
        expect((await h.metrics.get(c, "api_calls", null))[0]?.consumed).toBe(4);
        const future = await rejection(h.metrics.get(c, "", new Date(T0.getTime() + 1)));
        expect(future.code).toBe(Code.InvalidArgument);
        expect(future.findDetails(ErrorDetailSchema)[0]).toMatchObject({ field: "at", reason: "AT_IN_FUTURE" });
      });

      it("watch yields the current metrics first, then a change after a track", async () => {
        const c = h.newCustomer();
        await h.meter.track(track(c, "api_calls", 1), SECRET);
        const abort = new AbortController();
        const stream = h.metrics.watch(c, "", abort.signal);
        try {
          const first = await within(stream.next(), 5000, "first metrics");
          expect(metricsOf(first).find((m) => m.featureKey === "api_calls")?.consumed).toBe(1);
          const next = stream.next();
          await h.meter.track(track(c, "api_calls", 4), SECRET);
          const second = await within(next, 5000, "the change");
          expect(metricsOf(second)).toHaveLength(1);
          expect(metricsOf(second)[0]).toMatchObject({ featureKey: "api_calls", consumed: 5 });
        } finally {
          abort.abort();
        }
        expect((await within(stream.next(), 5000, "the end")).done).toBe(true);
      });

      it("watch does not miss a change made while the consumer handles the first message", async () => {
        const c = h.newCustomer();
        const abort = new AbortController();
        const stream = h.metrics.watch(c, "api_calls", abort.signal);
        try {
          const first = await within(stream.next(), 5000, "first metrics");
          expect(metricsOf(first)[0]?.consumed).toBe(0);
          // The consumer is busy (say, writing the first message to a slow client) when usage changes.
          await h.meter.track(track(c, "api_calls", 3), SECRET);
          const second = await within(stream.next(), 3000, "the change made between next() calls");
          expect(metricsOf(second)[0]).toMatchObject({ featureKey: "api_calls", consumed: 3 });
        } finally {
          abort.abort();
        }
      });

      it("watch of one feature ignores changes to others, and ends when aborted", async () => {
        const c = h.newCustomer();
        const abort = new AbortController();
        const stream = h.metrics.watch(c, "seats", abort.signal);
        await stream.next();
        const next = stream.next();
        await h.meter.track(track(c, "api_calls", 1), SECRET);
        await h.meter.track(track(c, "seats", 2), SECRET);
        expect(metricsOf(await within(next, 5000, "the seats change"))).toEqual([expect.objectContaining({ featureKey: "seats", consumed: 2 })]);
        const ended = stream.next();
        abort.abort();
        expect((await within(ended, 5000, "the end")).done).toBe(true);
      });
    });
  });
});
