// Given the embedded default (PGlite in the data directory), when the server is closed and a new one
// is started on the same directory, then nothing is lost or counted twice: the counters and wallets
// are rebuilt from the ledger to the same totals, and a retried idempotency key is still a duplicate
// with its first event id, also when the retry would now be over the limit.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { CatalogService, type GetWalletResponse } from "../../gen/meterd/v1/catalog_pb.js";
import { type Metric, MeteringService } from "../../gen/meterd/v1/metering_pb.js";
import { Decision, DenyReason } from "../../gen/meterd/v1/usage_pb.js";
import type { Server } from "../../src/server.js";
import { auth, Code, errorOf, makeDataDir, removeDir, startMeterd } from "./harness.js";

const CUSTOMER = "cust-durable";

let dataDir: string;
let server: Server | undefined;

function clientsOf(s: Server): { metering: Client<typeof MeteringService>; catalog: Client<typeof CatalogService> } {
  const transport = createConnectTransport({ baseUrl: `http://127.0.0.1:${s.httpPort}`, httpVersion: "1.1" });
  return { metering: createClient(MeteringService, transport), catalog: createClient(CatalogService, transport) };
}

/** What a usage display shows for each feature (resets_in_days left out: it moves with the clock). */
function view(metrics: Metric[]) {
  return metrics.map((m) => ({
    featureKey: m.featureKey,
    consumed: m.consumed,
    limit: m.limit,
    remaining: m.remaining,
    unlimited: m.unlimited,
    percentageUsed: m.percentageUsed,
    periodStart: m.periodStart?.seconds,
    periodEnd: m.periodEnd?.seconds,
    thresholdsReached: m.thresholdsReached,
    overage: m.overage,
    creditBalance: m.creditBalance,
  }));
}

function walletView(w: GetWalletResponse) {
  return {
    balance: w.balance,
    entries: w.entries.map((e) => ({ id: e.id, kind: e.kind, amount: e.amount, featureKey: e.featureKey, description: e.description })),
  };
}

const first = {
  ids: {} as Record<string, string>,
  metrics: [] as ReturnType<typeof view>,
  wallet: undefined as ReturnType<typeof walletView> | undefined,
};

beforeAll(async () => {
  dataDir = await makeDataDir();
});

afterAll(async () => {
  await server?.close(1000);
  await removeDir(dataDir);
});

