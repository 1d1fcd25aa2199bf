// The inputs and outcomes of the metering rules, independent of protobuf. Outcomes hold plain
// numbers (ms for times) so that they can be stored as JSON for idempotent replays.

export interface TrackInput {
  customerId: string;
  featureKey: string;
  /** Not 0 unless kind is "set": a caller that gave none means 1 (see trackInputFromMsg). */
  amount: number;
  /** "" when the client gave none. */
  idempotencyKey: string;
  /** null: now. */
  timestamp: Date | null;
  properties: Record<string, string>;
  /**
   * Absent: a track, or an adjustment when the amount is negative. "set": the amount is the delta a
   * SetUsage recorded, replayed (meterd import); 0 is then allowed.
   */
  kind?: "set";
}

export interface SetUsageInput {
  customerId: string;
  featureKey: string;
  used: number;
  idempotencyKey: string;
  expectedUsed: number | null;
  properties: Record<string, string>;
}

export interface TopUpInput {
  customerId: string;
  amount: number;
  idempotencyKey: string;
  description: string;
  /** null: now. */
  timestamp?: Date | null;
}

/** What the caller may do beyond tracking positive usage for a customer. */
export interface Caller {
  /** Negative amounts (corrections, releases) need a secret key. */
  mayCorrect: boolean;
}

export type DenyReason = "limit_reached" | "insufficient_credits" | "not_entitled";

export interface UsageSnapshot {
  featureKey: string;
  consumed: number;
  /** null: unlimited. */
  limit: number | null;
  remaining: number;
  percentageUsed: number;
  /** ms since the epoch; null for persistent features. */
  periodStart: number | null;
  periodEnd: number | null;
  overage: number;
  hard: boolean;
  /** Credit-funded features only. */
  creditBalance: number | null;
  creditsCharged: number;
}

export interface TrackOutcome {
  eventId: string;
  allowed: boolean;
  denyReason: DenyReason | null;
  duplicate: boolean;
  usage: UsageSnapshot;
  thresholdsCrossed: number[];
  /** SetUsage: the change it recorded. */
  delta: number;
}

export interface MetricView extends UsageSnapshot {
  featureTitle: string;
  productName: string;
  unit: string;
  resetsInDays: number;
  thresholdsReached: number[];
}

export interface TopUpOutcome {
  entryId: string;
  duplicate: boolean;
  balance: number;
}
