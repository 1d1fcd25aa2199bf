// The durable echo floor: the bare grpc-js echo server (grpc-echo.ts), whose Track handler also does the
// storage work meterd does for one Track, through meterd's own adapters and nothing else: the Lua apply
// (RedisFastPath.apply, which coalesces concurrent calls into one script call), the ledger insert
// (SqlLedger.append, group-committed with the other calls in flight), the answer, then the settle, sent
// after the answer and shared by the events committed within SETTLE_DELAY_MS, as meterd sends it. No
// metering rules, no validation, no authentication, no usage block worked out: what is left between it
// and meterd's Track is meterd's service code. Run as its own process, so that its CPU and RSS are its
// own. Prints "port <n>".
//
// Environment: METERD_BENCH_REDIS_URL, METERD_BENCH_REDIS_PREFIX and METERD_BENCH_DATABASE_URL (a
// database meterd has migrated). Its events are written for customers named "durable_<customer>", so
// that the bench's durability check, which counts meterd's own rows, does not count them.
import * as grpc from "@grpc/grpc-js";
import type { SettleItem } from "../../src/fastpath/fastpath.js";
import { MeteringService, type TrackRequest, type TrackResponse } from "../../gen/meterd/v1/metering_pb.js";
import { methodDefinition } from "../../src/rpc/grpc/definitions.js";
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

async function track(req: TrackRequest): Promise<TrackResponse> {
  const customerId = `durable_${req.customerId}`;
  await warmed(customerId);
  const batch = floorBatch([{ customerId, idempotencyKey: req.idempotencyKey }]);
  const applied = appliedOnly([await fastPath.apply(batch.reqs[0]!)]);
  const [outcome] = await ledger.append(ledgerEvents(batch, applied));
  if (!outcome?.inserted) throw new Error("durable echo: the event was already in the ledger");
  settleLater(settleItems(batch, applied));
  return echoResponse(req);
}

const method = MeteringService.method.track;
const server = new grpc.Server({ "grpc.max_receive_message_length": 4 * 1024 * 1024 });
server.addService(
  {
    track: methodDefinition(MeteringService, method),
  } as grpc.ServiceDefinition,
  {
    track: (call: grpc.ServerUnaryCall<TrackRequest, TrackResponse>, callback: grpc.sendUnaryData<TrackResponse>) => {
      track(call.request).then(
        (response) => callback(null, response),
        (error: unknown) => callback({ code: grpc.status.INTERNAL, details: String(error) }),
      );
    },
  },
);
server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, port) => {
  if (error) throw error;
  process.stdout.write(`port ${port}\n`);
});
process.on("SIGTERM", () =>
  server.tryShutdown(() => {
    void flushSettles()
      .then(() => ledger.close())
      .then(() => close())
      .finally(() => process.exit(0));
  }),
);
