// Unary load from several worker threads, each with its own client and connection, so that the load
// generator is not one JavaScript thread: with a single thread, the grpc-js client saturates its core
// before a bare echo server does, and the "floor" would measure the client. The threads share the calls
// in flight (128 in all), start together on a signal, and count calls in the same window.
import { isMainThread, parentPort, Worker, workerData } from "node:worker_threads";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  GetMetricsRequestSchema,
  ListEventsRequestSchema,
  MeteringService,
  QueryUsageRequestSchema,
  UsageWindow,
} from "../../gen/meterd/v1/metering_pb.js";
import { Decision } from "../../gen/meterd/v1/usage_pb.js";
import { connectClient, EventSource, GrpcClient } from "./clients.js";
import { closedLoop, type ClosedLoopResult } from "./load.js";

export type UnaryKind = "grpc-track" | "connect-track" | "grpc-metrics" | "grpc-query-usage" | "grpc-list-events";

/** The read phases' customers: those the ingestion phases gave the most events (batches over 1 customer). */
export const READ_CUSTOMERS = 50;
export const LIST_PAGE = 1000;
const YEAR_MS = 365 * 86_400_000;

export interface UnaryJob {
  kind: UnaryKind;
  /** "127.0.0.1:port" for gRPC, "http://127.0.0.1:port" for Connect. */
  address: string;
  key: string | null;
  runId: string;
  customers: number;
  /** Tag of the idempotency keys (made unique per thread). */
  tag: string;
  concurrency: number;
  warmupMs: number;
  durationMs: number;
}

type ToWorker = { go: true };
type FromWorker = { ready: true } | { result: ClosedLoopResult; allowed: number } | { error: string };

