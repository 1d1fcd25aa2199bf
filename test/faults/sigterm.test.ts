// R9, SIGTERM under load. Given a real meterd process (`node --import tsx src/cli.ts serve`) on Redis
// and Postgres, with Tracks in flight from 32 callers over gRPC and Connect, when it receives SIGTERM,
// then it exits with code 0; every Track it answered ALLOWED is in the ledger with the event id it
// was given (ledger ⊇ acked, I1), the ledger holds nothing that was not attempted and no key twice
// (ledger ⊆ attempted, I2, I5); and a replica started afterwards on the same Redis prefix and
// database reports counters equal to the ledger: the shutdown left nothing half-done (I4).
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Decision } from "../../gen/meterd/v1/usage_pb.js";
import type { Server } from "../../src/server.js";
import {
  type Backing,
  clientsOf,
  codeName,
  codeOf,
  exitWithin,
  faultsSkipReason,
  headers,
  killAllSpawned,
  ledgerRows,
  type MeterdProcess,
  meterdEnv,
  openBacking,
  Sessions,
  settleCounters,
  spawnMeterd,
  startInProcess,
} from "./support.js";

const skip = await faultsSkipReason();

describe.skipIf(skip !== null)("R9: SIGTERM under load", () => {
  let backing: Backing;
  let proc: MeterdProcess | undefined;
  let replica: Server | undefined;
  const sessions = new Sessions();

  beforeAll(async () => {
    backing = await openBacking();
  });

  afterAll(async () => {
    sessions.abortAll();
    killAllSpawned();
    await replica?.close(1000);
    await backing?.cleanup();
  });

  it("exits 0, and every ALLOWED answer is in the ledger (acked ⊆ ledger ⊆ attempted)", { timeout: 90_000 }, async () => {
    proc = await spawnMeterd(meterdEnv(backing));
    const c = clientsOf(proc, sessions);
    const run = randomUUID().slice(0, 8);
    const customers = [`cust-r9-a-${run}`, `cust-r9-b-${run}`];

    const LANES = 32;
    const MAX_ATTEMPTS = 1800; // 900 per customer, under the limit of 1,000: no denial muddles the count
    const SIGTERM_AFTER_ACKS = 300;
    const acked: Array<{ customerId: string; key: string; eventId: string }> = [];
    const attempted = new Set<string>();
    const failuresBeforeSignal: string[] = [];
    const failuresAfter = new Map<string, number>();
    let seq = 0;
    let signalled = false;
    let ackedAtSignal = 0;
    const deadline = Date.now() + 45_000;

    const lane = async (l: number) => {
      const client = l % 2 === 0 ? c.grpc : c.connect;
      while (seq < MAX_ATTEMPTS && Date.now() < deadline) {
        const n = seq++;
        const customerId = customers[n % 2]!;
        const key = `k-${n}`;
        attempted.add(`${customerId}/${key}`);
        try {
          const res = await client.track({ customerId, featureKey: "api_calls", amount: 1, idempotencyKey: key }, { headers, timeoutMs: 15_000 });
          if (res.decision === Decision.ALLOWED) acked.push({ customerId, key, eventId: res.eventId });
        } catch (error) {
          const code = codeName(codeOf(error));
          if (!signalled) failuresBeforeSignal.push(`${key}: ${code} ${String(error)}`);
          else failuresAfter.set(code, (failuresAfter.get(code) ?? 0) + 1);
          return; // after SIGTERM a call may be refused or cut: this caller stops
        }
        if (!signalled && acked.length >= SIGTERM_AFTER_ACKS) {
          signalled = true;
          ackedAtSignal = acked.length;
          proc!.child.kill("SIGTERM");
        }
      }
    };
    await Promise.all(Array.from({ length: LANES }, (_, l) => lane(l)));
    const exit = await exitWithin(proc, 20_000);

    expect(failuresBeforeSignal).toEqual([]);
    expect(signalled).toBe(true);
    expect(exit, proc.output().slice(-3000)).toEqual({ code: 0, signal: null });
    // Some calls were in flight when the signal came, and answered during the shutdown.
    expect(acked.length).toBeGreaterThanOrEqual(ackedAtSignal);
    expect(attempted.size).toBeLessThan(MAX_ATTEMPTS);

    for (const customerId of customers) {
      const rows = await ledgerRows(backing.pool, customerId);
      const byKey = new Map(rows.map((r) => [r.idempotency_key, r.id]));
      expect(byKey.size, `${customerId}: a key is in the ledger twice`).toBe(rows.length);
      const missing = acked.filter((a) => a.customerId === customerId && byKey.get(a.key) !== a.eventId);
      expect(missing, `${customerId}: ALLOWED events missing from the ledger`).toEqual([]);
      expect(rows.filter((r) => !attempted.has(`${customerId}/${r.idempotency_key}`))).toEqual([]);
    }

    // A replica started afterwards on the same prefix and database: counters equal the ledger.
    replica = await startInProcess(meterdEnv(backing));
    const readings = await settleCounters(clientsOf(replica, sessions).grpc, backing.pool, customers, "api_calls", 8_000);
    expect(readings.filter((r) => r.consumed !== r.ledger), JSON.stringify(readings)).toEqual([]);
    console.info(
      `R9: ${attempted.size} attempted, ${acked.length} ALLOWED (${acked.length - ackedAtSignal} answered after SIGTERM), ` +
        `failures after SIGTERM ${JSON.stringify(Object.fromEntries(failuresAfter))}, ledger ${JSON.stringify(readings)}`,
    );
  });
});
