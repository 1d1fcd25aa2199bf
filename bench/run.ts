// meterd's benchmark harness (`npm run bench`; issue 5). It starts meterd as its own process against the
// machine's Redis and Postgres (a fresh database and key prefix), drives it with real clients (grpc-js,
// connect-node over HTTP/2), measures the floors for the same work in the same run (bare grpc-js and
// connect-node echo servers, meterd's apply script called directly with ioredis, the same rows inserted
// directly with pg), prints a table of figures, floors, ratios and the issue's targets, and writes
// bench/results/latest.json. `npm run bench -- --soak` runs the memory soak instead. `--help` lists options.
import { mkdirSync, readdirSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { parseArgs } from "node:util";
import { randomBytes } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import pg from "pg";
import { MeteringService, TrackBatchRequestSchema } from "../gen/meterd/v1/metering_pb.js";
import { Decision } from "../gen/meterd/v1/usage_pb.js";
import { latencyFloor, pgFloor, redisFloor } from "./floors/floors.js";
import { allowedIn, BENCH_KEY, connectClient, EventSource, GrpcClient } from "./lib/clients.js";
import { threadedClosedLoop, type UnaryKind } from "./lib/load-threads.js";
import { closedLoop, openLoop, type ClosedLoopResult, type OpenLoopResult } from "./lib/load.js";
import { streamLoad } from "./lib/stream-load.js";
import { cpuOf, cpuOfCommand, killAllChildren, machineCpu, memoryOf, ROOT, sampleRss } from "./lib/proc.js";
import { figure, latestJson, markdownTable, passes, textTable, type Figure } from "./lib/report.js";
import { createDatabase, deleteRedisPrefix, machineInfo, PG_ADMIN_URL, startEcho, startMeterd, type BenchDatabase, type Meterd } from "./lib/services.js";
import { runSoak } from "./soak.js";
import { busyTime, summarizeProfile } from "./profile-summary.js";

const USAGE = `Usage: npm run bench [-- options]

  (default)            every phase (about 3 to 4 minutes): table, bench/results/latest.json
  --soak               the memory soak instead: steady mixed load for --soak-minutes, sampling meterd's RSS,
                       then TrackStream against a slowed ledger (a delaying TCP proxy in front of Postgres)
  --soak-minutes N     length of the steady soak (default 10)
  --slow-seconds N     length of the slowed-ledger TrackStream run (default 120)
  --seconds N          measured seconds per phase (default 10); each phase also warms up for --warmup
  --warmup N           warm-up seconds per phase (default 3)
  --only a,b           only these phases (ids below); figures whose phases did not run are left out, and the
                       results go to bench/results/partial.* instead of latest.*
  --cpu-prof           run meterd under node --cpu-prof; profiles go to bench/results/profiles/ and the top
                       self-time functions are printed at the end (combine with --only)
  --client-threads N    threads driving the unary closed loops (default: the number of CPUs, at most 4)
  --wait-quiet N        first wait up to N seconds for the machine to be quiet (under 10% busy for 5 s)
  --help

Phases: ${"echo-grpc track-grpc echo-connect track-connect raw-latency latency-grpc latency-connect metrics redis-lua pg-insert batch stream"}`;

const { values: opts } = parseArgs({
  options: {
    soak: { type: "boolean" },
    "soak-minutes": { type: "string" },
    "slow-seconds": { type: "string" },
    seconds: { type: "string" },
    warmup: { type: "string" },
    only: { type: "string" },
    "cpu-prof": { type: "boolean" },
    "wait-quiet": { type: "string" },
    "client-threads": { type: "string" },
    help: { type: "boolean", short: "h" },
  },
});
if (opts.help) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}

const num = (raw: string | undefined, fallback: number, name: string) => {
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!(n > 0)) throw new Error(`--${name} must be a positive number`);
  return n;
};
const MEASURE_MS = num(opts.seconds, 10, "seconds") * 1000;
const WARMUP_MS = num(opts.warmup, 3, "warmup") * 1000;

/** Customers the load is spread over; each has api_calls with a hard limit of 10^9 (bench/catalog.json). */
const CUSTOMERS = 1000;
const IN_FLIGHT = 128;
/** Threads of the load generator for the unary closed loops (one client and connection each). */
const CLIENT_THREADS = num(opts["client-threads"], Math.min(4, os.cpus().length), "client-threads");
const RATE = 1000;
/**
 * An open loop whose target falls behind would queue ever more calls (and grow the server's memory with
 * them): beyond this many in flight, calls are shed and counted as errors, and the phase says "saturated".
 */
