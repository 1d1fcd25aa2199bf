// QueryUsage's statements: the boundaries of calendar buckets (worked out by Postgres, which knows every
// time zone's rules), and the exact sum of amounts per feature, bucket and group of property values.
//
// Events are put in their bucket by width_bucket over the boundaries, so the buckets need not be of one
// size (months, days across a daylight-saving change, a customer's billing periods). The conditions are
// plain comparisons on customer_id, feature_key and occurred_at: Postgres prunes the months outside the
// range and reads one customer's rows through meterd_events_usage (customer_id, feature_key,
// occurred_at); a filter or a grouping on properties reads those rows' properties, and no other's.

export type CalendarUnit = "hour" | "day" | "month";

/** What to sum: boundaries [b0, b1, ..., bn] make n buckets [b(i-1), b(i)). */
export interface UsageQuery {
  /** null: every customer. */
  customerId: string | null;
  featureKeys: readonly string[];
  bounds: readonly Date[];
  groupBy: readonly string[];
  /** Each property must have one of its values. */
  filter: ReadonlyArray<readonly [string, readonly string[]]>;
}

/** One non-empty bucket of one feature and group: `bucket` is 1-based, as width_bucket counts. */
export interface UsageRow {
  featureKey: string;
  bucket: number;
  group: string[];
  /** Exact decimal sum. */
  value: string;
}

/**
 * The calendar boundaries strictly inside (from, to), in the time zone, as Postgres works them out; at
 * most `limit` + 2 of them, enough to tell that a range makes more than `limit` buckets.
 */
export function calendarBoundsStatement(unit: CalendarUnit, timeZone: string, from: Date, to: Date, limit: number): { text: string; values: unknown[] } {
  const step = { hour: "1 hour", day: "1 day", month: "1 month" }[unit];
  // Local times, one unit apart, from the unit that holds `from`; back to instants in the zone. The series
  // stops after limit + 2 units whatever the range, so that a range of a century of hours costs no more.
  const text = `SELECT (g AT TIME ZONE $1) AS b
    FROM generate_series(
      date_trunc('${unit}', $2::timestamptz AT TIME ZONE $1),
      least($3::timestamptz AT TIME ZONE $1, date_trunc('${unit}', $2::timestamptz AT TIME ZONE $1) + $4::int * interval '${step}'),
      interval '${step}') g
    WHERE (g AT TIME ZONE $1) > $2::timestamptz AND (g AT TIME ZONE $1) < $3::timestamptz
    ORDER BY 1 LIMIT $4`;
  return { text, values: [timeZone, from, to, limit + 2] };
}

export function usageStatement(q: UsageQuery): { text: string; values: unknown[] } {
  const values: unknown[] = [];
  const param = (value: unknown): string => `$${values.push(value)}`;
  const first = q.bounds[0]!;
  const last = q.bounds[q.bounds.length - 1]!;
  const where = [`e.feature_key = ANY(${param([...q.featureKeys])}::text[])`, `e.occurred_at >= ${param(first)}::timestamptz`, `e.occurred_at < ${param(last)}::timestamptz`];
  if (q.customerId !== null) where.unshift(`e.customer_id = ${param(q.customerId)}`);
  for (const [key, allowed] of q.filter) where.push(`e.properties ->> ${param(key)} = ANY(${param([...allowed])}::text[])`);
  const groups = q.groupBy.map((key) => `coalesce(e.properties ->> ${param(key)}, '')`);
  const bucket = `width_bucket(e.occurred_at, ${param([...q.bounds])}::timestamptz[])`;
  const groupColumns = groups.map((g, i) => `, ${g} AS g${i}`).join("");
  const text = `SELECT e.feature_key, ${bucket} AS bucket${groupColumns}, trim_scale(sum(e.amount))::text AS value
    FROM meterd_events e WHERE ${where.join(" AND ")}
    GROUP BY e.feature_key, bucket${groups.map((_, i) => `, g${i}`).join("")}
    ORDER BY e.feature_key, ${groups.map((_, i) => `g${i}, `).join("")}bucket`;
  return { text, values };
}