/** Runs `job` on `threads` worker threads (job.concurrency in flight in all) and adds up their counts. */
export async function threadedClosedLoop(
  job: UnaryJob,
  threads: number,
  hooks: { onStart(): void; onEnd(): void },
): Promise<ClosedLoopResult & { allowed: number; threads: number }> {
  const workers: Worker[] = [];
  const entry = `import("tsx/esm/api").then(({ register }) => { register(); return import(${JSON.stringify(import.meta.url)}); })`;
  try {
    const ready: Array<Promise<void>> = [];
    const done: Array<Promise<{ result: ClosedLoopResult; allowed: number }>> = [];
    for (let t = 0; t < threads; t++) {
      const share = Math.floor(job.concurrency / threads) + (t < job.concurrency % threads ? 1 : 0);
      const worker = new Worker(entry, { eval: true, workerData: { ...job, concurrency: share, tag: `${job.tag}${t}` } satisfies UnaryJob });
      workers.push(worker);
      let onReady!: () => void;
      ready.push(new Promise<void>((resolve) => (onReady = resolve)));
      done.push(
        new Promise((resolve, reject) => {
          worker.on("message", (m: FromWorker) => {
            if ("ready" in m) onReady();
            else if ("result" in m) resolve(m);
            else reject(new Error(`load thread: ${m.error}`));
          });
          worker.on("error", reject);
          worker.on("exit", (code) => reject(new Error(`load thread exited with code ${code}`)));
        }),
      );
    }
    await Promise.race([Promise.all(ready), Promise.all(done)]);
    for (const worker of workers) worker.postMessage({ go: true } satisfies ToWorker);
    const startTimer = setTimeout(() => hooks.onStart(), job.warmupMs);
    const endTimer = setTimeout(() => hooks.onEnd(), job.warmupMs + job.durationMs);
    let results;
    try {
      results = await Promise.all(done);
    } finally {
      clearTimeout(startTimer);
      clearTimeout(endTimer);
    }
    const sum = (f: (r: ClosedLoopResult) => number) => results.reduce((a, r) => a + f(r.result), 0);
    const seconds = sum((r) => r.seconds) / results.length;
    return {
      seconds,
      calls: sum((r) => r.calls),
      units: sum((r) => r.units),
      errors: sum((r) => r.errors),
      firstError: results.find((r) => r.result.firstError !== null)?.result.firstError ?? null,
      callsPerSecond: sum((r) => r.callsPerSecond),
      unitsPerSecond: sum((r) => r.unitsPerSecond),
      meanCallMs: sum((r) => r.meanCallMs * r.calls) / Math.max(1, sum((r) => r.calls)),
      allowed: results.reduce((a, r) => a + r.allowed, 0),
      threads,
    };
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

async function runInWorker(job: UnaryJob): Promise<void> {
  const port = parentPort!;
  const source = new EventSource(job.runId, job.customers);
  let allowed = 0;
  let call: () => Promise<number>;
  let close: () => void;
  if (job.kind === "connect-track") {
    const c = connectClient(job.address, job.key);
    close = c.close;
    call = async () => {
      const res = await c.client.track(source.next(job.tag));
      if (res.decision !== Decision.ALLOWED) throw new Error(`Track was not allowed (${res.denyReason})`);
      allowed++;
      return 1;
    };
  } else {
    const c = new GrpcClient(job.address, job.key);
    close = () => c.close();
    if (job.kind === "grpc-track") {
      call = async () => {
        const res = await c.unary(MeteringService.method.track, source.next(job.tag));
        if (res.decision !== Decision.ALLOWED) throw new Error(`Track was not allowed (${res.denyReason})`);
        allowed++;
        return 1;
      };
    } else if (job.kind === "grpc-query-usage") {
      // A year of daily buckets of one customer, ending tomorrow: 366 buckets per call.
      let customer = Math.floor(Math.random() * READ_CUSTOMERS);
      call = async () => {
        const now = Date.now();
        const req = create(QueryUsageRequestSchema, {
          customerId: source.customerId(customer++ % READ_CUSTOMERS),
          featureKeys: ["api_calls"],
          from: timestampFromMs(now - YEAR_MS),
          to: timestampFromMs(now + 86_400_000),
          window: UsageWindow.DAY,
        });
        const res = await c.unary(MeteringService.method.queryUsage, req);
        if (res.buckets.length < 365) throw new Error(`QueryUsage returned ${res.buckets.length} buckets for a year`);
        return res.buckets.length;
      };
    } else if (job.kind === "grpc-list-events") {
      // Pages of 1,000 events, newest first, each customer's pages one after the other.
      let customer = Math.floor(Math.random() * READ_CUSTOMERS);
      let pageToken = "";
      call = async () => {
        const customerId = source.customerId(customer % READ_CUSTOMERS);
        const res = await c.unary(MeteringService.method.listEvents, create(ListEventsRequestSchema, { customerId, pageSize: LIST_PAGE, pageToken }));
        pageToken = res.nextPageToken;
        if (pageToken === "") customer++;
        if (res.events.length === 0) throw new Error(`ListEvents returned no event for ${customerId}`);
        return res.events.length;
      };
    } else {
      let customer = Math.floor(Math.random() * job.customers);
      call = async () => {
        const res = await c.unary(MeteringService.method.getMetrics, create(GetMetricsRequestSchema, { customerId: source.customerId(customer++ % job.customers) }));
        if (res.metrics.length === 0) throw new Error("GetMetrics returned no metric");
        return 1;
      };
    }
  }
  port.postMessage({ ready: true } satisfies FromWorker);
  await new Promise<void>((resolve) => port.once("message", () => resolve()));
  try {
    const result = await closedLoop({ concurrency: job.concurrency, warmupMs: job.warmupMs, durationMs: job.durationMs }, () => call());
    port.postMessage({ result, allowed } satisfies FromWorker);
  } finally {
    close();
  }
}

if (!isMainThread && (workerData as UnaryJob | undefined)?.kind !== undefined) {
  runInWorker(workerData as UnaryJob).catch((error: unknown) => {
    parentPort!.postMessage({ error: error instanceof Error ? (error.stack ?? error.message) : String(error) } satisfies FromWorker);
  });
}
