// `npm run bench -- --soak`: does meterd's memory stay flat?
//
// 1. Steady mixed load for --soak-minutes (default 10) on meterd against Redis and Postgres: Track over
//    gRPC and Connect, GetMetrics and TrackBatch, all at fixed rates, sampling meterd's RSS every 5 s.
//    Flat means the median RSS of the last tenth of the soak is within 10% of the median of its second
//    tenth (the first tenth is warm-up). Medians, because RSS jumps for a few seconds whenever a burst
//    queues calls (the shared machine stalls meterd now and then); the maxima are printed beside them.
// 2. A slowed ledger: a second meterd whose DATABASE_URL goes through a TCP proxy that delays every chunk
//    and caps what reaches Postgres, fed by TrackStream clients that send as fast as the stream lets them
//    (they honour write()'s back-pressure and have no window of their own). If meterd queued what its ledger
//    cannot take, its RSS would grow with the backlog; back-pressure keeps both the RSS and the client's
//    unacknowledged requests bounded.
import { writeFileSync } from "node:fs";
import path from "node:path";
import { create } from "@bufbuild/protobuf";
import { GetMetricsRequestSchema, MeteringService, TrackBatchRequestSchema } from "../gen/meterd/v1/metering_pb.js";
import { Decision } from "../gen/meterd/v1/usage_pb.js";
import { allowedIn, connectClient, EventSource, GrpcClient } from "./lib/clients.js";
import { openLoop, type OpenLoopResult } from "./lib/load.js";
import { memoryOf, sampleRss } from "./lib/proc.js";
import { figure, markdownTable, textTable, type Figure } from "./lib/report.js";
import { type BenchDatabase, startMeterd } from "./lib/services.js";
import { startSlowProxy } from "./lib/slow-proxy.js";
import { streamLoad } from "./lib/stream-load.js";

const CUSTOMERS = 1000;
/** Well below what meterd takes on this machine: the soak is about memory under steady load, not overload. */
const RATES = { trackGrpc: 200, trackConnect: 50, metrics: 50, batches: 1 };
/** An open loop whose target falls behind sheds calls beyond this many in flight, rather than queue them all. */
const MAX_IN_FLIGHT = 500;
/** The slowed ledger: each chunk held this long (both ways), and at most this many bytes/s to Postgres. */
const SLOW_DELAY_MS = 20;
const SLOW_BYTES_PER_SECOND = 1_000_000;
const SLOW_STREAMS = 4;
/** No window of the client's own: only the transport's back-pressure holds it back (and this safety cap). */
const SLOW_STREAM_CAP = 10_000;

const MiB = 2 ** 20;

export interface SoakContext {
  runId: string;
  prefix: string;
  db: BenchDatabase;
  machine: Record<string, string>;
  cleanups: Array<{ what: string; run: () => Promise<unknown> }>;
  resultsDir: string;
  soakMinutes: number;
  slowSeconds: number;
}

/** Median and largest RSS of the samples taken in [from, to]. */
function rssIn(samples: Array<{ t: number; rss: number }>, from: number, to: number): { median: number; max: number } {
  const values = samples.filter((s) => s.t >= from && s.t <= to).map((s) => s.rss).sort((a, b) => a - b);
  return { median: values[Math.floor(values.length / 2)] ?? NaN, max: values[values.length - 1] ?? NaN };
}

