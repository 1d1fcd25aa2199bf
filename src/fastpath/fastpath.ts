// The fast path decides and applies one event atomically: deduplication, the hard-limit and credit
// checks, and the increments of the usage counter and the credit wallet. It is a cache of the ledger:
// every counter is loaded from the ledger's sum before it is first used, so it can be rebuilt at any time.

/** One usage counter: a customer's feature in one period ("p" for persistent features). */
export interface CounterRef {
  customerId: string;
  featureKey: string;
  periodKey: string;
}

export type Operation =
  /** Add `units` (negative for a correction). */
  | { kind: "add"; units: number }
  /** Set the total to `target`; the delta is computed inside the atomic step. */
  | { kind: "set"; target: number; expected: number | null };

export interface ApplyRequest {
  customerId: string;
  eventId: string;
  /** The client's idempotency key, or the event id when the client gave none. */
  dedupeKey: string;
  fingerprint: string;
  /** null for a wallet-only movement (a credit top-up). */
  counter: CounterRef | null;
  op: Operation;
  /** Hard limit in units; null when nothing caps the counter (unlimited or a soft limit). */
  limit: number | null;
  /** Wallet movement in credit units: negative for a charge, positive for a top-up; 0 leaves it alone. */
  walletDelta: number;
  /** Whether a charge may take the wallet below zero (false for hard features). */
  walletMayGoNegative: boolean;
  /**
   * The outbox row: what the ledger needs to commit this event (opaque to the fast path, one line: no
   * line break). It is kept until the event is settled or reverted, so that if this process dies before
   * its commit, a sweeper commits it.
   */
  record: string;
}

/**
 * What an applied event was answered, kept with its key once settled, so that a retry of the key is
 * answered the same.
 */
export interface Original {
  eventId: string;
  before: number;
  after: number;
  delta: number;
  walletAfter: number | null;
  walletDelta: number;
  /** Whether the event moved a counter (false for a top-up). */
  counted: boolean;
}

/** Which pending entry an applied event is: what settle and revert name it by (opaque to callers). */
export type PendingRef = string;

/** An event applied by the fast path and still not settled or reverted after a while. */
export interface StaleEvent {
  ref: PendingRef;
  customerId: string;
  dedupeKey: string;
  eventId: string;
  /** The applied deltas, in units and credit units. */
  delta: number;
  walletDelta: number;
  record: string;
}

export type ApplyResult =
  | { code: "APPLIED"; before: number; after: number; delta: number; walletAfter: number | null; ref: PendingRef }
  | { code: "DENIED_LIMIT"; consumed: number }
  | { code: "DENIED_CREDITS"; consumed: number; wallet: number }
  /**
   * A settled event with this key and fingerprint: what it was answered (a string: the result that a
   * fast path before meterd 0.2 stored, see records.ts).
   */
  | { code: "DUPLICATE"; original: Original | string }
  /** An event with this key is being committed right now: wait for it, then apply again. */
  | { code: "PENDING" }
  /** The key was used for another payload. */
  | { code: "KEY_CONFLICT" }
  /** SetUsage's expected_used does not match. */
  | { code: "EXPECTED_MISMATCH"; consumed: number }
  /** The total would leave the exact range. */
  | { code: "OUT_OF_RANGE"; consumed: number }
  /**
   * The counter or the wallet has not been loaded from the ledger yet. `customer`: nothing of this
   * customer's is live (a new customer, or a fast path that lost its data): call rebuildCustomer first.
   */
  | { code: "NOT_LOADED"; counter: boolean; wallet: boolean; customer: boolean };

/** A customer the ledger has never seen, with what its first events need loaded. */
export interface FreshCustomer {
  customerId: string;
  counters: CounterRef[];
  wallet: boolean;
}

export interface SettleItem {
  customerId: string;
  dedupeKey: string;
  ref: PendingRef;
}

export interface Readings {
  /** null where the counter is not loaded. */
  counters: Array<number | null>;
  wallet: number | null;
}

/** The outbox at one instant, for monitoring. */
export interface OutboxStatus {
  /** Pending entries: one per apply call on Redis (a batch's events share one), one per event in memory. */
  entries: number;
  /** How long ago the oldest pending entry was applied, in ms; null when the outbox is empty. */
  oldestAgeMs: number | null;
}

export interface FastPath {
  apply(req: ApplyRequest): Promise<ApplyResult>;
  /** apply() for many requests, in one round trip where the backend allows; results in input order. */
  applyMany(reqs: ApplyRequest[]): Promise<ApplyResult[]>;
  /**
   * After the ledger commit: the events leave the outbox, and a retry of their keys is answered with
   * what they were answered (DUPLICATE). In one round trip where the backend allows.
   */
  settleMany(items: ReadonlyArray<SettleItem>): Promise<void>;
  /** The commit failed or found the event already there: undo an APPLIED request and forget its key. */
  revert(req: ApplyRequest, applied: { delta: number; ref: PendingRef }): Promise<void>;
  /** Applied events pending for longer than `olderThanMs`: their process may have died before its commit. */
  staleEvents(olderThanMs: number, max: number): Promise<StaleEvent[]>;
  /** Every event of the customer applied and not yet settled or reverted, whatever its age. */
  pendingEvents(customerId: string): Promise<StaleEvent[]>;
  /** Every loaded counter of the customer, with its value. */
  listCounters(customerId: string): Promise<Array<{ counter: CounterRef; units: number }>>;
  /** Forgets the customer's counters, wallet and live mark, so that they are rebuilt from the ledger. */
  resetCustomer(customerId: string): Promise<void>;
  /** Resolves once the pending event with this key is settled or reverted. */
  waitSettled(customerId: string, dedupeKey: string, timeoutMs: number): Promise<void>;
  /**
   * Starts (or joins) the rebuild of a customer whose fast-path state is missing, and resolves to the time
   * (ms) before which no counter may be loaded: events applied before the loss may still be committing,
   * and a ledger sum taken earlier could miss them. 0 when the customer is already live again.
   */
  beginRebuild(customerId: string, notBeforeMs: number): Promise<number>;
  /** Marks the customer live: its counters may now be loaded from the ledger and used. */
  markLive(customerId: string): Promise<void>;
  /** Whether the customer is live; a reader must not load counters of a customer that is not. */
  isLive(customerId: string): Promise<boolean>;
  /**
   * For customers the ledger has never seen: marks each live and sets the given counters and wallet to 0,
   * unless already loaded. In one round trip where the backend allows.
   */
  startFresh(customers: ReadonlyArray<FreshCustomer>): Promise<void>;
  /** Sets a counter from the ledger's sum, unless it is already loaded or the customer is not live. */
  loadCounter(counter: CounterRef, units: number): Promise<void>;
  /** Sets a wallet from the ledger's sum, unless it is already loaded or the customer is not live. */
  loadWallet(customerId: string, units: number): Promise<void>;
  read(counters: CounterRef[], walletOf: string | null): Promise<Readings>;
  /** The outbox's size and the age of its oldest entry (for metrics; cheap: no entry is read). */
  outboxStatus(): Promise<OutboxStatus>;
  close(): Promise<void>;
}
