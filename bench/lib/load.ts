// Load drivers. Closed loop: N calls always in flight, for throughput. Open loop: calls sent on a fixed
// schedule whatever the answers do, with each latency measured from the call's scheduled send time, so
// that a slow answer also counts against the calls it held up (no coordinated omission).
import { performance } from "node:perf_hooks";

/** Called at the start and end of the measured window (after the warm-up), e.g. to read CPU counters. */
export interface WindowHooks {
  onStart?(): void;
  onEnd?(): void;
}

/** How long a load runs: a warm-up, then the measured window (whose start and end the hooks mark). */
export interface Timing extends WindowHooks {
  warmupMs: number;
  durationMs: number;
}

export interface ClosedLoopResult {
  seconds: number;
  calls: number;
  /** What the calls reported (events for a batch, 1 for a unary call). */
  units: number;
  errors: number;
  firstError: string | null;
  callsPerSecond: number;
  unitsPerSecond: number;
  /** Mean time (ms) from send to answer of the calls answered in the window. */
  meanCallMs: number;
}

/** A window that has run its duration but counted fewer than minCalls calls waits at most this long for them. */
const MAX_EXTRA_MS = 60_000;

/**
 * Keeps `concurrency` calls in flight: a warm-up, then the measured window. `call` resolves to the number
 * of units it achieved (0 counts as a call without units, e.g. a denial); a rejection counts as an error.
 * With `minCalls`, the window lasts until that many calls were answered in it, even past its duration:
 * calls that take seconds each (a batch of customers not yet loaded) are then still counted over enough
 * calls, instead of over none.
 */
export async function closedLoop(
  options: { concurrency: number; warmupMs: number; durationMs: number; minCalls?: number } & WindowHooks,
  call: (worker: number) => Promise<number>,
): Promise<ClosedLoopResult> {
  const minCalls = options.minCalls ?? 0;
  let measuring = false;
  let calls = 0;
  let units = 0;
  let callMs = 0;
  let errors = 0;
  let firstError: string | null = null;

  let started = false;
  let ended = false;
  let durationOver = false;
  let endedAt = 0;
  let startedAt = 0;
  const begin = () => {
    if (started) return;
    started = true;
    startedAt = performance.now();
    measuring = true;
    options.onStart?.();
  };
  const end = () => {
    if (ended) return;
    begin();
    ended = true;
    measuring = false;
    endedAt = performance.now();
    options.onEnd?.();
  };
  const endIfDone = () => {
    if (durationOver && calls >= minCalls) end();
  };
  const startTimer = setTimeout(begin, options.warmupMs);
  const endTimer = setTimeout(() => {
    durationOver = true;
    endIfDone();
  }, options.warmupMs + options.durationMs);
  const capTimer = setTimeout(end, options.warmupMs + options.durationMs + MAX_EXTRA_MS);

  const worker = async (w: number) => {
    while (!ended) {
      const sent = performance.now();
      try {
        const n = await call(w);
        if (measuring) {
          calls++;
          units += n;
          callMs += performance.now() - sent;
          endIfDone();
        }
      } catch (error) {
        if (measuring) errors++;
        firstError ??= error instanceof Error ? error.message : String(error);
        // An error answers fast: do not spin on a server that refuses everything.
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, (_, w) => worker(w)));
  clearTimeout(startTimer);
  clearTimeout(endTimer);
  clearTimeout(capTimer);
  end();
  const seconds = (endedAt - startedAt) / 1000;
  return { seconds, calls, units, errors, firstError, callsPerSecond: calls / seconds, unitsPerSecond: units / seconds, meanCallMs: calls > 0 ? callMs / calls : NaN };
}

export interface OpenLoopResult {
  rate: number;
  seconds: number;
  /** Calls scheduled in the measured window, and how many of them succeeded. */
  scheduled: number;
  completed: number;
  errors: number;
  firstError: string | null;
  /** Calls not sent because maxInFlight were already waiting. */
  shed: number;
  /** Answers per second from the first measured call's scheduled time to the last answer: below `rate`, the target is saturated. */
  achievedRate: number;
  /** Percentiles (ms) over every measured call; a call that failed, was shed or never answered counts as Infinity. */
  p50: number;
  p90: number;
  p99: number;
  /** The slowest answer. */
  max: number;
}

/**
 * Sends `rate` calls per second on a fixed schedule for warm-up + duration, then waits (up to drainMs)
 * for the calls still in flight. Latency (ms) is measured from each call's scheduled time.
 */
export async function openLoop(
  options: { rate: number; warmupMs: number; durationMs: number; maxInFlight?: number; drainMs?: number } & WindowHooks,
  call: (i: number) => Promise<unknown>,
): Promise<OpenLoopResult> {
  const { rate, warmupMs, durationMs } = options;
  const maxInFlight = options.maxInFlight ?? 10_000;
  const interval = 1000 / rate;
  const total = Math.floor(((warmupMs + durationMs) / 1000) * rate);
  const firstMeasured = Math.floor((warmupMs / 1000) * rate);
  const latencies: number[] = [];
  let inFlight = 0;
  let errors = 0;
  let shed = 0;
  let firstError: string | null = null;
  const pending = new Set<Promise<void>>();
  let lastDone = 0;

  const t0 = performance.now() + 5;
  let sent = 0;
  let started = false;
  while (sent < total) {
    const now = performance.now();
    const due = Math.min(total, Math.floor((now - t0) / interval) + 1);
    for (; sent < due; sent++) {
      const i = sent;
      const measured = i >= firstMeasured;
      if (measured && !started) {
        started = true;
        options.onStart?.();
      }
      if (inFlight >= maxInFlight) {
        if (measured) shed++;
        continue;
      }
      const scheduled = t0 + i * interval;
      inFlight++;
      const p: Promise<void> = call(i).then(
        () => {
          if (measured) {
            lastDone = performance.now();
            latencies.push(lastDone - scheduled);
          }
        },
        (error: unknown) => {
          if (measured) errors++;
          firstError ??= error instanceof Error ? error.message : String(error);
        },
      );
      pending.add(p);
      void p.finally(() => {
        inFlight--;
        pending.delete(p);
      });
    }
    // Sleep until the next call is due; setTimeout's 1 ms floor makes small bursts, which the schedule absorbs.
    const next = t0 + sent * interval - performance.now();
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, Math.min(next, 1))));
  }
  options.onEnd?.();
  const drain = Promise.all([...pending]);
  await Promise.race([drain, new Promise((resolve) => setTimeout(resolve, options.drainMs ?? 10_000).unref())]);
  const stillPending = pending.size;
  // A call that failed, was shed or never answered has no latency: it counts as infinitely slow, so that a
  // saturated target cannot show a good p99 by answering only the calls it managed.
  const failed = errors + shed + stillPending;
  const sorted = latencies.sort((a, b) => a - b);
  const completed = sorted.length;
  for (let i = 0; i < failed; i++) sorted.push(Infinity);
  return {
    rate,
    seconds: durationMs / 1000,
    scheduled: total - firstMeasured,
    completed,
    errors: errors + stillPending,
    firstError,
    shed,
    achievedRate: completed / Math.max(1e-9, (lastDone - (t0 + firstMeasured * interval)) / 1000),
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    max: completed === 0 ? NaN : sorted[completed - 1]!,
  };
}

/** Nearest-rank percentile of an ascending array (NaN when empty). */
export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1]!;
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
