// R5 on one host: `meterd serve --workers 2`. Given the real process (METERD_WORKERS=2, the same as
// --workers 2: a node:cluster primary and two workers on the same two ports) on Redis and Postgres,
// with its own database and prefix, when 3,000 one-unit Tracks from 200 concurrent callers over 12
// connections (6 to the grpc-js listener, 6 to the Connect listener) race for one customer's hard
// limit of 1,000 (the example plan's), then: both workers are children of the primary and both hold
// connections on both ports (they share each listening socket, and both served calls); exactly 1,000
// Tracks are ALLOWED and 2,000 DENIED with LIMIT_REACHED (I3); the ledger holds exactly those 1,000
// events with the ids they were given (I1, I2); and GetMetrics says 1,000 over every connection (I4):
// the workers share limits and the ledger exactly as two replicas do (two-replicas.test.ts).
// Then, with Tracks in flight, SIGTERM to the primary: it exits 0 once both workers have drained and
// exited, every ALLOWED answer is in the ledger, and a replica started afterwards reports counters
// equal to the ledger (as sigterm.test.ts shows for one process).
// And without REDIS_URL and DATABASE_URL, `serve --workers 2` refuses to start, in one line.
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { readdir, readFile, readlink } from "node:fs/promises";
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
  exitWithin,
  faultsSkipReason,
  headers,
  killAllSpawned,
  ledgerRows,
  ledgerSum,
  type MeterdProcess,
  meterdEnv,
  type Metering,
  openBacking,
  ROOT,
  runBounded,
  Sessions,
  settleCounters,
  spawnMeterd,
  startInProcess,
} from "./support.js";

const skip = await faultsSkipReason();

const WORKERS = 2;
const CONNECTIONS_PER_LISTENER = 6;
const TOTAL = 3000;
const IN_FLIGHT = 200;
const LIMIT = 1000;

/** The workers' pids, from the banner's last line: "  workers  2 (pids 123, 456)". */
function workerPids(output: string): number[] {
  const line = /^ {2}workers +(\d+) \(pids ([\d, ]+)\)\s/m.exec(output);
  if (!line) throw new Error(`no workers line in the banner:\n${output}`);
  return line[2]!.split(",").map((pid) => Number(pid.trim()));
}

/** The parent pid of `pid`, from /proc/<pid>/stat (the field after the parenthesised name and the state). */
async function parentOf(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, "utf8");
  return Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * How many established TCP connections on local port `port` each pid holds: the sockets in
 * /proc/net/tcp{,6} with that local port, matched by inode with each process's open descriptors.
 */
async function connectionsByPid(port: number, pids: number[]): Promise<number[]> {
  const inodes = new Set<string>();
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    const text = await readFile(table, "utf8").catch(() => "");
    for (const line of text.split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10) continue;
      const localPort = parseInt(f[1]!.split(":").at(-1)!, 16);
      if (localPort === port && f[3] === "01") inodes.add(f[9]!);
    }
  }
  const counts: number[] = [];
  for (const pid of pids) {
    let n = 0;
    for (const fd of await readdir(`/proc/${pid}/fd`)) {
      const link = await readlink(`/proc/${pid}/fd/${fd}`).catch(() => "");
      const inode = /^socket:\[(\d+)\]$/.exec(link)?.[1];
      if (inode !== undefined && inodes.has(inode)) n++;
    }
    counts.push(n);
  }
  return counts;
}