const OPEN_LOOP_MAX_IN_FLIGHT = 1000;
const BATCH = 1000;
/** A batch (and a stream request) holds events of this many customers, BATCH / this each. */
const PER_BATCH_CUSTOMERS = 100;
/** TrackBatch calls in flight; and streams x requests unacknowledged per stream for TrackStream. */
const BATCH_IN_FLIGHT = 4;
const STREAMS = 4;
const STREAM_WINDOW = 2;
/** Statements in flight for the Postgres floor (its own connections) and batches for the Redis floor. */
const PG_FLOOR_IN_FLIGHT = 4;
const REDIS_FLOOR_IN_FLIGHT = 4;

const RESULTS = path.join(ROOT, "bench/results");
const PROFILES = path.join(RESULTS, "profiles");
const runId = randomBytes(5).toString("hex");
const prefix = `meterd_bench:${runId}:`;
const only = opts.only ? new Set(opts.only.split(",").map((s) => s.trim())) : null;
const wanted = (id: string) => only === null || only.has(id);

// ---------------------------------------------------------------------------------------------------
// Cleanup: whatever happens, the children are stopped (by PID), the prefix deleted, the database dropped.

const cleanups: Array<{ what: string; run: () => Promise<unknown> }> = [];
let cleaning: Promise<void> | null = null;
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    for (const { what, run } of cleanups.reverse()) {
      try {
        await run();
      } catch (error) {
        process.stderr.write(`cleanup (${what}) failed: ${error instanceof Error ? error.message : String(error)}\n`);
      }
    }
  })();
  return cleaning;
}
async function abort(reason: string, code: number): Promise<never> {
  process.stderr.write(`\nbench: ${reason}\n`);
  killAllChildren();
  await cleanup();
  process.exit(code);
}
process.on("SIGINT", () => void abort("interrupted", 130));
process.on("SIGTERM", () => void abort("terminated", 143));
const budgetMs =
  (opts.soak ? num(opts["soak-minutes"], 10, "soak-minutes") * 60 + num(opts["slow-seconds"], 120, "slow-seconds") + 600 : 9 * 60) * 1000 +
  num(opts["wait-quiet"], 0.001, "wait-quiet") * 1000;
setTimeout(() => void abort(`gave up after ${budgetMs / 60_000} minutes`, 1), budgetMs).unref();

// ---------------------------------------------------------------------------------------------------
// CPU and memory of each phase's measured window.

interface CpuShare {
  seconds: number;
  /**
   * CPU time in µs over the window: the server under test (meterd or an echo server), this harness (the
   * clients), redis-server, the Postgres backends of the bench database plus the WAL writer, and everything
   * else on the machine (other users of the shared machine, e.g. a test run).
   */
  server: number | null;
  harness: number;
  redis: number | null;
  postgres: number;
  others: number;
  /** Busy share of the whole machine over the window, 0..1. */
  machine: number;
}

/** The Postgres processes that work for the bench: backends of its database, and the WAL writer. */
class PgPids {
  pids: number[] = [];
  private client: pg.Client | null = null;
  private timer: NodeJS.Timeout | null = null;

  async start(adminUrl: string, database: string): Promise<void> {
    this.client = new pg.Client({ connectionString: adminUrl });
    this.client.on("error", () => {});
    await this.client.connect();
    const refresh = async () => {
      const res = await this.client!.query<{ pid: number }>(
        "SELECT pid FROM pg_stat_activity WHERE (datname = $1 OR backend_type = 'walwriter') AND pid <> pg_backend_pid()",
        [database],
      );
      this.pids = res.rows.map((r) => r.pid);
    };
    await refresh();
    this.timer = setInterval(() => void refresh().catch(() => {}), 1000);
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.client?.end().catch(() => {});
  }
}
const pgPids = new PgPids();

