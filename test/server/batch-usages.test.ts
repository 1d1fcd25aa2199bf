// Given the real meterd server (the Meter on PGlite on disk, the example catalogue), when TrackBatch and
// TrackStream answer, then by default each event's result is lean (event id, decision, deny reason,
// duplicate flag, thresholds, and no usage block) and the response's `usages` holds one entry per
// distinct (customer, feature) that equals what GetMetrics shows afterwards; with include_event_usage
// every tracked event carries its own usage as well, and `usages` holds the last of each pair.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient, type Client, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { MeteringService, type CustomerUsage, type TrackResult } from "../../gen/meterd/v1/metering_pb.js";
import { Decision, DenyReason, type Usage } from "../../gen/meterd/v1/usage_pb.js";
import type { Server } from "../../src/server.js";
import { auth, makeDataDir, ms, removeDir, Sessions, startMeterd } from "./harness.js";

let server: Server;
let dataDir: string;
const sessions = new Sessions();

beforeAll(async () => {
  dataDir = await makeDataDir();
  server = await startMeterd(dataDir);
});

afterAll(async () => {
  sessions.abortAll();
  await server?.close(1000);
  await removeDir(dataDir);
});

interface TransportCase {
  name: string;
  prefix: string;
  transport: () => Transport;
}

const cases: TransportCase[] = [
  {
    name: "Connect binary over HTTP/2 -> Connect listener",
    prefix: "bu-connect",
    transport: () => {
      const baseUrl = `http://127.0.0.1:${server.httpPort}`;
      return createConnectTransport({ baseUrl, httpVersion: "2", sessionManager: sessions.h2(baseUrl), useBinaryFormat: true });
    },
  },
  {
    name: "gRPC (h2c) -> grpc-js listener",
    prefix: "bu-grpc",
    transport: () => {
      const baseUrl = `http://127.0.0.1:${server.grpcPort}`;
      return createGrpcTransport({ baseUrl, sessionManager: sessions.h2(baseUrl) });
    },
  },
];

/**
 * Two customers, five features among them, in an interleaved order: an unknown feature (an error
 * result, no entry), a seat denial at the limit and a credit denial (denied, still with a usage), a
 * soft-limit overage, and three api_calls events of one customer of which the last one counts.
 */
function mixedEvents(a: string, b: string) {
  return [
    { customerId: a, featureKey: "api_calls", amount: 1 },
    { customerId: b, featureKey: "api_calls", amount: 5 },
    { customerId: a, featureKey: "seats", amount: 8 },
    { customerId: a, featureKey: "api_calls", amount: 2 },
    { customerId: b, featureKey: "nope", amount: 1 },
    { customerId: a, featureKey: "seats", amount: 5 },
    { customerId: b, featureKey: "storage_gb", amount: 120 },
    { customerId: a, featureKey: "api_calls", amount: 3 },
    { customerId: b, featureKey: "ai_tokens", amount: 100 },
  ];
}

/** Each event's outcome: the decision (and deny reason), or the error's field. */
const MIXED_OUTCOMES = [
  "ALLOWED",
  "ALLOWED",
  "ALLOWED",
  "ALLOWED",
  "error:events[4].feature_key",
  "DENIED:LIMIT_REACHED",
  "ALLOWED",
  "ALLOWED",
  "DENIED:INSUFFICIENT_CREDITS",
];

/** The (customer, feature) pairs of mixedEvents, in the order they first appear, with their consumed. */
function mixedUsages(a: string, b: string): Array<[string, string, number]> {
  return [
    [a, "api_calls", 6],
    [b, "api_calls", 5],
    [a, "seats", 8],
    [b, "storage_gb", 120],
    [b, "ai_tokens", 0],
  ];
}

function outcomeOf(r: TrackResult): string {
  if (r.outcome.case === "error") return `error:${r.outcome.value.field}`;
  if (r.outcome.case !== "tracked") return "none";
  const t = r.outcome.value;
  return t.decision === Decision.ALLOWED ? "ALLOWED" : `DENIED:${DenyReason[t.denyReason]}`;
}

const pairsOf = (usages: CustomerUsage[]): Array<[string, string, number]> =>
  usages.map((u) => [u.customerId, u.usage?.featureKey ?? "", u.usage?.consumed ?? Number.NaN]);

/** What a usage block and a GetMetrics metric have in common. */
function shown(u: Omit<Usage, "$typeName" | "creditsCharged"> | undefined) {
  if (u === undefined) return undefined;
  return {
    featureKey: u.featureKey,
    consumed: u.consumed,
    limit: u.limit,
    remaining: u.remaining,
    unlimited: u.unlimited,
    percentageUsed: u.percentageUsed,
    periodStart: ms(u.periodStart),
    periodEnd: ms(u.periodEnd),
    overage: u.overage,
    limitKind: u.limitKind,
    creditBalance: u.creditBalance,
  };
}

