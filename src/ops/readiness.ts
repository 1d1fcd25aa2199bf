// Readiness: whether this replica should be sent traffic. It is ready when every dependency answers
// (Redis, the ledger with its migrations applied) and it is not draining. Load balancers ask through
// GET /readyz (probes-route.ts) and grpc.health.v1 reports the same answer; both read one shared
// result, refreshed on a timer and at most once a second on demand, so that probes every second from
// several load balancers cost one PING and one query, not one each.
import { HealthState, ServingStatus } from "../rpc/health.js";

/** Something the replica cannot serve without. check() resolves when it answers, rejects otherwise. */
export interface Dependency {
  name: string;
  check(): Promise<void>;
}

export interface ReadinessReport {
  ready: boolean;
  /** "draining" once shutdown began, whatever the checks say. */
  status: "ready" | "not ready" | "draining";
  /** Each dependency: "ok", or why not. */
  checks: Record<string, string>;
}

export interface ReadinessOptions {
  /** How often the health service's status is refreshed (default 5 s). */
  everyMs?: number;
  /** How long one dependency may take to answer before it counts as down (default 2 s). */
  timeoutMs?: number;
  /** How long a result answers probes before a probe checks again (default 1 s). */
  maxAgeMs?: number;
}

export class Readiness {
  private readonly everyMs: number;
  private readonly timeoutMs: number;
  private readonly maxAgeMs: number;
  private last: { at: number; report: ReadinessReport } | null = null;
  private running: Promise<ReadinessReport> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private draining = false;

  constructor(
    private readonly dependencies: readonly Dependency[],
    /** Set to SERVING or NOT_SERVING, for the server ("") and for each of `services`, on every check. */
    private readonly health: HealthState,
    private readonly services: readonly string[],
    options: ReadinessOptions = {},
  ) {
    this.everyMs = options.everyMs ?? 5_000;
    this.timeoutMs = options.timeoutMs ?? 2_000;
    this.maxAgeMs = options.maxAgeMs ?? 1_000;
  }

  /** Checks now, then every `everyMs`, keeping the health service's statuses in step. */
  async start(): Promise<ReadinessReport> {
    const first = await this.refresh();
    this.timer = setInterval(() => void this.refresh(), this.everyMs);
    this.timer.unref();
    return first;
  }

  /** The latest report when it is fresh enough, else a new check (shared with any check in flight). */
  report(): Promise<ReadinessReport> {
    if (this.draining) return Promise.resolve(drainingReport(this.last?.report.checks ?? {}));
    if (this.last !== null && Date.now() - this.last.at < this.maxAgeMs) return Promise.resolve(this.last.report);
    return this.refresh();
  }

  /** Not ready from now on, for good: the first step of a drain. Stops the timer. */
  drain(): void {
    this.draining = true;
    if (this.timer !== null) clearInterval(this.timer);
    this.health.shutdown();
  }

  private refresh(): Promise<ReadinessReport> {
    this.running ??= this.checkAll().finally(() => (this.running = null));
    return this.running;
  }

  private async checkAll(): Promise<ReadinessReport> {
    const results = await Promise.all(this.dependencies.map((d) => this.checkOne(d)));
    const checks = Object.fromEntries(this.dependencies.map((d, i) => [d.name, results[i]!]));
    const ready = results.every((r) => r === "ok");
    const report: ReadinessReport = this.draining ? drainingReport(checks) : { ready, status: ready ? "ready" : "not ready", checks };
    this.last = { at: Date.now(), report };
    const status = report.ready ? ServingStatus.SERVING : ServingStatus.NOT_SERVING;
    // After drain(), HealthState ignores these: NOT_SERVING stays.
    for (const service of ["", ...this.services]) this.health.set(service, status);
    return report;
  }

  private async checkOne(dependency: Dependency): Promise<string> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<string>((resolve) => {
      timer = setTimeout(() => resolve(`no answer within ${this.timeoutMs} ms`), this.timeoutMs);
    });
    try {
      return await Promise.race([dependency.check().then(() => "ok", (error: unknown) => reasonOf(error)), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
}

function drainingReport(checks: Record<string, string>): ReadinessReport {
  return { ready: false, status: "draining", checks };
}

/** A short reason: the error's code or its first line, never a stack or a connection string. */
function reasonOf(error: unknown): string {
  const e = error as { code?: unknown; message?: unknown };
  const message = typeof e?.message === "string" ? e.message.split("\n", 1)[0]! : String(error);
  return typeof e?.code === "string" && !message.includes(e.code) ? `${e.code}: ${message}` : message;
}
