// R5, two replicas and one hard limit. Given two meterd servers on the same Redis prefix and the same
// database (each with its own Redis connections, database pool, catalogue copy and group committer),
// when 10,000 one-unit Tracks from 200 concurrent callers, split across both replicas and across gRPC
// (grpc-js listener) and Connect (HTTP/2), race for one customer's hard limit of 1,000 (the example
// plan's), starting from a customer neither replica has seen, then: exactly 1,000 are ALLOWED and the
// other 9,000 DENIED with LIMIT_REACHED (I3, and no event refused that fitted); the ledger holds
// exactly those 1,000 events, once each (I1, I2); and GetMetrics says 1,000 on both replicas (I4).
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Decision, DenyReason } from "../../gen/meterd/v1/usage_pb.js";
import type { Server } from "../../src/server.js";
import {
  type Backing,
  type Clients,
  clientsOf,
  codeName,
  codeOf,
  consumedOf,
  faultsSkipReason,
  headers,
  ledgerRows,
  ledgerSum,
  meterdEnv,
  type Metering,
  openBacking,
  runBounded,
  Sessions,
  startInProcess,
} from "./support.js";

const skip = await faultsSkipReason();

const TOTAL = 10_000;
const IN_FLIGHT = 200;
const LIMIT = 1000;

describe.skipIf(skip !== null)("R5: two replicas race for one hard limit", () => {
  let backing: Backing;
  let servers: Server[] = [];
  let clients: Clients[] = [];
  const sessions = new Sessions();

  beforeAll(async () => {
    backing = await openBacking();
    // One after the other: both apply the catalogue file and migrate the same database at start-up.
    servers.push(await startInProcess(meterdEnv(backing)));
    servers.push(await startInProcess(meterdEnv(backing)));
    clients = servers.map((s) => clientsOf(s, sessions));
  });

  afterAll(async () => {
    sessions.abortAll();
    await Promise.allSettled(servers.map((s) => s.close(1000)));
    servers = [];
    await backing?.cleanup();
  });

  it("exactly 1,000 of 10,000 concurrent Tracks are ALLOWED, the ledger holds exactly 1,000, both replicas say 1,000", { timeout: 120_000 }, async () => {
    const customerId = `cust-r5-${randomUUID().slice(0, 8)}`;
    const [a, b] = clients as [Clients, Clients];
    const routes: Metering[] = [a.grpc, a.connect, b.grpc, b.connect];

    const allowed = new Map<string, string>(); // key -> event id
    const routeOfAllowed = [0, 0, 0, 0];
    let deniedAtLimit = 0;
    const other: string[] = [];
    const started = Date.now();
    const ran = await runBounded(TOTAL, IN_FLIGHT, started + 100_000, async (i) => {
      const key = `r5-${i}`;
      try {
        const res = await routes[i % 4]!.track({ customerId, featureKey: "api_calls", amount: 1, idempotencyKey: key }, { headers, timeoutMs: 30_000 });
        if (res.decision === Decision.ALLOWED && !res.duplicate) {
          allowed.set(key, res.eventId);
          routeOfAllowed[i % 4]!++;
        } else if (res.decision === Decision.DENIED && res.denyReason === DenyReason.LIMIT_REACHED) {
          deniedAtLimit++;
        } else {
          other.push(`${key}: ${Decision[res.decision]} ${DenyReason[res.denyReason]} duplicate=${res.duplicate}`);
        }
      } catch (error) {
        other.push(`${key}: ${codeName(codeOf(error))} ${String(error)}`);
      }
    });
    const elapsed = Date.now() - started;

    expect(ran).toBe(TOTAL);
    expect(other.slice(0, 20)).toEqual([]);
    expect(allowed.size).toBe(LIMIT);
    expect(deniedAtLimit).toBe(TOTAL - LIMIT);
    expect(new Set(allowed.values()).size).toBe(LIMIT);

    const rows = await ledgerRows(backing.pool, customerId);
    expect(rows).toHaveLength(LIMIT);
    expect(await ledgerSum(backing.pool, customerId, "api_calls")).toBe(String(LIMIT));
    const byKey = new Map(rows.map((r) => [r.idempotency_key, r.id]));
    expect(byKey.size).toBe(LIMIT);
    expect([...allowed].filter(([key, eventId]) => byKey.get(key) !== eventId)).toEqual([]);

    for (const c of [a, b]) {
      expect(await consumedOf(c.grpc, customerId, "api_calls")).toBe(String(LIMIT));
      expect(await consumedOf(c.connect, customerId, "api_calls")).toBe(String(LIMIT));
    }
    // Both replicas admitted events: the race was real.
    expect(routeOfAllowed[0]! + routeOfAllowed[1]!).toBeGreaterThan(0);
    expect(routeOfAllowed[2]! + routeOfAllowed[3]!).toBeGreaterThan(0);
    console.info(`R5: ${TOTAL} Tracks in ${elapsed} ms (${Math.round((TOTAL * 1000) / elapsed)}/s); ALLOWED per route (A grpc, A connect, B grpc, B connect): ${routeOfAllowed.join(", ")}`);
  });
});