function cpuProbe(serverPid: number | null, redisPid: number | null) {
  let watched: number[] = [];
  const snap = () => {
    const u = process.cpuUsage();
    const m = machineCpu();
    const pgCpu = new Map(watched.map((pid) => [pid, cpuOf(pid)]));
    return {
      t: performance.now(),
      server: serverPid === null ? null : cpuOf(serverPid),
      harness: u.user + u.system,
      redis: redisPid === null ? null : cpuOf(redisPid),
      pg: pgCpu,
      busy: m.busy,
      total: m.total,
    };
  };
  let a: ReturnType<typeof snap> | undefined;
  let b: ReturnType<typeof snap> | undefined;
  return {
    onStart: () => {
      watched = [...pgPids.pids];
      a = snap();
    },
    onEnd: () => void (b = snap()),
    result(): CpuShare {
      if (!a || !b) throw new Error("the measured window never ended");
      const diff = (x: number | null, y: number | null) => (x === null || y === null ? null : y - x);
      let postgres = 0;
      for (const [pid, before] of a.pg) {
        const after = b.pg.get(pid);
        if (before !== null && after != null) postgres += after - before;
      }
      const server = diff(a.server, b.server);
      const redis = diff(a.redis, b.redis);
      const harness = b.harness - a.harness;
      const busy = b.busy - a.busy;
      return {
        seconds: (b.t - a.t) / 1000,
        server,
        harness,
        redis,
        postgres,
        others: Math.max(0, busy - (server ?? 0) - harness - (redis ?? 0) - postgres),
        machine: busy / Math.max(1, b.total - a.total),
      };
    },
  };
}

const pct = (us: number | null, seconds: number) => (us === null ? "?" : `${Math.round((us / (seconds * 1e6)) * 100)}%`);
function cpuLine(c: CpuShare, serverName: string): string {
  return (
    `cpu (100% = one core): ${serverName} ${pct(c.server, c.seconds)}, harness ${pct(c.harness, c.seconds)}, redis ${pct(c.redis, c.seconds)}, ` +
    `postgres ${pct(c.postgres, c.seconds)}, other processes ${pct(c.others, c.seconds)}; machine ${Math.round(c.machine * 100)}% busy`
  );
}

interface PhaseRecord {
  id: string;
  title: string;
  summary: string;
  cpu: CpuShare;
  peakRss: number | null;
  result: object;
}
const phases = new Map<string, PhaseRecord>();
let noisyPhases = 0;

/** The process under test in a phase: meterd, or an echo server started for the phase and stopped after. */
type Subject = { pid: number; name: string; stop?: () => Promise<void> };

async function phase<R extends PhaseRecord["result"]>(
  id: string,
  title: string,
  subject: Subject | (() => Promise<Subject>) | null,
  redisPid: number | null,
  run: (hooks: { onStart(): void; onEnd(): void }) => Promise<R>,
  summarize: (r: R, cpu: CpuShare) => string,
): Promise<R | null> {
  if (!wanted(id)) return null;
  process.stdout.write(`\n[${id}] ${title}\n`);
  const server = typeof subject === "function" ? await subject() : subject;
  try {
    const probe = cpuProbe(server?.pid ?? null, redisPid);
    const rss = server ? sampleRss(server.pid, 500) : null;
    const started = performance.now();
    const result = await run(probe);
    rss?.stop();
    const cpu = probe.result();
    const summary = summarize(result, cpu);
    const noisy = cpu.others / (cpu.seconds * 1e6) > 0.15;
    if (noisy) noisyPhases++;
    process.stdout.write(
      `  ${summary}\n  ${cpuLine(cpu, server?.name ?? "server")}${noisy ? "\n  warning: other processes took more than 15% of a core: this phase is disturbed" : ""}\n` +
        `  (${((performance.now() - started) / 1000).toFixed(1)} s)\n`,
    );
    phases.set(id, { id, title, summary, cpu, peakRss: rss?.peak() ?? null, result });
    return result;
  } finally {
    await server?.stop?.();
  }
}

async function echoSubject(file: string, name: string): Promise<Subject & { port: number }> {
  const echo = await startEcho(file);
  return { pid: echo.pid, name, port: echo.port, stop: () => echo.stop() };
}

const timing = { warmupMs: WARMUP_MS, durationMs: MEASURE_MS };
const perSecond = (r: ClosedLoopResult & { threads?: number }, unit = "calls/s") =>
  `${Math.round(r.unitsPerSecond).toLocaleString("en-US")} ${unit} (${r.calls} calls in ${r.seconds.toFixed(1)} s${r.threads ? ` from ${r.threads} client threads` : ""}, ${r.errors} errors${r.firstError ? `: ${r.firstError}` : ""})`;
