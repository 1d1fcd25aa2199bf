// Running a phase: its measured window's CPU split by process, its summary line, and a retry when other
// processes on the shared machine disturbed it. A figure from a disturbed window would compare meterd with
// a floor measured under different conditions, so a disturbed phase runs again (after waiting for the
// machine to calm down), and one that stays disturbed is marked so, never reported as valid.
import { performance } from "node:perf_hooks";
import pg from "pg";
import { cpuByPid, cpuOf, machineCpu, sampleRss } from "./proc.js";

/** Other processes above this share of one core over a measured window make the phase disturbed. */
export const DISTURBED_CORE_SHARE = 0.15;
/** Attempts of a phase: the first, and up to two repeats while it is disturbed. */
export const MAX_ATTEMPTS = 3;
/** Before a repeat, wait up to this long for the machine to be quiet. */
export const QUIET_WAIT_MS = 20_000;
/**
 * Time a run may spend on repeats in all. On a machine that stays busy, every phase would otherwise run
 * three times; past this, a disturbed phase is marked at once, and the run ends in bounded time.
 */
export const REPEAT_BUDGET_MS = 3 * 60_000;

export interface CpuShare {
  seconds: number;
  /**
   * CPU time in µs over the window: the server under test (meterd or an echo server), this harness (the
   * clients, or the floor script itself), redis-server, the Postgres processes of PgPids, and everything
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

/**
 * The Postgres processes that work for the bench: backends of its database (autovacuum workers included),
 * and the WAL writer, checkpointer and background writer, which flush what the bench writes. Counted as the
 * bench's, so that a checkpoint after heavy inserts does not pass for another user of the machine.
 */
export class PgPids {
  /** Every PID seen working for the bench so far: a backend opened during a window counts from its start. */
  readonly seen = new Set<number>();
  private client: pg.Client | null = null;
  private timer: NodeJS.Timeout | null = null;

