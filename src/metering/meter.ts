// The metering rules: one Track goes validate -> FastPath.apply (atomic decision and increments)
// -> Ledger.append (group commit) -> answer -> settle. An ALLOWED answer is only given after the commit.
// A commit that surely did not land undoes the increments; one whose outcome is unknown stays in the
// outbox, where the sweeper commits it; either way a retry with the same key counts exactly once.
import { Code } from "@connectrpc/connect";
import type { Logger } from "pino";
import type { Catalog } from "../catalog/catalog.js";
import type { Customer, Feature } from "../catalog/types.js";
import type { ApplyRequest, ApplyResult, CounterRef, FastPath, Original, SettleItem } from "../fastpath/fastpath.js";
import {
  type AppendOutcome,
  type EventKind,
  type Ledger,
  type LedgerEvent,
  NotWrittenError,
  type StoredEvent,
} from "../ledger/ledger.js";
import type { UsageChanges } from "./changes.js";
import { counterRef, Counters, failClosed, ledgerDown } from "./counters.js";
import { amountToUnits, creditsForUnits, decimalToUnits, unitsToDecimal, unitsToNumber } from "./decimal.js";
import { isPermanentLedgerRefusal } from "../ledger/refusal.js";
import { commitUnknown, fastPathUnavailable, invalid, ledgerRefused, ledgerUnavailable, MeterError } from "./errors.js";
import { type EventListing, type EventPage, listEvents } from "./event-list.js";
import { queryUsageHistory, type UsageBucket, type UsageHistoryQuery } from "./usage-history.js";
import { newEventId } from "./event-id.js";
import { currentPeriodOf, periodOf } from "./period.js";
import type { Caller, SetUsageInput, TopUpInput, TopUpOutcome, TrackInput, TrackOutcome } from "./types.js";
import { answerOf, duplicateOf, encodeOutbox, fingerprintOf } from "./records.js";
import { MeterStats } from "./stats.js";
import { OutboxSweeper } from "./sweeper.js";
import { CREDIT_PRECISION, limitUnitsOf, snapshot, type Terms, thresholdsCrossed, walletOnly } from "./usage.js";
import { checkCustomerId, checkIdempotencyKey, checkProperties, checkTimestamp, type TimeWindow } from "./validate.js";

export interface MeterDeps {
  catalog: Catalog;
  fastPath: FastPath;
  ledger: Ledger;
  changes: UsageChanges;
  window: TimeWindow;
  clock?: () => Date;
  /** How long a rebuild waits for commits in flight when the fast path lost its data (default 3 s). */
  rebuildGraceMs?: number;
  logger?: Pick<Logger, "warn">;
  /** Where decisions, failures, sweeps and rebuilds are counted (read by src/ops/prometheus.ts). */
  stats?: MeterStats;
}

/** An event ready for the fast path: validated, priced, and with its ledger row but for the amount. */
interface Prepared {
  req: ApplyRequest;
  terms: Terms | null;
  row: Omit<LedgerEvent, "amount" | "credits">;
}

type Applied = Extract<ApplyResult, { code: "APPLIED" }>;

/** How long a retry waits for the same key's first attempt to commit. */
const PENDING_WAIT_MS = 5_000;
const MAX_ATTEMPTS = 20;
/** Committed events wait up to this long to be settled together (see settleLater), or until this many wait. */
const SETTLE_DELAY_MS = 5;
const SETTLE_BATCH = 1000;
/** Rounds of grouped loads for a batch: a new customer needs one (rebuild and counters together). */
const LOAD_ROUNDS = 2;

export class Meter {
  readonly catalog: Catalog;
  private readonly fastPath: FastPath;
  private readonly ledger: Ledger;
  private readonly changes: UsageChanges;
  /** How far back and ahead an event's time may be: what a range of the past can still take. */
  readonly window: TimeWindow;
  private readonly clock: () => Date;
  private readonly logger: Pick<Logger, "warn"> | undefined;
  readonly counters: Counters;
  readonly stats: MeterStats;
  private readonly sweeper: OutboxSweeper;
  private readonly settling = new Set<Promise<void>>();
  private readonly settleQueue: SettleItem[] = [];
  private settleTimer: NodeJS.Timeout | null = null;

