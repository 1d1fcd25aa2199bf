// meterd's benchmark harness (`npm run bench`; issues 5 and 9). It starts meterd as its own process against
// the machine's Redis and Postgres (a fresh database and key prefix), drives it with real clients (grpc-js,
// connect-node over HTTP/2), measures the floors for the same work in the same run (bare grpc-js and
// connect-node echo servers; meterd's own Redis and ledger adapters driven by a bare script, with no RPC or
// service code; the same rows in a bare table), prints a table of figures, floors, ratios and the issue's
// targets, and writes bench/results/latest.json. `npm run bench -- --soak` runs the memory soak instead.
// `--help` lists options and phases.
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
import { loadFastPathScripts } from "./floors/adapters.js";
import { latencyFloor } from "./floors/latency-floor.js";
import { pgFloor } from "./floors/pg-floor.js";
import { protocolFloor } from "./floors/protocol-floor.js";
import { redisFloor } from "./floors/redis-floor.js";
import { tableFloor } from "./floors/table-floor.js";
import { allowedIn, BENCH_KEY, connectClient, EventSource, GrpcClient } from "./lib/clients.js";
import { buildFigures } from "./lib/figures.js";
import { LIST_PAGE, threadedClosedLoop, type UnaryKind } from "./lib/load-threads.js";
import { closedLoop, openLoop, type ClosedLoopResult, type OpenLoopResult, type WindowHooks } from "./lib/load.js";
import { COLD_SPREADS, DIAGNOSTIC_SPREAD, expandOnly, hasCold, PHASE_HELP, phaseId, SPREADS } from "./lib/phase-list.js";
import { type CpuShare, machineBusyOver, PgPids, Phases, type Subject } from "./lib/phases.js";
import { killAllChildren, memoryOf, ROOT } from "./lib/proc.js";
import { latestJson, markdownTable, passes, textTable } from "./lib/report.js";
import { createDatabase, deleteRedisPrefix, machineInfo, PG_ADMIN_URL, REDIS_URL, startEcho, startMeterd, type BenchDatabase, type Meterd } from "./lib/services.js";
import { streamLoad } from "./lib/stream-load.js";
import { runSoak } from "./soak.js";
import { busyTime, summarizeProfile } from "./profile-summary.js";

const USAGE = `Usage: npm run bench [-- options]

  (default)            every phase: table, bench/results/latest.json (about 5 minutes on a quiet machine;
                       at most about 8 when disturbed phases are repeated)
  --soak               the memory soak instead: steady mixed load for --soak-minutes, sampling meterd's RSS,
                       then TrackStream against a slowed ledger (a delaying TCP proxy in front of Postgres)
  --soak-minutes N     length of the steady soak (default 10)
  --slow-seconds N     length of the slowed-ledger TrackStream run (default 120)
  --seconds N          measured seconds per unary and latency phase (default 10), after --warmup
  --warmup N           warm-up seconds per phase (default 3; batch phases take at most 2)
  --batch-seconds N    measured seconds per batch, stream and floor phase of the ingestion figures
                       (default 6, or --seconds if that is less): there are ${SPREADS.length * 4 + COLD_SPREADS.length + 2} of them
  --only a,b           only these phases (ids below); figures whose phases did not run are left out, and the
                       results go to bench/results/partial.* instead of latest.*
  --cpu-prof           run meterd under node --cpu-prof; profiles go to bench/results/profiles/ and the top
                       self-time functions are printed at the end (combine with --only)
  --client-threads N   threads driving the unary closed loops (default: the number of CPUs, at most 4)
  --wait-quiet N       first wait up to N seconds for the machine to be quiet (under 10% busy for 5 s)
  --help

A phase during which other processes took more than 15% of a core runs again, up to 2 more times (and
within 3 minutes of repeats per run). If it stays disturbed, its figures are marked DISTURBED and the run
exits with 3 (1 if acknowledged events are missing from the ledger).

${PHASE_HELP}`;

