// Prometheus metrics of one server, on a registry of its own (tests run several servers in one process):
// RPC calls and their latency, recorded by the listeners; Track decisions, failures, sweeps and rebuilds,
// counted in plain numbers by the metering rules (MeterStats) and read at scrape time; group commits,
// told by the ledger; the outbox and WatchUsage subscribers, read at scrape time; Node's process metrics.
// Not to be confused with src/metering/metrics.ts, the usage read model of GetMetrics and WatchUsage.
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";
import type { FastPath, OutboxStatus } from "../fastpath/fastpath.js";
import type { MeterStats } from "../metering/stats.js";
import { codeName, type RpcCallRecorder, type RpcProtocol } from "../rpc/call-metrics.js";

/** From half a millisecond (a decision answered from memory) to 10 s (a call held by a slow ledger). */
const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const COMMIT_SIZE_BUCKETS = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000];

/** What is read at scrape time. */
export interface ScrapeSources {
  stats: MeterStats;
  fastPath: Pick<FastPath, "outboxStatus">;
  /** WatchUsage streams open now. */
  watching(): number;
}

export class PrometheusMetrics {
  readonly registry = new Registry();
  private readonly calls: Counter<"procedure" | "protocol" | "code">;
  private readonly latency: Histogram<"procedure" | "protocol">;
  private readonly commitEvents: Histogram;
  private readonly commitSeconds: Histogram;
  private readonly recorders = new Map<string, RpcCallRecorder>();

  constructor() {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.calls = new Counter({
      name: "meterd_rpc_calls_total",
      help: "RPC calls finished, by procedure, protocol and gRPC status code",
      labelNames: ["procedure", "protocol", "code"],
      registers,
    });
    this.latency = new Histogram({
      name: "meterd_rpc_duration_seconds",
      help: "RPC call duration from the listener receiving it to its status, in seconds",
      labelNames: ["procedure", "protocol"],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.commitEvents = new Histogram({
      name: "meterd_ledger_commit_events",
      help: "Events written per ledger group commit",
      buckets: COMMIT_SIZE_BUCKETS,
      registers,
    });
    this.commitSeconds = new Histogram({
      name: "meterd_ledger_commit_duration_seconds",
      help: "Duration of one ledger group commit statement, in seconds",
      buckets: LATENCY_BUCKETS,
      registers,
    });
  }

  /**
   * The recorder of `procedure` ("/pkg.Service/Method") over `protocol`, made once and kept: listeners
   * look it up once per method (gRPC) or once per call (Connect), and a call then costs an observe and an
   * increment on children made in advance.
   */
  readonly rpc = (procedure: string, protocol: RpcProtocol): RpcCallRecorder => {
    const key = `${protocol} ${procedure}`;
    let recorder = this.recorders.get(key);
    if (recorder === undefined) {
      const latency = this.latency.labels(procedure, protocol);
      const byCode: Array<{ inc(): void } | undefined> = [];
      const calls = this.calls;
      recorder = {
        done(code, seconds) {
          latency.observe(seconds);
          (byCode[code] ??= calls.labels(procedure, protocol, codeName(code))).inc();
        },
        refused(code) {
          (byCode[code] ??= calls.labels(procedure, protocol, codeName(code))).inc();
        },
      };
      this.recorders.set(key, recorder);
    }
    return recorder;
  };

  /** For SqlLedgerOptions.onCommit. */
  readonly observeCommit = (events: number, seconds: number): void => {
    this.commitEvents.observe(events);
    this.commitSeconds.observe(seconds);
  };

  /** Registers what is read at scrape time: the metering counts, the outbox and WatchUsage subscribers. */
  watch(sources: ScrapeSources): void {
    const registers = [this.registry];
    const { stats } = sources;
    counterOf(registers, "meterd_track_decisions_total", "Track events decided, by outcome (one per event of a batch or stream)", "outcome", {
      allowed: () => stats.allowed,
      limit_reached: () => stats.limitReached,
      insufficient_credits: () => stats.insufficientCredits,
      not_entitled: () => stats.notEntitled,
      duplicate: () => stats.duplicate,
      error: () => stats.rejected,
    });
    counterOf(registers, "meterd_fastpath_errors_total", "Fast-path failures, by kind", "kind", {
      unavailable: () => stats.fastPathUnavailable,
      settle_failed: () => stats.fastPathSettleFailed,
    });
    counterOf(registers, "meterd_ledger_errors_total", "Ledger failures of writes, by kind", "kind", {
      unavailable: () => stats.ledgerUnavailable,
      commit_unknown: () => stats.ledgerCommitUnknown,
      refused: () => stats.ledgerRefused,
    });
    counterOf(registers, "meterd_sweeper_committed_events_total", "Events left pending in the outbox that the sweeper committed", null, {
      "": () => stats.swept,
    });
    counterOf(registers, "meterd_rebuilds_total", "Customers made live in the fast path, by how", "kind", {
      from_ledger: () => stats.rebuilds,
      new_customer: () => stats.freshStarts,
    });
    // One outbox read serves both gauges of a scrape. While the fast path does not answer, they keep
    // their last values (meterd_fastpath_errors_total and the calls' codes say why).
    let reading: Promise<OutboxStatus | null> | null = null;
    const outbox = () =>
      (reading ??= sources.fastPath
        .outboxStatus()
        .catch(() => null)
        .finally(() => setImmediate(() => (reading = null))));
    new Gauge({
      name: "meterd_outbox_entries",
      help: "Entries pending in the outbox: applied, not yet settled (Redis: one per apply call; embedded: one per event)",
      registers,
      async collect() {
        const status = await outbox();
        if (status !== null) this.set(status.entries);
      },
    });
    new Gauge({
      name: "meterd_outbox_oldest_age_seconds",
      help: "Age of the oldest pending outbox entry in seconds (0 when the outbox is empty)",
      registers,
      async collect() {
        const status = await outbox();
        if (status !== null) this.set((status.oldestAgeMs ?? 0) / 1000);
      },
    });
    new Gauge({
      name: "meterd_watch_usage_subscribers",
      help: "WatchUsage streams open now",
      registers,
      collect() {
        this.set(sources.watching());
      },
    });
  }

  /** The text exposition format. */
  async scrape(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

/** A counter whose values are read from plain numbers at scrape time (they only grow). */
function counterOf(registers: Registry[], name: string, help: string, label: string | null, values: Record<string, () => number>): void {
  const seen = new Map<string, number>();
  const counter = new Counter({
    name,
    help,
    labelNames: label === null ? [] : [label],
    registers,
    collect() {
      for (const [value, read] of Object.entries(values)) {
        const now = read();
        const delta = now - (seen.get(value) ?? 0);
        seen.set(value, now);
        if (label === null) counter.inc(delta);
        else counter.inc({ [label]: value }, delta);
      }
    },
  });
  // Every label value is shown from the start, at 0, so that a rate() has a series before the first event.
  if (label !== null) for (const value of Object.keys(values)) counter.inc({ [label]: value }, 0);
}