  constructor(deps: MeterDeps) {
    this.stats = deps.stats ?? new MeterStats();
    this.counters = new Counters(deps.fastPath, deps.ledger, deps.rebuildGraceMs, this.stats);
    this.catalog = deps.catalog;
    this.fastPath = deps.fastPath;
    this.ledger = deps.ledger;
    this.changes = deps.changes;
    this.window = deps.window;
    this.clock = deps.clock ?? (() => new Date());
    this.logger = deps.logger;
    this.sweeper = new OutboxSweeper({
      fastPath: deps.fastPath,
      ledger: deps.ledger,
      changes: deps.changes,
    });
  }

  async track(input: TrackInput, caller: Caller): Promise<TrackOutcome> {
    try {
      const prepared = this.prepareTrack(input, caller);
      const outcome = "eventId" in prepared ? prepared : await this.execute(prepared);
      this.stats.decided(outcome);
      return outcome;
    } catch (error) {
      this.stats.trackFailed(error);
      throw error;
    }
  }

  /**
   * Many events at once (TrackBatch, TrackStream): each is validated and decided on its own, but the
   * first decisions go to the fast path in one round trip and the commits share group commits.
   */
  async trackMany(inputs: TrackInput[], caller: Caller): Promise<Array<TrackOutcome | MeterError | Error>> {
    // One instant for the whole call, so that events without a timestamp share their terms (a customer's
    // plan and period), worked out once per (customer, feature).
    const now = this.clock();
    const terms = new Map<string, SharedTerms>();
    const prepared = inputs.map((input) => {
      try {
        return this.prepareTrack(input, caller, now, terms);
      } catch (error) {
        return error instanceof Error ? error : new Error(String(error));
      }
    });
    // Plain index arrays rather than maps: this bookkeeping runs for every event of every batch.
    const pending: Prepared[] = [];
    const pendingAt: number[] = [];
    const results = new Array<TrackOutcome | MeterError | Error>(prepared.length);
    prepared.forEach((p, i) => {
      if (p instanceof Error || "eventId" in p) {
        results[i] = p;
      } else {
        pending.push(p);
        pendingAt.push(i);
      }
    });
    const first = await this.applyGrouped(pending);
    // The events applied are committed in one ledger call and settled in one round trip.
    const applied: Array<readonly [Prepared, Applied]> = [];
    const appliedAt: number[] = [];
    first.forEach((result, j) => {
      if (result !== undefined && !(result instanceof Error) && result.code === "APPLIED") {
        applied.push([pending[j]!, result]);
        appliedAt.push(j);
      }
    });
    const commits = applied.length > 0 ? this.commitMany(applied) : Promise.resolve([]);
    const outcomes = await commits.then(
      (results) => results,
      (error: unknown) => applied.map(() => (error instanceof Error ? error : new Error(String(error)))),
    );
    const rest: Array<Promise<void>> = [];
    let next = 0;
    pending.forEach((p, j) => {
      const i = pendingAt[j]!;
      if (appliedAt[next] === j) {
        results[i] = outcomes[next++]!;
        return;
      }
      const decided = first[j];
      if (decided instanceof Error) {
        results[i] = decided;
        return;
      }
      // Anything else (a denial, a duplicate, a key still pending) is decided event by event.
      rest.push(
        this.execute(p, decided).then(
          (outcome) => void (results[i] = outcome),
          (error: unknown) => void (results[i] = error instanceof Error ? error : new Error(String(error))),
        ),
      );
    });
    await Promise.all(rest);
    const stats = this.stats;
    for (const result of results) {
      if (result instanceof Error) stats.trackFailed(result);
      else stats.decided(result);
    }
    return results;
  }

