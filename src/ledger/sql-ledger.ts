// The ledger over SQL (pg or PGlite), with group commit: concurrent append() calls share one
// transaction and one multi-row INSERT, and each caller is answered only after that COMMIT.
//
// Decimal format. amount and credits go in as exact decimal strings matching DECIMAL (an optional
// "-", digits, optionally "." and digits; no exponent, no "+") and come out canonical: no trailing
// fractional zeros, no lone ".", no leading zeros, zero as "0". So "1.000000" reads back as "1" and
// "-0.50" as "-0.5". Sums use the same format and are exact (Postgres NUMERIC, never a float).
import {
  type AppendOutcome,
  type EventKind,
  type Ledger,
  type LedgerEvent,
  NotWrittenError,
  type StoredEvent,
  type UsageSumQuery,
} from "./ledger.js";
import { isPermanentLedgerRefusal } from "./refusal.js";
import type { SqlClient, SqlExecutor } from "./sql.js";

/** Accepted input for amount and credits. */
export const DECIMAL = /^-?\d{1,100}(\.\d{1,100})?$/;

const KINDS: ReadonlySet<EventKind> = new Set(["track", "set", "adjustment", "topup"]);
const MIN_TIME = Date.parse("0001-01-01T00:00:00Z");
const MAX_TIME = Date.parse("9999-12-31T23:59:59.999Z");

/** An event that can never be stored. It is rejected alone, before it can fail a shared batch. */
export class InvalidEventError extends NotWrittenError {
  constructor(
    readonly eventId: string,
    readonly field: string,
    rule: string,
  ) {
    super(`event ${JSON.stringify(eventId)}: ${field} ${rule}`);
    this.name = "InvalidEventError";
  }
}

export class LedgerClosedError extends NotWrittenError {
  constructor() {
    super("the ledger is closed");
    this.name = "LedgerClosedError";
  }
}

export interface SqlLedgerOptions {
  /** Most events written in one transaction; later callers wait for the next one. Default 5,000. */
  maxBatchEvents?: number;
}

/** An event as the INSERT takes it: all text, checked once when append() is called. */
interface Prepared {
  id: string;
  customerId: string;
  featureKey: string | null;
  kind: string;
  amount: string;
  credits: string;
  idempotencyKey: string | null;
  fingerprint: string;
  occurredAt: string;
  properties: string;
}

interface Pending {
  events: Prepared[];
  resolve(outcomes: AppendOutcome[]): void;
  reject(err: unknown): void;
}

interface EventRow {
  id: string;
  customer_id: string;
  feature_key: string | null;
  kind: EventKind;
  amount: string;
  credits: string;
  idempotency_key: string | null;
  fingerprint: string;
  occurred_at: Date;
  recorded_at: Date;
  properties: Record<string, string>;
}

// Storage. meterd_events is range-partitioned by month on occurred_at (migration 002), so it can only
// be unique on (id, occurred_at): that refuses a second write of the same event, which always carries
// the same occurred_at. One event per customer and idempotency key, across months, lives in
// meterd_event_keys, unpartitioned, with a row for each keyed event only (migration 003). A batch
// claims its keys and writes its rows in one statement, so a key never exists without its row
// (openmeter#5118). Reads by key go through meterd_event_keys, whose occurred_at leads to the one
// partition that holds the row.

/** The columns of a StoredEvent, from meterd_events under the alias e. */
const COLUMNS = `e.id, e.customer_id, e.feature_key, e.kind, trim_scale(e.amount)::text AS amount,
  trim_scale(e.credits)::text AS credits, e.idempotency_key, e.fingerprint, e.occurred_at, e.recorded_at,
  e.properties`;

/**
 * Claims the keys of the keyed events; inserts the rows of the keyless events and of the keyed events
 * that claimed their key, in order; a row whose (id, occurred_at) is already there is skipped.
 */
