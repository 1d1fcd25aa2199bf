// The protocol floor (issue 9): a bare script that does exactly the Redis and Postgres work meterd does
// for a batch of events, with no RPC and no Meter or service code. Per batch: the fast path's batch apply
// (RedisFastPath.applyMany), the ledger insert (SqlLedger.append, group-committed with the other batches in
// flight), then the settle (settleMany), with the same batch size, customer spread and batches in flight
// as meterd's TrackBatch phase. It calls meterd's own adapters, so it follows their changes; what it hands
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
    // meterd answers a batch once it is committed and settles it after the answer, as this does: the
    // settles are still sent, on the same connection as the next batches' applies, but no batch waits
    // for its own.
    const settles = new Set<Promise<void>>();
    let settleError: unknown = null;
    const result = await closedLoop({ ...options }, async () => {
      if (settleError !== null) throw settleError;
      const batch = floorBatch(batchEvents(options.runId, batches++, options.batch, options.perBatchCustomers, options.customers));
      const applied = appliedOnly(await fastPath.applyMany(batch.reqs));
      const outcomes = await ledger.append(ledgerEvents(batch, applied));
      const repeated = outcomes.filter((o) => !o.inserted).length;
      if (repeated > 0) throw new Error(`protocol floor: ${repeated} events already in the ledger`);
      const settle = fastPath.settleMany(settleItems(batch, applied)).catch((error: unknown) => void (settleError ??= error));
      settles.add(settle);
      void settle.finally(() => settles.delete(settle));
      return outcomes.length;
    });
    await Promise.all(settles);
    return result;
  } finally {
    await ledger.close();
    close();
  }
}
