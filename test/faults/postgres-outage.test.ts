// R4, a Postgres outage. Given a real meterd process whose DATABASE_URL goes through a TCP proxy, when
// the proxy cuts Postgres (every connection reset, every new one refused) in the middle of a load and
// restores it later, then: no Track answered ALLOWED is missing from the ledger (I1, I5); calls made
// during the outage get UNAVAILABLE, never ALLOWED and never INTERNAL; after restore(), the same
// process serves Tracks again, a retry of each failed key counts once, and GetMetrics equals the
// ledger (I4). And when only the reply to a COMMIT is lost: with Postgres still up, the event is found
// and ALLOWED once; with Postgres gone right after that COMMIT, the counter must still end equal to the
// ledger.
//
// meterd runs as a real process here, not in-process: a connection reset in the middle of a ledger
// transaction raises an uncaught exception in meterd (see the first test), which would otherwise be
// an unhandled error of the test runner. A test that finds the process dead starts a new one.
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Decision } from "../../gen/meterd/v1/usage_pb.js";
import { TcpProxy } from "../support/tcp-proxy.js";
import {
  type Backing,
  type Clients,
  Code,
  clientsOf,
  codeName,
  codeOf,
  ConnectError,
  consumedOf,
  faultsSkipReason,
  headers,
  killAllSpawned,
  ledgerRows,
  ledgerSum,
  type MeterdProcess,
  meterdEnv,
  openBacking,
  Sessions,
  setHardLimit,
  settleCounters,
  sleep,
  spawnMeterd,
  isLedgerCommit,
} from "./support.js";

const skip = await faultsSkipReason();



interface Call {
  customerId: string;
  key: string;
  start: number;
  end: number;
  result: { eventId: string; decision: Decision } | { code: Code; message: string };
}

