// The ledger over SQL (pg or PGlite), with group commit: concurrent append() calls share one
// transaction and one multi-row INSERT, and each caller is answered only after that COMMIT.
//
// Decimal format. amount and credits go in as exact decimal strings matching DECIMAL (an optional
// "-", digits, optionally "." and digits; no exponent, no "+") and come out canonical: no trailing
// fractional zeros, no lone ".", no leading zeros, zero as "0". So "1.000000" reads back as "1" and
// "-0.50" as "-0.5". Sums use the same format and are exact (Postgres NUMERIC, never a float).
import {
  type AppendOutcome,
  type CalendarUnit,
  type EventKind,
  type EventPosition,
  type EventQuery,
  type Ledger,
  type LedgerEvent,
  NotWrittenError,
  type StoredEvent,
  type UsageQuery,
  type UsageRow,
  type UsageSumQuery,
} from "./ledger.js";
import { eventPageStatement } from "./event-query.js";
import { calendarBoundsStatement, usageStatement } from "./usage-query.js";
import { isPermanentLedgerRefusal } from "./refusal.js";
import type { SqlClient, SqlExecutor } from "./sql.js";

/** The outcome of every inserted event: one shared, read-only object rather than one per event. */
const INSERTED: AppendOutcome = Object.freeze({ inserted: true });

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
  /**
   * Most group commits in flight at once, each on its own connection (default 1). With more than one,
   * Postgres inserts one group while the next is encoded, sent and committed, and uses more than one core.
   * A commit beyond the first starts only for a large backlog (PARALLEL_MIN_EVENTS): small groups cost
   * more per event than they save in waiting, so single events keep sharing one commit at a time.
   */
  maxConcurrentCommits?: number;
  /**
   * Told of each group commit that answered: how many events it wrote, and how long its statement took
   * (seconds). Not called for a commit that failed. For metrics; it must be cheap and must not throw.
   */
  onCommit?: (events: number, seconds: number) => void;
}

/** Events waiting before a second commit is started beside the one in flight (see maxConcurrentCommits). */
export const PARALLEL_MIN_EVENTS = 500;

/**
 * One caller's events, encoded once when append() is called: the encoding is a snapshot, so a caller
 * that changes its events afterwards changes nothing that is written.
 */
