// Who the floors' events belong to. Floor customers are floor_c00000...; their Redis keys live under a
// prefix of their own, and the durability check ignores them. A batch spreads its events over
// `perBatchCustomers` consecutive customers, round-robin, as EventSource.batch does for meterd's batches.

export const floorCustomer = (i: number) => `floor_c${String(i).padStart(5, "0")}`;

let keySeq = 0;
/** A fresh idempotency key, unique in the run. */
export const floorKey = (runId: string) => `${runId}-floor-${keySeq++}`;

/** The customer and a fresh key of each event of batch number `batchNo`. */
export function batchEvents(
  runId: string,
  batchNo: number,
  size: number,
  perBatchCustomers: number,
  customers: number,
): Array<{ customerId: string; idempotencyKey: string }> {
  const first = batchNo * perBatchCustomers;
  const out = new Array<{ customerId: string; idempotencyKey: string }>(size);
  for (let i = 0; i < size; i++) out[i] = { customerId: floorCustomer((first + (i % perBatchCustomers)) % customers), idempotencyKey: floorKey(runId) };
  return out;
}