const latencies = (r: OpenLoopResult) =>
  `${r.achievedRate < 0.95 * r.rate || r.shed > 0 ? "SATURATED: " : ""}${Math.round(r.achievedRate)}/s achieved: p50 ${r.p50.toFixed(2)} ms, p90 ${r.p90.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms, max ${r.max.toFixed(1)} ms at ${r.rate}/s (${r.completed}/${r.scheduled} answered, ${r.errors} errors, ${r.shed} shed${r.firstError ? `: ${r.firstError}` : ""})`;

// ---------------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const started = performance.now();
  mkdirSync(RESULTS, { recursive: true });
  const machine = await machineInfo();
  const redisPid = machine.redisPid ? Number(machine.redisPid) : null;
  process.stdout.write(
    `meterd bench ${runId}: ${machine.cpu}, ${machine.memory}, ${machine.os}, Node ${machine.node}, Postgres ${machine.postgres}, Redis ${machine.redis}\n`,
  );

  const db: BenchDatabase = await createDatabase(runId);
  cleanups.push({ what: "drop database", run: () => db.drop() });
  cleanups.push({ what: "delete Redis keys", run: () => deleteRedisPrefix(prefix) });
  process.stdout.write(`code ${machine.code}; database ${db.name}, Redis prefix ${prefix}\n`);
  await pgPids.start(PG_ADMIN_URL, db.name);
  cleanups.push({ what: "stop watching Postgres", run: () => pgPids.stop() });
  {
    const busyOver = async (ms: number) => {
      const a = machineCpu();
      await new Promise((resolve) => setTimeout(resolve, ms));
      const b = machineCpu();
      return (b.busy - a.busy) / Math.max(1, b.total - a.total);
    };
    const waitUntil = Date.now() + num(opts["wait-quiet"], 0.001, "wait-quiet") * 1000;
    let busy = await busyOver(2000);
    if (busy > 0.1 && Date.now() < waitUntil) {
      process.stdout.write(`machine ${Math.round(busy * 100)}% busy: waiting for it to be quiet\n`);
      while (Date.now() < waitUntil && (busy = await busyOver(5000)) > 0.1);
    }
    process.stdout.write(`machine ${Math.round(busy * 100)}% busy before the run${busy > 0.1 ? " (other processes are running: expect noisy figures)" : ""}\n`);
  }

  if (opts.soak) {
    await runSoak({ runId, prefix, db, machine, redisPid, cleanups, resultsDir: RESULTS, soakMinutes: num(opts["soak-minutes"], 10, "soak-minutes"), slowSeconds: num(opts["slow-seconds"], 120, "slow-seconds") });
    return;
  }

  const cpuProf = opts["cpu-prof"] === true;
  if (cpuProf) mkdirSync(PROFILES, { recursive: true });
  const profilesBefore = new Set(cpuProf ? readdirSync(PROFILES) : []);
  const meterd: Meterd = await startMeterd({
    databaseUrl: db.url,
    prefix: `${prefix}svc:`,
    nodeFlags: cpuProf ? ["--cpu-prof", `--cpu-prof-dir=${PROFILES}`] : [],
  });
  cleanups.push({ what: "stop meterd", run: () => meterd.stop() });
  const server = { pid: meterd.pid, name: "meterd" };
  process.stdout.write(`meterd pid ${meterd.pid}: gRPC 127.0.0.1:${meterd.grpcPort}, Connect http://127.0.0.1:${meterd.httpPort}\n`);

  const grpcAddress = `127.0.0.1:${meterd.grpcPort}`;
  const grpcClient = new GrpcClient(grpcAddress);
  const connect = connectClient(`http://127.0.0.1:${meterd.httpPort}`);
  cleanups.push({ what: "close clients", run: async () => (grpcClient.close(), connect.close()) });
  const source = new EventSource(runId, CUSTOMERS);
  let allowedAcked = 0;

  // Every customer's first event makes it live and loads its counter from the ledger: do it once, here.
  {
    const t = performance.now();
    const warm = await grpcClient.unary(MeteringService.method.trackBatch, create(TrackBatchRequestSchema, { events: source.batch("warm", CUSTOMERS, CUSTOMERS) }));
    const counted = allowedIn(warm.results);
    allowedAcked += counted.allowed;
    if (counted.other > 0) throw new Error(`warm-up: ${counted.other} events not allowed (${counted.firstProblem})`);
    process.stdout.write(`warm-up: ${CUSTOMERS} customers live in ${((performance.now() - t) / 1000).toFixed(1)} s\n`);
  }

  /** 128 in flight from CLIENT_THREADS threads, each with its own client and connection. */
  const unary = async (kind: UnaryKind, address: string, key: string | null, tag: string, hooks: { onStart(): void; onEnd(): void }) => {
    const r = await threadedClosedLoop({ kind, address, key, runId, customers: CUSTOMERS, tag, concurrency: IN_FLIGHT, ...timing }, CLIENT_THREADS, hooks);
    if (key !== null) allowedAcked += r.allowed;
    return r;
  };
  const trackGrpc = async () => {
    const res = await grpcClient.unary(MeteringService.method.track, source.next("g"));
    if (res.decision !== Decision.ALLOWED) throw new Error(`Track was not allowed (${res.denyReason})`);
    allowedAcked++;
    return 1;
  };
  const trackConnect = async () => {
    const res = await connect.client.track(source.next("c"));
    if (res.decision !== Decision.ALLOWED) throw new Error(`Track was not allowed (${res.denyReason})`);
    allowedAcked++;
    return 1;
  };

  // Throughput at 128 in flight: the bare echo floor first, then meterd, for each protocol.
  let echoPort = 0;
  const echoCall = (r: ClosedLoopResult, cpu: CpuShare) => `${perSecond(r)}; echo server cpu ${((cpu.server ?? NaN) / r.calls).toFixed(1)} µs/call`;
  await phase("echo-grpc", "floor: bare grpc-js echo server, Track, 128 in flight",
    async () => {
      const echo = await echoSubject("grpc-echo.ts", "grpc-js echo");
      echoPort = echo.port;
      return echo;
    },
    null,
    (hooks) => unary("grpc-track", `127.0.0.1:${echoPort}`, null, "eg", hooks),
    echoCall);

  await phase("track-grpc", "meterd Track over gRPC (grpc-js client), 128 in flight", server, redisPid, (hooks) =>
    unary("grpc-track", grpcAddress, BENCH_KEY, "g", hooks),
    (r, cpu) => `${perSecond(r)}; meterd cpu ${((cpu.server ?? NaN) / r.calls).toFixed(0)} µs/call`);

  await phase("echo-connect", "floor: bare connect-node echo server, Track over HTTP/2 (connect-node client), 128 in flight",
    async () => {
      const echo = await echoSubject("connect-echo.ts", "connect-node echo");
      echoPort = echo.port;
      return echo;
    },
    null,
    (hooks) => unary("connect-track", `http://127.0.0.1:${echoPort}`, null, "ec", hooks),
    echoCall);

  await phase("track-connect", "meterd Track over Connect (connect-node client, HTTP/2, binary), 128 in flight", server, redisPid, (hooks) =>
    unary("connect-track", `http://127.0.0.1:${meterd.httpPort}`, BENCH_KEY, "c", hooks),
    (r, cpu) => `${perSecond(r)}; meterd cpu ${((cpu.server ?? NaN) / r.calls).toFixed(0)} µs/call`);

  // Latency at a fixed offered rate.
  await phase("raw-latency", `floor: meterd's apply script (ioredis) then the row's commit (pg), ${RATE}/s open loop`, null, redisPid, (hooks) =>
    latencyFloor({ ...timing, ...hooks, maxInFlight: OPEN_LOOP_MAX_IN_FLIGHT, redisUrl: process.env.METERD_BENCH_REDIS_URL ?? "redis://127.0.0.1:6379", prefix: `${prefix}floor:`, databaseUrl: db.url, runId, customers: CUSTOMERS, rate: RATE }),
    latencies);
  await phase("latency-grpc", `meterd Track over gRPC, ${RATE}/s open loop`, server, redisPid, (hooks) =>
    openLoop({ rate: RATE, maxInFlight: OPEN_LOOP_MAX_IN_FLIGHT, ...timing, ...hooks }, trackGrpc), latencies);
  await phase("latency-connect", `meterd Track over Connect, ${RATE}/s open loop`, server, redisPid, (hooks) =>
    openLoop({ rate: RATE, maxInFlight: OPEN_LOOP_MAX_IN_FLIGHT, ...timing, ...hooks }, trackConnect), latencies);

  await phase("metrics", "meterd GetMetrics over gRPC (all 4 features of the plan), 128 in flight", server, redisPid, (hooks) =>
    unary("grpc-metrics", grpcAddress, BENCH_KEY, "m", hooks),
    (r, cpu) => `${perSecond(r)}; meterd cpu ${((cpu.server ?? NaN) / r.calls).toFixed(0)} µs/call`);

  // Ingestion: the two floors, then TrackBatch and TrackStream.
  await phase("redis-lua", `floor: meterd's apply-many.lua via RedisFastPath.applyMany, ${BATCH} events over ${PER_BATCH_CUSTOMERS} customers per pipeline, ${REDIS_FLOOR_IN_FLIGHT} in flight`, null, redisPid, (hooks) =>
    redisFloor({ ...timing, ...hooks, redisUrl: process.env.METERD_BENCH_REDIS_URL ?? "redis://127.0.0.1:6379", prefix: `${prefix}floor:`, runId, customers: CUSTOMERS, batch: BATCH, perBatchCustomers: PER_BATCH_CUSTOMERS, concurrency: REDIS_FLOOR_IN_FLIGHT }),
    (r) => perSecond(r, "events/s"));
  await phase("pg-insert", `floor: the same rows inserted with pg, ${BATCH} rows per INSERT ... SELECT FROM unnest (both ledger tables), ${PG_FLOOR_IN_FLIGHT} in flight`, null, redisPid, (hooks) =>
    pgFloor({ ...timing, ...hooks, databaseUrl: db.url, runId, customers: CUSTOMERS, batch: BATCH, concurrency: PG_FLOOR_IN_FLIGHT }),
    (r) => perSecond(r, "events/s"));

  let batchProblems = 0;
  let batchFirstProblem: string | null = null;
  await phase("batch", `meterd TrackBatch over gRPC, ${BATCH} events per call (${PER_BATCH_CUSTOMERS} customers), ${BATCH_IN_FLIGHT} in flight`, server, redisPid, (hooks) =>
    closedLoop({ concurrency: BATCH_IN_FLIGHT, ...timing, ...hooks }, async () => {
      const res = await grpcClient.unary(MeteringService.method.trackBatch, create(TrackBatchRequestSchema, { events: source.batch("b", BATCH, PER_BATCH_CUSTOMERS) }));
      const counted = allowedIn(res.results);
      allowedAcked += counted.allowed;
      batchProblems += counted.other;
      batchFirstProblem ??= counted.firstProblem;
      return counted.allowed;
    }),
    (r, cpu) => `${perSecond(r, "events/s")}; ${batchProblems} events not allowed${batchFirstProblem ? ` (${batchFirstProblem})` : ""}; meterd cpu ${((cpu.server ?? NaN) / r.units).toFixed(1)} µs/event`);

  await phase("stream", `meterd TrackStream over gRPC, ${STREAMS} streams, requests of ${BATCH} events (${PER_BATCH_CUSTOMERS} customers), up to ${STREAM_WINDOW} unacknowledged per stream`, server, redisPid, async (hooks) => {
    const r = await streamLoad({ client: grpcClient, source, streams: STREAMS, window: STREAM_WINDOW, batch: BATCH, perBatchCustomers: PER_BATCH_CUSTOMERS, ...timing, ...hooks });
    allowedAcked += r.allowedTotal;
    return r;
  }, (r, cpu) => `${Math.round(r.eventsPerSecond).toLocaleString("en-US")} events/s acknowledged durable (${r.events} in ${r.seconds.toFixed(1)} s, ${r.problems} not allowed${r.firstProblem ? `: ${r.firstProblem}` : ""}); meterd cpu ${((cpu.server ?? NaN) / r.events).toFixed(1)} µs/event`);

  // Peak RSS, then a check that what was acknowledged ALLOWED is in the ledger.
  const memory = memoryOf(meterd.pid);
  const ledgerRows = await (async () => {
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      const res = await client.query<{ n: string }>("SELECT count(*)::text AS n FROM meterd_events WHERE customer_id LIKE 'bench\\_c%'");
      return Number(res.rows[0]?.n ?? 0);
    } finally {
      await client.end();
    }
  })();
  const durable = ledgerRows >= allowedAcked;
  process.stdout.write(`\ndurability check: ${allowedAcked.toLocaleString("en-US")} events acknowledged ALLOWED, ${ledgerRows.toLocaleString("en-US")} bench rows in the ledger: ${durable ? "all there" : "MISSING ROWS"}\n`);

  grpcClient.close();
  connect.close();
  await meterd.stop();
  const profiles = cpuProf ? readdirSync(PROFILES).filter((f) => f.endsWith(".cpuprofile") && !profilesBefore.has(f)) : [];

  // ------------------------------------------------------------------------------------------------
  const figures = buildFigures(memory?.hwm ?? null);
  const table = textTable(figures);
  const elapsed = (performance.now() - started) / 1000;
  const command = `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(" ")}` : ""}`;
  process.stdout.write(`\n${table}\n\nratio = value / floor, both measured in this run (for latency and CPU, lower is better).\n`);
  process.stdout.write(`machine: ${machine.cpu}, ${machine.memory}; ${machine.os}; Node ${machine.node}; Postgres ${machine.postgres}; Redis ${machine.redis}\n`);
  process.stdout.write(`run ${runId} took ${elapsed.toFixed(0)} s${noisyPhases > 0 ? `; ${noisyPhases} phases were disturbed by other processes (see "other processes" above)` : ""}\n`);

  // A run of some phases only (--only) does not replace the last full run's results.
  const base = only === null ? "latest" : "partial";
  writeFileSync(path.join(RESULTS, `${base}.json`), `${JSON.stringify(latestJson(figures), null, 2)}\n`);
  writeFileSync(
    path.join(RESULTS, `${base}-detail.json`),
    `${JSON.stringify({ runId, date: new Date().toISOString(), command, seconds: elapsed, machine, settings: { CUSTOMERS, IN_FLIGHT, CLIENT_THREADS, RATE, BATCH, PER_BATCH_CUSTOMERS, BATCH_IN_FLIGHT, STREAMS, STREAM_WINDOW, PG_FLOOR_IN_FLIGHT, REDIS_FLOOR_IN_FLIGHT, MEASURE_MS, WARMUP_MS }, durability: { allowedAcked, ledgerRows }, figures: figures.map((f) => ({ ...f, pass: passes(f) })), phases: [...phases.values()] }, null, 2)}\n`,
  );
  writeFileSync(
    path.join(RESULTS, `${base}.md`),
    `${markdownTable(figures)}\n\nratio = value / floor, both measured in the same run (for latency and CPU, lower is better).\n\n` +
      `Machine: ${machine.cpu}, ${machine.memory} RAM, ${machine.os}; Node ${machine.node}; Postgres ${machine.postgres}; Redis ${machine.redis}; ` +
      `meterd, the load generator, Redis and Postgres all share it. Run ${new Date().toISOString().slice(0, 10)} on ${machine.code}, with \`${command}\` (${elapsed.toFixed(0)} s)` +
      `${noisyPhases > 0 ? `; ${noisyPhases} of ${phases.size} phases were disturbed by other processes on the machine (more than 15% of a core)` : "; no phase was disturbed by other processes"}.\n`,
  );
  process.stdout.write(`wrote bench/results/${base}.json, ${base}-detail.json and ${base}.md\n`);

  // Each thread writes a profile (tsx's loader runs in a worker): summarise the busy ones only.
  const busiest = Math.max(0, ...profiles.map((f) => busyTime(path.join(PROFILES, f))));
  for (const file of profiles.filter((f) => busyTime(path.join(PROFILES, f)) > busiest / 5)) {
    process.stdout.write(`\nCPU profile bench/results/profiles/${file}:\n${summarizeProfile(path.join(PROFILES, file), 25)}\n`);
  }
  if (!durable) process.exitCode = 1;
}