interface Pending {
  /** Ids, customer ids and idempotency keys, in order: deduplication and the read of conflicts. */
  ids: string[];
  customers: string[];
  keys: (string | null)[];
  /** The events as one chunk of INSERT's $1 (see encode), sent as it is. */
  json: string;
  /** True once check() has passed for every event: the encoding needs no closer look (see screen). */
  checked: boolean;
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
 * that claimed their key, in order; a row whose (id, occurred_at) is already there is skipped. Returns
 * one row: NULL when every event was inserted, else "chunk.row" (1-based, comma-separated) for each
 * one that was not. Usually all are, so the answer is one short row, not a row per event.
 *
 * $1 is one JSON text, parsed once: an array of chunks, one per caller, as encode() makes them. pg
 * escapes ten text arrays value by value; JSON costs one JSON.stringify per caller, and a caller's
 * chunk joins any group as it is. A column that holds one value for the whole chunk comes as [] with
 * the value in the chunk's first element, read once by jsonb_to_record: ROWS FROM pads the empty
 * column with NULLs, which coalesce() replaces. occurred_at is base + delta, in epoch milliseconds,
 * converted exactly: to_timestamp is exact for whole seconds, and the milliseconds are added as an
 * interval.
 *
 * Keys are claimed in key order, so that two group commits in flight at once that share keys (a sweeper
 * and the replica that applied the events) wait for each other in the same order instead of deadlocking.
 *
 * The rows to insert test "claimed" with IN rather than a join: a join's estimate multiplies the two
 * sides, and an estimate of 10^5 rows made Postgres size the hash of "inserted" for them and spill it
 * to temporary files.
 */
const INSERT = `WITH batch AS (
    SELECT c.cn, r.n, r.id, coalesce(r.customer_id, k.customer_id) AS customer_id,
      coalesce(r.feature_key, k.feature_key) AS feature_key, coalesce(r.kind, k.kind) AS kind,
      coalesce(r.amount, k.amount)::numeric AS amount, coalesce(r.credits, k.credits)::numeric AS credits,
      coalesce(r.idempotency_key, k.idempotency_key) AS idempotency_key,
      coalesce(r.fingerprint, k.fingerprint) AS fingerprint,
      to_timestamp((k.base + r.delta::bigint) / 1000)
        + ((k.base + r.delta::bigint) % 1000) * interval '1 millisecond' AS occurred_at,
      coalesce(r.properties, k.properties) AS properties
    FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS c(chunk, cn),
      jsonb_to_record(c.chunk->0) AS k(base bigint, customer_id text, feature_key text, kind text, amount text,
        credits text, idempotency_key text, fingerprint text, properties jsonb),
      ROWS FROM (jsonb_array_elements_text(c.chunk->1), jsonb_array_elements_text(c.chunk->2),
        jsonb_array_elements_text(c.chunk->3), jsonb_array_elements_text(c.chunk->4),
        jsonb_array_elements_text(c.chunk->5), jsonb_array_elements_text(c.chunk->6),
        jsonb_array_elements_text(c.chunk->7), jsonb_array_elements_text(c.chunk->8),
        jsonb_array_elements(c.chunk->9), jsonb_array_elements(c.chunk->10))
        WITH ORDINALITY AS r(id, customer_id, feature_key, kind, amount, credits, idempotency_key, fingerprint,
          delta, properties, n)
  ), claimed AS (
    INSERT INTO meterd_event_keys (event_id, customer_id, idempotency_key, occurred_at)
    SELECT id, customer_id, idempotency_key, occurred_at FROM batch
      WHERE idempotency_key IS NOT NULL ORDER BY customer_id, idempotency_key
    ON CONFLICT DO NOTHING
    RETURNING event_id
  ), inserted AS (
    INSERT INTO meterd_events AS e
      (id, customer_id, feature_key, kind, amount, credits, idempotency_key, fingerprint, occurred_at, properties)
    SELECT b.id, b.customer_id, b.feature_key, b.kind, b.amount, b.credits, b.idempotency_key, b.fingerprint,
      b.occurred_at, b.properties
    FROM batch b
    WHERE b.idempotency_key IS NULL OR b.id IN (SELECT event_id FROM claimed)
    ORDER BY b.cn, b.n
    ON CONFLICT DO NOTHING
    RETURNING e.id
  )
  SELECT string_agg(b.cn || '.' || b.n, ',') AS missed
  FROM batch b LEFT JOIN inserted i ON i.id = b.id WHERE i.id IS NULL`;

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
  /** The events of the queued callers. */
  private queuedEvents = 0;
  private readonly maxFlushers: number;
  /** The commit loops running now, at most maxFlushers. */
  private readonly flushers = new Set<Promise<void>>();
  private closing: Promise<void> | null = null;
  private readonly onCommit: ((events: number, seconds: number) => void) | undefined;

  constructor(
    private readonly sql: SqlClient,
    options: SqlLedgerOptions = {},
  ) {
    this.maxBatchEvents = Math.max(1, options.maxBatchEvents ?? 5000);
    this.maxFlushers = Math.max(1, options.maxConcurrentCommits ?? 1);
    this.onCommit = options.onCommit;
  }

