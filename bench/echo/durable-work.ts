// The storage work of one Track, for the durable echo floors (durable-echo.ts over grpc-js,
// durable-connect-echo.ts over connect-node): through meterd's own adapters and nothing else, the Lua
// apply (RedisFastPath.apply, which coalesces concurrent calls into one script call), the ledger insert
// (SqlLedger.append, group-committed with the other calls in flight), the answer, then the settle, sent
// after the answer and shared by the events committed within SETTLE_DELAY_MS, as meterd sends it. No
// metering rules, no validation, no authentication, no usage block worked out.
//
// Environment: METERD_BENCH_REDIS_URL, METERD_BENCH_REDIS_PREFIX and METERD_BENCH_DATABASE_URL (a
// database meterd has migrated). Its events are written for customers named "durable_<customer>", so
// that the bench's durability check, which counts meterd's own rows, does not count them.
import type { SettleItem } from "../../src/fastpath/fastpath.js";
import type { TrackRequest, TrackResponse } from "../../gen/meterd/v1/metering_pb.js";
import { openFastPath, openSqlLedger } from "../floors/adapters.js";
import { appliedOnly, floorBatch, ledgerEvents, settleItems, warmCustomer } from "../floors/protocol-events.js";
import { echoResponse } from "./response.js";

/** As src/metering/meter.ts: committed events wait this long (or until this many wait) to share a settle. */
const SETTLE_DELAY_MS = 5;
const SETTLE_BATCH = 1000;

function required(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === "") throw new Error(`durable echo: ${name} is not set`);
  return value;
}

const { fastPath, close } = await openFastPath(required("METERD_BENCH_REDIS_URL"), required("METERD_BENCH_REDIS_PREFIX"));
const ledger = await openSqlLedger(required("METERD_BENCH_DATABASE_URL"));

/** Customers made live with their counter loaded, as meterd does on a customer's first event. */
const warm = new Map<string, Promise<void>>();
function warmed(customerId: string): Promise<void> {
  let done = warm.get(customerId);
  if (done === undefined) warm.set(customerId, (done = warmCustomer(fastPath, customerId)));
  return done;
}

let settleQueue: SettleItem[] = [];
let settleTimer: NodeJS.Timeout | null = null;
function settleLater(items: SettleItem[]): void {
  settleQueue.push(...items);
  if (settleQueue.length >= SETTLE_BATCH) void flushSettles();
  else settleTimer ??= setTimeout(() => void flushSettles(), SETTLE_DELAY_MS);
}
function flushSettles(): Promise<void> {
  if (settleTimer !== null) clearTimeout(settleTimer);
  settleTimer = null;
  const items = settleQueue;
  settleQueue = [];
  if (items.length === 0) return Promise.resolve();
  return fastPath.settleMany(items).catch((error: unknown) => {
    process.stderr.write(`durable echo: settle failed: ${String(error)}\n`);
    process.exit(1);
  });
}

/** One Track's storage work, then the echo's answer. */
export async function durableTrack(req: TrackRequest): Promise<TrackResponse> {
  const customerId = `durable_${req.customerId}`;
  await warmed(customerId);
  const batch = floorBatch([{ customerId, idempotencyKey: req.idempotencyKey }]);
  const applied = appliedOnly([await fastPath.apply(batch.reqs[0]!)]);
  const [outcome] = await ledger.append(ledgerEvents(batch, applied));
  if (!outcome?.inserted) throw new Error("durable echo: the event was already in the ledger");
  settleLater(settleItems(batch, applied));
  return echoResponse(req);
}

/** Settles what is queued, then closes the ledger and the Redis client. */
export async function closeDurable(): Promise<void> {
  await flushSettles();
  await ledger.close();
  close();
}
