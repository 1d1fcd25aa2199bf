// The ledger: every counted event, durable and exactly once. Counters are derived from it.
import type { EventPosition, EventQuery } from "./event-query.js";
import type { CalendarUnit, UsageQuery, UsageRow } from "./usage-query.js";

export type { EventPosition, EventQuery } from "./event-query.js";
export type { CalendarUnit, UsageQuery, UsageRow } from "./usage-query.js";

export type EventKind = "track" | "set" | "adjustment" | "topup";

export interface LedgerEvent {
  id: string;
  customerId: string;
  /** null for credit top-ups. */
  featureKey: string | null;
  kind: EventKind;
  /** Exact decimal in the feature's units, for example "0.1" or "-3". "0" for top-ups. */
  amount: string;
  /** Exact decimal wallet movement: positive for a top-up, negative for a credit-funded charge, else "0". */
  credits: string;
  /** The client's key; null when the client gave none (the event id then deduplicates). */
  idempotencyKey: string | null;
  /** Identifies the payload, so that a reused key with another payload is told apart from a retry. */
  fingerprint: string;
  occurredAt: Date;
  properties: Record<string, string>;
}

export interface StoredEvent extends LedgerEvent {
  recordedAt: Date;
}

/**
 * Thrown by append() when it is certain that nothing of the call was written (refused before any
 * statement was sent): the caller may undo at once instead of asking the ledger what landed.
 */
export class NotWrittenError extends Error {
  readonly notWritten = true;
}

export type AppendOutcome = { inserted: true } | { inserted: false; existing: StoredEvent };

export interface UsageSumQuery {
  customerId: string;
  featureKey: string;
  /** null: unbounded. */
  from: Date | null;
  to: Date | null;
}

export interface Ledger {
  /**
   * Commits the events durably (group-committed with concurrent callers) and resolves only after the
   * commit. One outcome per event, in order: inserted, or already there (the same event written again,
   * which has the same id and occurred_at; or the same customer and idempotency key), with the row that
   * was there. Event ids are made by the server, once per event, with its time.
   */
  append(events: LedgerEvent[]): Promise<AppendOutcome[]>;
  findById(id: string): Promise<StoredEvent | null>;
  /** How many customers have events. */
  countCustomers(): Promise<number>;
  /** Customer ids with events, in order, after `after` (keyset pagination). */
  customerIds(after: string, limit: number): Promise<string[]>;
  /** Whether the ledger holds any event of the customer. */
  hasEvents(customerId: string): Promise<boolean>;
  /** Which of these customers have events: hasEvents for many, in one query. */
  customersWithEvents(customerIds: readonly string[]): Promise<Set<string>>;
  findByKey(customerId: string, idempotencyKey: string): Promise<StoredEvent | null>;
  /** Exact decimal sum of amount for events with from <= occurred_at < to (null: unbounded). */
  sumUsage(customerId: string, featureKey: string, from: Date | null, to: Date | null): Promise<string>;
  /** sumUsage for many (customer, feature, range) at once, in one query; sums in input order. */
  sumUsageMany(queries: readonly UsageSumQuery[]): Promise<string[]>;
  /** Exact decimal sum of credits. */
  walletBalance(customerId: string): Promise<string>;
  /** Events that moved the wallet (credits <> 0), newest first. */
  walletHistory(customerId: string, limit: number): Promise<StoredEvent[]>;
  /** Every event of a customer, oldest first (tests and reconciliation). */
  listEvents(customerId: string): Promise<StoredEvent[]>;
  /** Calendar boundaries strictly between from and to, in an IANA time zone, at most limit + 2 (see usage-query.ts). */
  calendarBounds(unit: CalendarUnit, timeZone: string, from: Date, to: Date, limit: number): Promise<Date[]>;
  /** Exact sums per feature, bucket and group (see usage-query.ts); empty buckets are left out. */
  queryUsage(query: UsageQuery): Promise<UsageRow[]>;
  /** A page of one customer's events (see event-query.ts); `next` is null on the last page. */
  queryEvents(query: EventQuery): Promise<{ events: StoredEvent[]; next: EventPosition | null }>;
  /** Waits for pending commits, then releases the database. */
  close(): Promise<void>;
}