export async function runSoak(ctx: SoakContext & { redisPid: number | null }): Promise<void> {
  const figures: Figure[] = [];
  const soakMs = ctx.soakMinutes * 60_000;

  // ---- 1. steady mixed load ---------------------------------------------------------------------
  const meterd = await startMeterd({ databaseUrl: ctx.db.url, prefix: `${ctx.prefix}svc:` });
  ctx.cleanups.push({ what: "stop meterd", run: () => meterd.stop() });
  const grpcClient = new GrpcClient(`127.0.0.1:${meterd.grpcPort}`);
  const connect = connectClient(`http://127.0.0.1:${meterd.httpPort}`);
  ctx.cleanups.push({ what: "close clients", run: async () => (grpcClient.close(), connect.close()) });
  const source = new EventSource(ctx.runId, CUSTOMERS);
  const warm = await grpcClient.unary(MeteringService.method.trackBatch, create(TrackBatchRequestSchema, { events: source.batch("warm", CUSTOMERS, CUSTOMERS) }));
  if (allowedIn(warm.results).other > 0) throw new Error("soak warm-up: events not allowed");

  process.stdout.write(
    `\n[soak] ${ctx.soakMinutes} min of steady load on meterd pid ${meterd.pid}: Track ${RATES.trackGrpc}/s gRPC + ${RATES.trackConnect}/s Connect, ` +
      `GetMetrics ${RATES.metrics}/s, TrackBatch ${RATES.batches}/s x 1,000 events; RSS sampled every 5 s\n`,
  );
  const rss = sampleRss(meterd.pid, 5000);
  const t0 = Date.now();
  const progress = setInterval(() => {
    const m = memoryOf(meterd.pid);
    process.stdout.write(`  ${((Date.now() - t0) / 60_000).toFixed(1)} min: RSS ${m ? (m.rss / MiB).toFixed(0) : "?"} MiB\n`);
  }, 60_000);
  const timing = { warmupMs: 0, durationMs: soakMs, maxInFlight: MAX_IN_FLIGHT, drainMs: 30_000 };
  let metricsCustomer = 0;
  const [g, c, m, b] = await Promise.all([
    openLoop({ ...timing, rate: RATES.trackGrpc }, async () => {
      const res = await grpcClient.unary(MeteringService.method.track, source.next("g"));
      if (res.decision !== Decision.ALLOWED) throw new Error("denied");
    }),
    openLoop({ ...timing, rate: RATES.trackConnect }, async () => {
      const res = await connect.client.track(source.next("c"));
      if (res.decision !== Decision.ALLOWED) throw new Error("denied");
    }),
    openLoop({ ...timing, rate: RATES.metrics }, () =>
      grpcClient.unary(MeteringService.method.getMetrics, create(GetMetricsRequestSchema, { customerId: source.customerId(metricsCustomer++ % CUSTOMERS) })),
    ),
    openLoop({ ...timing, rate: RATES.batches }, async () => {
      const res = await grpcClient.unary(MeteringService.method.trackBatch, create(TrackBatchRequestSchema, { events: source.batch("b", 1000, 100) }));
      const counted = allowedIn(res.results);
      if (counted.other > 0) throw new Error(`batch: ${counted.firstProblem}`);
    }),
  ]);
  clearInterval(progress);
  const samples = rss.stop();
  const peakSoak = memoryOf(meterd.pid)?.hwm ?? NaN;
  const t1 = samples[samples.length - 1]!.t;
  const span = t1 - t0;
  const baseline = rssIn(samples, t0 + span * 0.1, t0 + span * 0.2);
  const final = rssIn(samples, t0 + span * 0.9, t1);
  const describe = (name: string, r: OpenLoopResult) =>
    `  ${name}: p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms, max ${r.max.toFixed(0)} ms; ${r.completed}/${r.scheduled} answered, ${r.errors} errors, ${r.shed} shed${r.firstError ? ` (${r.firstError})` : ""}`;
  process.stdout.write(
    [describe("Track gRPC", g), describe("Track Connect", c), describe("GetMetrics", m), describe("TrackBatch", b)].join("\n") +
      `\n  RSS median (max): ${(baseline.median / MiB).toFixed(0)} (${(baseline.max / MiB).toFixed(0)}) MiB over the 2nd tenth -> ` +
      `${(final.median / MiB).toFixed(0)} (${(final.max / MiB).toFixed(0)}) MiB over the last tenth; peak ${(peakSoak / MiB).toFixed(0)} MiB\n`,
  );
  figures.push(figure({ name: `RSS (median) at the end of ${ctx.soakMinutes} min of steady load`, value: final.median / MiB, unit: "MiB", floor: baseline.median / MiB, floorName: "2nd tenth of the soak", target: { op: "<=", ratio: 1.1 } }));
  figures.push(figure({ name: "peak RSS (VmHWM) over the soak", value: peakSoak / MiB, unit: "MiB", floor: null }));
  for (const [name, r] of [["Track gRPC", g], ["Track Connect", c]] as const) {
    figures.push(figure({ name: `${name} p99 at ${name.endsWith("gRPC") ? RATES.trackGrpc : RATES.trackConnect}/s, over the soak`, value: r.p99, unit: "ms", floor: null }));
  }
  grpcClient.close();
  connect.close();
  await meterd.stop();

  // ---- 2. TrackStream against a slowed ledger ------------------------------------------------------
  const pgUrl = new URL(ctx.db.url);
  const proxy = await startSlowProxy({ host: pgUrl.hostname, port: Number(pgUrl.port || 5432) }, SLOW_DELAY_MS, SLOW_BYTES_PER_SECOND);
  ctx.cleanups.push({ what: "close the slow proxy", run: () => proxy.close() });
  const slow = await startMeterd({ databaseUrl: proxy.url(ctx.db.url), prefix: `${ctx.prefix}slow:`, name: "meterd-slow-ledger" });
  ctx.cleanups.push({ what: "stop meterd (slow ledger)", run: () => slow.stop() });
  const slowClient = new GrpcClient(`127.0.0.1:${slow.grpcPort}`);
  ctx.cleanups.push({ what: "close the slow client", run: async () => slowClient.close() });
  const slowSource = new EventSource(`${ctx.runId}s`, CUSTOMERS, "slow_c");
  const warmSlow = await slowClient.unary(MeteringService.method.trackBatch, create(TrackBatchRequestSchema, { events: slowSource.batch("warm", CUSTOMERS, CUSTOMERS) }));
  if (allowedIn(warmSlow.results).other > 0) throw new Error("slow-ledger warm-up: events not allowed");

  process.stdout.write(
    `\n[soak] TrackStream for ${ctx.slowSeconds} s against a slowed ledger (Postgres behind a proxy: +${SLOW_DELAY_MS} ms per chunk each way, ` +
      `${SLOW_BYTES_PER_SECOND / 1e6} MB/s towards Postgres), ${SLOW_STREAMS} streams that send whenever the stream accepts\n`,
  );
  const slowSamples: Array<{ t: number; rss: number; unacked: number; acked: number }> = [];
  const s0 = Date.now();
  const slowRun = await streamLoad({
    client: slowClient,
    source: slowSource,
    streams: SLOW_STREAMS,
    window: SLOW_STREAM_CAP,
    batch: 1000,
    perBatchCustomers: 100,
    warmupMs: 0,
    durationMs: ctx.slowSeconds * 1000,
    cancelAtEnd: true,
    sampleEveryMs: 2000,
    onSample(unacked, acked) {
      const mem = memoryOf(slow.pid);
      slowSamples.push({ t: Date.now(), rss: mem?.rss ?? NaN, unacked, acked });
      if (slowSamples.length % 10 === 0) {
        process.stdout.write(`  ${((Date.now() - s0) / 1000).toFixed(0)} s: RSS ${((mem?.rss ?? NaN) / MiB).toFixed(0)} MiB, ${unacked} requests unacknowledged, ${acked.toLocaleString("en-US")} events acknowledged\n`);
      }
    },
  });
  const slowPeak = memoryOf(slow.pid)?.hwm ?? NaN;
  const sEnd = slowSamples[slowSamples.length - 1]?.t ?? Date.now();
  const settle = s0 + 15_000;
  const mid = settle + (sEnd - settle) / 2;
  const firstHalf = rssIn(slowSamples, settle, mid);
  const secondHalf = rssIn(slowSamples, mid, Infinity);
  const maxUnacked = Math.max(...slowSamples.map((s) => s.unacked));
  const unackedFirst = Math.max(...slowSamples.filter((s) => s.t >= settle && s.t < mid).map((s) => s.unacked));
  const unackedSecond = Math.max(...slowSamples.filter((s) => s.t >= mid).map((s) => s.unacked));
  process.stdout.write(
    `  ${Math.round(slowRun.eventsPerSecond).toLocaleString("en-US")} events/s acknowledged; at most ${maxUnacked} requests (x 1,000 events) written and unacknowledged over ${SLOW_STREAMS} streams ` +
      `(the client's own cap: ${SLOW_STREAM_CAP} per stream); RSS median (max) ${(firstHalf.median / MiB).toFixed(0)} (${(firstHalf.max / MiB).toFixed(0)}) MiB in the first half -> ` +
      `${(secondHalf.median / MiB).toFixed(0)} (${(secondHalf.max / MiB).toFixed(0)}) MiB in the second, peak ${(slowPeak / MiB).toFixed(0)} MiB\n`,
  );
  figures.push(figure({ name: "TrackStream, slowed ledger: RSS (median), 2nd half vs 1st half", value: secondHalf.median / MiB, unit: "MiB", floor: firstHalf.median / MiB, floorName: "1st half", target: { op: "<=", ratio: 1.1 } }));
  figures.push(figure({ name: "TrackStream, slowed ledger: requests written, not acknowledged, 2nd half vs 1st half", value: unackedSecond, unit: "requests", floor: unackedFirst, floorName: "1st half" }));
  figures.push(figure({ name: "TrackStream, slowed ledger: acknowledged", value: slowRun.eventsPerSecond, unit: "events/s", floor: null }));
  slowClient.close();
  await slow.stop();
  await proxy.close();

  const table = textTable(figures);
  process.stdout.write(`\n${table}\n`);
  writeFileSync(
    path.join(ctx.resultsDir, "soak.json"),
    `${JSON.stringify({ runId: ctx.runId, date: new Date().toISOString(), machine: ctx.machine, rates: RATES, figures, steady: { samples, latencies: { trackGrpc: g, trackConnect: c, metrics: m, batch: b } }, slowLedger: { delayMs: SLOW_DELAY_MS, bytesPerSecond: SLOW_BYTES_PER_SECOND, streams: SLOW_STREAMS, samples: slowSamples, result: slowRun } }, null, 2)}\n`,
  );
  writeFileSync(path.join(ctx.resultsDir, "soak.md"), `${markdownTable(figures)}\n`);
  process.stdout.write("wrote bench/results/soak.json and soak.md\n");
}
