// The catalogue between its protobuf form (the API and the catalogue file) and its domain form,
// checking every rule on the way in so that nothing invalid reaches the store.
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  type Customer as CustomerMsg,
  CustomerSchema,
  type Entitlement as EntitlementMsg,
  EntitlementSchema,
  type Feature as FeatureMsg,
  FeatureKind as FeatureKindMsg,
  FeatureSchema,
  type Plan as PlanMsg,
  PlanSchema,
  ResetAnchor as ResetAnchorMsg,
  ResetInterval as ResetIntervalMsg,
} from "../../gen/meterd/v1/catalog_pb.js";
import { LimitKind } from "../../gen/meterd/v1/usage_pb.js";
import { amountToUnits, MAX_PRECISION, unitsToDecimal } from "../metering/decimal.js";
import { invalid } from "../metering/errors.js";
import { checkCustomerId, checkName, checkTimestampFields } from "../metering/validate.js";
import type { Customer, Entitlement, Feature, Plan, ResetInterval } from "./types.js";

export const FEATURE_KEY = /^[a-z][a-z0-9_]{0,63}$/;
const PLAN_KEY = /^[a-z][a-z0-9_-]{0,63}$/;
const DEFAULT_PRECISION = 6;
/** Limits and credit costs are kept at the finest precision a feature may have. */
const LIMIT_PRECISION = MAX_PRECISION;

const intervals: Record<number, ResetInterval> = {
  [ResetIntervalMsg.DAY]: "day",
  [ResetIntervalMsg.WEEK]: "week",
  [ResetIntervalMsg.MONTH]: "month",
  [ResetIntervalMsg.YEAR]: "year",
  [ResetIntervalMsg.NEVER]: "never",
};
const intervalMsgs = Object.fromEntries(Object.entries(intervals).map(([k, v]) => [v, Number(k)])) as Record<
  ResetInterval,
  ResetIntervalMsg
>;

/** A title, product name or unit: shown to people and stored in the catalogue's jsonb, so no controls. */
function text(value: string, field: string, max: number): string {
  if (value.length > max) throw invalid(field, `must be at most ${max} characters`, "TEXT_TOO_LONG");
  checkName(value, field);
  return value;
}

/** A non-negative decimal from a double, exact to 6 places. */
function quantity(value: number, field: string): string {
  const units = amountToUnits(value, LIMIT_PRECISION);
  if (!units.ok) throw invalid(field, units.rule, units.reason);
  if (units.units < 0) throw invalid(field, "must not be negative", "NEGATIVE_QUANTITY");
  return unitsToDecimal(units.units, LIMIT_PRECISION);
}

export function featureFromMsg(msg: FeatureMsg, field = "feature"): Feature {
  if (!FEATURE_KEY.test(msg.key)) {
    throw invalid(`${field}.key`, "must match ^[a-z][a-z0-9_]{0,63}$", "BAD_FEATURE_KEY");
  }
  const persistent = msg.kind === FeatureKindMsg.PERSISTENT;
  if (msg.kind !== FeatureKindMsg.CONSUMABLE && !persistent) {
    throw invalid(`${field}.kind`, "must be CONSUMABLE or PERSISTENT", "BAD_FEATURE_KIND");
  }
  let interval = intervals[msg.resetInterval];
  if (persistent) {
    if (interval !== undefined && interval !== "never") {
      throw invalid(`${field}.reset_interval`, "must be NEVER (or unset) for a persistent feature", "BAD_RESET");
    }
    interval = "never";
  } else if (interval === undefined || interval === "never") {
    throw invalid(`${field}.reset_interval`, "must be DAY, WEEK, MONTH or YEAR for a consumable feature", "BAD_RESET");
  }
  const precision = msg.precision ?? DEFAULT_PRECISION;
  if (!Number.isInteger(precision) || precision < 0 || precision > MAX_PRECISION) {
    throw invalid(`${field}.precision`, `must be from 0 to ${MAX_PRECISION}`, "BAD_PRECISION");
  }
  const creditCost = quantity(msg.creditCost, `${field}.credit_cost`);
  return {
    key: msg.key,
    title: text(msg.title || msg.key, `${field}.title`, 200),
    productName: text(msg.productName, `${field}.product_name`, 200),
    kind: persistent ? "persistent" : "consumable",
    interval,
    anchor: msg.resetAnchor === ResetAnchorMsg.BILLING ? "billing" : "calendar",
    unit: text(msg.unit, `${field}.unit`, 50),
    precision,
    creditCost: creditCost === "0" ? null : creditCost,
  };
}

