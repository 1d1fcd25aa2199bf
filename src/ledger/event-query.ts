// The events behind a number (ListEvents): one customer's ledger rows, filtered and ordered by
// (occurred_at, seq), a page at a time. Pages are cut by keyset, not OFFSET: a position is the last
// row's (occurred_at, seq), so a page costs the same however deep it is, and a position stays valid
// while rows are added (a row added before it, say a backdated event, is simply not on later pages).
//
// Only the filters given become SQL conditions, each a plain comparison on a column, so that Postgres
// prunes the months outside the range and walks meterd_events_usage (customer_id, feature_key,
// occurred_at) when one feature is named; otherwise it reads the customer's rows in the range, and no
// other customer's.
import type { EventKind } from "./ledger.js";

/** Where a page ended: the last row's occurred_at in microseconds since the epoch, and its seq. */
export interface EventPosition {
  occurredAtMicros: string;
  seq: string;
}

export interface EventQuery {
  customerId: string;
  /** Events of these features only (a top-up has none); null: every event. */
  featureKeys: readonly string[] | null;
  /** occurred_at >= from; null: unbounded. */
  from: Date | null;
  /** occurred_at < to; null: unbounded. */
  to: Date | null;
  /** Empty: every kind. */
  kinds: readonly EventKind[];
  idempotencyKey: string | null;
  newestFirst: boolean;
  /** The rows after this position in the chosen order; null: from the first. */
  after: EventPosition | null;
  limit: number;
}

/** The statement of a page: one more row than asked, which tells whether another page follows. */
export function eventPageStatement(columns: string, q: EventQuery): { text: string; values: unknown[] } {
  const values: unknown[] = [q.customerId];
  const param = (value: unknown): string => `$${values.push(value)}`;
  const where = ["e.customer_id = $1"];
  if (q.featureKeys !== null && q.featureKeys.length === 1) where.push(`e.feature_key = ${param(q.featureKeys[0])}`);
  else if (q.featureKeys !== null) where.push(`e.feature_key = ANY(${param([...q.featureKeys])}::text[])`);
  if (q.from !== null) where.push(`e.occurred_at >= ${param(q.from)}::timestamptz`);
  if (q.to !== null) where.push(`e.occurred_at < ${param(q.to)}::timestamptz`);
  if (q.kinds.length > 0) where.push(`e.kind = ANY(${param([...q.kinds])}::text[])`);
  if (q.idempotencyKey !== null) where.push(`e.idempotency_key = ${param(q.idempotencyKey)}`);
  if (q.after !== null) {
    const at = `(timestamptz 'epoch' + ${param(q.after.occurredAtMicros)}::bigint * interval '1 microsecond')`;
    const seq = `${param(q.after.seq)}::bigint`;
    // The row comparison orders the page; the plain one on occurred_at lets Postgres prune months.
    where.push(q.newestFirst ? `e.occurred_at <= ${at} AND (e.occurred_at, e.seq) < (${at}, ${seq})` : `e.occurred_at >= ${at} AND (e.occurred_at, e.seq) > (${at}, ${seq})`);
  }
  const direction = q.newestFirst ? "DESC" : "ASC";
  const text = `SELECT ${columns}, e.seq::text AS seq, (extract(epoch FROM e.occurred_at) * 1000000)::bigint::text AS occurred_us
    FROM meterd_events e WHERE ${where.join(" AND ")}
    ORDER BY e.occurred_at ${direction}, e.seq ${direction} LIMIT ${param(q.limit + 1)}`;
  return { text, values };
}