const INSERT = `WITH batch AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
      $8::text[], $9::text[], $10::text[])
      WITH ORDINALITY AS t(id, customer_id, feature_key, kind, amount, credits, idempotency_key, fingerprint,
        occurred_at, properties, ord)
  ), claimed AS (
    INSERT INTO meterd_event_keys (event_id, customer_id, idempotency_key, occurred_at)
    SELECT id, customer_id, idempotency_key, occurred_at::timestamptz FROM batch
      WHERE idempotency_key IS NOT NULL ORDER BY ord
    ON CONFLICT DO NOTHING
    RETURNING event_id
  )
  INSERT INTO meterd_events AS e
    (id, customer_id, feature_key, kind, amount, credits, idempotency_key, fingerprint, occurred_at, properties)
  SELECT b.id, b.customer_id, b.feature_key, b.kind, b.amount::numeric, b.credits::numeric, b.idempotency_key,
    b.fingerprint, b.occurred_at::timestamptz, b.properties::jsonb
  FROM batch b LEFT JOIN claimed c ON c.event_id = b.id
  WHERE b.idempotency_key IS NULL OR c.event_id IS NOT NULL
  ORDER BY b.ord
  ON CONFLICT DO NOTHING
  RETURNING e.id`;

/** The stored rows that hold any of the ids ($1), or any of the (customer, key) pairs ($2, $3). */
const SELECT_CONFLICTS = `SELECT ${COLUMNS} FROM meterd_events e WHERE e.id = ANY($1::text[])
  UNION
  SELECT ${COLUMNS} FROM meterd_event_keys k
    JOIN unnest($2::text[], $3::text[]) AS u(customer_id, idempotency_key)
      ON k.customer_id = u.customer_id AND k.idempotency_key = u.idempotency_key
    JOIN meterd_events e ON e.id = k.event_id AND e.occurred_at = k.occurred_at`;

/**
 * sumUsage's statement. The time bounds are written only when given, as plain comparisons on
 * occurred_at, so that Postgres reads only the partitions of [from, to).
 */
export function sumUsageQuery(
  customerId: string,
  featureKey: string,
  from: Date | null,
  to: Date | null,
): { text: string; values: string[] } {
  const values = [customerId, featureKey];
  let where = "customer_id = $1 AND feature_key = $2";
  if (from !== null) {
    values.push(from.toISOString());
    where += ` AND occurred_at >= $${values.length}::timestamptz`;
  }
  if (to !== null) {
    values.push(to.toISOString());
    where += ` AND occurred_at < $${values.length}::timestamptz`;
  }
  return {
    text: `SELECT trim_scale(coalesce(sum(amount), 0))::text AS total FROM meterd_events WHERE ${where}`,
    values,
  };
}

export class SqlLedger implements Ledger {
  private readonly maxBatchEvents: number;
  private queue: Pending[] = [];
  private flushing: Promise<void> | null = null;
  private closing: Promise<void> | null = null;

  constructor(
    private readonly sql: SqlClient,
    options: SqlLedgerOptions = {},
  ) {
    this.maxBatchEvents = Math.max(1, options.maxBatchEvents ?? 5000);
  }

  append(events: LedgerEvent[]): Promise<AppendOutcome[]> {
    if (this.closing) return Promise.reject(new LedgerClosedError());
    let prepared: Prepared[];
    try {
      prepared = events.map(prepare);
    } catch (err) {
      return Promise.reject(err);
    }
    if (prepared.length === 0) return Promise.resolve([]);
    return new Promise((resolve, reject) => {
      this.queue.push({ events: prepared, resolve, reject });
      this.startFlushing();
    });
  }

  async countCustomers(): Promise<number> {
    const res = await this.sql.query<{ n: string }>("SELECT count(DISTINCT customer_id)::text AS n FROM meterd_events");
    return Number(res.rows[0]?.n ?? "0");
  }

  async customerIds(after: string, limit: number): Promise<string[]> {
    const res = await this.sql.query<{ customer_id: string }>(
      "SELECT DISTINCT customer_id FROM meterd_events WHERE customer_id > $1 ORDER BY customer_id LIMIT $2",
      [after, limit],
    );
    return res.rows.map((r) => r.customer_id);
  }

  async hasEvents(customerId: string): Promise<boolean> {
    const res = await this.sql.query<{ found: boolean }>(
      "SELECT EXISTS (SELECT 1 FROM meterd_events WHERE customer_id = $1) AS found",
      [customerId],
    );
    return res.rows[0]?.found === true;
  }