describe("meterd serve --workers without shared storage", () => {
  it("refuses to start without REDIS_URL and DATABASE_URL, in one line", { timeout: 60_000 }, async () => {
    const env: NodeJS.ProcessEnv = { ...process.env };
    for (const name of Object.keys(env)) {
      if (name.startsWith("METERD_") || name === "DATABASE_URL" || name === "REDIS_URL") delete env[name];
    }
    const child = spawn(process.execPath, ["--import", "tsx", "src/cli.ts", "serve", "--workers", "2"], {
      cwd: ROOT,
      env: { ...env, METERD_GRPC_PORT: "0", METERD_HTTP_PORT: "0", METERD_DATA_DIR: "/nonexistent/meterd-workers-test" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
    const code = await new Promise<number | null>((resolve) => child.once("exit", (c) => resolve(c)));
    expect(code).toBe(1);
    expect(stdout).toBe("");
    expect(stderr).toMatch(/^meterd: --workers 2 needs REDIS_URL and DATABASE_URL: [^\n]*\n$/);
  });
});

describe.skipIf(skip !== null)("meterd serve --workers 2: two workers share limits and the ledger as two replicas do", () => {
  let backing: Backing;
  let proc: MeterdProcess | undefined;
  let pids: number[] = [];
  let clients: Clients[] = [];
  let replica: Server | undefined;
  const sessions = new Sessions();

  beforeAll(async () => {
    backing = await openBacking();
    proc = await spawnMeterd({ ...meterdEnv(backing), METERD_WORKERS: String(WORKERS) });
    pids = workerPids(proc.output());
    // One session manager (one HTTP/2 connection) per client: connections are what the primary
    // hands to the workers.
    clients = Array.from({ length: CONNECTIONS_PER_LISTENER }, () => clientsOf(proc!, sessions));
  });

  afterAll(async () => {
    sessions.abortAll();
    killAllSpawned();
    await replica?.close(1000);
    await backing?.cleanup();
  });

  it("forks two workers that serve both ports", async () => {
    expect(pids).toHaveLength(WORKERS);
    expect(new Set(pids).size).toBe(WORKERS);
    if (process.platform !== "linux") return;
    for (const pid of pids) expect(await parentOf(pid)).toBe(proc!.pid);
  });

  it("admits exactly 1,000 of 3,000 concurrent Tracks spread over both workers; the ledger holds exactly those", { timeout: 180_000 }, async () => {
    const customerId = `cust-workers-${randomUUID().slice(0, 8)}`;
    const routes: Metering[] = clients.flatMap((c) => [c.grpc, c.connect]);

    const allowed = new Map<string, string>(); // key -> event id
    let deniedAtLimit = 0;
    const other: string[] = [];
    const started = Date.now();
    const ran = await runBounded(TOTAL, IN_FLIGHT, started + 150_000, async (i) => {
      const key = `w-${i}`;
      try {
        const res = await routes[i % routes.length]!.track(
          { customerId, featureKey: "api_calls", amount: 1, idempotencyKey: key },
          { headers, timeoutMs: 30_000 },
        );
        if (res.decision === Decision.ALLOWED && !res.duplicate) allowed.set(key, res.eventId);
        else if (res.decision === Decision.DENIED && res.denyReason === DenyReason.LIMIT_REACHED) deniedAtLimit++;
        else other.push(`${key}: ${Decision[res.decision]} ${DenyReason[res.denyReason]} duplicate=${res.duplicate}`);
      } catch (error) {
        other.push(`${key}: ${codeName(codeOf(error))} ${String(error)}`);
      }
    });
    const elapsed = Date.now() - started;

    // Every connection is still open: each belongs to one worker, which served every call made on it.
    let perListener: Record<string, number[]> = {};
    if (process.platform === "linux") {
      perListener = {
        grpc: await connectionsByPid(proc!.grpcPort, pids),
        connect: await connectionsByPid(proc!.httpPort, pids),
      };
      for (const [listener, counts] of Object.entries(perListener)) {
        expect(counts.reduce((a, b) => a + b, 0), `${listener} connections per worker: ${counts.join(", ")}`).toBe(CONNECTIONS_PER_LISTENER);
        expect(counts.every((n) => n > 0), `${listener} connections per worker: ${counts.join(", ")}`).toBe(true);
      }
    }

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

    // Over every connection, so from both workers.
    for (const route of routes) expect(await consumedOf(route, customerId, "api_calls")).toBe(String(LIMIT));
    console.info(
      `workers: ${TOTAL} Tracks in ${elapsed} ms (${Math.round((TOTAL * 1000) / elapsed)}/s); ` +
        `connections per worker (pids ${pids.join(", ")}): ${JSON.stringify(perListener)}`,
    );
  });

  it("SIGTERM under load: the primary exits 0 once both workers have drained, with every ALLOWED answer in the ledger", { timeout: 120_000 }, async () => {
    const p = proc!;
    const run = randomUUID().slice(0, 8);
    const customers = [`cust-workers-a-${run}`, `cust-workers-b-${run}`];
    const routes: Metering[] = clients.flatMap((c) => [c.grpc, c.connect]);

    const LANES = 48;
    const MAX_ATTEMPTS = 1800; // 900 per customer, under the limit of 1,000: no denial muddles the count
    const SIGTERM_AFTER_ACKS = 300;
    const acked: Array<{ customerId: string; key: string; eventId: string }> = [];
    const attempted = new Set<string>();
    const failuresBeforeSignal: string[] = [];
    const failuresAfter = new Map<string, number>();
    const sampleAfter = new Map<string, string>();
    let seq = 0;
    let signalled = false;
    let ackedAtSignal = 0;
    const deadline = Date.now() + 45_000;

    const lane = async (l: number) => {
      const client = routes[l % routes.length]!;
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
          else {
            failuresAfter.set(code, (failuresAfter.get(code) ?? 0) + 1);
            if (!sampleAfter.has(code)) sampleAfter.set(code, String(error));
          }
          return; // after SIGTERM a call may be refused or cut: this caller stops
        }
        if (!signalled && acked.length >= SIGTERM_AFTER_ACKS) {
          signalled = true;
          ackedAtSignal = acked.length;
          p.child.kill("SIGTERM");
        }
      }
    };
    await Promise.all(Array.from({ length: LANES }, (_, l) => lane(l)));
    const exit = await exitWithin(p, 30_000);

    expect(failuresBeforeSignal).toEqual([]);
    expect(signalled).toBe(true);
    expect(exit, p.output().slice(-3000)).toEqual({ code: 0, signal: null });
    expect(pids.filter(alive), "workers still running after the primary exited").toEqual([]);
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
      `workers SIGTERM: ${attempted.size} attempted, ${acked.length} ALLOWED (${acked.length - ackedAtSignal} answered after SIGTERM), ` +
        `failures after SIGTERM ${JSON.stringify(Object.fromEntries(failuresAfter))}, for example ${JSON.stringify(Object.fromEntries(sampleAfter))}`,
    );
  });
});
