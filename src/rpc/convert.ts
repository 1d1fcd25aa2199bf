// Domain outcomes to protobuf messages. Times travel as ms inside the domain and as Timestamps here.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampDate, timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { EventKind, type CustomerUsageSchema, type MetricSchema, type TrackRequest, type TrackResponseSchema } from "../../gen/meterd/v1/metering_pb.js";
import { invalid } from "../metering/errors.js";
import { Decision, DenyReason, LimitKind, type UsageSchema } from "../../gen/meterd/v1/usage_pb.js";
import type { DenyReason as DomainDenyReason, MetricView, TrackInput, TrackOutcome, UsageSnapshot } from "../metering/types.js";
import { checkTimestampFields } from "../metering/validate.js";

const denyReasons: Record<DomainDenyReason, DenyReason> = {
  limit_reached: DenyReason.LIMIT_REACHED,
  insufficient_credits: DenyReason.INSUFFICIENT_CREDITS,
  not_entitled: DenyReason.NOT_ENTITLED,
};

export function denyReasonToMsg(reason: DomainDenyReason | null): DenyReason {
  return reason === null ? DenyReason.UNSPECIFIED : denyReasons[reason];
}

/** Sets `msg`'s period bounds from a usage or a metric that has them, and returns `msg`. */
function withPeriod<T extends MessageInitShape<typeof UsageSchema> | MessageInitShape<typeof MetricSchema>>(msg: T, u: { periodStart: number | null; periodEnd: number | null }): T {
  if (u.periodStart !== null) msg.periodStart = periodTimestamp(u.periodStart);
  if (u.periodEnd !== null) msg.periodEnd = periodTimestamp(u.periodEnd);
  return msg;
}

/**
 * Period bounds repeat across the usages of a batch (one per customer and feature, mostly the same
 * month): their Timestamp messages are made once and shared, since responses are only read.
 */
const periodTimestamps = new Map<number, Timestamp>();

function periodTimestamp(ms: number): Timestamp {
  let timestamp = periodTimestamps.get(ms);
  if (timestamp === undefined) {
    if (periodTimestamps.size >= 1024) periodTimestamps.clear();
    periodTimestamps.set(ms, (timestamp = timestampFromMs(ms)));
  }
  return timestamp;
}

export function usageToMsg(u: UsageSnapshot): MessageInitShape<typeof UsageSchema> {
  return withPeriod<MessageInitShape<typeof UsageSchema>>({
    featureKey: u.featureKey,
    consumed: u.consumed,
    limit: u.limit ?? 0,
    remaining: u.remaining,
    unlimited: u.limit === null,
    percentageUsed: u.percentageUsed,
    overage: u.overage,
    limitKind: u.hard ? LimitKind.HARD : LimitKind.SOFT,
    creditBalance: u.creditBalance ?? 0,
    creditsCharged: u.creditsCharged,
  }, u);
}

/** `withUsage` false leaves `usage` unset: the lean per-event result of a batch or a stream. */
export function trackOutcomeToMsg(o: TrackOutcome, withUsage = true): MessageInitShape<typeof TrackResponseSchema> {
  const msg: MessageInitShape<typeof TrackResponseSchema> = {
    eventId: o.eventId,
    decision: o.allowed ? Decision.ALLOWED : Decision.DENIED,
    denyReason: denyReasonToMsg(o.denyReason),
    duplicate: o.duplicate,
    thresholdsCrossed: o.thresholdsCrossed,
  };
  if (withUsage) msg.usage = usageToMsg(o.usage);
  return msg;
}

/**
 * The latest usage per distinct (customer, feature) of a batch: `add` each tracked event in request
 * order; `toMsg` converts each pair's last usage once, in the order the pairs first appeared. Only that
 * last outcome's usage is read: an answer builds its usage block when asked (see answerOf in records.ts).
 */
export class CustomerUsages {
  private readonly byPair = new Map<string, { customerId: string; outcome: TrackOutcome }>();

  add(customerId: string, featureKey: string, outcome: TrackOutcome): void {
    // Length-prefixed, so that no customer id or feature key can make two pairs collide.
    const key = `${customerId.length}:${customerId}${featureKey}`;
    const entry = this.byPair.get(key);
    if (entry) entry.outcome = outcome;
    else this.byPair.set(key, { customerId, outcome });
  }

  toMsg(): Array<MessageInitShape<typeof CustomerUsageSchema>> {
    const out: Array<MessageInitShape<typeof CustomerUsageSchema>> = [];
    for (const { customerId, outcome } of this.byPair.values()) out.push({ customerId, usage: usageToMsg(outcome.usage) });
    return out;
  }
}

export function metricToMsg(m: MetricView): MessageInitShape<typeof MetricSchema> {
  return withPeriod<MessageInitShape<typeof MetricSchema>>({
    featureKey: m.featureKey,
    featureTitle: m.featureTitle,
    productName: m.productName,
    consumed: m.consumed,
    limit: m.limit ?? 0,
    remaining: m.remaining,
    unlimited: m.limit === null,
    percentageUsed: m.percentageUsed,
    resetsInDays: m.resetsInDays,
    thresholdsReached: m.thresholdsReached,
    unit: m.unit,
    limitKind: m.hard ? LimitKind.HARD : LimitKind.SOFT,
    overage: m.overage,
    creditBalance: m.creditBalance ?? 0,
  }, m);
}

/** Throws INVALID_ARGUMENT for a timestamp that is not a valid Timestamp (see checkTimestampFields). */
export function trackInputFromMsg(req: TrackRequest): TrackInput {
  if (req.timestamp) checkTimestampFields(req.timestamp);
  const input: TrackInput = {
    customerId: req.customerId,
    featureKey: req.featureKey,
    // Unset counts one use; an explicit 0 is refused by the metering rules.
    amount: req.amount ?? 1,
    idempotencyKey: req.idempotencyKey,
    timestamp: req.timestamp ? timestampDate(req.timestamp) : null,
    properties: req.properties,
  };
  return req.kind === EventKind.UNSPECIFIED ? input : withKind(req, input);
}

/** A Track that names its kind: the kind must fit the amount, and a set replays a SetUsage's delta. */
function withKind(req: TrackRequest, input: TrackInput): TrackInput {
  switch (req.kind) {
    case EventKind.TRACK:
      if (input.amount < 0) throw invalid("kind", "must be EVENT_KIND_ADJUSTMENT (or unset) for a negative amount", "KIND_MISMATCH");
      return input;
    case EventKind.ADJUSTMENT:
      if (input.amount >= 0) throw invalid("kind", "must be EVENT_KIND_TRACK (or unset) for an amount that is not negative", "KIND_MISMATCH");
      return input;
    case EventKind.SET:
      if (req.amount === undefined) throw invalid("amount", "is required for a set event (the delta it records)", "AMOUNT_REQUIRED");
      return { ...input, kind: "set" };
    case EventKind.TOP_UP:
      throw invalid("kind", "must not be EVENT_KIND_TOP_UP: top-ups go through CatalogService.TopUpCredits", "KIND_NOT_TRACKABLE");
    default:
      throw invalid("kind", "must be a known EventKind", "KIND_UNKNOWN");
  }
}
