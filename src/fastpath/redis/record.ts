// An idempotency record as the scripts store it (see record.lua): one tab-separated string.
import type { StaleEvent } from "../fastpath.js";

export type ParsedRecord =
  | { state: "pending"; fingerprint: string; eventId: string; delta: number; walletDelta: number; row: string }
  | { state: "settled"; fingerprint: string; eventId: string; result: string };

export function parseRecord(value: string): ParsedRecord | null {
  const parts = splitTabs(value, 3);
  if (parts === null) return null;
  const [state, fingerprint = "", eventId = "", rest = ""] = parts;
  if (state === "S") {
    const settled = splitTabs(rest, 3);
    return settled === null ? null : { state: "settled", fingerprint, eventId, result: settled[3] ?? "" };
  }
  if (state !== "P") return null;
  // before, after, delta, walletAfter, walletDelta, counter key, row
  const pending = splitTabs(rest, 6);
  if (pending === null) return null;
  return { state: "pending", fingerprint, eventId, delta: int(pending[2]!), walletDelta: int(pending[4]!), row: pending[6] ?? "" };
}

/** The stale-event view of a pending record. */
export function staleEventOf(customerId: string, dedupeKey: string, record: ParsedRecord | null): StaleEvent | null {
  if (record === null || record.state !== "pending") return null;
  return { customerId, dedupeKey, eventId: record.eventId, delta: record.delta, walletDelta: record.walletDelta, record: record.row };
}

/** The first `n` tab-separated fields and the rest (which may hold tabs), or null if there are fewer. */
function splitTabs(value: string, n: number): string[] | null {
  const out: string[] = [];
  let from = 0;
  for (let i = 0; i < n; i++) {
    const tab = value.indexOf("\t", from);
    if (tab < 0) return null;
    out.push(value.slice(from, tab));
    from = tab + 1;
  }
  out.push(value.slice(from));
  return out;
}

function int(text: string): number {
  const value = Number(text);
  if (!Number.isInteger(value)) throw new Error(`expected an integer in a Redis record, got ${JSON.stringify(text)}`);
  return value;
}