  /**
   * Applies a batch in one fast-path round trip. Events whose customer, counter or wallet was not
   * loaded are loaded in groups (each customer, counter and wallet once) and applied again in one
   * round trip, so a batch of new customers costs a few queries, not a few per event. If a round trip
   * fails, the events left undecided go through execute() one by one.
   */
  private async applyGrouped(pending: Prepared[]): Promise<Array<ApplyResult | MeterError | undefined>> {
    if (pending.length === 0) return [];
    const results: Array<ApplyResult | MeterError | undefined> = await this.fastPath.applyMany(pending.map((p) => p.req)).catch((error: unknown) => afterFailedApply(pending, error));
    for (let round = 0; round < LOAD_ROUNDS; round++) {
      const missing = pending.flatMap((p, i) => {
        const result = results[i];
        return result !== undefined && !(result instanceof Error) && result.code === "NOT_LOADED" ? [i] : [];
      });
      if (missing.length === 0) break;
      try {
        await this.counters.loadMany(
          missing.map((i) => {
            const p = pending[i]!;
            const result = results[i] as Extract<ApplyResult, { code: "NOT_LOADED" }>;
            return {
              customerId: p.req.customerId,
              customer: result.customer,
              counter: (result.counter || result.customer) && p.req.counter && p.terms ? { ref: p.req.counter, terms: p.terms } : null,
              wallet: (result.wallet || result.customer) && p.req.walletDelta !== 0,
            };
          }),
        );
      } catch {
        break; // each event then retries on its own, and reports its own error
      }
      const again = await this.fastPath.applyMany(missing.map((i) => pending[i]!.req)).catch((error: unknown) => afterFailedApply(missing.map((i) => pending[i]!), error));
      missing.forEach((i, at) => (results[i] = again[at]));
    }
    return results;
  }

  /** Validates and prices one Track; a TrackOutcome when it is decided without the fast path. */
  private prepareTrack(input: TrackInput, caller: Caller, now = this.clock(), shared?: Map<string, SharedTerms>): Prepared | TrackOutcome {
    checkCustomerId(input.customerId);
    const feature = this.featureOf(input.featureKey);
    // An explicit 0 is almost always a caller's bug (an unset field sent as its default), and an event
    // of nothing would be answered ALLOWED without counting anything.
    // A replayed set may be 0: SetUsage to the same total records a delta of 0.
    const asSet = input.kind === "set";
    if (input.amount === 0 && !asSet) throw invalid("amount", "must not be 0 (leave it unset to count 1)", "AMOUNT_ZERO");
    const amount = amountToUnits(input.amount, feature.precision);
    if (!amount.ok) throw invalid("amount", amount.rule, amount.reason);
    if (asSet && !caller.mayCorrect) {
      throw new MeterError(Code.PermissionDenied, "SECRET_KEY_REQUIRED", "kind EVENT_KIND_SET needs a secret key", "kind", "must be unset with a customer token");
    }
    if (asSet && feature.creditCost !== null) throw setOnCreditFunded();
    if (amount.units < 0 && !caller.mayCorrect) {
      throw new MeterError(Code.PermissionDenied, "NEGATIVE_AMOUNT_FORBIDDEN", "amount may be negative only with a secret key", "amount", "must not be negative");
    }
    checkIdempotencyKey(input.idempotencyKey);
    checkProperties(input.properties);
    const at = input.timestamp ?? now;
    if (input.timestamp) checkTimestamp(input.timestamp, now, this.window);

    const customer = this.catalog.customer(input.customerId);
    let terms: Terms | null;
    let counter: CounterRef | null | undefined;
    if (shared && !input.timestamp) {
      const pair = `${customer.id.length}:${customer.id}${feature.key}`;
      let found = shared.get(pair);
      if (found === undefined) {
        const t = this.termsAt(customer, feature, at);
        shared.set(pair, (found = { terms: t, counter: t ? counterRef(customer.id, t) : null }));
      }
      ({ terms, counter } = found);
    } else {
      terms = this.termsAt(customer, feature, at);
    }
    const kind: EventKind = asSet ? "set" : amount.units < 0 ? "adjustment" : "track";
    // A replayed set is told apart from a SetUsage of the same number under the same key.
    const fingerprint = fingerprintOf([asSet ? "set-delta" : kind, feature.key, amount.units, input.timestamp?.getTime() ?? null, input.properties]);
    if (!terms) return this.notEntitled(feature, at, customer);

    const charge = feature.creditCost === null ? 0 : creditsForUnits(Math.abs(amount.units), feature.precision, feature.creditCost);
    return this.prepare(customer, input.idempotencyKey, fingerprint, terms, { kind: "add", units: amount.units }, {
      kind,
      occurredAt: at,
      properties: input.properties,
      walletDelta: amount.units < 0 ? charge : -charge,
    }, counter);
  }