  async customersWithEvents(customerIds: readonly string[]): Promise<Set<string>> {
    if (customerIds.length === 0) return new Set();
    const res = await this.sql.query<{ customer_id: string }>(
      `SELECT c.customer_id FROM unnest($1::text[]) AS c(customer_id)
        WHERE EXISTS (SELECT 1 FROM meterd_events e WHERE e.customer_id = c.customer_id)`,
      [customerIds],
    );
    return new Set(res.rows.map((r) => r.customer_id));
  }

  async sumUsageMany(queries: readonly UsageSumQuery[]): Promise<string[]> {
    if (queries.length === 0) return [];
    // One sub-select sum per query, each over the usage index; an open bound (null) is +-infinity.
    const res = await this.sql.query<{ total: string }>(
      `SELECT (SELECT trim_scale(coalesce(sum(e.amount), 0))::text FROM meterd_events e
          WHERE e.customer_id = q.customer_id AND e.feature_key = q.feature_key
            AND e.occurred_at >= coalesce(q.lo, '-infinity') AND e.occurred_at < coalesce(q.hi, 'infinity')) AS total
        FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[]) WITH ORDINALITY
          AS q(customer_id, feature_key, lo, hi, ord)
        ORDER BY q.ord`,
      [
        queries.map((q) => q.customerId),
        queries.map((q) => q.featureKey),
        queries.map((q) => q.from?.toISOString() ?? null),
        queries.map((q) => q.to?.toISOString() ?? null),
      ],
    );
    return res.rows.map((r) => r.total);
  }

  async findById(id: string): Promise<StoredEvent | null> {
    // By id alone: one probe of each partition's primary key, which leads with id.
    const res = await this.sql.query<EventRow>(`SELECT ${COLUMNS} FROM meterd_events e WHERE e.id = $1`, [id]);
    return res.rows[0] ? toStored(res.rows[0]) : null;
  }

  async findByKey(customerId: string, idempotencyKey: string): Promise<StoredEvent | null> {
    const res = await this.sql.query<EventRow>(
      `SELECT ${COLUMNS} FROM meterd_event_keys k
        JOIN meterd_events e ON e.id = k.event_id AND e.occurred_at = k.occurred_at
        WHERE k.customer_id = $1 AND k.idempotency_key = $2`,
      [customerId, idempotencyKey],
    );
    return res.rows[0] ? toStored(res.rows[0]) : null;
  }

  async sumUsage(customerId: string, featureKey: string, from: Date | null, to: Date | null): Promise<string> {
    const { text, values } = sumUsageQuery(customerId, featureKey, from, to);
    const res = await this.sql.query<{ total: string }>(text, values);
    return res.rows[0]?.total ?? "0";
  }

  async walletBalance(customerId: string): Promise<string> {
    const res = await this.sql.query<{ total: string }>(
      `SELECT trim_scale(coalesce(sum(credits), 0))::text AS total FROM meterd_events
        WHERE customer_id = $1 AND credits <> 0`,
      [customerId],
    );
    return res.rows[0]?.total ?? "0";
  }

  async walletHistory(customerId: string, limit: number): Promise<StoredEvent[]> {
    if (!(limit > 0)) return [];
    const res = await this.sql.query<EventRow>(
      `SELECT ${COLUMNS} FROM meterd_events e WHERE customer_id = $1 AND credits <> 0
        ORDER BY recorded_at DESC, seq DESC LIMIT $2`,
      [customerId, Math.floor(limit)],
    );
    return res.rows.map(toStored);
  }

  async listEvents(customerId: string): Promise<StoredEvent[]> {
    const res = await this.sql.query<EventRow>(
      `SELECT ${COLUMNS} FROM meterd_events e WHERE customer_id = $1 ORDER BY occurred_at, seq`,
      [customerId],
    );
    return res.rows.map(toStored);
  }