describe("restart on the same data directory", () => {
  it("first server: tracks usage, seats, a credit top-up and credit-funded usage, then closes", async () => {
    server = await startMeterd(dataDir);
    const { metering, catalog } = clientsOf(server);
    const track = async (key: string, featureKey: string, amount: number) => {
      const res = await metering.track({ customerId: CUSTOMER, featureKey, amount, idempotencyKey: key }, { headers: auth });
      first.ids[key] = res.eventId;
      return res;
    };

    expect((await track("api-1", "api_calls", 3)).decision).toBe(Decision.ALLOWED);
    expect((await track("api-2", "api_calls", 2)).decision).toBe(Decision.ALLOWED);
    // No key: the server gives the event an id of its own.
    expect((await metering.track({ customerId: CUSTOMER, featureKey: "api_calls", amount: 795 }, { headers: auth })).usage?.consumed).toBe(800);
    expect((await track("storage-1", "storage_gb", 1.25)).usage?.consumed).toBe(1.25);
    expect((await track("storage-2", "storage_gb", 120)).usage).toMatchObject({ consumed: 121.25, overage: 21.25 });

    const seats = await metering.setUsage({ customerId: CUSTOMER, featureKey: "seats", used: 4, idempotencyKey: "seats-4" }, { headers: auth });
    expect(seats).toMatchObject({ decision: Decision.ALLOWED, delta: 4 });
    first.ids["seats-4"] = seats.eventId;
    expect((await track("seat-6", "seats", 6)).usage?.consumed).toBe(10);
    const denied = await metering.track({ customerId: CUSTOMER, featureKey: "seats", amount: 1, idempotencyKey: "seat-11" }, { headers: auth });
    expect(denied).toMatchObject({ decision: Decision.DENIED, denyReason: DenyReason.LIMIT_REACHED });

    const topUp = await catalog.topUpCredits({ customerId: CUSTOMER, amount: 2, idempotencyKey: "top-1", description: "starter" }, { headers: auth });
    expect(topUp.balance).toBe(2);
    first.ids["top-1"] = topUp.entryId;
    expect((await track("ai-1", "ai_tokens", 250)).usage).toMatchObject({ creditsCharged: 0.5, creditBalance: 1.5 });

    first.metrics = view((await metering.getMetrics({ customerId: CUSTOMER }, { headers: auth })).metrics);
    first.wallet = walletView(await catalog.getWallet({ customerId: CUSTOMER }, { headers: auth }));
    expect(first.metrics.map((m) => [m.featureKey, m.consumed, m.creditBalance])).toEqual([
      ["api_calls", 800, 0],
      ["storage_gb", 121.25, 0],
      ["seats", 10, 0],
      ["ai_tokens", 250, 1.5],
    ]);
    expect(first.metrics[0]?.thresholdsReached).toEqual([80]);
    expect(first.wallet.balance).toBe(1.5);
    expect(first.wallet.entries.map((e) => [e.kind, e.amount])).toEqual([
      ["usage", -0.5],
      ["top_up", 2],
    ]);

    await server.close();
    server = undefined;
  });

  it("second server: GetMetrics and GetWallet report the same totals, rebuilt from the ledger", async () => {
    expect(first.wallet).toBeDefined();
    server = await startMeterd(dataDir);
    const { metering, catalog } = clientsOf(server);
    expect(view((await metering.getMetrics({ customerId: CUSTOMER }, { headers: auth })).metrics)).toEqual(first.metrics);
    expect(walletView(await catalog.getWallet({ customerId: CUSTOMER }, { headers: auth }))).toEqual(first.wallet);
  });

  it("second server: earlier idempotency keys are still duplicates with their first event ids, and count nothing", async () => {
    const { metering, catalog } = clientsOf(server!);
    const retry = (key: string, featureKey: string, amount: number) =>
      metering.track({ customerId: CUSTOMER, featureKey, amount, idempotencyKey: key }, { headers: auth });

    for (const [key, featureKey, amount] of [
      ["api-1", "api_calls", 3],
      ["storage-1", "storage_gb", 1.25],
      ["ai-1", "ai_tokens", 250],
      // At the limit now: a replay, not a denial.
      ["seat-6", "seats", 6],
    ] as const) {
      const res = await retry(key, featureKey, amount);
      expect({ key, eventId: res.eventId, duplicate: res.duplicate, decision: res.decision }).toEqual({
        key,
        eventId: first.ids[key],
        duplicate: true,
        decision: Decision.ALLOWED,
      });
    }
    const seats = await metering.setUsage({ customerId: CUSTOMER, featureKey: "seats", used: 4, idempotencyKey: "seats-4" }, { headers: auth });
    expect(seats).toMatchObject({ eventId: first.ids["seats-4"], duplicate: true });
    const topUp = await catalog.topUpCredits({ customerId: CUSTOMER, amount: 2, idempotencyKey: "top-1", description: "starter" }, { headers: auth });
    expect(topUp).toMatchObject({ entryId: first.ids["top-1"], duplicate: true, balance: 1.5 });

    // The key still identifies one payload.
    const conflict = await errorOf(() => retry("api-1", "api_calls", 4));
    expect(conflict.code).toBe(Code.AlreadyExists);

    expect(view((await metering.getMetrics({ customerId: CUSTOMER }, { headers: auth })).metrics)).toEqual(first.metrics);
    expect(walletView(await catalog.getWallet({ customerId: CUSTOMER }, { headers: auth }))).toEqual(first.wallet);
  });

  it("second server: new usage counts on top of the rebuilt totals, and limits still hold", async () => {
    const { metering } = clientsOf(server!);
    const more = await metering.track({ customerId: CUSTOMER, featureKey: "api_calls", amount: 200, idempotencyKey: "api-3" }, { headers: auth });
    expect(more).toMatchObject({ decision: Decision.ALLOWED, duplicate: false, usage: { consumed: 1000, remaining: 0 } });
    expect(more.thresholdsCrossed).toEqual([100]);
    const over = await metering.track({ customerId: CUSTOMER, featureKey: "api_calls", amount: 1, idempotencyKey: "api-4" }, { headers: auth });
    expect(over).toMatchObject({ decision: Decision.DENIED, denyReason: DenyReason.LIMIT_REACHED });
    const seat = await metering.track({ customerId: CUSTOMER, featureKey: "seats", amount: 1, idempotencyKey: "seat-11b" }, { headers: auth });
    expect(seat).toMatchObject({ decision: Decision.DENIED, denyReason: DenyReason.LIMIT_REACHED });
    const ai = await metering.track({ customerId: CUSTOMER, featureKey: "ai_tokens", amount: 750, idempotencyKey: "ai-2" }, { headers: auth });
    expect(ai).toMatchObject({ decision: Decision.ALLOWED, usage: { consumed: 1000, creditBalance: 0, creditsCharged: 1.5 } });
    const broke = await metering.track({ customerId: CUSTOMER, featureKey: "ai_tokens", amount: 1, idempotencyKey: "ai-3" }, { headers: auth });
    expect(broke).toMatchObject({ decision: Decision.DENIED, denyReason: DenyReason.INSUFFICIENT_CREDITS });
  });
});