  append(events: LedgerEvent[]): Promise<AppendOutcome[]> {
    if (this.closing) return Promise.reject(new LedgerClosedError());
    if (events.length === 0) return Promise.resolve([]);
    let encoded: Encoded;
    try {
      encoded = encode(events);
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ ...encoded, resolve, reject });
      this.queuedEvents += encoded.ids.length;
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
    // Through a function whose settings keep the per-customer index probes (migration 004).
    const res = await this.sql.query<{ customer_id: string }>(
      "SELECT meterd_customers_with_events($1::text[]) AS customer_id",
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

  async calendarBounds(unit: CalendarUnit, timeZone: string, from: Date, to: Date, limit: number): Promise<Date[]> {
    const { text, values } = calendarBoundsStatement(unit, timeZone, from, to, limit);
    const res = await this.sql.query<{ b: Date }>(text, values);
    return res.rows.map((r) => r.b);
  }

  async queryUsage(query: UsageQuery): Promise<UsageRow[]> {
    const { text, values } = usageStatement(query);
    const res = await this.sql.query<Record<string, string | number | null>>(text, values);
    return res.rows.map((r) => ({
      featureKey: String(r["feature_key"]),
      bucket: Number(r["bucket"]),
      group: query.groupBy.map((_, i) => String(r[`g${i}`] ?? "")),
      value: String(r["value"]),
    }));
  }

  async queryEvents(query: EventQuery): Promise<{ events: StoredEvent[]; next: EventPosition | null }> {
    const { text, values } = eventPageStatement(COLUMNS, query);
    const res = await this.sql.query<EventRow & { seq: string; occurred_us: string }>(text, values);
    const rows = res.rows.slice(0, query.limit);
    const last = rows[rows.length - 1];
    const next = res.rows.length > query.limit && last !== undefined ? { occurredAtMicros: last.occurred_us, seq: last.seq } : null;
    return { events: rows.map(toStored), next };
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
      while (this.flushers.size > 0) await Promise.all(this.flushers);
      await this.sql.close();
    })();
    return this.closing;
  }

  /**
   * Starts a commit loop unless maxFlushers run already. A loop takes the queued callers as one group,
   * commits them, and goes on while callers wait: a group forms from whatever arrived while the commits
   * in flight ran.
   */
  private startFlushing(): void {
    if (this.flushers.size >= this.maxFlushers) return;
    if (this.flushers.size > 0 && this.queuedEvents < PARALLEL_MIN_EVENTS) return;
    const flusher: Promise<void> = (async () => {
      // Let every append() made in the same tick join the first batch.
      await Promise.resolve();
      while (this.queue.length > 0) await this.commit(this.takeBatch());
    })().finally(() => {
      this.flushers.delete(flusher);
      if (this.queue.length > 0) this.startFlushing();
    });
    this.flushers.add(flusher);
  }

  /**
   * Whole callers, oldest first, up to maxBatchEvents (a larger caller goes alone), and up to an even
   * share of what waits when several commits may run: callers that arrived together are split between
   * the commit loops rather than all taken by the first, which would leave the others idle and make
   * every caller wait for one large commit.
   */
  private takeBatch(): Pending[] {
    const waiting = this.queuedEvents;
    const cap = this.maxFlushers > 1 && waiting >= 2 * PARALLEL_MIN_EVENTS ? Math.min(this.maxBatchEvents, Math.ceil(waiting / this.maxFlushers)) : this.maxBatchEvents;
    let size = 0;
    let n = 0;
    while (n < this.queue.length) {
      const next = this.queue[n]!.ids.length;
      if (n > 0 && size + next > cap) break;
      size += next;
      n++;
    }
    this.queuedEvents -= size;
    return this.queue.splice(0, n);
  }

  /** Never throws: every caller of the batch is answered, after the COMMIT or with its error. */
  private async commit(callers: Pending[]): Promise<void> {
    const { batch, doc } = screen(callers);
    if (batch.length === 0) return;
    let outcomes: AppendOutcome[][];
    const started = this.onCommit === undefined ? 0 : performance.now();
    try {
      // One statement claims the keys and writes the rows: atomic on its own, so no BEGIN/COMMIT.
      outcomes = await writeWithRetry(this.sql, batch, doc);
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
    if (this.onCommit !== undefined) {
      let events = 0;
      for (let c = 0; c < batch.length; c++) events += batch[c]!.ids.length;
      this.onCommit(events, (performance.now() - started) / 1000);
    }
    for (let c = 0; c < batch.length; c++) batch[c]!.resolve(outcomes[c]!);
  }
}

/** A statement chosen as a deadlock's victim is rolled back whole: it is sent again, up to this many times. */
const DEADLOCK_RETRIES = 3;

/**
 * writeBatch, again when Postgres broke a deadlock by cancelling it. Keyless rows of two commits in flight
 * at once can still meet in opposite orders (a sweeper and the replica that applied them, both writing the
 * same events); nothing of a cancelled statement was written, so sending it again is safe.
 */
async function writeWithRetry(sql: SqlExecutor, batch: Pending[], doc: string): Promise<AppendOutcome[][]> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await writeBatch(sql, batch, doc);
    } catch (err) {
      if (attempt > DEADLOCK_RETRIES || (err as { code?: unknown }).code !== "40P01") throw err;
    }
  }
}

/**
 * The callers that can be sent, with INSERT's $1 for them: those whose events the exact checks refuse
 * are answered with InvalidEventError and left out. JSON.stringify writes NUL, lone surrogates and
 * other control characters as \uXXXX (and a backslash as \\), so one scan of $1 for "\u" tells
 * whether any caller's strings need a closer look. pg would flatten $1 anyway, so the scan costs no
 * copy of its own.
 */
