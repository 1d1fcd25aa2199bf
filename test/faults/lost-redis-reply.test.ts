// R2, a lost Redis reply. Given meterd whose REDIS_URL goes through a TCP proxy, when the reply to the
// apply script (EVALSHA) is swallowed after Redis ran it, and the connection is reset so that ioredis
// reconnects and resends the command, then the Track ends ALLOWED (or UNAVAILABLE, and a retry with the
// same key is ALLOWED as a duplicate), and the event is counted exactly once: one row in the ledger,
// and GetMetrics' consumed equal to the ledger's sum (I2, I4). The same for an event without an
// idempotency key (its server-side event id is what makes the resend harmless), and for a TrackBatch,
// whose pipelined script calls are resent together.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Decision } from "../../gen/meterd/v1/usage_pb.js";
import type { Server } from "../../src/server.js";
import { REDIS_URL } from "../support/redis.js";
import { TcpProxy } from "../support/tcp-proxy.js";
import {
  type Backing,
  type Clients,
  Code,
  clientsOf,
  codeOf,
  consumedOf,
  faultsSkipReason,
  headers,
  ledgerRows,
  ledgerSum,
  meterdEnv,
  openBacking,
  Sessions,
  startInProcess,
} from "./support.js";

const skip = await faultsSkipReason();

/** A script call (EVALSHA or EVAL) of the apply script ("add" is its op argument) that carries `marker`. */
const applyCallWith = (marker: string) => (chunk: Buffer) => {
  const text = chunk.toString("latin1");
  // apply.lua takes the op as an argument of its own; apply-many.lua one tab-separated string per event.
  return /\r\n(EVALSHA|EVAL)\r\n/i.test(text) && (text.includes("\r\nadd\r\n") || text.includes("\tadd\t")) && text.includes(marker);
};

