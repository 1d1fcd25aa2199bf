// The figures of a run, from its phase records: each beside the floor it is judged against, with issue 9's
// target. A figure whose phases did not run (--only) is left out; one whose phase or floor stayed
// disturbed is marked so.
import type { ClosedLoopResult, OpenLoopResult } from "./load.js";
import { DIAGNOSTIC_SPREAD, hasCold, phaseId, SPREADS } from "./phase-list.js";
import type { PhaseRecord } from "./phases.js";
import { figure, type Figure } from "./report.js";
import type { StreamLoadResult } from "./stream-load.js";

/** Issue 9's targets. */
export const TARGETS = {
  trackGrpcVsEcho: 0.65,
  trackConnectVsEcho: 0.8,
  /** meterd's CPU per Track over the echo server's CPU per call. */
  trackGrpcCpuVsEcho: 2,
  latencyP99VsFloor: 3,
  batchVsProtocolFloor: 0.8,
  batchVsTable: (customers: number) => (customers >= 1000 ? 0.2 : 0.25),
  batchCpuPerEventUs: 25,
  coldVsWarm: 1.5,
  /** The 1-customer batches are reported with their ratios; the targets are for these spreads. */
  spreadsWithTargets: [100, 1000] as readonly number[],
};

export interface FigureSettings {
  rate: number;
  inFlight: number;
  batch: number;
}

const n = (v: number) => v.toLocaleString("en-US");