function screen(callers: Pending[]): { batch: Pending[]; doc: string } {
  const doc = documentOf(callers.map((p) => p.json));
  if (!doc.includes("\\u")) return { batch: callers, doc };
  const batch: Pending[] = [];
  let changed = false;
  for (const p of callers) {
    if (!p.checked && p.json.includes("\\u")) {
      changed = true;
      try {
        // Throws InvalidEventError for the first event that can never be stored, as append() would.
        const events = decode(p.json);
        for (const e of events) check(e);
        Object.assign(p, columns(events, true)!);
      } catch (err) {
        p.reject(err);
        continue;
      }
    }
    batch.push(p);
  }
  return { batch, doc: changed ? documentOf(batch.map((p) => p.json)) : doc };
}

/** The JSON array of the chunks, built by one join: pg needs it flat, so it is copied once. */
function documentOf(chunks: string[]): string {
  if (chunks.length <= 1) return `[${chunks[0] ?? ""}]`;
  const parts: string[] = ["["];
  for (const chunk of chunks) parts.push(chunk, ",");
  parts[parts.length - 1] = "]";
  return parts.join("");
}

/**
 * Inserts the batch and returns, per caller and event, whether it was inserted, else the row already
 * there: matched by id first, then by (customer, idempotency key). Within the batch, an event that
 * repeats an earlier one's id or key is not sent; it reports the earlier one's row.
 */
async function writeBatch(sql: SqlExecutor, batch: Pending[], doc: string): Promise<AppendOutcome[][]> {
  // Repeats are rare: a Set per kind of identity tells whether there is any, and only then are the
  // earlier events looked for (findRepeats). Keys go through one Set per customer, which spares a
  // concatenated string per event.
  const seenIds = new Set<string>();
  const seenKeys = new Map<string, Set<string>>();
  let anyRepeat = false;
  let total = 0;
  for (const p of batch) {
    const { ids, customers, keys } = p;
    for (let i = 0; i < ids.length; i++) {
      const size = seenIds.size;
      if (seenIds.add(ids[i]!).size === size) anyRepeat = true;
      const key = keys[i]!;
      if (key === null) continue;
      let ofCustomer = seenKeys.get(customers[i]!);
      if (ofCustomer === undefined) seenKeys.set(customers[i]!, (ofCustomer = new Set()));
      const before = ofCustomer.size;
      if (ofCustomer.add(key).size === before) anyRepeat = true;
    }
    total += ids.length;
  }
  // firstOf[g]: the event (index in the batch) whose row event g reports; g itself when it is sent.
  const firstOf = anyRepeat ? findRepeats(batch, total) : null;
  // sent[c]: the events of caller c that its chunk holds, in order; null when it holds them all. A
  // caller with repeats gets a chunk of the others, encoded again from its own chunk.
  const sent: (number[] | null)[] = batch.map(() => null);
  if (firstOf !== null) {
    let offset = 0;
    const chunks = batch.map((p, c) => {
      const kept: number[] = [];
      for (let i = 0; i < p.ids.length; i++) if (firstOf[offset + i] === offset + i) kept.push(i);
      offset += p.ids.length;
      if (kept.length === p.ids.length) return p.json;
      sent[c] = kept;
      if (kept.length === 0) return null;
      const events = decode(p.json);
      return columns(kept.map((i) => events[i]!), true)!.json;
    });
    doc = documentOf(chunks.filter((chunk) => chunk !== null));
  }

  const res = await sql.query<{ missed: string | null }>(INSERT, [doc], { name: "meterd_ledger_insert" });
  const missed = res.rows[0]?.missed ?? null;

  if (missed === null && firstOf === null) {
    // Every event inserted: the usual case.
    return batch.map((p) => {
      const out: AppendOutcome[] = [];
      for (let i = 0; i < p.ids.length; i++) out.push(INSERTED);
      return out;
    });
  }
  // "chunk.row" back to the event's index in the batch. Chunks of callers that sent nothing are absent.
  const chunkOf: number[] = [];
  const offsets: number[] = [];
  let offset = 0;
  batch.forEach((p, c) => {
    if (sent[c]?.length !== 0) chunkOf.push(c);
    offsets.push(offset);
    offset += p.ids.length;
  });
  const notInserted = (missed === null ? [] : missed.split(",")).map((pair) => {
    const [chunk, row] = pair.split(".").map(Number) as [number, number];
    const c = chunkOf[chunk - 1]!;
    return offsets[c]! + (sent[c]?.[row - 1] ?? row - 1);
  });
  return withConflicts(sql, batch, total, firstOf, notInserted);
}