  async setUsage(input: SetUsageInput): Promise<TrackOutcome> {
    checkCustomerId(input.customerId);
    const feature = this.featureOf(input.featureKey);
    if (feature.creditCost !== null) throw setOnCreditFunded();
    const target = this.nonNegative(input.used, feature, "used");
    const expected = input.expectedUsed === null ? null : this.nonNegative(input.expectedUsed, feature, "expected_used");
    checkIdempotencyKey(input.idempotencyKey);
    checkProperties(input.properties);
    const now = this.clock();
    const customer = this.catalog.customer(input.customerId);
    const terms = this.termsAt(customer, feature, now);
    if (!terms) return this.notEntitled(feature, now, customer);
    const fingerprint = fingerprintOf(["set", feature.key, target, expected, input.properties]);
    const prepared = this.prepare(customer, input.idempotencyKey, fingerprint, terms, { kind: "set", target, expected }, {
      kind: "set",
      occurredAt: now,
      properties: input.properties,
      walletDelta: 0,
    });
    return this.execute(prepared).catch(this.countFailure);
  }

  async topUp(input: TopUpInput): Promise<TopUpOutcome> {
    checkCustomerId(input.customerId);
    const credits = amountToUnits(input.amount, CREDIT_PRECISION);
    if (!credits.ok) throw invalid("amount", credits.rule, credits.reason);
    if (credits.units <= 0) throw invalid("amount", "must be greater than 0", "TOP_UP_NOT_POSITIVE");
    if (input.idempotencyKey === "") throw invalid("idempotency_key", "is required for a top-up", "IDEMPOTENCY_KEY_REQUIRED");
    checkIdempotencyKey(input.idempotencyKey);
    if (input.description.length > 500) throw invalid("description", "must be at most 500 characters", "TEXT_TOO_LONG");
    const now = this.clock();
    const at = input.timestamp ?? null;
    if (at !== null) checkTimestamp(at, now, this.window);
    const customer = this.catalog.customer(input.customerId);
    const properties = input.description === "" ? {} : { description: input.description };
    // The time is part of what a retry must repeat only when the caller gave one: earlier top-ups keep their fingerprint.
    const fingerprint = fingerprintOf(at === null ? ["topup", credits.units, input.description] : ["topup", credits.units, input.description, at.getTime()]);
    const prepared = this.prepare(customer, input.idempotencyKey, fingerprint, null, { kind: "add", units: 0 }, {
      kind: "topup",
      occurredAt: at ?? now,
      properties,
      walletDelta: credits.units,
    });
    const outcome = await this.execute(prepared).catch(this.countFailure);
    return { entryId: outcome.eventId, duplicate: outcome.duplicate, balance: outcome.usage.creditBalance ?? 0 };
  }

  /** May the customer use `amount` more? Reads only. */
  async check(customerId: string, featureKey: string, amountValue: number): Promise<{ allowed: boolean; denyReason: TrackOutcome["denyReason"]; usage: TrackOutcome["usage"] }> {
    checkCustomerId(customerId);
    const feature = this.featureOf(featureKey);
    const units = amountValue === 0 ? 10 ** feature.precision : this.nonNegative(amountValue, feature, "amount");
    const customer = this.catalog.customer(customerId);
    const now = this.clock();
    const terms = this.termsAt(customer, feature, now);
    if (!terms) {
      const denied = this.notEntitled(feature, now, customer);
      return { allowed: false, denyReason: denied.denyReason, usage: denied.usage };
    }
    const [consumed, wallet] = await this.counters.read(customerId, [terms], feature.creditCost !== null);
    const used = consumed[0] ?? 0;
    const cost = feature.creditCost === null ? 0 : creditsForUnits(units, feature.precision, feature.creditCost);
    let denyReason: TrackOutcome["denyReason"] = null;
    if (terms.entitlement.hard && terms.limitUnits !== null && used + units > terms.limitUnits) denyReason = "limit_reached";
    else if (wallet !== null && terms.entitlement.hard && wallet < cost) denyReason = "insufficient_credits";
    return { allowed: denyReason === null, denyReason, usage: snapshot(terms, used, wallet) };
  }

  /** The customer's terms for a feature at an instant; null if the plan does not include it. */
  termsAt(customer: Customer, feature: Feature, at: Date): Terms | null {
    const entitlement = this.catalog.entitlement(customer, feature.key);
    if (!entitlement) return null;
    const period = feature.kind === "persistent" ? null : currentPeriodOf(at, feature.interval, feature.anchor, customer.billingAnchor);
    return { feature, entitlement, limitUnits: limitUnitsOf(feature, entitlement), period };
  }