  async start(adminUrl: string, database: string): Promise<void> {
    this.client = new pg.Client({ connectionString: adminUrl });
    this.client.on("error", () => {});
    await this.client.connect();
    const refresh = async () => {
      const res = await this.client!.query<{ pid: number }>(
        `SELECT pid FROM pg_stat_activity
          WHERE (datname = $1 OR backend_type IN ('walwriter', 'checkpointer', 'background writer')) AND pid <> pg_backend_pid()`,
        [database],
      );
      for (const r of res.rows) this.seen.add(r.pid);
    };
    await refresh();
    this.timer = setInterval(() => void refresh().catch(() => {}), 1000);
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.client?.end().catch(() => {});
  }
}

export interface WindowProbe {
  onStart(): void;
  onEnd(): void;
  result(): CpuShare;
}

/**
 * CPU counters at the start and end of a window. Every postgres process is read at both ends, and the ones
 * that work for the bench are picked when the window is over: a backend that a floor opened just before
 * the window is not listed by PgPids yet when the window starts, but is by its end.
 */
export function cpuProbe(serverPid: number | null, redisPid: number | null, pgPids: PgPids): WindowProbe {
  const snap = () => {
    const u = process.cpuUsage();
    const m = machineCpu();
    const pgCpu = cpuByPid("postgres");
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
    onStart: () => void (a = snap()),
    onEnd: () => void (b = snap()),
    result(): CpuShare {
      if (!a || !b) throw new Error("the measured window never ended");
      const diff = (x: number | null, y: number | null) => (x === null || y === null ? null : y - x);
      let postgres = 0;
      // A bench backend that started within the window did all its work within it.
      for (const [pid, after] of b.pg) if (pgPids.seen.has(pid)) postgres += after - (a.pg.get(pid) ?? 0);
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

/** Other processes' share of one core over the window. */
export const othersShare = (c: CpuShare) => c.others / (c.seconds * 1e6);

const pct = (us: number | null, seconds: number) => (us === null ? "?" : `${Math.round((us / (seconds * 1e6)) * 100)}%`);

export function cpuLine(c: CpuShare, serverName: string): string {
  return (
    `cpu (100% = one core): ${serverName} ${pct(c.server, c.seconds)}, harness ${pct(c.harness, c.seconds)}, redis ${pct(c.redis, c.seconds)}, ` +
    `postgres ${pct(c.postgres, c.seconds)}, other processes ${pct(c.others, c.seconds)}; machine ${Math.round(c.machine * 100)}% busy`
  );
}

export interface PhaseRecord {
  id: string;
  title: string;
  summary: string;
  cpu: CpuShare;
  peakRss: number | null;
  result: object;
  /** How many times the phase ran; the record is of the quiet run, or else of the least disturbed one. */
  attempts: number;
  /** Disturbed by other processes in every attempt it was given: its figures are not valid. */
  disturbed: boolean;
}

/** The process under test in a phase: meterd, or an echo server started for the phase and stopped after. */
export type Subject = { pid: number; name: string; stop?: () => Promise<void> };

export class Phases {
  readonly records = new Map<string, PhaseRecord>();
  private repeatMsLeft = REPEAT_BUDGET_MS;

  constructor(
    private readonly options: {
      wanted: (id: string) => boolean;
      redisPid: number | null;
      pgPids: PgPids;
      /** Called before a repeat with the time the disturbed attempt took, e.g. to extend a time budget. */
      onRepeat?: (attemptMs: number) => void;
    },
  ) {}

  /** The phases that stayed disturbed. */
  disturbed(): PhaseRecord[] {
    return [...this.records.values()].filter((r) => r.disturbed);
  }

  /**
   * Runs phase `id` unless --only leaves it out: `run` once (again while disturbed, up to MAX_ATTEMPTS),
   * with the subject's CPU and RSS watched over the measured window. Resolves to the recorded run's result.
   */
  async run<R extends object>(
    id: string,
    title: string,
    subject: Subject | (() => Promise<Subject>) | null,
    run: (hooks: { onStart(): void; onEnd(): void }) => Promise<R>,
    summarize: (r: R, cpu: CpuShare) => string,
  ): Promise<R | null> {
    if (!this.options.wanted(id)) return null;
    process.stdout.write(`\n[${id}] ${title}\n`);
    const server = typeof subject === "function" ? await subject() : subject;
    let best: PhaseRecord | null = null;
    try {
      for (let attempt = 1; ; attempt++) {
        const probe = cpuProbe(server?.pid ?? null, this.options.redisPid, this.options.pgPids);
        const rss = server ? sampleRss(server.pid, 500) : null;
        const started = performance.now();
        const result = await run(probe);
        rss?.stop();
        const cpu = probe.result();
        const summary = summarize(result, cpu);
        const disturbed = othersShare(cpu) > DISTURBED_CORE_SHARE;
        const ms = performance.now() - started;
        process.stdout.write(`  ${summary}\n  ${cpuLine(cpu, server?.name ?? "server")}\n  (${(ms / 1000).toFixed(1)} s)\n`);
        const record: PhaseRecord = { id, title, summary, cpu, peakRss: rss?.peak() ?? null, result, attempts: attempt, disturbed };
        // The quiet attempt; failing that, the least disturbed one.
        if (best === null || othersShare(cpu) < othersShare(best.cpu)) best = record;
        const mayRepeat = attempt < MAX_ATTEMPTS && this.repeatMsLeft > 0;
        if (!disturbed || !mayRepeat) {
          this.records.set(id, { ...best, attempts: attempt });
          if (disturbed) {
            process.stdout.write(
              `  DISTURBED: other processes took more than ${DISTURBED_CORE_SHARE * 100}% of a core in ${attempt === 1 ? "its only attempt (the run's time for repeats is spent)" : `all ${attempt} attempts`}; ` +
                `the least disturbed one is kept: ${best.summary}\n  its figures are marked DISTURBED\n`,
            );
          }
          return best.result as R;
        }
        process.stdout.write(`  disturbed: other processes took more than ${DISTURBED_CORE_SHARE * 100}% of a core; running it again (attempt ${attempt + 1} of ${MAX_ATTEMPTS})\n`);
        this.options.onRepeat?.(ms);
        const waitStarted = performance.now();
        await waitForQuiet(QUIET_WAIT_MS);
        this.repeatMsLeft -= ms + (performance.now() - waitStarted);
      }
    } finally {
      await server?.stop?.();
    }
  }
}

/** Busy share (0..1) of the whole machine over the next `ms`. */
export async function machineBusyOver(ms: number): Promise<number> {
  const a = machineCpu();
  await new Promise((resolve) => setTimeout(resolve, ms));
  const b = machineCpu();
  return (b.busy - a.busy) / Math.max(1, b.total - a.total);
}

/**
 * Waits, up to `maxMs`, until the machine is under 10% busy over 2 s. Between phases nothing of the bench
 * is working (meterd idles), so what is busy then is other processes.
 */
export async function waitForQuiet(maxMs: number): Promise<number> {
  const until = Date.now() + maxMs;
  let busy = await machineBusyOver(2000);
  while (busy > 0.1 && Date.now() < until) busy = await machineBusyOver(2000);
  return busy;
}
