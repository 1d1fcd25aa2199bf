// The Redis part of meterd's batch work, without meterd: its batch apply (RedisFastPath.applyMany, meterd's
// own scripts and key layout), on warm customers. Nothing is committed or settled: this is the first step
// of the protocol floor alone, shown to tell what Redis takes from what Postgres takes.
import { closedLoop, type ClosedLoopResult, type Timing } from "../lib/load.js";
import { openFastPath, warmFloorCustomers } from "./adapters.js";
import { batchEvents } from "./customers.js";
import { appliedOnly, floorBatch } from "./protocol-events.js";

/** Batches of `batch` events over `perBatchCustomers` customers, `concurrency` in flight. Units: events applied. */
export async function redisFloor(
  options: Timing & { redisUrl: string; prefix: string; runId: string; customers: number; batch: number; perBatchCustomers: number; concurrency: number },
): Promise<ClosedLoopResult> {
  const { fastPath, close } = await openFastPath(options.redisUrl, options.prefix);
  try {
    await warmFloorCustomers(fastPath, options.customers);
    let batches = 0;
    return await closedLoop({ ...options }, async () => {
      const batch = floorBatch(batchEvents(options.runId, batches++, options.batch, options.perBatchCustomers, options.customers));
      return appliedOnly(await fastPath.applyMany(batch.reqs)).length;
    });
  } finally {
    close();
  }
}