  /** Stops taking events, commits the queued ones, then closes the SqlClient. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      while (this.flushing) await this.flushing;
      await this.sql.close();
    })();
    return this.closing;
  }

  private startFlushing(): void {
    if (this.flushing) return;
    this.flushing = (async () => {
      // Let every append() made in the same tick join the first batch.
      await Promise.resolve();
      while (this.queue.length > 0) await this.commit(this.takeBatch());
    })().finally(() => {
      this.flushing = null;
      if (this.queue.length > 0) this.startFlushing();
    });
  }

  /** Whole callers, oldest first, up to maxBatchEvents (a larger caller goes alone). */
  private takeBatch(): Pending[] {
    let size = 0;
    let n = 0;
    while (n < this.queue.length) {
      const next = this.queue[n]!.events.length;
      if (n > 0 && size + next > this.maxBatchEvents) break;
      size += next;
      n++;
    }
    return this.queue.splice(0, n);
  }

  /** Never throws: every caller of the batch is answered, after the COMMIT or with its error. */
  private async commit(batch: Pending[]): Promise<void> {
    const events = batch.flatMap((p) => p.events);
    let rows: (EventRow | undefined)[];
    try {
      // One statement claims the keys and writes the rows: atomic on its own, so no BEGIN/COMMIT.
      rows = await writeBatch(this.sql, events);
    } catch (err) {
      // Refused for some row's own values: nothing was written. Each caller goes again alone, so that
      // only the caller whose event cannot be stored is refused, not the others it was grouped with.
      if (batch.length > 1 && isPermanentLedgerRefusal(err)) {
        for (const p of batch) await this.commit([p]);
        return;
      }
      for (const p of batch) p.reject(err);
      return;
    }
    let i = 0;
    for (const p of batch) {
      p.resolve(
        p.events.map(() => {
          const row = rows[i++];
          return row === undefined ? { inserted: true } : { inserted: false, existing: toStored(row) };
        }),
      );
    }
  }
}

/**
 * Inserts the batch and returns, per event, undefined when it was inserted, else the row already
 * there: matched by id first, then by (customer, idempotency key). Within the batch, an event that
 * repeats an earlier one's id or key is not sent; it reports the earlier one's row.
 */
async function writeBatch(sql: SqlExecutor, events: Prepared[]): Promise<(EventRow | undefined)[]> {
  const firstOf: number[] = [];
  const byId = new Map<string, number>();
  const byKey = new Map<string, number>();
  const unique: Prepared[] = [];
  events.forEach((e, i) => {
    const keyOf = e.idempotencyKey === null ? null : `${e.customerId}\u0000${e.idempotencyKey}`;
    const earlier = byId.get(e.id) ?? (keyOf === null ? undefined : byKey.get(keyOf));
    if (earlier !== undefined) {
      firstOf.push(earlier);
      return;
    }
    firstOf.push(i);
    byId.set(e.id, i);
    if (keyOf !== null) byKey.set(keyOf, i);
    unique.push(e);
  });

  const inserted = await sql.query<{ id: string }>(INSERT, [
    unique.map((e) => e.id),
    unique.map((e) => e.customerId),
    unique.map((e) => e.featureKey),
    unique.map((e) => e.kind),
    unique.map((e) => e.amount),
    unique.map((e) => e.credits),
    unique.map((e) => e.idempotencyKey),
    unique.map((e) => e.fingerprint),
    unique.map((e) => e.occurredAt),
    unique.map((e) => e.properties),
  ], { name: "meterd_ledger_insert" });
  const insertedIds = new Set(inserted.rows.map((r) => r.id));

  // Rows to read back: those the events collided with, and the inserted ones that a repeat within the
  // batch reports as already there.
  const conflicted = unique.filter((e) => !insertedIds.has(e.id));
  const repeated = [...new Set(firstOf.filter((first, i) => first !== i))].map((i) => events[i]!).filter((e) => insertedIds.has(e.id));
  const existingById = new Map<string, EventRow>();
  const existingByKey = new Map<string, EventRow>();
  if (conflicted.length > 0 || repeated.length > 0) {
    const keyed = conflicted.filter((e) => e.idempotencyKey !== null);
    // Read after the INSERT committed: under READ COMMITTED every row it collided with is visible.
    const found = await sql.query<EventRow>(SELECT_CONFLICTS, [
      [...conflicted, ...repeated].map((e) => e.id),
      keyed.map((e) => e.customerId),
      keyed.map((e) => e.idempotencyKey),
    ]);
    for (const r of found.rows) {
      existingById.set(r.id, r);
      if (r.idempotency_key !== null) existingByKey.set(`${r.customer_id}\u0000${r.idempotency_key}`, r);
    }
  }

  // The stored row of each event sent: its own if inserted, else the one it collided with.
  const storedOf = new Map<number, EventRow>();
  const outcomes: (EventRow | undefined)[] = [];
  events.forEach((e, i) => {
    const first = firstOf[i]!;
    if (first === i) {
      if (insertedIds.has(e.id)) {
        const own = existingById.get(e.id);
        if (own) storedOf.set(i, own);
        outcomes.push(undefined);
        return;
      }
      const keyOf = e.idempotencyKey === null ? null : `${e.customerId}\u0000${e.idempotencyKey}`;
      const existing = existingById.get(e.id) ?? (keyOf === null ? undefined : existingByKey.get(keyOf));
      // Under READ COMMITTED a skipped claim means a committed key, and its row committed with it. Only
      // a row removed behind the ledger's back (say, its partition detached while its keys were kept)
      // ends here, and answering "duplicate" without the row would be a lie: fail the batch.
      if (!existing) throw new Error(`event ${e.id} was neither inserted nor found`);
      storedOf.set(i, existing);
      outcomes.push(existing);
    } else {
      outcomes.push(storedOf.get(first)!);
    }
  });
  return outcomes;
}

