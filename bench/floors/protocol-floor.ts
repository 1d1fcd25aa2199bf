// The protocol floor (issue 9): a bare script that does exactly the Redis and Postgres work meterd does
// for a batch of events, with no RPC and no Meter or service code. Per batch: the fast path's batch apply
// (RedisFastPath.applyMany), the ledger insert (SqlLedger.append, group-committed with the other batches in
// flight), then the settle (settleMany), with the same batch size, customer spread and calls in flight as
// meterd's TrackBatch phase. It calls meterd's own adapters, so it follows their changes; what it hands
// them is built in protocol-events.ts.
import { closedLoop, type ClosedLoopResult, type Timing } from "../lib/load.js";
import { openFastPath, openSqlLedger, warmFloorCustomers } from "./adapters.js";
import { batchEvents } from "./customers.js";
import { appliedOnly, floorBatch, ledgerEvents, settleItems } from "./protocol-events.js";

/** Units: events committed and settled. */
export async function protocolFloor(
  options: Timing & {
    redisUrl: string;
    prefix: string;
    databaseUrl: string;
    runId: string;
    customers: number;
    batch: number;
    perBatchCustomers: number;
    concurrency: number;
  },
): Promise<ClosedLoopResult> {
  const { fastPath, close } = await openFastPath(options.redisUrl, options.prefix);
  const ledger = await openSqlLedger(options.databaseUrl).catch((error: unknown) => {
    close();
    throw error;
  });
  try {
    await warmFloorCustomers(fastPath, options.customers);
    let batches = 0;
    return await closedLoop({ ...options }, async () => {
      const batch = floorBatch(batchEvents(options.runId, batches++, options.batch, options.perBatchCustomers, options.customers));
      const applied = appliedOnly(await fastPath.applyMany(batch.reqs));
      const outcomes = await ledger.append(ledgerEvents(batch, applied));
      const repeated = outcomes.filter((o) => !o.inserted).length;
      if (repeated > 0) throw new Error(`protocol floor: ${repeated} events already in the ledger`);
      await fastPath.settleMany(settleItems(batch, applied));
      return outcomes.length;
    });
  } finally {
    await ledger.close();
    close();
  }
}