/** firstOf for a batch with repeats: exactly as the old per-event Maps did, an event sent first wins. */
function findRepeats(batch: Pending[], total: number): Int32Array {
  const firstOf = new Int32Array(total);
  const byId = new Map<string, number>();
  const byKey = new Map<string, Map<string, number>>();
  let g = 0;
  for (const p of batch) {
    for (let i = 0; i < p.ids.length; i++, g++) {
      const id = p.ids[i]!;
      const key = p.keys[i]!;
      const ofCustomer = key === null ? undefined : byKey.get(p.customers[i]!);
      const earlier = byId.get(id) ?? (key === null ? undefined : ofCustomer?.get(key));
      if (earlier !== undefined) {
        firstOf[g] = earlier;
        continue;
      }
      firstOf[g] = g;
      byId.set(id, g);
      if (key === null) continue;
      if (ofCustomer === undefined) byKey.set(p.customers[i]!, new Map([[key, g]]));
      else ofCustomer.set(key, g);
    }
  }
  return firstOf;
}

/**
 * The outcomes of a batch that had repeats or conflicts: the rows the events collided with, and the
 * inserted ones that a repeat within the batch reports as already there, are read back.
 */
async function withConflicts(
  sql: SqlExecutor,
  batch: Pending[],
  total: number,
  firstOf: Int32Array | null,
  missed: number[],
): Promise<AppendOutcome[][]> {
  const ids: string[] = [];
  const customers: string[] = [];
  const keys: (string | null)[] = [];
  for (const p of batch) {
    for (let i = 0; i < p.ids.length; i++) {
      ids.push(p.ids[i]!);
      customers.push(p.customers[i]!);
      keys.push(p.keys[i]!);
    }
  }
  const first = (g: number) => (firstOf === null ? g : firstOf[g]!);
  const notInserted = new Set(missed);
  const inserted = (g: number) => first(g) === g && !notInserted.has(g);

  const conflicted = missed;
  const repeated = firstOf === null ? [] : [...new Set(firstOf.filter((f, g) => f !== g))].filter(inserted);
  const keyed = conflicted.filter((g) => keys[g] !== null);
  const existingById = new Map<string, EventRow>();
  const existingByKey = new Map<string, EventRow>();
  // Read after the INSERT committed: under READ COMMITTED every row it collided with is visible.
  const found = await sql.query<EventRow>(SELECT_CONFLICTS, [
    [...conflicted, ...repeated].map((g) => ids[g]!),
    keyed.map((g) => customers[g]!),
    keyed.map((g) => keys[g]!),
  ]);
  for (const r of found.rows) {
    existingById.set(r.id, r);
    if (r.idempotency_key !== null) existingByKey.set(`${r.customer_id}\u0000${r.idempotency_key}`, r);
  }

  // The stored row of each event sent: its own if inserted, else the one it collided with.
  const storedOf = new Map<number, EventRow>();
  const rows: (EventRow | undefined)[] = [];
  for (let g = 0; g < total; g++) {
    const f = first(g);
    if (f !== g) {
      rows.push(storedOf.get(f)!);
      continue;
    }
    if (inserted(g)) {
      const own = existingById.get(ids[g]!);
      if (own) storedOf.set(g, own);
      rows.push(undefined);
      continue;
    }
    const key = keys[g]!;
    const existing = existingById.get(ids[g]!) ?? (key === null ? undefined : existingByKey.get(`${customers[g]}\u0000${key}`));
    // Under READ COMMITTED a skipped claim means a committed key, and its row committed with it. Only
    // a row removed behind the ledger's back (say, its partition detached while its keys were kept)
    // ends here, and answering "duplicate" without the row would be a lie: fail the batch.
    if (!existing) throw new Error(`event ${ids[g]} was neither inserted nor found`);
    storedOf.set(g, existing);
    rows.push(existing);
  }
  let g = 0;
  return batch.map((p) =>
    p.ids.map(() => {
      const row = rows[g++];
      return row === undefined ? INSERTED : { inserted: false, existing: toStored(row) };
    }),
  );
}

/** A caller's events as append() keeps them until their batch is sent. */
type Encoded = Pick<Pending, "ids" | "customers" | "keys" | "json" | "checked">;