describe.skipIf(skip !== null)("R2: a lost Redis reply to the apply script", () => {
  let backing: Backing;
  let proxy: TcpProxy;
  let server: Server;
  let c: Clients;
  const sessions = new Sessions();

  beforeAll(async () => {
    backing = await openBacking();
    proxy = await TcpProxy.forUrl(REDIS_URL);
    server = await startInProcess(meterdEnv(backing, { redisUrl: proxy.url(REDIS_URL) }));
    c = clientsOf(server, sessions);
  });

  afterAll(async () => {
    sessions.abortAll();
    await server?.close(1000);
    await proxy?.close();
    await backing?.cleanup();
  });

  it("a keyed Track whose reply was lost and resent is ALLOWED once, in the ledger and in GetMetrics", async () => {
    const customerId = `cust-r2-${randomUUID()}`;
    const properties = { probe: `keyed-${randomUUID()}` };
    const warm = await c.grpc.track({ customerId, featureKey: "api_calls", amount: 1, idempotencyKey: "warm" }, { headers, timeoutMs: 10_000 });
    expect(warm.decision).toBe(Decision.ALLOWED);
    const acceptedBefore = proxy.accepted;

    const dropped = proxy.dropNextReply(applyCallWith(properties.probe));
    const req = { customerId, featureKey: "api_calls", amount: 5, idempotencyKey: "lost-1", properties };
    let first: { eventId: string; decision: Decision; duplicate: boolean } | null = null;
    try {
      first = await c.grpc.track(req, { headers, timeoutMs: 15_000 });
    } catch (error) {
      expect(codeOf(error)).toBe(Code.Unavailable);
    }
    const lost = await dropped;
    // The fault really happened: Redis ran the script (its reply said APPLIED) and the client reconnected.
    expect(lost.reply.toString("latin1")).toContain("APPLIED");
    expect(proxy.accepted).toBeGreaterThan(acceptedBefore);

    const retry = await c.connect.track(req, { headers, timeoutMs: 15_000 });
    expect(retry.decision).toBe(Decision.ALLOWED);
    if (first) {
      expect(first.decision).toBe(Decision.ALLOWED);
      expect(first.duplicate).toBe(false);
      expect(retry).toMatchObject({ eventId: first.eventId, duplicate: true });
    }

    const rows = (await ledgerRows(backing.pool, customerId)).filter((r) => r.idempotency_key === "lost-1");
    expect(rows.map((r) => [r.id, r.amount])).toEqual([[retry.eventId, "5"]]);
    expect(await ledgerSum(backing.pool, customerId, "api_calls")).toBe("6");
    expect(await consumedOf(c.grpc, customerId, "api_calls")).toBe("6");
    expect(await consumedOf(c.connect, customerId, "api_calls")).toBe("6");
  });

  it("a Track without an idempotency key whose reply was lost and resent is counted at most once", async () => {
    const customerId = `cust-r2-${randomUUID()}`;
    const properties = { probe: `keyless-${randomUUID()}` };
    await c.grpc.track({ customerId, featureKey: "api_calls", amount: 1, idempotencyKey: "warm" }, { headers, timeoutMs: 10_000 });

    const dropped = proxy.dropNextReply(applyCallWith(properties.probe));
    let answer: { eventId: string; decision: Decision } | null = null;
    try {
      answer = await c.grpc.track({ customerId, featureKey: "api_calls", amount: 7, properties }, { headers, timeoutMs: 15_000 });
    } catch (error) {
      expect(codeOf(error)).toBe(Code.Unavailable);
    }
    expect((await dropped).reply.toString("latin1")).toContain("APPLIED");

    const rows = (await ledgerRows(backing.pool, customerId)).filter((r) => r.properties.probe === properties.probe);
    if (answer) {
      expect(answer.decision).toBe(Decision.ALLOWED);
      expect(rows.map((r) => [r.id, r.amount])).toEqual([[answer.eventId, "7"]]);
    } else {
      expect(rows.length).toBeLessThanOrEqual(1);
    }
    const ledger = await ledgerSum(backing.pool, customerId, "api_calls");
    expect(ledger).toBe(String(1 + 7 * rows.length));
    expect(await consumedOf(c.connect, customerId, "api_calls")).toBe(ledger);
  });

  it("a TrackBatch whose pipelined replies were lost and resent counts each event once", async () => {
    const customerId = `cust-r2-${randomUUID()}`;
    const probe = `batch-${randomUUID()}`;
    await c.grpc.track({ customerId, featureKey: "api_calls", amount: 1, idempotencyKey: "warm" }, { headers, timeoutMs: 10_000 });

    const dropped = proxy.dropNextReply(applyCallWith(probe));
    const events = [1, 2, 3].map((n) => ({ customerId, featureKey: "api_calls", amount: n, idempotencyKey: `b-${n}`, properties: { probe } }));
    let results: Array<{ eventId: string; decision: Decision } | Code> = [];
    try {
      const res = await c.connect.trackBatch({ events }, { headers, timeoutMs: 15_000 });
      results = res.results.map((r) => (r.outcome.case === "tracked" ? r.outcome.value : Code.Unknown));
    } catch (error) {
      results = events.map(() => codeOf(error));
    }
    expect((await dropped).reply.toString("latin1")).toContain("APPLIED");
    // Each event either made it, or failed retryably; a retry of the whole batch is then a replay.
    for (const r of results) {
      if (typeof r === "number") expect(r).toBe(Code.Unavailable);
      else expect(r.decision).toBe(Decision.ALLOWED);
    }
    const retry = await c.connect.trackBatch({ events }, { headers, timeoutMs: 15_000 });
    const ids = retry.results.map((r) => (r.outcome.case === "tracked" ? r.outcome.value : null));
    expect(ids.map((r) => r?.decision)).toEqual([Decision.ALLOWED, Decision.ALLOWED, Decision.ALLOWED]);
    results.forEach((r, i) => {
      if (typeof r !== "number") expect(ids[i]).toMatchObject({ eventId: r.eventId, duplicate: true });
    });

    const rows = (await ledgerRows(backing.pool, customerId)).filter((r) => r.properties.probe === probe);
    expect(rows.map((r) => [r.idempotency_key, r.amount]).sort()).toEqual([["b-1", "1"], ["b-2", "2"], ["b-3", "3"]]);
    expect(rows.map((r) => r.id).sort()).toEqual(ids.map((r) => r?.eventId).sort());
    expect(await ledgerSum(backing.pool, customerId, "api_calls")).toBe("7");
    expect(await consumedOf(c.grpc, customerId, "api_calls")).toBe("7");
  });
});