  /** Counters of one customer for these terms (see Counters.read). */
  readTerms(customerId: string, terms: Terms[], withWallet: boolean): Promise<[number[], number | null]> {
    return this.counters.read(customerId, terms, withWallet);
  }

  /** Usage over time from the ledger (QueryUsage). */
  queryUsage(query: UsageHistoryQuery): Promise<UsageBucket[]> {
    return queryUsageHistory(this.ledger, this.catalog, query);
  }

  /** A page of one customer's ledger events (ListEvents). */
  listEvents(listing: EventListing): Promise<EventPage> {
    return listEvents(this.ledger, this.catalog, listing);
  }

  /** Usage for these terms from the ledger alone (see Counters.fromLedger): past periods. */
  readPastTerms(customerId: string, terms: Terms[], until: Date): Promise<number[]> {
    return this.counters.fromLedger(customerId, terms, until);
  }

  walletUnits(customerId: string): Promise<number> {
    return this.counters.wallet(customerId);
  }

  /** Commits events left pending by a replica that died (see OutboxSweeper). */
  async sweep(olderThanMs: number, max = 1000): Promise<number> {
    const settled = await this.sweeper.sweep(olderThanMs, max);
    this.stats.swept += settled;
    return settled;
  }

  /** Counts a failed write by what failed (see MeterStats.failed), and throws it on. */
  private readonly countFailure = (error: unknown): never => {
    this.stats.failed(error);
    throw error;
  };

  private featureOf(key: string): Feature {
    if (key === "") throw invalid("feature_key", "must not be empty", "FEATURE_KEY_EMPTY");
    const feature = this.catalog.feature(key);
    if (!feature) throw invalid("feature_key", `must name a known feature, "${key}" is not one`, "UNKNOWN_FEATURE");
    return feature;
  }

  private nonNegative(value: number, feature: Feature, field: string): number {
    const units = amountToUnits(value, feature.precision);
    if (!units.ok) throw invalid(field, units.rule, units.reason);
    if (units.units < 0) throw invalid(field, "must not be negative", "NEGATIVE_QUANTITY");
    return units.units;
  }

  private prepare(
    customer: Customer,
    idempotencyKey: string,
    fingerprint: string,
    terms: Terms | null,
    op: ApplyRequest["op"],
    event: { kind: EventKind; occurredAt: Date; properties: Record<string, string>; walletDelta: number },
    /** The counter, when the caller already has it (events of a batch share theirs). */
    shared?: CounterRef | null,
  ): Prepared {
    // The id is given before the fast path, so that a resent command cannot count twice.
    const eventId = newEventId();
    const hard = terms?.entitlement.hard ?? true;
    const dedupeKey = idempotencyKey === "" ? eventId : idempotencyKey;
    const counter = shared !== undefined ? shared : terms ? counterRef(customer.id, terms) : null;
    const row: Prepared["row"] = {
      id: eventId,
      customerId: customer.id,
      featureKey: terms?.feature.key ?? null,
      kind: event.kind,
      idempotencyKey: idempotencyKey === "" ? null : idempotencyKey,
      fingerprint,
      occurredAt: event.occurredAt,
      properties: event.properties,
    };
    return {
      terms,
      row,
      req: {
        customerId: customer.id,
        eventId,
        dedupeKey,
        fingerprint,
        counter,
        op,
        limit: hard ? (terms?.limitUnits ?? null) : null,
        walletDelta: event.walletDelta,
        walletMayGoNegative: !hard,
        record: encodeOutbox(row, dedupeKey, counter, terms?.feature.precision ?? 0),
      },
    };
  }

