// TrackStream load: `streams` bidirectional streams over one grpc-js channel, each keeping up to `window`
// requests of `batch` events written and not yet acknowledged. The client honours write()'s back-pressure
// (it waits for "drain"), so what it can have in flight is whatever the server lets through.
import { performance } from "node:perf_hooks";
import { create } from "@bufbuild/protobuf";
import { TrackStreamRequestSchema } from "../../gen/meterd/v1/metering_pb.js";
import { allowedIn, type EventSource, type GrpcClient } from "./clients.js";
import type { WindowHooks } from "./load.js";

export interface StreamLoadResult {
  seconds: number;
  /** Events acknowledged ALLOWED (durable) in the measured window. */
  events: number;
  eventsPerSecond: number;
  /** Events acknowledged with anything else (denied, an error result), whole run. */
  problems: number;
  firstProblem: string | null;
  /** The most requests written and not yet acknowledged on one stream. */
  maxUnacked: number;
  /** Events acknowledged ALLOWED over the whole run, warm-up included. */
  allowedTotal: number;
}

export interface StreamLoadOptions extends WindowHooks {
  client: GrpcClient;
  source: EventSource;
  streams: number;
  window: number;
  batch: number;
  perBatchCustomers: number;
  warmupMs: number;
  durationMs: number;
  /** Called every `sampleEveryMs` with the requests in flight (written, not acknowledged) over all streams. */
  onSample?: (unacked: number, ackedEvents: number) => void;
  sampleEveryMs?: number;
  /** At the end of the window, cancel the streams instead of waiting for their acknowledgements. */
  cancelAtEnd?: boolean;
  /**
   * The window lasts until at least this many requests were acknowledged in it, even past its duration
   * (at most a minute more): requests that take seconds are then still measured, instead of none.
   */
  minAcks?: number;
}

export async function streamLoad(options: StreamLoadOptions): Promise<StreamLoadResult> {
  const { client, source, batch, perBatchCustomers, window } = options;
  let measuring = false;
  let stopping = false;
  let events = 0;
  let allowedTotal = 0;
  let problems = 0;
  let firstProblem: string | null = null;
  let maxUnacked = 0;
  let acksInWindow = 0;
  let durationOver = false;
  const unackedOf: number[] = [];
  const calls: Array<{ cancel(): void }> = [];
  const start = performance.now();
  let measuredFrom = start + options.warmupMs;
  let measuredTo = measuredFrom + options.durationMs;

  const runStream = (s: number) =>
    new Promise<void>((resolve, reject) => {
      const call = client.trackStream();
      calls.push(call);
      unackedOf[s] = 0;
      let waitingDrain = false;
      let ended = false;
      const end = () => {
        if (!ended) {
          ended = true;
          call.end();
        }
      };
      const pump = () => {
        while (!stopping && !waitingDrain && unackedOf[s]! < window) {
          const ok = call.write(create(TrackStreamRequestSchema, { events: source.batch("s", batch, perBatchCustomers) }));
          unackedOf[s]!++;
          maxUnacked = Math.max(maxUnacked, unackedOf[s]!);
          if (!ok) {
            waitingDrain = true;
            call.once("drain", () => {
              waitingDrain = false;
              pump();
            });
          }
        }
        if (stopping && unackedOf[s] === 0) end();
      };
      call.on("data", (res: { results: Parameters<typeof allowedIn>[0] }) => {
        unackedOf[s]!--;
        const counted = allowedIn(res.results);
        allowedTotal += counted.allowed;
        if (measuring) {
          events += counted.allowed;
          acksInWindow++;
          endIfDone();
        }
        problems += counted.other;
        firstProblem ??= counted.firstProblem;
        pump();
      });
      call.on("error", (error: Error & { code?: number }) => (stopping && options.cancelAtEnd && error.code === 1 ? resolve() : reject(error)));
      call.on("end", () => resolve());
      call.on("status", () => resolve());
      pump();
    });

  const sampler = options.onSample
    ? setInterval(() => options.onSample!(unackedOf.reduce((a, b) => a + b, 0), allowedTotal), options.sampleEveryMs ?? 1000)
    : null;
  const startTimer = setTimeout(() => {
    measuring = true;
    measuredFrom = performance.now();
    options.onStart?.();
  }, options.warmupMs);
  const stop = () => {
    if (stopping) return;
    measuring = false;
    measuredTo = performance.now();
    options.onEnd?.();
    stopping = true;
    if (options.cancelAtEnd) for (const call of calls) call.cancel();
  };
  function endIfDone() {
    if (durationOver && acksInWindow >= (options.minAcks ?? 0)) stop();
  }
  const stopTimer = setTimeout(() => {
    durationOver = true;
    endIfDone();
  }, options.warmupMs + options.durationMs);
  const capTimer = setTimeout(stop, options.warmupMs + options.durationMs + 60_000);
  const all = Promise.all(Array.from({ length: options.streams }, (_, s) => runStream(s)));
  // After the window, each stream ends once its requests are acknowledged; give them a bounded time.
  const watchdog = new Promise<never>((_, reject) =>
    setTimeout(() => reject(new Error("TrackStream: streams did not finish within 60 s of the end")), options.warmupMs + options.durationMs + 120_000).unref(),
  );
  try {
    await Promise.race([all, watchdog]);
  } finally {
    clearTimeout(startTimer);
    clearTimeout(stopTimer);
    clearTimeout(capTimer);
    if (sampler) clearInterval(sampler);
  }
  const seconds = (measuredTo - measuredFrom) / 1000;
  return { seconds, events, eventsPerSecond: events / seconds, problems, firstProblem, maxUnacked, allowedTotal };
}