describe("when the ledger cannot commit (the second server's ledger closed under it)", () => {
  it("each event of a batch is UNAVAILABLE (LEDGER_UNAVAILABLE) and nothing is counted", async () => {
    const { metering } = clientsOf(server!);
    const before = (await metering.getMetrics({ customerId: CUSTOMER, featureKey: "storage_gb" }, { headers: auth })).metrics[0]?.consumed;
    await server!.app.ledger.close();

    const { results } = await metering.trackBatch(
      { events: [{ customerId: CUSTOMER, featureKey: "storage_gb", amount: 1, idempotencyKey: "down-1" }] },
      { headers: auth },
    );
    const outcome = results[0]?.outcome;
    expect(outcome?.case).toBe("error");
    if (outcome?.case !== "error") return;
    expect(outcome.value).toMatchObject({ code: "unavailable", field: "events[0]", reason: "LEDGER_UNAVAILABLE" });
    expect(outcome.value.message).toMatch(/the ledger could not commit the event; nothing was counted/);

    const single = await errorOf(() =>
      metering.track({ customerId: CUSTOMER, featureKey: "storage_gb", amount: 1, idempotencyKey: "down-2" }, { headers: auth }),
    );
    expect(single.code).toBe(Code.Unavailable);
    // The fast path was put back: the counter is what it was.
    expect((await metering.getMetrics({ customerId: CUSTOMER, featureKey: "storage_gb" }, { headers: auth })).metrics[0]?.consumed).toBe(before);
  });

  // Regression: an error without a field was glued to its prefix ("events[0]the ledger could not ...").
  it("a batch event's error message without a field is not glued to its prefix", async () => {
    const { metering } = clientsOf(server!);
    const { results } = await metering.trackBatch(
      { events: [{ customerId: CUSTOMER, featureKey: "storage_gb", amount: 1, idempotencyKey: "down-3" }] },
      { headers: auth },
    );
    const outcome = results[0]?.outcome;
    expect(outcome?.case === "error" && outcome.value.message).toMatch(/^events\[0\]: the ledger could not commit/);
  });
});