describe.skipIf(skip !== null)("R4: Postgres outage", () => {
  let backing: Backing;
  let proxy: TcpProxy;
  let proc: MeterdProcess | null = null;
  let c: Clients;
  const sessions = new Sessions();

  const alive = (): boolean => proc !== null && proc.child.exitCode === null && proc.child.signalCode === null;
  const tail = (): string => (proc?.output() ?? "").slice(-3000);

  /** The running meterd's clients; starts a new process if the last one died. */
  async function meterd(): Promise<Clients> {
    // A process that died a moment ago may not have reported its exit yet.
    if (proc !== null) await Promise.race([proc.exited, sleep(300)]);
    if (alive()) return c;
    proxy.restore();
    proc = await spawnMeterd(meterdEnv(backing, { databaseUrl: proxy.url(backing.db.url) }));
    c = clientsOf(proc, sessions);
    return c;
  }

  beforeAll(async () => {
    backing = await openBacking();
    proxy = await TcpProxy.forUrl(backing.db.url);
  });

  afterAll(async () => {
    sessions.abortAll();
    proxy?.restore();
    if (alive()) {
      proc!.child.kill("SIGTERM");
      if ((await Promise.race([proc!.exited, sleep(10_000).then(() => null)])) === null) proc!.child.kill("SIGKILL");
    }
    killAllSpawned();
    await proxy?.close();
    await backing?.cleanup();
  });

  // Regression (fixed; src/ledger/pg-client.ts, transaction(): the client taken with pool.connect() has no "error"
  // listener while it is checked out; pg-pool removes its idle listener then). A connection reset in the
  // middle of a transaction makes pg emit "error" on that client with nobody listening: an uncaught
  // exception, and meterd dies. Fix: client.on("error", ...) for as long as the client is checked out
  // (mark it broken, release(broken)), and remove the listener on release.
  it("a connection reset in the middle of a ledger commit does not take meterd down", { timeout: 30_000 }, async () => {
    const cl = await meterd();
    const customerId = `cust-r4-reset-${randomUUID().slice(0, 8)}`;
    await cl.grpc.track({ customerId, featureKey: "api_calls", amount: 1, idempotencyKey: "warm" }, { headers, timeoutMs: 10_000 });
    const cutting = proxy.onRequest(isLedgerCommit, () => proxy.cut());
    const req = { customerId, featureKey: "api_calls", amount: 2, idempotencyKey: "reset" };
    const first = await cl.grpc.track(req, { headers, timeoutMs: 15_000 }).then(
      (res) => Decision[res.decision],
      (error: unknown) => codeName(codeOf(error)),
    );
    await cutting;
    await sleep(500);
    proxy.restore();
    expect(alive(), `meterd died:\n${tail()}`).toBe(true);
    expect(first).toBe(codeName(Code.Unavailable));
    const retry = await cl.connect.track(req, { headers, timeoutMs: 15_000 });
    expect(retry.decision).toBe(Decision.ALLOWED);
    expect(await ledgerSum(backing.pool, customerId, "api_calls")).toBe("3");
    expect(await consumedOf(cl.grpc, customerId, "api_calls")).toBe("3");
  });

  // Regression: the same one as above (pg-client.ts transaction(), no "error" listener on a checked-out client):
  // the cut comes at a ledger INSERT, so a transaction is always in flight when it comes, and meterd dies.
  it("cut during load: ALLOWED only when committed, UNAVAILABLE during the outage, recovery without a restart", { timeout: 60_000 }, async () => {
    const cl = await meterd();
    const run = randomUUID().slice(0, 8);
    const customers = [0, 1, 2, 3].map((n) => `cust-r4-${n}-${run}`);
    for (const customerId of customers) {
      const warm = await cl.grpc.track({ customerId, featureKey: "api_calls", amount: 1, idempotencyKey: "warm" }, { headers, timeoutMs: 10_000 });
      expect(warm.decision).toBe(Decision.ALLOWED);
    }

    const LANES = 24;
    const MAX_CALLS = 2400; // at most 600 per customer: the limit of 1000 never denies
    const calls: Call[] = [];
    let seq = 0;
    let cutAt = Infinity;
    let restoreAt = Infinity;
    const stopAt = Date.now() + 30_000;
    let stop = false;

    const lane = async (l: number) => {
      while (!stop && seq < MAX_CALLS && Date.now() < stopAt) {
        const n = seq++;
        const customerId = customers[n % customers.length]!;
        const key = `k-${n}`;
        const client = l % 2 === 0 ? cl.grpc : cl.connect;
        const start = Date.now();
        try {
          const res = await client.track({ customerId, featureKey: "api_calls", amount: 1, idempotencyKey: key }, { headers, timeoutMs: 15_000 });
          calls.push({ customerId, key, start, end: Date.now(), result: { eventId: res.eventId, decision: res.decision } });
        } catch (error) {
          calls.push({ customerId, key, start, end: Date.now(), result: { code: codeOf(error), message: String(error) } });
          await sleep(20);
        }
      }
    };
    const load = Promise.all(Array.from({ length: LANES }, (_, l) => lane(l)));

    await sleep(800);
    // The cut comes as a group commit writes: some events are between the fast path and the ledger.
    await proxy.onRequest(isLedgerCommit, () => {
      cutAt = Date.now();
      proxy.cut();
    });
    await sleep(3000);
    restoreAt = Date.now();
    proxy.restore();
    expect(alive(), `meterd died:\n${tail()}`).toBe(true);
    // Keep the load going until calls started after the restore are ALLOWED.
    const recoveryDeadline = Date.now() + 15_000;
    let recoveredAt = Infinity;
    while (Date.now() < recoveryDeadline) {
      const ok = calls.find((x) => x.start > restoreAt && "decision" in x.result && x.result.decision === Decision.ALLOWED);
      if (ok) {
        recoveredAt = ok.end;
        break;
      }
      await sleep(50);
    }
    await sleep(500);
    stop = true;
    await load;

    const allowed = calls.filter((x) => "decision" in x.result && x.result.decision === Decision.ALLOWED);
    const failed = calls.filter((x) => "code" in x.result);
    const during = calls.filter((x) => x.start > cutAt && x.end < restoreAt);
    const badCodes = failed.filter((x) => "code" in x.result && x.result.code !== Code.Unavailable);
    const answeredDuring = during.filter((x) => "decision" in x.result);

    // The fault was exercised: calls ran and failed during the outage, and succeeded before and after.
    expect(during.length).toBeGreaterThan(LANES);
    expect(allowed.some((x) => x.end < cutAt)).toBe(true);
    expect(recoveredAt - restoreAt, "Tracks did not succeed again within 15 s of the restore").toBeLessThan(15_000);

    // Calls made during the outage: UNAVAILABLE, never ALLOWED (nor DENIED).
    expect(answeredDuring.map((x) => `${x.key} ${x.start - cutAt}ms`)).toEqual([]);
    // Nowhere an error other than UNAVAILABLE.
    expect(badCodes.map((x) => `${x.key}: ${"code" in x.result ? `${codeName(x.result.code)} ${x.result.message}` : ""}`)).toEqual([]);

    // Retry each failed key once, with the same key: each counts once.
    for (const x of failed) {
      const res = await cl.connect.track({ customerId: x.customerId, featureKey: "api_calls", amount: 1, idempotencyKey: x.key }, { headers, timeoutMs: 15_000 });
      expect(res.decision).toBe(Decision.ALLOWED);
    }

    // I1/I5: acked ⊆ ledger ⊆ attempted, no key twice.
    const attempted = new Set(calls.map((x) => `${x.customerId}/${x.key}`));
    for (const customerId of customers) {
      const rows = await ledgerRows(backing.pool, customerId);
      const byKey = new Map(rows.map((r) => [r.idempotency_key, r.id]));
      expect(byKey.size, `${customerId}: a key is in the ledger twice`).toBe(rows.length);
      const missing = allowed.filter((x) => x.customerId === customerId && "eventId" in x.result && byKey.get(x.key) !== x.result.eventId);
      expect(missing.map((x) => x.key), `${customerId}: ALLOWED events missing from the ledger`).toEqual([]);
      const stray = rows.filter((r) => r.idempotency_key !== "warm" && !attempted.has(`${customerId}/${r.idempotency_key}`));
      expect(stray).toEqual([]);
      // After the retries, every attempted key of the customer is in the ledger exactly once.
      expect(rows.length).toBe(calls.filter((x) => x.customerId === customerId).length + 1);
    }
    // I4: counters equal the ledger.
    const readings = await settleCounters(cl.grpc, backing.pool, customers, "api_calls", 10_000);
    expect(readings.filter((r) => r.consumed !== r.ledger), JSON.stringify(readings)).toEqual([]);
    console.info(
      `R4: ${calls.length} calls, ${allowed.length} ALLOWED, ${failed.length} UNAVAILABLE (${during.length} inside the 3 s outage), ` +
        `recovered ${recoveredAt - restoreAt} ms after restore`,
    );
  });

  it("during the outage, a customer whose counter must be loaded from the ledger gets UNAVAILABLE, not INTERNAL", { timeout: 30_000 }, async () => {
    const cl = await meterd();
    const fresh = `cust-r4-fresh-${randomUUID().slice(0, 8)}`;
    proxy.cut();
    try {
      const started = Date.now();
      const outcome = await cl.grpc
        .track({ customerId: fresh, featureKey: "api_calls", amount: 1, idempotencyKey: "first" }, { headers, timeoutMs: 15_000 })
        .then((res) => `answered ${Decision[res.decision]}`, (error: unknown) => codeName(codeOf(error)));
      expect(outcome).toBe(codeName(Code.Unavailable));
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      proxy.restore();
    }
    expect(alive(), `meterd died:\n${tail()}`).toBe(true);
    expect(await ledgerRows(backing.pool, fresh)).toEqual([]);
    const after = await cl.grpc.track({ customerId: fresh, featureKey: "api_calls", amount: 1, idempotencyKey: "first" }, { headers, timeoutMs: 15_000 });
    expect(after.decision).toBe(Decision.ALLOWED);
    expect(await consumedOf(cl.connect, fresh, "api_calls")).toBe(await ledgerSum(backing.pool, fresh, "api_calls"));
  });

  // Regression (fixed; src/metering/meter.ts, execute(), case DENIED_LIMIT: replayFromLedger() -> ledger.findByKey()
  // throws the raw pg error while Postgres is down, and the RPC layer turns any non-ConnectError into
  // INTERNAL). Fix: treat a failed ledger read on that path as "no replay known" and answer the denial
  // (it was decided atomically by the fast path), or wrap it as ledgerUnavailable() (UNAVAILABLE).
  it("during the outage, a Track denied at the hard limit is DENIED or UNAVAILABLE, not INTERNAL", { timeout: 30_000 }, async () => {
    const cl = await meterd();
    const full = `cust-r4-full-${randomUUID().slice(0, 8)}`;
    await setHardLimit(cl.catalog, full, "api_calls", 1);
    const first = await cl.grpc.track({ customerId: full, featureKey: "api_calls", amount: 1, idempotencyKey: "fills" }, { headers, timeoutMs: 10_000 });
    expect(first.decision).toBe(Decision.ALLOWED);
    proxy.cut();
    let outcome: string;
    try {
      outcome = await cl.grpc
        .track({ customerId: full, featureKey: "api_calls", amount: 1, idempotencyKey: "over" }, { headers, timeoutMs: 15_000 })
        .then((res) => Decision[res.decision], (error: unknown) => codeName(codeOf(error)));
    } finally {
      proxy.restore();
    }
    expect([Decision[Decision.DENIED], codeName(Code.Unavailable)]).toContain(outcome);
    expect(await ledgerSum(backing.pool, full, "api_calls")).toBe("1");
  });

  // Regression: the connection reset that loses the reply also crashes meterd (pg-client.ts transaction(), no
  // "error" listener on a checked-out client; see the first test). Now fixed:
  // Meter.commit() asks the ledger whether the event landed, finds it, and answers ALLOWED.
  it("a lost COMMIT reply while Postgres stays up: the event is found, ALLOWED, counted once", { timeout: 30_000 }, async () => {
    const cl = await meterd();
    const customerId = `cust-r4-commit-${randomUUID().slice(0, 8)}`;
    await cl.grpc.track({ customerId, featureKey: "api_calls", amount: 1, idempotencyKey: "warm" }, { headers, timeoutMs: 10_000 });
    const dropped = proxy.dropNextReply(isLedgerCommit);
    const req = { customerId, featureKey: "api_calls", amount: 4, idempotencyKey: "lost-commit" };
    const res = await cl.grpc.track(req, { headers, timeoutMs: 15_000 }).catch((error: unknown) => ConnectError.from(error));
    await dropped;
    await sleep(200);
    expect(alive(), `meterd died:\n${tail()}`).toBe(true);
    if (res instanceof ConnectError) throw res;
    expect(res).toMatchObject({ decision: Decision.ALLOWED, duplicate: false });
    const retry = await cl.connect.track(req, { headers, timeoutMs: 15_000 });
    expect(retry).toMatchObject({ decision: Decision.ALLOWED, duplicate: true, eventId: res.eventId });
    const rows = (await ledgerRows(backing.pool, customerId)).filter((r) => r.idempotency_key === "lost-commit");
    expect(rows.map((r) => r.id)).toEqual([res.eventId]);
    expect(await ledgerSum(backing.pool, customerId, "api_calls")).toBe("5");
    expect(await consumedOf(cl.grpc, customerId, "api_calls")).toBe("5");
  });

  // Regression (two bugs, both fixed): the reset crashes meterd (pg-client.ts, see the first test); and then, in-process,
  // src/metering/meter.ts commit(): when the append fails and landed() cannot reach the ledger, the
  // event is taken as not committed and its increment reverted, although the COMMIT may have landed.
  // The retry then finds the row (a duplicate) and reverts its own increment too: the counter stays
  // below the ledger for good (seen: consumed 1, ledger 5), which breaks I4 and can let I3 overshoot.
  // Fix: when the outcome of a commit is unknown, do not revert; leave the event pending in the outbox
  // (answer UNAVAILABLE), and let the sweeper settle it (row found: keep the increment) or revert it
  // (row absent) once the ledger answers.
  it("a COMMIT that landed but whose reply was lost as Postgres went down: after restore, GetMetrics equals the ledger", { timeout: 30_000 }, async () => {
    const cl = await meterd();
    const customerId = `cust-r4-commit-${randomUUID().slice(0, 8)}`;
    await cl.grpc.track({ customerId, featureKey: "api_calls", amount: 1, idempotencyKey: "warm" }, { headers, timeoutMs: 10_000 });
    // The COMMIT reaches Postgres and commits; its reply is swallowed and Postgres is cut at once, so
    // meterd cannot learn that the commit landed.
    const dropped = proxy.dropNextReply(isLedgerCommit, { thenCut: true });
    const req = { customerId, featureKey: "api_calls", amount: 4, idempotencyKey: "lost-commit-down" };
    const first = await cl.grpc.track(req, { headers, timeoutMs: 15_000 }).then(
      (res) => ({ decision: res.decision, eventId: res.eventId }),
      (error: unknown) => codeOf(error),
    );
    await dropped;
    await sleep(500);
    proxy.restore();
    expect(alive(), `meterd died:\n${tail()}`).toBe(true);
    // The answer was ALLOWED (it is committed) or UNAVAILABLE (a retry replays it); nothing else.
    if (typeof first === "number") expect(codeName(first)).toBe(codeName(Code.Unavailable));
    else expect(first.decision).toBe(Decision.ALLOWED);

    const retry = await cl.connect.track(req, { headers, timeoutMs: 15_000 });
    expect(retry.decision).toBe(Decision.ALLOWED);
    const rows = (await ledgerRows(backing.pool, customerId)).filter((r) => r.idempotency_key === req.idempotencyKey);
    expect(rows.map((r) => r.id)).toEqual([retry.eventId]);
    expect(await ledgerSum(backing.pool, customerId, "api_calls")).toBe("5");
    // I4: the counter holds the committed event exactly once (the sweeper may take a few seconds).
    const [reading] = await settleCounters(cl.grpc, backing.pool, [customerId], "api_calls", 6_000);
    expect(reading).toEqual({ customer: customerId, consumed: "5", ledger: "5" });
  });
});