const NO_PROPERTIES: Record<string, string> = Object.freeze({});
const NONE: readonly never[] = Object.freeze([]);

/**
 * Checks the events and encodes them as one chunk of INSERT's $1: [{base, constants}, [ids],
 * [customer ids], [feature keys], [kinds], [amounts], [credits], [idempotency keys], [fingerprints],
 * [occurredAt - base, in ms], [properties]]. A column whose values are all the same is written once,
 * as a constant in the first element, and [] in its place: kinds, amounts, credits, feature keys and
 * often fingerprints and properties repeat within a call, and every byte is stringified, copied,
 * sent and parsed again. Small time deltas print faster than ISO strings or epoch milliseconds.
 *
 * This runs for every event, so the checks are cheap ones; whatever they doubt goes to the exact
 * checks of check(). What they leave unchecked (NUL characters, lone surrogates), JSON.stringify
 * writes as \uXXXX: screen() looks for that in the whole batch at once.
 */
function encode(events: readonly LedgerEvent[]): Encoded {
  const quick = columns(events, false);
  if (quick !== null) return quick;
  // Throws InvalidEventError for the first event that can never be stored, as each check() would.
  for (const e of events) check(e);
  return columns(events, true)!;
}

/** The chunk of the events, or null when a quick check doubts one (checked: check() passed for each). */
function columns(events: readonly LedgerEvent[], checked: boolean): Encoded | null {
  const ids: string[] = [];
  const customers: string[] = [];
  const featureKeys: (string | null)[] = [];
  const kinds: string[] = [];
  const amounts: string[] = [];
  const credits: string[] = [];
  const keys: (string | null)[] = [];
  const fingerprints: string[] = [];
  const deltas: number[] = [];
  const properties: unknown[] = [];
  const first = events[0]!;
  const firstProperties = first.properties ?? NO_PROPERTIES;
  const base = first.occurredAt instanceof Date ? first.occurredAt.getTime() : 0;
  let sameCustomer = true;
  let sameFeature = true;
  let sameKind = true;
  let sameAmount = true;
  let sameCredits = true;
  let sameKey = true;
  let sameFingerprint = true;
  let sameProperties = true;
  for (let i = 0; i < events.length; i++) {
    const e = events[i]!;
    const time = e.occurredAt instanceof Date ? e.occurredAt.getTime() : NaN;
    const props = e.properties ?? NO_PROPERTIES;
    if (!checked) {
      if (
        !isText(e.id) ||
        !isKind(e.kind) ||
        !(time >= MIN_TIME && time <= MAX_TIME) ||
        !hasStringValues(props) ||
        !isText(e.customerId) ||
        (e.featureKey !== null && !isText(e.featureKey)) ||
        !isDecimal(e.amount) ||
        !isDecimal(e.credits) ||
        (e.idempotencyKey !== null && !isText(e.idempotencyKey)) ||
        !isText(e.fingerprint)
      ) {
        return null;
      }
      ids.push(e.id);
      customers.push(e.customerId);
      featureKeys.push(e.featureKey);
      keys.push(e.idempotencyKey);
      fingerprints.push(e.fingerprint);
    } else {
      // pg wrote a lone surrogate as U+FFFD (UTF-8 has no other way to carry it), where JSON would
      // carry it escaped and Postgres would refuse it: store what pg stored. Properties went through
      // JSON.stringify before too, so a lone surrogate there is still refused by Postgres.
      ids.push(wellFormed(e.id));
      customers.push(wellFormed(e.customerId));
      featureKeys.push(e.featureKey === null ? null : wellFormed(e.featureKey));
      keys.push(e.idempotencyKey === null ? null : wellFormed(e.idempotencyKey));
      fingerprints.push(wellFormed(e.fingerprint));
    }
    kinds.push(e.kind);
    amounts.push(e.amount);
    credits.push(e.credits);
    deltas.push(time - base);
    properties.push(props);
    // Compared as given: values that differ only in their lone surrogates are merely not merged.
    if (e.customerId !== first.customerId) sameCustomer = false;
    if (e.featureKey !== first.featureKey) sameFeature = false;
    if (e.kind !== first.kind) sameKind = false;
    if (e.amount !== first.amount) sameAmount = false;
    if (e.credits !== first.credits) sameCredits = false;
    if (e.idempotencyKey !== first.idempotencyKey) sameKey = false;
    if (e.fingerprint !== first.fingerprint) sameFingerprint = false;
    if (props !== firstProperties) sameProperties = false;
  }
  // The names are INSERT's jsonb_to_record columns; JSON.stringify leaves out the undefined ones.
  const constants = {
    base,
    customer_id: sameCustomer ? customers[0] : undefined,
    feature_key: sameFeature ? featureKeys[0] : undefined,
    kind: sameKind ? kinds[0] : undefined,
    amount: sameAmount ? amounts[0] : undefined,
    credits: sameCredits ? credits[0] : undefined,
    idempotency_key: sameKey ? keys[0] : undefined,
    fingerprint: sameFingerprint ? fingerprints[0] : undefined,
    properties: sameProperties ? firstProperties : undefined,
  };
  const json = JSON.stringify([
    constants,
    ids,
    sameCustomer ? NONE : customers,
    sameFeature ? NONE : featureKeys,
    sameKind ? NONE : kinds,
    sameAmount ? NONE : amounts,
    sameCredits ? NONE : credits,
    sameKey ? NONE : keys,
    sameFingerprint ? NONE : fingerprints,
    deltas,
    sameProperties ? NONE : properties,
  ]);
  return { ids, customers, keys, json, checked };
}

