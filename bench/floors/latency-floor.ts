// The latency floor behind one Track (issue 9): a bare script doing meterd's own Lua apply for one event
// (RedisFastPath.apply), then that event's ledger insert through SqlLedger, whose group commit makes
// concurrent calls share one transaction and one INSERT, as meterd batches them. Both at the same offered
// rate as meterd's latency phases, on warm customers. The settle is left out: meterd may answer before it.
// Latency is measured from each call's scheduled send time.
import { openLoop, type OpenLoopResult, type Timing } from "../lib/load.js";
import { openFastPath, openSqlLedger, warmFloorCustomers } from "./adapters.js";
import { floorCustomer, floorKey } from "./customers.js";
import { appliedOnly, floorBatch, ledgerEvents } from "./protocol-events.js";

export async function latencyFloor(
  options: Timing & { maxInFlight: number; redisUrl: string; prefix: string; databaseUrl: string; runId: string; customers: number; rate: number },
): Promise<OpenLoopResult> {
  const { fastPath, close } = await openFastPath(options.redisUrl, options.prefix);
  const ledger = await openSqlLedger(options.databaseUrl).catch((error: unknown) => {
    close();
    throw error;
  });
  try {
    await warmFloorCustomers(fastPath, options.customers);
    return await openLoop({ ...options }, async (i) => {
      const batch = floorBatch([{ customerId: floorCustomer(i % options.customers), idempotencyKey: floorKey(options.runId) }]);
      const applied = appliedOnly([await fastPath.apply(batch.reqs[0]!)]);
      const [outcome] = await ledger.append(ledgerEvents(batch, applied));
      if (!outcome?.inserted) throw new Error("latency floor: the event was already in the ledger");
    });
  } finally {
    await ledger.close();
    close();
  }
}
