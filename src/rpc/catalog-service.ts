// meterd.v1.CatalogService: features, plans, customers and credit wallets. Secret key only.
import { timestampDate, timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { CatalogService } from "../../gen/meterd/v1/catalog_pb.js";
import type { Catalog } from "../catalog/catalog.js";
import { customerFromMsg, customerToMsg, featureFromMsg, featureToMsg, planFromMsg, planToMsg } from "../catalog/convert.js";
import type { Ledger } from "../ledger/ledger.js";
import type { UsageChanges } from "../metering/changes.js";
import { decimalToUnits, unitsToNumber } from "../metering/decimal.js";
import { invalid, MeterError } from "../metering/errors.js";
import type { Meter } from "../metering/meter.js";
import { CREDIT_PRECISION } from "../metering/usage.js";
import { checkCustomerId, checkStorableText, checkTimestampFields } from "../metering/validate.js";
import { principalKey } from "./context.js";
import { setCacheControl } from "./http-cache.js";

function requireSecret(ctx: HandlerContext): void {
  if (ctx.values.get(principalKey)?.kind !== "secret") {
    throw new MeterError(Code.PermissionDenied, "SECRET_KEY_REQUIRED", "the catalogue needs a secret key");
  }
}

const MAX_HISTORY = 1000;

export function createCatalogService(deps: {
  catalog: Catalog;
  meter: Meter;
  ledger: Ledger;
  changes: UsageChanges;
}): ServiceImpl<typeof CatalogService> {
  const { catalog, meter, ledger, changes } = deps;
  const known = { feature: (k: string) => catalog.feature(k) !== undefined, plan: (k: string) => catalog.plan(k) !== undefined };

  return {
    async upsertFeature(req, ctx) {
      requireSecret(ctx);
      if (!req.feature) throw invalid("feature", "is required", "FIELD_REQUIRED");
      const feature = featureFromMsg(req.feature);
      const existing = catalog.feature(feature.key);
      // Counters are integers of the smallest unit: another precision would change what they mean.
      if (existing && existing.precision !== feature.precision) {
        throw invalid("feature.precision", `cannot change once set (it is ${existing.precision})`, "PRECISION_IMMUTABLE");
      }
      await catalog.putFeature(feature);
      changes.notifyAll();
      return { feature: featureToMsg(feature) };
    },

    async listFeatures(_req, ctx) {
      requireSecret(ctx);
      setCacheControl(ctx);
      return { features: catalog.listFeatures().map(featureToMsg) };
    },

    async upsertPlan(req, ctx) {
      requireSecret(ctx);
      if (!req.plan) throw invalid("plan", "is required", "FIELD_REQUIRED");
      const plan = planFromMsg(req.plan, known.feature);
      await catalog.putPlan(plan);
      changes.notifyAll();
      return { plan: planToMsg(plan) };
    },

    async listPlans(_req, ctx) {
      requireSecret(ctx);
      setCacheControl(ctx);
      return { plans: catalog.listPlans().map(planToMsg) };
    },

    async upsertCustomer(req, ctx) {
      requireSecret(ctx);
      if (!req.customer) throw invalid("customer", "is required", "FIELD_REQUIRED");
      const customer = customerFromMsg(req.customer, known);
      await catalog.putCustomer(customer);
      changes.notify(customer.id, null);
      return { customer: customerToMsg(customer) };
    },

    async getCustomer(req, ctx) {
      requireSecret(ctx);
      setCacheControl(ctx);
      checkCustomerId(req.customerId);
      return { customer: customerToMsg(catalog.customer(req.customerId)) };
    },

    async topUpCredits(req, ctx) {
      requireSecret(ctx);
      // The description is stored with the ledger entry: refused here rather than by the ledger.
      checkStorableText(req.description, "description");
      if (req.timestamp) checkTimestampFields(req.timestamp);
      const o = await meter.topUp({
        customerId: req.customerId,
        amount: req.amount,
        idempotencyKey: req.idempotencyKey,
        description: req.description,
        timestamp: req.timestamp ? timestampDate(req.timestamp) : null,
      });
      return { entryId: o.entryId, duplicate: o.duplicate, balance: o.balance };
    },

    async getWallet(req, ctx) {
      requireSecret(ctx);
      setCacheControl(ctx);
      checkCustomerId(req.customerId);
      if (req.limit < 0 || req.limit > MAX_HISTORY) {
        throw invalid("limit", `must be from 0 to ${MAX_HISTORY}`, "LIMIT_OUT_OF_RANGE");
      }
      const [balance, history] = await Promise.all([
        meter.walletUnits(req.customerId),
        ledger.walletHistory(req.customerId, req.limit || 50),
      ]);
      return {
        balance: unitsToNumber(balance, CREDIT_PRECISION),
        entries: history.map((e) => ({
          id: e.id,
          kind: e.kind === "topup" ? "top_up" : "usage",
          amount: unitsToNumber(decimalToUnits(e.credits, CREDIT_PRECISION), CREDIT_PRECISION),
          featureKey: e.featureKey ?? "",
          occurredAt: timestampFromDate(e.occurredAt),
          description: e.properties["description"] ?? "",
        })),
      };
    },
  };
}