  /** Runs one event to its outcome, starting from `first` when the fast path has already answered once. */
  private async execute(p: Prepared, first?: ApplyResult): Promise<TrackOutcome> {
    let waited = false;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const result = attempt === 0 && first ? first : await this.fastPath.apply(p.req).catch(failClosed);
      switch (result.code) {
        case "APPLIED":
          return this.commit(p, result);
        case "NOT_LOADED":
          if (result.customer) {
            await this.counters.rebuild(p.req.customerId);
            continue;
          }
          if (result.counter && p.req.counter && p.terms) await this.counters.loadCounter(p.req.counter, p.terms);
          if (result.wallet) await this.counters.loadWallet(p.req.customerId);
          continue;
        case "PENDING": {
          // After one wait, the ledger may already hold the key (a restart forgot it): replay from there
          // rather than race the other retries again.
          const replay = waited ? await this.replayFromLedger(p) : null;
          if (replay) return replay;
          await this.fastPath.waitSettled(p.req.customerId, p.req.dedupeKey, PENDING_WAIT_MS);
          waited = true;
          continue;
        }
        case "DUPLICATE":
          return duplicateOf(result.original, p.terms);
        case "KEY_CONFLICT":
          throw keyConflict(p.row.idempotencyKey ?? "");
        case "EXPECTED_MISMATCH": {
          // A retry of a committed compare-and-set no longer matches: it is a replay, not a conflict.
          const replay = await this.replayFromLedger(p);
          if (replay) return replay;
          throw new MeterError(
            Code.FailedPrecondition,
            "EXPECTED_USED_MISMATCH",
            `expected_used does not match the current total ${this.display(p, result.consumed)}`,
            "expected_used",
            "must equal the current total",
          );
        }
        case "OUT_OF_RANGE": {
          const replay = await this.replayFromLedger(p);
          if (replay) return replay;
          throw new MeterError(
            Code.OutOfRange,
            "TOTAL_OUT_OF_RANGE",
            `amount would take the total (now ${this.display(p, result.consumed)}) below 0 or above the largest exact total`,
            "amount",
            "total must stay from 0 to the largest exact total",
          );
        }
        case "DENIED_LIMIT":
        case "DENIED_CREDITS":
          return (await this.replayFromLedger(p)) ?? this.denied(p, result);
      }
    }
    throw new MeterError(Code.Unavailable, "BUSY", "the event could not be decided in time; retry with the same idempotency key");
  }

  private async commit(p: Prepared, applied: Applied): Promise<TrackOutcome> {
    const [outcome] = await this.commitMany([[p, applied]]);
    if (outcome instanceof Error) throw outcome;
    return outcome!;
  }

  /**
   * Commits applied events in one ledger call (the group committer may join them with others), then
   * settles the committed ones in one fast-path round trip. One outcome per event, in order.
   */
  private async commitMany(items: ReadonlyArray<readonly [Prepared, Applied]>): Promise<Array<TrackOutcome | Error>> {
    // The answers are built before the commit, so that nothing can fail between a commit and its answer.
    const answers = items.map(([p, applied]) => answerOf(originalOf(p, applied), p.terms, false));
    let appended: AppendOutcome[] | null = null;
    let failure: unknown = null;
    try {
      appended = await this.ledger.append(items.map(([p, applied]) => this.ledgerRow(p, applied)));
    } catch (error) {
      failure = error;
    }
    const results = new Array<TrackOutcome | Error>(items.length);
    const settle: SettleItem[] = [];
    const unsure: number[] = [];
    items.forEach(([p, applied], i) => {
      const outcome = appended?.[i];
      if (outcome !== undefined && !isOther(outcome, p)) {
        results[i] = answers[i]!;
        settle.push({ customerId: p.req.customerId, dedupeKey: p.req.dedupeKey, ref: applied.ref });
      } else {
        unsure.push(i);
      }
    });
    // Durable now: the answers are ALLOWED whatever happens next, so they go out without waiting for
    // the settle. A retry that arrives before it lands finds the key pending and waits for it (see
    // execute); a settle that fails leaves the events in the outbox, where the sweeper settles them.
    if (settle.length > 0) this.settleLater(settle);
    await Promise.all(
      unsure.map(async (i) => {
        const [p, applied] = items[i]!;
        try {
          const outcome = appended?.[i] ?? (await this.afterFailedAppend(p, applied, failure));
          if (!isOther(outcome, p)) {
            this.settleLater([{ customerId: p.req.customerId, dedupeKey: p.req.dedupeKey, ref: applied.ref }]);
            results[i] = answers[i]!;
            return;
          }
          // The ledger already holds this key: an event that the fast path no longer knew about.
          await this.fastPath.revert(p.req, applied).catch(failClosed);
          results[i] = await this.fromExisting(p, outcome.existing);
        } catch (error) {
          results[i] = error instanceof Error ? error : new Error(String(error));
        }
      }),
    );
    const changed = new Map(items.map(([p]) => [`${p.req.customerId}\u0000${p.row.featureKey}`, p] as const));
    for (const p of changed.values()) this.changes.notify(p.req.customerId, p.row.featureKey);
    return results;
  }

  /**
   * Settles committed events off the reply path, those of the commits that end within SETTLE_DELAY_MS
   * of each other in one call (at once from SETTLE_BATCH events): at a few Tracks per millisecond, one
   * Redis round trip per Track would cost more CPU than the Track itself. drain() flushes what waits.
   */
  private settleLater(items: SettleItem[]): void {
    for (const item of items) this.settleQueue.push(item);
    if (this.settleQueue.length >= SETTLE_BATCH) this.flushSettles();
    else this.settleTimer ??= setTimeout(() => this.flushSettles(), SETTLE_DELAY_MS);
  }

  private flushSettles(): void {
    if (this.settleTimer !== null) {
      clearTimeout(this.settleTimer);
      this.settleTimer = null;
    }
    const items = this.settleQueue.splice(0);
    if (items.length === 0) return;
    const settling = this.fastPath
      .settleMany(items)
      .catch((error: unknown) => {
        this.stats.fastPathSettleFailed++;
        this.logger?.warn({ err: error, events: items.length }, "committed events not settled in the fast path; the sweeper will");
      })
      .finally(() => this.settling.delete(settling));
    this.settling.add(settling);
  }

  /** Waits for the settles in flight, so that a clean shutdown leaves nothing for the sweeper. */
  async drain(): Promise<void> {
    for (;;) {
      this.flushSettles();
      if (this.settling.size === 0) return;
      await Promise.all(this.settling);
    }
  }

  /** The ledger row of an applied event. */
  private ledgerRow(p: Prepared, applied: Applied): LedgerEvent {
    const { row } = p;
    // Field by field rather than a spread, which costs more than the rest of this, per event.
    return {
      id: row.id,
      customerId: row.customerId,
      featureKey: row.featureKey,
      kind: row.kind,
      idempotencyKey: row.idempotencyKey,
      fingerprint: row.fingerprint,
      occurredAt: row.occurredAt,
      properties: row.properties,
      amount: unitsToDecimal(applied.delta, p.terms?.feature.precision ?? 0),
      credits: p.req.walletDelta === 0 ? "0" : unitsToDecimal(p.req.walletDelta, CREDIT_PRECISION),
    };
  }

  /** After a failed append: the event landed after all, or it is undone, or its outcome stays unknown. */
  private async afterFailedAppend(p: Prepared, applied: Applied, error: unknown): Promise<AppendOutcome> {
    // A refusal for the event's own values fails its statement whole: nothing landed, and a retry
    // would be refused the same way, so the caller is told not to retry (INVALID_ARGUMENT).
    if (isPermanentLedgerRefusal(error)) {
      await this.fastPath.revert(p.req, applied).catch(() => undefined);
      throw ledgerRefused(error);
    }
    const landed = error instanceof NotWrittenError ? "no" : await this.landed(p.req.eventId);
    if (landed === "yes") return { inserted: true };
    if (landed === "no") {
      await this.fastPath.revert(p.req, applied).catch(() => undefined);
      throw ledgerUnavailable(error);
    }
    // The COMMIT may have landed with only its reply lost. Neither undo nor answer: the event stays
    // pending in the outbox, and the sweeper commits it (or finds it) once the ledger answers.
    throw commitUnknown(error);
  }

  /**
   * Whether an event whose commit failed is in the ledger after all. Asked twice, briefly: when the
   * ledger stays away, "unknown" is safe (the event waits in the outbox), and the caller is not held.
   */
  private async landed(eventId: string): Promise<"yes" | "no" | "unknown"> {
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        return (await this.ledger.findById(eventId)) === null ? "no" : "yes";
      } catch {
        if (attempt === 0) await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    return "unknown";
  }

  /** A denied retry of an event the ledger holds (for example after a restart) is a replay, not a denial. */
  private async replayFromLedger(p: Prepared): Promise<TrackOutcome | null> {
    if (p.row.idempotencyKey === null) return null;
    // Without the ledger, a retry of a counted event cannot be told from a new one: do not guess.
    const existing = await this.ledger.findByKey(p.req.customerId, p.row.idempotencyKey).catch(ledgerDown);
    return existing ? this.fromExisting(p, existing) : null;
  }

  private async fromExisting(p: Prepared, existing: StoredEvent | undefined): Promise<TrackOutcome> {
    if (!existing) throw new MeterError(Code.Internal, "LEDGER_NO_OUTCOME", "the ledger returned no outcome");
    if (existing.fingerprint !== p.req.fingerprint) throw keyConflict(p.row.idempotencyKey ?? "");
    const precision = p.terms?.feature.precision ?? 0;
    const [consumed, wallet] = p.terms
      ? await this.counters.read(p.req.customerId, [p.terms], p.terms.feature.creditCost !== null)
      : [[0], await this.counters.wallet(p.req.customerId)];
    return {
      eventId: existing.id,
      allowed: true,
      denyReason: null,
      duplicate: true,
      usage: p.terms ? snapshot(p.terms, consumed[0] ?? 0, wallet) : walletOnly(wallet),
      thresholdsCrossed: [],
      delta: existing.featureKey === null ? 0 : unitsToNumber(decimalToUnits(existing.amount, precision), precision),
    };
  }

  private denied(p: Prepared, result: Extract<ApplyResult, { code: "DENIED_LIMIT" | "DENIED_CREDITS" }>): TrackOutcome {
    const wallet = result.code === "DENIED_CREDITS" ? result.wallet : null;
    return {
      eventId: p.req.eventId,
      allowed: false,
      denyReason: result.code === "DENIED_LIMIT" ? "limit_reached" : "insufficient_credits",
      duplicate: false,
      usage: p.terms ? snapshot(p.terms, result.consumed, wallet) : walletOnly(wallet),
      thresholdsCrossed: [],
      delta: 0,
    };
  }

  private notEntitled(feature: Feature, at: Date, customer: Customer): TrackOutcome {
    const period = feature.kind === "persistent" ? null : periodOf(at, feature.interval, feature.anchor, customer.billingAnchor);
    const terms: Terms = { feature, entitlement: { featureKey: feature.key, limit: "0", hard: true, thresholds: [] }, limitUnits: 0, period };
    return { eventId: "", allowed: false, denyReason: "not_entitled", duplicate: false, usage: snapshot(terms, 0, null), thresholdsCrossed: [], delta: 0 };
  }

  private display(p: Prepared, units: number): string {
    return unitsToDecimal(units, p.terms?.feature.precision ?? 0);
  }

}