describe.each(cases)("$name", (c) => {
  let client: Client<typeof MeteringService>;
  beforeAll(() => {
    client = createClient(MeteringService, c.transport());
  });

  /** Every entry of `usages` equals what GetMetrics now says for its customer and feature. */
  async function expectMatchesGetMetrics(usages: CustomerUsage[]): Promise<void> {
    for (const u of usages) {
      const { metrics } = await client.getMetrics({ customerId: u.customerId, featureKey: u.usage?.featureKey ?? "" }, { headers: auth });
      expect(metrics).toHaveLength(1);
      expect(shown(u.usage), `${u.customerId}/${u.usage?.featureKey}`).toEqual(shown(metrics[0]));
    }
  }

  it("TrackBatch by default: no usage per event, one usages entry per (customer, feature), equal to GetMetrics after the batch", async () => {
    const [a, b] = [`${c.prefix}-lean-a`, `${c.prefix}-lean-b`];
    const res = await client.trackBatch({ events: mixedEvents(a, b) }, { headers: auth });

    expect(res.results.map(outcomeOf)).toEqual(MIXED_OUTCOMES);
    for (const r of res.results) {
      if (r.outcome.case !== "tracked") continue;
      expect(r.outcome.value.usage).toBeUndefined();
      if (r.outcome.value.decision === Decision.ALLOWED) expect(r.outcome.value.eventId).not.toBe("");
    }
    expect(pairsOf(res.usages)).toEqual(mixedUsages(a, b));
    expect(res.usages.find((u) => u.usage?.featureKey === "storage_gb")?.usage?.overage).toBe(20);
    await expectMatchesGetMetrics(res.usages);
  });

  it("TrackBatch with include_event_usage: every tracked event carries its own usage; usages holds each pair's last", async () => {
    const [a, b] = [`${c.prefix}-full-a`, `${c.prefix}-full-b`];
    const events = mixedEvents(a, b);
    const res = await client.trackBatch({ events, includeEventUsage: true }, { headers: auth });

    expect(res.results.map(outcomeOf)).toEqual(MIXED_OUTCOMES);
    const perEvent = res.results.map((r) => (r.outcome.case === "tracked" ? r.outcome.value.usage : null));
    for (const [i, u] of perEvent.entries()) {
      if (u === null) continue;
      expect(u, `events[${i}]`).toBeDefined();
      expect(u?.featureKey).toBe(events[i]!.featureKey);
    }
    expect(perEvent.map((u) => (u === null ? null : u?.consumed))).toEqual([1, 5, 8, 3, null, 8, 120, 6, 0]);
    expect(pairsOf(res.usages)).toEqual(mixedUsages(a, b));
    // Each entry is the usage of the last tracked event of its pair.
    const lastOf = (customerId: string, featureKey: string): Usage | undefined => {
      let last: Usage | undefined;
      perEvent.forEach((u, i) => {
        if (u !== null && events[i]!.customerId === customerId && events[i]!.featureKey === featureKey) last = u;
      });
      return last;
    };
    for (const u of res.usages) expect(u.usage).toEqual(lastOf(u.customerId, u.usage?.featureKey ?? ""));
    await expectMatchesGetMetrics(res.usages);
  });

  it("TrackStream: each ack has lean results and its own usages by default, full results with include_event_usage", async () => {
    const [a, b] = [`${c.prefix}-stream-a`, `${c.prefix}-stream-b`];
    // The second request goes out only once the first ack has been checked against GetMetrics.
    let firstChecked = (): void => {};
    const checked = new Promise<void>((resolve) => (firstChecked = resolve));
    async function* requests() {
      yield {
        events: [
          { customerId: a, featureKey: "api_calls", amount: 700 },
          { customerId: b, featureKey: "seats", amount: 2 },
          // Crosses the 80% threshold of 1,000: thresholds_crossed is set even without a usage block.
          { customerId: a, featureKey: "api_calls", amount: 100 },
        ],
      };
      await checked;
      yield {
        events: [
          { customerId: b, featureKey: "seats", amount: 1 },
          { customerId: a, featureKey: "nope", amount: 1 },
          { customerId: b, featureKey: "seats", amount: 20 },
        ],
        includeEventUsage: true,
      };
    }
    const acks = [];
    for await (const res of client.trackStream(requests(), { headers: auth })) {
      acks.push(res);
      // Checked while the stream is open: each ack's usages hold what GetMetrics shows at that point.
      await expectMatchesGetMetrics(res.usages);
      firstChecked();
    }
    expect(acks.map((r) => r.sequence)).toEqual([1n, 2n]);

    const [first, second] = [acks[0]!, acks[1]!];
    expect(first.results.map(outcomeOf)).toEqual(["ALLOWED", "ALLOWED", "ALLOWED"]);
    const lean = first.results.map((r) => (r.outcome.case === "tracked" ? r.outcome.value : undefined));
    for (const t of lean) {
      expect(t?.usage).toBeUndefined();
      expect(t?.eventId).not.toBe("");
      expect(t?.duplicate).toBe(false);
    }
    expect(lean.map((t) => t?.thresholdsCrossed)).toEqual([[], [], [80]]);
    expect(pairsOf(first.usages)).toEqual([
      [a, "api_calls", 800],
      [b, "seats", 2],
    ]);

    expect(second.results.map(outcomeOf)).toEqual(["ALLOWED", "error:events[1].feature_key", "DENIED:LIMIT_REACHED"]);
    const full = second.results.map((r) => (r.outcome.case === "tracked" ? r.outcome.value.usage : null));
    expect(full.map((u) => (u === null ? null : u?.consumed))).toEqual([3, null, 3]);
    expect(full[0]).toMatchObject({ featureKey: "seats", limit: 10, remaining: 7 });
    expect(full[0]?.periodStart).toBeUndefined();
    // Only pairs with a tracked event: the unknown feature has no entry.
    expect(pairsOf(second.usages)).toEqual([[b, "seats", 3]]);
    expect(second.usages[0]?.usage).toEqual(full[2]);
  });
});