const { values: opts } = parseArgs({
  options: {
    soak: { type: "boolean" },
    "soak-minutes": { type: "string" },
    "slow-seconds": { type: "string" },
    seconds: { type: "string" },
    warmup: { type: "string" },
    "batch-seconds": { type: "string" },
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
/**
 * The ingestion phases are many (each spread of customers has a protocol floor, a bare-table floor, a
 * TrackBatch and a TrackStream phase): shorter windows keep the run within its time. At 1,000 events per
 * call, 6 s still holds dozens of calls.
 */
const BATCH_MEASURE_MS = num(opts["batch-seconds"], Math.min(6, MEASURE_MS / 1000), "batch-seconds") * 1000;
const BATCH_WARMUP_MS = Math.min(2000, WARMUP_MS);

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
/** TrackBatch calls in flight, and batches in flight in the floors; streams x requests unacknowledged per stream for TrackStream. */
const BATCH_IN_FLIGHT = 4;
/** Calls in flight of the read phases (QueryUsage, ListEvents), each much more work than a Track. */
const READ_IN_FLIGHT = 16;
const STREAMS = 4;
const STREAM_WINDOW = 2;

const RESULTS = path.join(ROOT, "bench/results");
const PROFILES = path.join(RESULTS, "profiles");
const runId = randomBytes(5).toString("hex");
const prefix = `meterd_bench:${runId}:`;
const floorPrefix = `${prefix}floor:`;
const only = (() => {
  try {
    return opts.only ? expandOnly(opts.only) : null;
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n`);
    process.exit(2);
  }
})();

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

// A run that hangs is stopped. Each repeat of a disturbed phase extends the budget by what it takes.
const budgetMs =
  (opts.soak ? num(opts["soak-minutes"], 10, "soak-minutes") * 60 + num(opts["slow-seconds"], 120, "slow-seconds") + 600 : 9 * 60) * 1000 +
  num(opts["wait-quiet"], 0.001, "wait-quiet") * 1000;
let deadline = Date.now() + budgetMs;
const armBudget = (): NodeJS.Timeout =>
  setTimeout(() => {
    if (Date.now() >= deadline) void abort(`gave up after ${((Date.now() - deadline + budgetMs) / 60_000).toFixed(1)} minutes`, 1);
    else armBudget();
  }, deadline - Date.now() + 10).unref();
armBudget();
const extendBudget = (ms: number) => void (deadline += ms);

// ---------------------------------------------------------------------------------------------------

const timing = { warmupMs: WARMUP_MS, durationMs: MEASURE_MS };
const batchTiming = { warmupMs: BATCH_WARMUP_MS, durationMs: BATCH_MEASURE_MS };
const count = (v: number) => Math.round(v).toLocaleString("en-US");
const perSecond = (r: ClosedLoopResult & { threads?: number }, unit = "calls/s") =>
  `${count(r.unitsPerSecond)} ${unit} (${r.calls} calls in ${r.seconds.toFixed(1)} s${r.threads ? ` from ${r.threads} client threads` : ""}, ${r.errors} errors${r.firstError ? `: ${r.firstError}` : ""})`;
const latencies = (r: OpenLoopResult) =>
  `${r.achievedRate < 0.95 * r.rate || r.shed > 0 ? "SATURATED: " : ""}${Math.round(r.achievedRate)}/s achieved: p50 ${r.p50.toFixed(2)} ms, p90 ${r.p90.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms, max ${r.max.toFixed(1)} ms at ${r.rate}/s (${r.completed}/${r.scheduled} answered, ${r.errors} errors, ${r.shed} shed${r.firstError ? `: ${r.firstError}` : ""})`;
const serverCpu = (cpu: CpuShare, per: number, what: string) => `meterd cpu ${((cpu.server ?? NaN) / per).toFixed(1)} µs/${what}`;
const customersText = (k: number) => `${k.toLocaleString("en-US")} customer${k === 1 ? "" : "s"}`;

async function echoSubject(file: string, name: string, env?: NodeJS.ProcessEnv): Promise<Subject & { port: number }> {
  const echo = await startEcho(file, env);
  return { pid: echo.pid, name, port: echo.port, stop: () => echo.stop() };
}

async function main(): Promise<void> {
  const started = performance.now();
  mkdirSync(RESULTS, { recursive: true });
  const machine = await machineInfo();
  const redisPid = machine.redisPid ? Number(machine.redisPid) : null;
  process.stdout.write(
    `meterd bench ${runId}: ${machine.cpu}, ${machine.memory}, ${machine.os}, Node ${machine.node}, Postgres ${machine.postgres}, Redis ${machine.redis}\n`,
  );

  await loadFastPathScripts(REDIS_URL);
  const db: BenchDatabase = await createDatabase(runId);
  cleanups.push({ what: "drop database", run: () => db.drop() });
  cleanups.push({ what: "delete Redis keys", run: () => deleteRedisPrefix(prefix) });
  process.stdout.write(`code ${machine.code}; database ${db.name}, Redis prefix ${prefix}\n`);
  const pgPids = new PgPids();
  await pgPids.start(PG_ADMIN_URL, db.name);
  cleanups.push({ what: "stop watching Postgres", run: () => pgPids.stop() });
  {
    const waitUntil = Date.now() + num(opts["wait-quiet"], 0.001, "wait-quiet") * 1000;
    let busy = await machineBusyOver(2000);
    if (busy > 0.1 && Date.now() < waitUntil) {
      process.stdout.write(`machine ${Math.round(busy * 100)}% busy: waiting for it to be quiet\n`);
      while (Date.now() < waitUntil && (busy = await machineBusyOver(5000)) > 0.1);
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
  // meterd also migrates the bench database, which the ledger floors write to.
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
  /** Customers meterd has never seen: each batch of the cold phases takes fresh ones. */
  const coldSource = new EventSource(runId, Number.MAX_SAFE_INTEGER, "bench_cold_");
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

  const phases = new Phases({
    wanted: (id) => only === null || only.has(id),
    redisPid,
    pgPids,
    // The repeat itself, and the wait for a quiet machine before it.
    onRepeat: (ms) => extendBudget(ms + 25_000),
  });

  /**
   * 128 in flight from CLIENT_THREADS threads, each with its own client and connection. Each run gets a tag
   * of its own: the threads number their idempotency keys from 0, and a repeated phase must not send the
   * same keys again (meterd would answer them as duplicates, with no new ledger row).
   */
  let unaryRuns = 0;
  const unary = async (kind: UnaryKind, address: string, key: string | null, tag: string, hooks: { onStart(): void; onEnd(): void }, concurrency = IN_FLIGHT) => {
    const job = { kind, address, key, runId, customers: CUSTOMERS, tag: `${tag}${unaryRuns++}-`, concurrency, ...timing };
    const r = await threadedClosedLoop(job, CLIENT_THREADS, hooks);
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
  /** TrackBatch calls of BATCH events over `k` customers each, from `from`, BATCH_IN_FLIGHT in flight. */
  const trackBatches = async (from: EventSource, tag: string, k: number, hooks: WindowHooks) => {
    let problems = 0;
    let firstProblem: string | null = null;
    // At least two rounds of calls in the window, however slow they are (cold batches take seconds).
    const r = await closedLoop({ concurrency: BATCH_IN_FLIGHT, minCalls: 2 * BATCH_IN_FLIGHT, ...batchTiming, ...hooks }, async () => {
      const res = await grpcClient.unary(MeteringService.method.trackBatch, create(TrackBatchRequestSchema, { events: from.batch(tag, BATCH, k) }));
      const counted = allowedIn(res.results);
      allowedAcked += counted.allowed;
      problems += counted.other;
      firstProblem ??= counted.firstProblem;
      return counted.allowed;
    });
    return { ...r, problems, firstProblem };
  };
  const batchSummary = (r: Awaited<ReturnType<typeof trackBatches>>, cpu: CpuShare) =>
    `${perSecond(r, "events/s")}, ${r.meanCallMs.toFixed(0)} ms per call; ${r.problems} events not allowed${r.firstProblem ? ` (${r.firstProblem})` : ""}; ${serverCpu(cpu, r.units, "event")}`;
  const floorSummary = (r: ClosedLoopResult, cpu: CpuShare) => `${perSecond(r, "events/s")}; harness (the floor script) cpu ${(cpu.harness / Math.max(1, r.units)).toFixed(1)} µs/event`;
  const floorOptions = { customers: CUSTOMERS, batch: BATCH, concurrency: BATCH_IN_FLIGHT, runId, ...batchTiming };

  // Throughput at 128 in flight: the bare echo floor first, then meterd, for each protocol.
  let echoPort = 0;
  const echoCall = (r: ClosedLoopResult, cpu: CpuShare) => `${perSecond(r)}; echo server cpu ${((cpu.server ?? NaN) / r.calls).toFixed(1)} µs/call`;
  const startedEcho = (file: string, name: string, env?: NodeJS.ProcessEnv) => async () => {
    const echo = await echoSubject(file, name, env);
    echoPort = echo.port;
    return echo;
  };
  await phases.run("echo-grpc", "floor: bare grpc-js echo server, Track, 128 in flight", startedEcho("grpc-echo.ts", "grpc-js echo"), (hooks) =>
    unary("grpc-track", `127.0.0.1:${echoPort}`, null, "eg", hooks), echoCall);
  await phases.run("track-grpc", "meterd Track over gRPC (grpc-js client), 128 in flight", server, (hooks) =>
    unary("grpc-track", grpcAddress, BENCH_KEY, "g", hooks), (r, cpu) => `${perSecond(r)}; ${serverCpu(cpu, r.calls, "call")}`);
  await phases.run(
    "durable-grpc",
    "floor: durable grpc-js echo (the bare echo plus meterd's own Lua apply, group-committed insert and settle per Track), 128 in flight",
    startedEcho("durable-echo.ts", "durable echo", {
      METERD_BENCH_REDIS_URL: REDIS_URL,
      METERD_BENCH_REDIS_PREFIX: `${floorPrefix}durable:`,
      METERD_BENCH_DATABASE_URL: db.url,
    }),
    (hooks) => unary("grpc-track", `127.0.0.1:${echoPort}`, null, "dg", hooks),
    echoCall,
  );
  await phases.run("echo-connect", "floor: bare connect-node echo server, Track over HTTP/2 (connect-node client), 128 in flight", startedEcho("connect-echo.ts", "connect-node echo"), (hooks) =>
    unary("connect-track", `http://127.0.0.1:${echoPort}`, null, "ec", hooks), echoCall);
  await phases.run("track-connect", "meterd Track over Connect (connect-node client, HTTP/2, binary), 128 in flight", server, (hooks) =>
    unary("connect-track", `http://127.0.0.1:${meterd.httpPort}`, BENCH_KEY, "c", hooks), (r, cpu) => `${perSecond(r)}; ${serverCpu(cpu, r.calls, "call")}`);
  await phases.run(
    "durable-connect",
    "floor: durable connect-node echo (the bare echo plus meterd's own Lua apply, group-committed insert and settle per Track), 128 in flight",
    startedEcho("durable-connect-echo.ts", "durable connect-node echo", {
      METERD_BENCH_REDIS_URL: REDIS_URL,
      METERD_BENCH_REDIS_PREFIX: `${floorPrefix}durable-connect:`,
      METERD_BENCH_DATABASE_URL: db.url,
    }),
    (hooks) => unary("connect-track", `http://127.0.0.1:${echoPort}`, null, "dc", hooks),
    echoCall,
  );

  // Latency at a fixed offered rate.
  await phases.run("raw-latency", `floor: meterd's Lua apply (RedisFastPath.apply) then the event's insert through SqlLedger's group commit, ${RATE}/s open loop`, null, (hooks) =>
    latencyFloor({ ...timing, ...hooks, maxInFlight: OPEN_LOOP_MAX_IN_FLIGHT, redisUrl: REDIS_URL, prefix: floorPrefix, databaseUrl: db.url, runId, customers: CUSTOMERS, rate: RATE }), latencies);
  await phases.run("latency-grpc", `meterd Track over gRPC, ${RATE}/s open loop`, server, (hooks) =>
    openLoop({ rate: RATE, maxInFlight: OPEN_LOOP_MAX_IN_FLIGHT, ...timing, ...hooks }, trackGrpc), latencies);
  await phases.run("latency-connect", `meterd Track over Connect, ${RATE}/s open loop`, server, (hooks) =>
    openLoop({ rate: RATE, maxInFlight: OPEN_LOOP_MAX_IN_FLIGHT, ...timing, ...hooks }, trackConnect), latencies);

  await phases.run("metrics", "meterd GetMetrics over gRPC (all 4 features of the plan), 128 in flight", server, (hooks) =>
    unary("grpc-metrics", grpcAddress, BENCH_KEY, "m", hooks), (r, cpu) => `${perSecond(r)}; ${serverCpu(cpu, r.calls, "call")}`);

  // Ingestion. First the protocol floor's two halves apart (diagnostics: which store sets its pace).
  const spread = DIAGNOSTIC_SPREAD;
  await phases.run("redis-lua", `floor: meterd's batch apply (RedisFastPath.applyMany) alone, ${BATCH} events over ${customersText(spread)}, ${BATCH_IN_FLIGHT} in flight`, null, (hooks) =>
    redisFloor({ ...floorOptions, ...hooks, redisUrl: REDIS_URL, prefix: floorPrefix, perBatchCustomers: spread }), floorSummary);
  await phases.run("pg-insert", `floor: the same rows inserted with pg into meterd's two ledger tables, ${BATCH} rows per INSERT ... SELECT FROM unnest over ${customersText(spread)}, ${BATCH_IN_FLIGHT} in flight`, null, (hooks) =>
    pgFloor({ ...floorOptions, ...hooks, databaseUrl: db.url, perBatchCustomers: spread }), floorSummary);

  // Then, per spread of customers in a batch: both floors, TrackBatch (and cold), TrackStream.
  for (const k of SPREADS) {
    const over = `${BATCH} events over ${customersText(k)}`;
    await phases.run(phaseId.protocolFloor(k), `floor: protocol floor (applyMany, SqlLedger.append, settleMany; no RPC, no service code), ${over}, ${BATCH_IN_FLIGHT} in flight`, null, (hooks) =>
      protocolFloor({ ...floorOptions, ...hooks, redisUrl: REDIS_URL, prefix: floorPrefix, databaseUrl: db.url, perBatchCustomers: k }), floorSummary);
    await phases.run(phaseId.tableFloor(k), `floor: bare table (one unique index), INSERT ... SELECT FROM unnest, ${over}, ${BATCH_IN_FLIGHT} pg clients`, null, (hooks) =>
      tableFloor({ ...floorOptions, ...hooks, databaseUrl: db.url, perBatchCustomers: k }), floorSummary);
    await phases.run(phaseId.batch(k), `meterd TrackBatch over gRPC, ${over} per call, ${BATCH_IN_FLIGHT} in flight`, server, (hooks) =>
      trackBatches(source, "b", k, hooks), batchSummary);
    if (hasCold(k)) {
      await phases.run(phaseId.cold(k), `meterd TrackBatch over gRPC, cold: ${over} that meterd has never seen (fresh ones each call), ${BATCH_IN_FLIGHT} in flight`, server, (hooks) =>
        trackBatches(coldSource, "k", k, hooks), batchSummary);
    }
    await phases.run(phaseId.stream(k), `meterd TrackStream over gRPC, ${STREAMS} streams, requests of ${over}, up to ${STREAM_WINDOW} unacknowledged per stream`, server, async (hooks) => {
      // At least two requests acknowledged per stream in the window, as TrackBatch counts at least two rounds.
      const r = await streamLoad({ client: grpcClient, source, streams: STREAMS, window: STREAM_WINDOW, batch: BATCH, perBatchCustomers: k, minAcks: 2 * STREAMS, ...batchTiming, ...hooks });
      allowedAcked += r.allowedTotal;
      return r;
    }, (r, cpu) => `${count(r.eventsPerSecond)} events/s acknowledged durable (${r.events} in ${r.seconds.toFixed(1)} s, ${r.problems} not allowed${r.firstProblem ? `: ${r.firstProblem}` : ""}); ${serverCpu(cpu, r.events, "event")}`);
  }

  // The read side, on the ledger the ingestion phases filled: each call runs on its own, 16 in flight.
  await phases.run("query-usage", `meterd QueryUsage over gRPC: a year of daily buckets of one customer's API calls, ${READ_IN_FLIGHT} in flight`, server, (hooks) =>
    unary("grpc-query-usage", grpcAddress, BENCH_KEY, "q", hooks, READ_IN_FLIGHT), (r, cpu) => `${perSecond(r)}; ${serverCpu(cpu, r.calls, "call")}`);
  await phases.run("list-events", `meterd ListEvents over gRPC: pages of ${LIST_PAGE.toLocaleString("en-US")} events, newest first, ${READ_IN_FLIGHT} in flight`, server, (hooks) =>
    unary("grpc-list-events", grpcAddress, BENCH_KEY, "l", hooks, READ_IN_FLIGHT), (r, cpu) => `${perSecond(r)}, ${count(r.unitsPerSecond)} events/s; ${serverCpu(cpu, r.calls, "call")}`);

  // Peak RSS, then a check that what was acknowledged ALLOWED is in the ledger (bench_c... and bench_cold_...).
  const memory = memoryOf(meterd.pid);
  const ledgerRows = await (async () => {
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      const res = await client.query<{ n: string }>("SELECT count(*)::text AS n FROM meterd_events WHERE customer_id LIKE 'bench\\_%'");
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
  const figures = buildFigures(phases.records, { rate: RATE, inFlight: IN_FLIGHT, batch: BATCH }, memory?.hwm ?? null);
  const disturbed = phases.disturbed();
  const repeated = [...phases.records.values()].filter((r) => r.attempts > 1);
  const table = textTable(figures);
  const elapsed = (performance.now() - started) / 1000;
  const command = `npm run bench${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(" ")}` : ""}`;
  const quietNote =
    disturbed.length > 0
      ? `${disturbed.length} of ${phases.records.size} phases stayed disturbed by other processes (more than 15% of a core) in all attempts: ${disturbed.map((r) => r.id).join(", ")}; their figures are marked DISTURBED and are not valid`
      : `no figure comes from a disturbed phase${repeated.length > 0 ? ` (${repeated.map((r) => `${r.id} ran ${r.attempts} times`).join(", ")}, until quiet)` : ""}`;
  process.stdout.write(`\n${table}\n\nratio = value / floor, both measured in this run (for latency and CPU, lower is better).\n`);
  process.stdout.write(`machine: ${machine.cpu}, ${machine.memory}; ${machine.os}; Node ${machine.node}; Postgres ${machine.postgres}; Redis ${machine.redis}\n`);
  process.stdout.write(`run ${runId} took ${elapsed.toFixed(0)} s; ${quietNote}\n`);

  // A run of some phases only (--only) does not replace the last full run's results.
  const base = only === null ? "latest" : "partial";
  writeFileSync(path.join(RESULTS, `${base}.json`), `${JSON.stringify(latestJson(figures), null, 2)}\n`);
  writeFileSync(
    path.join(RESULTS, `${base}-detail.json`),
    `${JSON.stringify({ runId, date: new Date().toISOString(), command, seconds: elapsed, machine, settings: { CUSTOMERS, IN_FLIGHT, CLIENT_THREADS, RATE, BATCH, SPREADS, COLD_SPREADS, DIAGNOSTIC_SPREAD, BATCH_IN_FLIGHT, READ_IN_FLIGHT, STREAMS, STREAM_WINDOW, MEASURE_MS, WARMUP_MS, BATCH_MEASURE_MS, BATCH_WARMUP_MS }, durability: { allowedAcked, ledgerRows }, figures: figures.map((f) => ({ ...f, pass: passes(f) })), phases: [...phases.records.values()] }, null, 2)}\n`,
  );
  writeFileSync(
    path.join(RESULTS, `${base}.md`),
    `${markdownTable(figures)}\n\nratio = value / floor, both measured in the same run (for latency and CPU, lower is better).\n\n` +
      `Machine: ${machine.cpu}, ${machine.memory} RAM, ${machine.os}; Node ${machine.node}; Postgres ${machine.postgres}; Redis ${machine.redis}; ` +
      `meterd, the load generator, Redis and Postgres all share it. Run ${new Date().toISOString().slice(0, 10)} on ${machine.code}, with \`${command}\` (${elapsed.toFixed(0)} s); ${quietNote}.\n`,
  );
  process.stdout.write(`wrote bench/results/${base}.json, ${base}-detail.json and ${base}.md\n`);

  // Each thread writes a profile (tsx's loader runs in a worker): summarise the busy ones only.
  const busiest = Math.max(0, ...profiles.map((f) => busyTime(path.join(PROFILES, f))));
  for (const file of profiles.filter((f) => busyTime(path.join(PROFILES, f)) > busiest / 5)) {
    process.stdout.write(`\nCPU profile bench/results/profiles/${file}:\n${summarizeProfile(path.join(PROFILES, file), 25)}\n`);
  }
  if (!durable) process.exitCode = 1;
  else if (disturbed.length > 0) process.exitCode = 3;
}

main().then(
  async () => {
    await cleanup();
    process.exit(process.exitCode ?? 0);
  },
  async (error: unknown) => abort(error instanceof Error ? (error.stack ?? error.message) : String(error), 1),
);