export function featureToMsg(f: Feature): FeatureMsg {
  return create(FeatureSchema, {
    key: f.key,
    title: f.title,
    productName: f.productName,
    kind: f.kind === "persistent" ? FeatureKindMsg.PERSISTENT : FeatureKindMsg.CONSUMABLE,
    resetInterval: intervalMsgs[f.interval],
    resetAnchor: f.anchor === "billing" ? ResetAnchorMsg.BILLING : ResetAnchorMsg.CALENDAR,
    unit: f.unit,
    precision: f.precision,
    creditCost: f.creditCost === null ? 0 : Number(f.creditCost),
  });
}

export function entitlementFromMsg(msg: EntitlementMsg, field: string, knownFeature: (key: string) => boolean): Entitlement {
  if (!knownFeature(msg.featureKey)) {
    throw invalid(`${field}.feature_key`, `must name a known feature, "${msg.featureKey}" is not one`, "UNKNOWN_FEATURE");
  }
  const thresholds = [...msg.thresholds].sort((a, b) => a - b);
  thresholds.forEach((t, i) => {
    if (!Number.isFinite(t) || t <= 0 || t > 1000) {
      throw invalid(`${field}.thresholds[${i}]`, "must be a percentage above 0 and at most 1000", "BAD_THRESHOLD");
    }
  });
  return {
    featureKey: msg.featureKey,
    limit: msg.unlimited ? null : quantity(msg.limit, `${field}.limit`),
    hard: msg.limitKind !== LimitKind.SOFT,
    thresholds: [...new Set(thresholds)],
  };
}

function entitlementToMsg(e: Entitlement): MessageInitShape<typeof EntitlementSchema> {
  return {
    featureKey: e.featureKey,
    limit: e.limit === null ? 0 : Number(e.limit),
    unlimited: e.limit === null,
    limitKind: e.hard ? LimitKind.HARD : LimitKind.SOFT,
    thresholds: e.thresholds,
  };
}

export function planFromMsg(msg: PlanMsg, knownFeature: (key: string) => boolean, field = "plan"): Plan {
  if (!PLAN_KEY.test(msg.key)) throw invalid(`${field}.key`, "must match ^[a-z][a-z0-9_-]{0,63}$", "BAD_PLAN_KEY");
  const entitlements = msg.entitlements.map((e, i) => entitlementFromMsg(e, `${field}.entitlements[${i}]`, knownFeature));
  const seen = new Set<string>();
  entitlements.forEach((e, i) => {
    if (seen.has(e.featureKey)) {
      throw invalid(`${field}.entitlements[${i}].feature_key`, "must not repeat a feature", "DUPLICATE_ENTITLEMENT");
    }
    seen.add(e.featureKey);
  });
  return { key: msg.key, title: text(msg.title || msg.key, `${field}.title`, 200), entitlements };
}

export function planToMsg(p: Plan): PlanMsg {
  return create(PlanSchema, { key: p.key, title: p.title, entitlements: p.entitlements.map(entitlementToMsg) });
}

export function customerFromMsg(
  msg: CustomerMsg,
  known: { feature: (key: string) => boolean; plan: (key: string) => boolean },
  field = "customer",
): Customer {
  checkCustomerId(msg.id, `${field}.id`);
  if (msg.planKey !== "" && !known.plan(msg.planKey)) {
    throw invalid(`${field}.plan_key`, `must name a known plan, "${msg.planKey}" is not one`, "UNKNOWN_PLAN");
  }
  const overrides = msg.overrides.map((e, i) => entitlementFromMsg(e, `${field}.overrides[${i}]`, known.feature));
  if (msg.billingAnchor) checkTimestampFields(msg.billingAnchor, `${field}.billing_anchor`);
  return {
    id: msg.id,
    planKey: msg.planKey === "" ? null : msg.planKey,
    overrides,
    billingAnchor: msg.billingAnchor ? timestampDate(msg.billingAnchor) : null,
  };
}

export function customerToMsg(c: Customer): CustomerMsg {
  return create(CustomerSchema, {
    id: c.id,
    planKey: c.planKey ?? "",
    overrides: c.overrides.map(entitlementToMsg),
    ...(c.billingAnchor ? { billingAnchor: timestampFromDate(c.billingAnchor) } : {}),
  });
}
