// R3, Redis comes back empty. CI shares Redis, so instead of FLUSHALL this deletes every key under the
// test's prefix (SCAN + UNLINK): for this deployment, the same as a Redis that restarted without its
// data. Given meterd on Redis + Postgres under load (concurrent Tracks on three customers, one of them
// with a hard limit lowered to 300), when the prefix is emptied twice in the middle of the load, then:
// every acknowledged event is in the ledger and the ledger holds only attempted keys, each once (I1,
// I2, I5); the ledger never holds more than 300 for the limited customer (I3); and after a short
// settle, GetMetrics' consumed equals the ledger's sum for every customer (I4).
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Decision } from "../../gen/meterd/v1/usage_pb.js";
import type { Server } from "../../src/server.js";
import { deleteByPrefix } from "../support/redis.js";
import {
  type Backing,
  type Clients,
  Code,
  clientsOf,
  codeName,
  codeOf,
  faultsSkipReason,
  headers,
  ledgerRows,
  ledgerSum,
  meterdEnv,
  openBacking,
  runBounded,
  Sessions,
  setHardLimit,
  settleCounters,
  sleep,
  startInProcess,
} from "./support.js";

const skip = await faultsSkipReason();

const LIMIT = 300;
const CONCURRENCY = 64;
const MAX_TRIES = 8;
/** Acks after which the prefix is emptied. */
const FLUSH_AT = [500, 1000];

describe.skipIf(skip !== null)("R3: Redis loses its data in the middle of the load", () => {
  let backing: Backing;
  let server: Server;
  let c: Clients;
  const sessions = new Sessions();

  beforeAll(async () => {
    backing = await openBacking();
    server = await startInProcess(meterdEnv(backing));
    c = clientsOf(server, sessions);
  });

  afterAll(async () => {
    sessions.abortAll();
    await server?.close(1000);
    await backing?.cleanup();
  });

  it("acked ⊆ ledger ⊆ attempted, the hard limit holds, and counters converge to the ledger", { timeout: 90_000 }, async () => {
    const run = randomUUID().slice(0, 8);
    const limited = `cust-r3-limited-${run}`;
    const others = [`cust-r3-b-${run}`, `cust-r3-c-${run}`];
    await setHardLimit(c.catalog, limited, "api_calls", LIMIT);

    // 800 attempts for the limited customer (far over its 300), 450 for each of the others (under 1000).
    const plan: Array<{ customerId: string; key: string }> = [];
    for (let i = 0; i < 800; i++) plan.push({ customerId: limited, key: `k-${i}` });
    for (const customerId of others) for (let i = 0; i < 450; i++) plan.push({ customerId, key: `k-${i}` });
    for (let i = plan.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [plan[i], plan[j]] = [plan[j]!, plan[i]!];
    }

    const acked = new Map<string, string>(); // customer/key -> event id
    const attempted = new Set<string>();
    const denied = new Set<string>();
    const failures: string[] = [];
    const otherErrors: string[] = [];
    let unavailable = 0;

    const deadline = Date.now() + 60_000;
    const flushes: number[] = [];
    const flusher = (async () => {
      for (const at of FLUSH_AT) {
        while (acked.size < at && Date.now() < deadline) await sleep(2);
        flushes.push(await deleteByPrefix(backing.redis.redis, backing.redis.prefix));
      }
    })();

    await runBounded(plan.length, CONCURRENCY, deadline, async (i) => {
      const { customerId, key } = plan[i]!;
      const id = `${customerId}/${key}`;
      attempted.add(id);
      const client = i % 2 === 0 ? c.grpc : c.connect;
      for (let attempt = 1; attempt <= MAX_TRIES; attempt++) {
        try {
          const res = await client.track({ customerId, featureKey: "api_calls", amount: 1, idempotencyKey: key }, { headers, timeoutMs: 15_000 });
          if (res.decision === Decision.ALLOWED) {
            const earlier = acked.get(id);
            if (earlier !== undefined && earlier !== res.eventId) otherErrors.push(`${id}: two event ids ${earlier}, ${res.eventId}`);
            acked.set(id, res.eventId);
          } else {
            denied.add(id);
          }
          return;
        } catch (error) {
          const code = codeOf(error);
          if (code !== Code.Unavailable) {
            otherErrors.push(`${id}: ${codeName(code)} ${String(error)}`);
            return;
          }
          unavailable++;
          if (attempt === MAX_TRIES) failures.push(id);
          else await sleep(50 * attempt);
        }
      }
    });
    await flusher;

    // The fault happened while the load ran: both flushes deleted keys, and acks came after them.
    expect(flushes).toHaveLength(2);
    expect(flushes.every((n) => n > 0)).toBe(true);
    expect(acked.size).toBeGreaterThan(FLUSH_AT[1]!);

    const readings = await settleCounters(c.grpc, backing.pool, [limited, ...others], "api_calls", 10_000);

    for (const customerId of [limited, ...others]) {
      const rows = await ledgerRows(backing.pool, customerId);
      const keys = rows.map((r) => r.idempotency_key);
      // No key twice, and only attempted keys.
      expect(new Set(keys).size, `${customerId}: a key is in the ledger twice`).toBe(keys.length);
      const stray = rows.filter((r) => !attempted.has(`${customerId}/${r.idempotency_key}`));
      expect(stray, `${customerId}: rows for keys never attempted`).toEqual([]);
      // Every acked event, by the event id it was acked with.
      const byKey = new Map(rows.map((r) => [`${customerId}/${r.idempotency_key}`, r.id]));
      const missing = [...acked].filter(([id, eventId]) => id.startsWith(`${customerId}/`) && byKey.get(id) !== eventId);
      expect(missing, `${customerId}: acked events missing from the ledger`).toEqual([]);
    }
    // I3: the hard limit is never exceeded in the ledger.
    expect(Number(await ledgerSum(backing.pool, limited, "api_calls"))).toBeLessThanOrEqual(LIMIT);
    // I4: GetMetrics equals the ledger for every customer.
    expect(readings.filter((r) => r.consumed !== r.ledger), JSON.stringify(readings)).toEqual([]);
    // Errors other than UNAVAILABLE (the one retryable code) must not happen.
    expect(otherErrors).toEqual([]);
    console.info(
      `R3: ${attempted.size} keys, ${acked.size} acked, ${denied.size} denied, ${failures.length} gave up after ${MAX_TRIES} tries, ` +
        `${unavailable} UNAVAILABLE answers, flushes deleted ${flushes.join(" and ")} keys; ${JSON.stringify(readings)}`,
    );
  });
});
