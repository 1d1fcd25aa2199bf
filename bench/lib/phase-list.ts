// The phases of a default run, in the order they run, with the ids that --only takes.

/** Distinct customers per batch of 1,000 events: issue 9 asks for each figure at 1, 100 and 1,000. */
export const SPREADS = [1, 100, 1000] as const;
/** Spreads that also get a batch of customers meterd has never seen (cold), beside the same batch warm. */
export const COLD_SPREADS = [100, 1000] as const;
/** The spread of the Redis-only and pg-only diagnostic floors. */
export const DIAGNOSTIC_SPREAD = 100;

export const phaseId = {
  protocolFloor: (k: number) => `protocol-floor-${k}`,
  tableFloor: (k: number) => `table-floor-${k}`,
  batch: (k: number) => `batch-${k}`,
  cold: (k: number) => `batch-cold-${k}`,
  stream: (k: number) => `stream-${k}`,
};

/** Whether the spread has a cold phase too. */
export const hasCold = (k: number) => (COLD_SPREADS as readonly number[]).includes(k);
const spreadIds = (k: number) => [phaseId.protocolFloor(k), phaseId.tableFloor(k), phaseId.batch(k), ...(hasCold(k) ? [phaseId.cold(k)] : []), phaseId.stream(k)];

/** For --help: the ids, grouped. */
export const PHASE_HELP = `Phases, in run order (--only also takes a family without its count: batch = ${SPREADS.map(phaseId.batch).join(",")}):
  unary       echo-grpc track-grpc durable-grpc echo-connect track-connect durable-connect
  latency     raw-latency latency-grpc latency-connect
  reads       metrics (GetMetrics); at the end, after ingestion: query-usage (QueryUsage, a year of days) list-events (ListEvents, pages of 1,000)
  diagnostic  redis-lua pg-insert  (the protocol floor's Redis part alone, and its rows into the ledger tables with plain pg; ${DIAGNOSTIC_SPREAD} customers)
  ingestion   1,000 events per call or batch, over N customers:
${SPREADS.map((k) => `              ${spreadIds(k).join(" ")}`).join("\n")}`;

/** Every phase id, in run order. */
export const PHASE_IDS: string[] = [
  "echo-grpc",
  "track-grpc",
  "durable-grpc",
  "echo-connect",
  "track-connect",
  "durable-connect",
  "raw-latency",
  "latency-grpc",
  "latency-connect",
  "metrics",
  "redis-lua",
  "pg-insert",
  ...SPREADS.flatMap(spreadIds),
  "query-usage",
  "list-events",
];

/** --only's list as phase ids: each entry an id, or a family (batch, stream, ...) meaning all its spreads. */
export function expandOnly(list: string): Set<string> {
  const out = new Set<string>();
  for (const entry of list.split(",").map((s) => s.trim()).filter((s) => s !== "")) {
    const matches = PHASE_IDS.filter((id) => id === entry || new RegExp(`^${entry.replace(/[^a-z-]/g, "")}-\\d+$`).test(id));
    if (matches.length === 0) throw new Error(`--only: no phase "${entry}" (see --help)`);
    for (const id of matches) out.add(id);
  }
  return out;
}