/** The events of a chunk, as columns() was given them (apart from what JSON cannot carry). */
function decode(chunk: string): LedgerEvent[] {
  const [constants, ids, ...cols] = JSON.parse(chunk) as [Record<string, unknown>, string[], ...unknown[][]];
  const [customers, featureKeys, kinds, amounts, credits, keys, fingerprints, deltas, properties] = cols as unknown[][];
  const at = <T>(col: unknown[], name: string, i: number) => (col.length === 0 ? constants[name] : col[i]) as T;
  return ids.map((id, i) => ({
    id,
    customerId: at(customers!, "customer_id", i),
    featureKey: at(featureKeys!, "feature_key", i),
    kind: at(kinds!, "kind", i),
    amount: at(amounts!, "amount", i),
    credits: at(credits!, "credits", i),
    idempotencyKey: at(keys!, "idempotency_key", i),
    fingerprint: at(fingerprints!, "fingerprint", i),
    occurredAt: new Date((constants["base"] as number) + (deltas![i] as number)),
    properties: at(properties!, "properties", i),
  }));
}

/** String.prototype.isWellFormed and toWellFormed: in every Node that meterd runs on, not in lib ES2022. */
interface WellFormed {
  isWellFormed(): boolean;
  toWellFormed(): string;
}

function wellFormed(s: string): string {
  const w = s as unknown as WellFormed;
  return w.isWellFormed() ? s : w.toWellFormed();
}

// The quick checks: none passes what check() refuses, but for the NUL characters that screen() finds.
function isText(value: unknown): value is string {
  return typeof value === "string" && value !== "";
}

function isKind(kind: unknown): boolean {
  return kind === "track" || kind === "set" || kind === "adjustment" || kind === "topup";
}

function hasStringValues(properties: Record<string, string>): boolean {
  // for-in also walks inherited keys, which check() ignores: a doubt, never a wrong pass.
  for (const k in properties) if (typeof properties[k] !== "string") return false;
  return true;
}

/** DECIMAL.test, as a loop over the characters: no regex call for "1" or "0". */
function isDecimal(value: unknown): boolean {
  if (typeof value !== "string") return false;
  const n = value.length;
  let i = n > 0 && value.charCodeAt(0) === 45 /* - */ ? 1 : 0;
  const whole = i;
  while (i < n && isDigit(value.charCodeAt(i))) i++;
  if (i === whole || i - whole > 100) return false;
  if (i === n) return true;
  if (value.charCodeAt(i) !== 46 /* . */) return false;
  const fraction = ++i;
  while (i < n && isDigit(value.charCodeAt(i))) i++;
  return i === n && i > fraction && i - fraction <= 100;
}

function isDigit(c: number): boolean {
  return c >= 48 && c <= 57;
}

// The exact checks, with the reasons given to the caller; they run only for events the quick checks
// doubt.
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

/** Throws InvalidEventError when the event can never be stored. */
function check(e: LedgerEvent): void {
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
  text(id, "customerId", e.customerId, false);
  text(id, "featureKey", e.featureKey, true);
  decimal(id, "amount", e.amount);
  decimal(id, "credits", e.credits);
  text(id, "idempotencyKey", e.idempotencyKey, true);
  text(id, "fingerprint", e.fingerprint, false);
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