export function buildFigures(records: Map<string, PhaseRecord>, settings: FigureSettings, peakRss: number | null): Figure[] {
  const out: Figure[] = [];
  const rec = (id: string) => records.get(id);
  const closed = (id: string) => rec(id)?.result as ClosedLoopResult | undefined;
  const open = (id: string) => rec(id)?.result as OpenLoopResult | undefined;
  const finite = (v: number | undefined | null) => (v === undefined || v === null || !Number.isFinite(v) ? null : v);
  /** A figure from these phases (its own, then its floor's): disturbed if any of them stayed disturbed. */
  const add = (ids: string[], f: Parameters<typeof figure>[0]) => {
    const disturbed = ids.some((id) => rec(id)?.disturbed === true);
    out.push(figure(disturbed ? { ...f, disturbed } : f));
  };
  /** Server CPU (µs) per call of a closed-loop phase. */
  const cpuPerCall = (id: string) => {
    const p = rec(id);
    const r = closed(id);
    return p && r && p.cpu.server !== null && r.calls > 0 ? p.cpu.server / r.calls : null;
  };

  // Unary Track against the bare echo servers, calls and CPU.
  const echoGrpc = closed("echo-grpc");
  const echoConnect = closed("echo-connect");
  const inFlight = `${settings.inFlight} in flight`;
  const tg = closed("track-grpc");
  if (tg) add(["track-grpc", "echo-grpc"], { name: `Track, gRPC, ${inFlight}`, value: tg.callsPerSecond, unit: "calls/s", floor: finite(echoGrpc?.callsPerSecond), floorName: "bare grpc-js echo", target: { op: ">=", ratio: TARGETS.trackGrpcVsEcho } });
  const echoGrpcCpu = cpuPerCall("echo-grpc");
  const tgCpu = cpuPerCall("track-grpc");
  if (tgCpu !== null) add(["track-grpc", "echo-grpc"], { name: "meterd CPU per Track, gRPC", value: tgCpu, unit: "µs/call", floor: echoGrpcCpu, floorName: "grpc-js echo", target: { op: "<=", ratio: TARGETS.trackGrpcCpuVsEcho } });
  // The durable echo: grpc-js plus meterd's storage work per Track, without its service code. Diagnostic
  // figures, without targets: what the storage protocol costs over a bare call, and what the service adds.
  const durable = closed("durable-grpc");
  const durableCpu = cpuPerCall("durable-grpc");
  if (tg && durable) add(["track-grpc", "durable-grpc"], { name: `Track, gRPC, ${inFlight}, vs durable echo`, value: tg.callsPerSecond, unit: "calls/s", floor: finite(durable.callsPerSecond), floorName: "durable grpc-js echo" });
  if (tgCpu !== null && durableCpu !== null) add(["track-grpc", "durable-grpc"], { name: "meterd CPU per Track, gRPC, vs durable echo", value: tgCpu, unit: "µs/call", floor: durableCpu, floorName: "durable grpc-js echo" });
  if (durable && echoGrpc) add(["durable-grpc", "echo-grpc"], { name: `floor: durable grpc-js echo, ${inFlight}`, value: durable.callsPerSecond, unit: "calls/s", floor: finite(echoGrpc.callsPerSecond), floorName: "bare grpc-js echo" });
  if (durableCpu !== null && echoGrpcCpu !== null) add(["durable-grpc", "echo-grpc"], { name: "floor: durable grpc-js echo, CPU per call", value: durableCpu, unit: "µs/call", floor: echoGrpcCpu, floorName: "grpc-js echo" });
  const tc = closed("track-connect");
  if (tc) add(["track-connect", "echo-connect"], { name: `Track, Connect, ${inFlight}`, value: tc.callsPerSecond, unit: "calls/s", floor: finite(echoConnect?.callsPerSecond), floorName: "bare connect-node echo", target: { op: ">=", ratio: TARGETS.trackConnectVsEcho } });
  const echoConnectCpu = cpuPerCall("echo-connect");
  const tcCpu = cpuPerCall("track-connect");
  if (tcCpu !== null) add(["track-connect", "echo-connect"], { name: "meterd CPU per Track, Connect", value: tcCpu, unit: "µs/call", floor: echoConnectCpu, floorName: "connect-node echo" });
  // The same for Connect: connect-node plus the storage work per Track.
  const durableConnect = closed("durable-connect");
  const durableConnectCpu = cpuPerCall("durable-connect");
  if (tc && durableConnect) add(["track-connect", "durable-connect"], { name: `Track, Connect, ${inFlight}, vs durable echo`, value: tc.callsPerSecond, unit: "calls/s", floor: finite(durableConnect.callsPerSecond), floorName: "durable connect-node echo" });
  if (tcCpu !== null && durableConnectCpu !== null) add(["track-connect", "durable-connect"], { name: "meterd CPU per Track, Connect, vs durable echo", value: tcCpu, unit: "µs/call", floor: durableConnectCpu, floorName: "durable connect-node echo" });
  if (durableConnect && echoConnect) add(["durable-connect", "echo-connect"], { name: `floor: durable connect-node echo, ${inFlight}`, value: durableConnect.callsPerSecond, unit: "calls/s", floor: finite(echoConnect.callsPerSecond), floorName: "bare connect-node echo" });
  if (durableConnectCpu !== null && echoConnectCpu !== null) add(["durable-connect", "echo-connect"], { name: "floor: durable connect-node echo, CPU per call", value: durableConnectCpu, unit: "µs/call", floor: echoConnectCpu, floorName: "connect-node echo" });

  // Latency at a fixed offered rate, against the Lua apply + group-committed insert.
  const raw = open("raw-latency");
  const rate = `${n(settings.rate)}/s`;
  const floorName = "Lua apply + group commit";
  for (const [id, label] of [["latency-grpc", "gRPC"], ["latency-connect", "Connect"]] as const) {
    const r = open(id);
    if (!r) continue;
    const note = `${n(Math.round(r.achievedRate))}/s answered`;
    add([id, "raw-latency"], { name: `Track p50, ${label}, ${rate}`, value: r.p50, unit: "ms", floor: finite(raw?.p50), floorName, note });
    add([id, "raw-latency"], { name: `Track p99, ${label}, ${rate}`, value: r.p99, unit: "ms", floor: finite(raw?.p99), floorName, target: { op: "<=", ratio: TARGETS.latencyP99VsFloor }, note });
  }

  // Ingestion, per spread of customers in a batch: against the protocol floor and the bare table, and CPU.
  const events = `${n(settings.batch)} events`;
  for (const k of SPREADS) {
    const targets = TARGETS.spreadsWithTargets.includes(k);
    const over = `${events} over ${n(k)} customer${k === 1 ? "" : "s"}`;
    const protocolId = phaseId.protocolFloor(k);
    const tableId = phaseId.tableFloor(k);
    const protocol = closed(protocolId);
    const table = closed(tableId);
    // The protocol floor runs in the harness: its Node CPU per event is what meterd's CPU is set beside.
    const protocolRec = rec(protocolId);
    const floorCpu = protocol && protocolRec && protocol.units > 0 ? protocolRec.cpu.harness / protocol.units : null;
    const batch = closed(phaseId.batch(k));
    const stream = rec(phaseId.stream(k))?.result as StreamLoadResult | undefined;
    // [phase, what, events/s, events counted in the measured window]
    const ingestion: Array<[string, string, number, number]> = [];
    if (batch) ingestion.push([phaseId.batch(k), "TrackBatch", batch.unitsPerSecond, batch.units]);
    if (stream) ingestion.push([phaseId.stream(k), "TrackStream", stream.eventsPerSecond, stream.events]);
    for (const [id, what, perSecond, counted] of ingestion) {
      const p = rec(id)!;
      const name = `${what}, ${over}`;
      add([id, protocolId], { name: `${name}, vs protocol floor`, value: perSecond, unit: "events/s", floor: finite(protocol?.unitsPerSecond), floorName: "protocol floor", ...(targets ? { target: { op: ">=", ratio: TARGETS.batchVsProtocolFloor } } : {}) });
      add([id, tableId], { name: `${name}, vs bare table`, value: perSecond, unit: "events/s", floor: finite(table?.unitsPerSecond), floorName: "bare-table floor", ...(targets ? { target: { op: ">=", ratio: TARGETS.batchVsTable(k) } } : {}) });
      if (p.cpu.server !== null && counted > 0) {
        add([id, protocolId], { name: `meterd CPU per event, ${name}`, value: p.cpu.server / counted, unit: "µs/event", floor: floorCpu, floorName: "protocol floor's Node CPU", ...(targets ? { target: { op: "<=", value: TARGETS.batchCpuPerEventUs } } : {}) });
      }
    }
    if (hasCold(k)) {
      // The mean time from sending a batch to its answer, with the same batches in flight warm and cold.
      const cold = closed(phaseId.cold(k));
      const warm = closed(phaseId.batch(k));
      if (cold) add([phaseId.cold(k), phaseId.batch(k)], { name: `TrackBatch cold / warm, time per batch, ${over}`, value: cold.meanCallMs, unit: "ms/batch", floor: finite(warm?.meanCallMs), floorName: "same batch, warm", target: { op: "<=", ratio: TARGETS.coldVsWarm } });
    }
  }

  const qu = closed("query-usage");
  if (qu) add(["query-usage"], { name: "QueryUsage, gRPC, a year of daily buckets", value: qu.callsPerSecond, unit: "calls/s", floor: null });
  const le = closed("list-events");
  if (le) add(["list-events"], { name: "ListEvents, gRPC, pages of 1,000 events", value: le.callsPerSecond, unit: "pages/s", floor: null });
  const m = closed("metrics");
  if (m) add(["metrics", "echo-grpc"], { name: `GetMetrics, gRPC, ${inFlight}`, value: m.callsPerSecond, unit: "calls/s", floor: finite(echoGrpc?.callsPerSecond), floorName: "bare grpc-js echo" });
  if (peakRss !== null) out.push(figure({ name: "meterd peak RSS (VmHWM), whole run", value: peakRss / 2 ** 20, unit: "MiB", floor: null }));
  if (echoConnectCpu !== null) add(["echo-connect", "echo-grpc"], { name: "server CPU per unary call: connect-node vs grpc-js echo", value: echoConnectCpu, unit: "µs/call", floor: echoGrpcCpu, floorName: "grpc-js echo" });

  // The floors themselves, so that latest.json tracks them too.
  if (echoGrpc) add(["echo-grpc"], { name: `floor: bare grpc-js echo, ${inFlight}`, value: echoGrpc.callsPerSecond, unit: "calls/s", floor: null });
  if (echoConnect) add(["echo-connect"], { name: `floor: bare connect-node echo, ${inFlight}`, value: echoConnect.callsPerSecond, unit: "calls/s", floor: null });
  if (raw) {
    const note = `${n(Math.round(raw.achievedRate))}/s answered`;
    add(["raw-latency"], { name: `floor: ${floorName} p50, ${rate}`, value: raw.p50, unit: "ms", floor: null, note });
    add(["raw-latency"], { name: `floor: ${floorName} p99, ${rate}`, value: raw.p99, unit: "ms", floor: null, note });
  }
  for (const k of SPREADS) {
    const over = `${events} over ${n(k)} customer${k === 1 ? "" : "s"}`;
    const protocol = closed(phaseId.protocolFloor(k));
    const table = closed(phaseId.tableFloor(k));
    // The protocol floor beside the bare table: how much of Postgres's pace meterd's protocol leaves.
    if (protocol) add([phaseId.protocolFloor(k), phaseId.tableFloor(k)], { name: `floor: protocol floor, ${over}`, value: protocol.unitsPerSecond, unit: "events/s", floor: finite(table?.unitsPerSecond), floorName: "bare-table floor" });
    if (table) add([phaseId.tableFloor(k)], { name: `floor: bare table, unnest, ${over}`, value: table.unitsPerSecond, unit: "events/s", floor: null });
  }
  const spread = `${events} over ${n(DIAGNOSTIC_SPREAD)} customers`;
  const lua = closed("redis-lua");
  if (lua) add(["redis-lua"], { name: `floor: RedisFastPath.applyMany alone, ${spread}`, value: lua.unitsPerSecond, unit: "events/s", floor: null });
  const pgRows = closed("pg-insert");
  if (pgRows) add(["pg-insert"], { name: `floor: pg unnest into meterd's two ledger tables, ${spread}`, value: pgRows.unitsPerSecond, unit: "events/s", floor: null });
  return out;
}