// The checks of prepare(), as plain functions: prepare() runs for every event of every batch.
function text(id: string, field: string, value: unknown, nullable: boolean): string | null {
  if (value === null && nullable) return null;
  if (typeof value !== "string" || value === "") throw new InvalidEventError(id, field, "must be a non-empty string");
  if (value.includes("\u0000")) throw new InvalidEventError(id, field, "must not contain NUL characters");
  return value;
}

function decimal(id: string, field: string, value: unknown): string {
  if (typeof value !== "string" || !DECIMAL.test(value)) {
    throw new InvalidEventError(id, field, `must be a decimal string like "12.5" (got ${JSON.stringify(value)})`);
  }
  return value;
}

function prepare(e: LedgerEvent): Prepared {
  const id = typeof e.id === "string" ? e.id : String(e.id);
  text(id, "id", e.id, false);
  if (!KINDS.has(e.kind)) throw new InvalidEventError(id, "kind", `must be one of ${[...KINDS].join(", ")}`);
  const time = e.occurredAt instanceof Date ? e.occurredAt.getTime() : NaN;
  if (!(time >= MIN_TIME && time <= MAX_TIME)) throw new InvalidEventError(id, "occurredAt", "must be a valid Date in years 1 to 9999");
  const properties = e.properties ?? {};
  for (const k of Object.keys(properties)) {
    const v = properties[k];
    if (typeof v !== "string") throw new InvalidEventError(id, `properties.${k}`, "must be a string");
    if (k.includes("\u0000") || v.includes("\u0000")) throw new InvalidEventError(id, `properties.${k}`, "must not contain NUL characters");
  }
  return {
    id,
    customerId: text(id, "customerId", e.customerId, false)!,
    featureKey: text(id, "featureKey", e.featureKey, true),
    kind: e.kind,
    amount: decimal(id, "amount", e.amount),
    credits: decimal(id, "credits", e.credits),
    idempotencyKey: text(id, "idempotencyKey", e.idempotencyKey, true),
    fingerprint: text(id, "fingerprint", e.fingerprint, false)!,
    occurredAt: e.occurredAt.toISOString(),
    properties: JSON.stringify(properties),
  };
}

function toStored(r: EventRow): StoredEvent {
  return {
    id: r.id,
    customerId: r.customer_id,
    featureKey: r.feature_key,
    kind: r.kind,
    amount: r.amount,
    credits: r.credits,
    idempotencyKey: r.idempotency_key,
    fingerprint: r.fingerprint,
    occurredAt: r.occurred_at,
    properties: r.properties,
    recordedAt: r.recorded_at,
  };
}