function buildFigures(peakRss: number | null): Figure[] {
  const out: Figure[] = [];
  const closed = (id: string) => phases.get(id)?.result as ClosedLoopResult | undefined;
  const open = (id: string) => phases.get(id)?.result as OpenLoopResult | undefined;
  const echoGrpc = closed("echo-grpc");
  const echoConnect = closed("echo-connect");
  const raw = open("raw-latency");
  const pgRows = closed("pg-insert");
  const lua = closed("redis-lua");
  const perCall = (id: string) => {
    const p = phases.get(id);
    const r = p?.result as ClosedLoopResult | undefined;
    return p && r && p.cpu.server !== null ? p.cpu.server / r.calls : null;
  };
  const nul = (v: number | undefined | null) => (v === undefined || v === null || !Number.isFinite(v) ? null : v);

  const tg = closed("track-grpc");
  if (tg) out.push(figure({ name: "Track, gRPC, 128 in flight", value: tg.callsPerSecond, unit: "calls/s", floor: nul(echoGrpc?.callsPerSecond), floorName: "bare grpc-js echo", target: { op: ">=", ratio: 0.75 } }));
  const tc = closed("track-connect");
  if (tc) out.push(figure({ name: "Track, Connect, 128 in flight", value: tc.callsPerSecond, unit: "calls/s", floor: nul(echoConnect?.callsPerSecond), floorName: "bare connect-node echo", target: { op: ">=", ratio: 0.8 } }));
  for (const [id, label] of [["latency-grpc", "gRPC"], ["latency-connect", "Connect"]] as const) {
    const r = open(id);
    if (!r) continue;
    const note = `${Math.round(r.achievedRate).toLocaleString("en-US")}/s answered`;
    out.push(figure({ name: `Track p50, ${label}, ${RATE.toLocaleString("en-US")}/s`, value: r.p50, unit: "ms", floor: nul(raw?.p50), floorName: "Lua apply + commit", note }));
    out.push(figure({ name: `Track p99, ${label}, ${RATE.toLocaleString("en-US")}/s`, value: r.p99, unit: "ms", floor: nul(raw?.p99), floorName: "Lua apply + commit", target: { op: "<=", ratio: 3 }, note }));
  }
  const b = closed("batch");
  if (b) out.push(figure({ name: "TrackBatch, 1,000 events/call, durable", value: b.unitsPerSecond, unit: "events/s", floor: nul(pgRows?.unitsPerSecond), floorName: "pg unnest insert", target: { op: ">=", ratio: 0.8 } }));
  const s = phases.get("stream")?.result as { eventsPerSecond: number } | undefined;
  if (s) out.push(figure({ name: "TrackStream, 1,000 events/request, durable", value: s.eventsPerSecond, unit: "events/s", floor: nul(pgRows?.unitsPerSecond), floorName: "pg unnest insert", target: { op: ">=", ratio: 0.8 } }));
  const m = closed("metrics");
  if (m) out.push(figure({ name: "GetMetrics, gRPC, 128 in flight", value: m.callsPerSecond, unit: "calls/s", floor: nul(echoGrpc?.callsPerSecond), floorName: "bare grpc-js echo" }));
  if (peakRss !== null) out.push(figure({ name: "meterd peak RSS (VmHWM), whole run", value: peakRss / 2 ** 20, unit: "MiB", floor: null }));

  const echoGrpcCpu = perCall("echo-grpc");
  const echoConnectCpu = perCall("echo-connect");
  const g = perCall("track-grpc");
  if (g !== null) out.push(figure({ name: "meterd CPU per Track, gRPC", value: g, unit: "µs/call", floor: echoGrpcCpu, floorName: "grpc-js echo" }));
  const c = perCall("track-connect");
  if (c !== null) out.push(figure({ name: "meterd CPU per Track, Connect", value: c, unit: "µs/call", floor: echoConnectCpu, floorName: "connect-node echo" }));
  if (echoConnectCpu !== null) out.push(figure({ name: "server CPU per unary call: connect-node vs grpc-js echo", value: echoConnectCpu, unit: "µs/call", floor: echoGrpcCpu, floorName: "grpc-js echo" }));

  // The floors themselves, so that latest.json tracks them too.
  if (echoGrpc) out.push(figure({ name: "floor: bare grpc-js echo, 128 in flight", value: echoGrpc.callsPerSecond, unit: "calls/s", floor: null }));
  if (echoConnect) out.push(figure({ name: "floor: bare connect-node echo, 128 in flight", value: echoConnect.callsPerSecond, unit: "calls/s", floor: null }));
  if (raw) {
    const note = `${Math.round(raw.achievedRate).toLocaleString("en-US")}/s answered`;
    out.push(figure({ name: `floor: Lua apply + commit p50, ${RATE.toLocaleString("en-US")}/s`, value: raw.p50, unit: "ms", floor: null, note }));
    out.push(figure({ name: `floor: Lua apply + commit p99, ${RATE.toLocaleString("en-US")}/s`, value: raw.p99, unit: "ms", floor: null, note }));
  }
  if (lua) out.push(figure({ name: "floor: apply-many.lua via ioredis, pipelined", value: lua.unitsPerSecond, unit: "events/s", floor: null }));
  if (pgRows) out.push(figure({ name: "floor: pg INSERT ... SELECT FROM unnest, 1,000 rows", value: pgRows.unitsPerSecond, unit: "events/s", floor: null }));
  return out;
}

main().then(
  async () => {
    await cleanup();
    process.exit(process.exitCode ?? 0);
  },
  async (error: unknown) => abort(error instanceof Error ? (error.stack ?? error.message) : String(error), 1),
);