/**
 * The results of an apply call that failed: whether Redis ran it is unknown. An event with an
 * idempotency key is safely tried again (undefined: its key tells a retry from a new event); one without
 * fails, since trying it again could count it twice. If it was applied, the sweeper commits it.
 */
function afterFailedApply(pending: readonly Prepared[], error: unknown): Array<MeterError | undefined> {
  const failed = error instanceof MeterError ? error : fastPathUnavailable(error);
  return pending.map((p) => (p.row.idempotencyKey === null ? failed : undefined));
}

/** A customer's terms for a feature and their counter, shared by the events of a batch without a timestamp. */
interface SharedTerms {
  terms: Terms | null;
  counter: CounterRef | null;
}

function keyConflict(key: string): MeterError {
  return new MeterError(
    Code.AlreadyExists,
    "IDEMPOTENCY_KEY_REUSED",
    `idempotency_key "${key}" was already used for a different event`,
    "idempotency_key",
    "must identify one payload",
  );
}

/**
 * Whether the ledger holds another event with this key. Otherwise the event was inserted, or the row
 * already there is this very event (another replica's sweeper committed it while this commit was slow):
 * counted once, in the ledger and in the counter.
 */
function isOther(outcome: AppendOutcome, p: Prepared): outcome is Extract<AppendOutcome, { inserted: false }> {
  return !outcome.inserted && outcome.existing.id !== p.req.eventId;
}

/** What an applied event is answered from: the same numbers a retry of its key gets (see answerOf). */
function originalOf(p: Prepared, applied: Applied): Original {
  const { before, after, delta, walletAfter } = applied;
  return { eventId: p.req.eventId, before, after, delta, walletAfter, walletDelta: p.req.walletDelta, counted: p.req.counter !== null };
}

/** A set has no price: the delta of a total cannot be charged in credits. */
function setOnCreditFunded(): MeterError {
  return invalid("feature_key", "must not be credit-funded: SetUsage cannot price a delta, use Track", "SET_USAGE_CREDIT_FUNDED");
}
