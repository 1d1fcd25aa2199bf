// meterd.v1.MeteringService: protobuf in, metering rules, protobuf out. Served by both listeners.
import { timestampDate } from "@bufbuild/protobuf/wkt";
import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import type { Logger } from "pino";
import { MeteringService, type TrackRequest } from "../../gen/meterd/v1/metering_pb.js";
import { Decision } from "../../gen/meterd/v1/usage_pb.js";
import type { Meter } from "../metering/meter.js";
import type { Metrics } from "../metering/metrics.js";
import { MeterError, invalid } from "../metering/errors.js";
import { checkTimestampFields } from "../metering/validate.js";
import type { Caller, TrackInput } from "../metering/types.js";
import { principalKey } from "./context.js";
import { checkScope, checkTokenTrack, customerTokenOf, requireSecretKey, tokenExpired, visibleTo } from "./customer-scope.js";
import { ledgerEventToMsg, listingFromMsg } from "./list-events.js";
import { setCacheControl } from "./http-cache.js";
import { usageBucketToMsg, usageQueryFromMsg } from "./query-usage.js";
import { CustomerUsages, denyReasonToMsg, metricToMsg, trackInputFromMsg, trackOutcomeToMsg, usageToMsg } from "./convert.js";

/** The most events in one TrackBatch call or TrackStream request: the proto's limit. */
export const MAX_BATCH = 1000;

function callerOf(ctx: HandlerContext): Caller {
  return { mayCorrect: ctx.values.get(principalKey)?.kind === "secret" };
}

function checkBatchSize(events: TrackRequest[], max: number): void {
  if (events.length === 0) throw invalid("events", "must hold at least 1 event", "BATCH_EMPTY");
  if (events.length > max) throw invalid("events", `must hold at most ${max} events`, "BATCH_TOO_LARGE");
}

/** `maxBatch`: the most events per TrackBatch call or TrackStream request, up to MAX_BATCH. */
export function createMeteringService(meter: Meter, metrics: Metrics, logger: Pick<Logger, "error">, maxBatch = MAX_BATCH): ServiceImpl<typeof MeteringService> {
  /**
   * Every event of a batch is decided on its own; an invalid one gets its own error result. An event
   * that cannot even be converted (an invalid timestamp) is left out of trackMany, not the batch.
   * Each result carries its usage only with `includeEventUsage`; `usages` always holds the last usage
   * of each distinct (customer, feature), converted once.
   */
  async function trackAll(events: TrackRequest[], caller: Caller, includeEventUsage: boolean) {
    const converted = events.map((event) => {
      try {
        return trackInputFromMsg(event);
      } catch (error) {
        if (error instanceof MeterError) return error;
        throw error;
      }
    });
    const inputs = converted.filter((c): c is TrackInput => !(c instanceof MeterError));
    const tracked = inputs.length > 0 ? await meter.trackMany(inputs, caller) : [];
    const usages = new CustomerUsages();
    let next = 0;
    const results = converted.map((c, i) => {
      if (c instanceof MeterError) return { outcome: { case: "error" as const, value: c.under(`events[${i}]`).toEventError() } };
      const o = tracked[next++]!;
      if (!(o instanceof Error)) {
        usages.add(c.customerId, c.featureKey, o);
        return { outcome: { case: "tracked" as const, value: trackOutcomeToMsg(o, includeEventUsage) } };
      }
      if (o instanceof MeterError) return { outcome: { case: "error" as const, value: o.under(`events[${i}]`).toEventError() } };
      logger.error({ err: o, index: i }, "event of a batch failed");
      const eventError = { code: "internal", message: "internal error", field: "", reason: "INTERNAL" };
      return { outcome: { case: "error" as const, value: eventError } };
    });
    return { results, usages: usages.toMsg() };
  }

  return {
    async track(req, ctx) {
      const token = customerTokenOf(ctx);
      if (token) checkTokenTrack(token, req);
      return trackOutcomeToMsg(await meter.track(trackInputFromMsg(req), callerOf(ctx)));
    },

    async trackBatch(req, ctx) {
      requireSecretKey(ctx, "TrackBatch");
      checkBatchSize(req.events, maxBatch);
      return await trackAll(req.events, callerOf(ctx), req.includeEventUsage);
    },

    // One request at a time: the next is not read until the current one is durable and acknowledged,
    // so HTTP/2 flow control holds back a sender that outpaces the ledger.
    async *trackStream(requests, ctx) {
      requireSecretKey(ctx, "TrackStream");
      const caller = callerOf(ctx);
      let sequence = 0n;
      for await (const req of requests) {
        sequence++;
        checkBatchSize(req.events, maxBatch);
        yield { sequence, ...(await trackAll(req.events, caller, req.includeEventUsage)) };
      }
    },

    async setUsage(req, ctx) {
      requireSecretKey(ctx, "SetUsage");
      const o = await meter.setUsage({
        customerId: req.customerId,
        featureKey: req.featureKey,
        used: req.used,
        idempotencyKey: req.idempotencyKey,
        expectedUsed: req.expectedUsed ?? null,
        properties: req.properties,
      });
      return {
        delta: o.delta,
        eventId: o.eventId,
        duplicate: o.duplicate,
        usage: usageToMsg(o.usage),
        decision: o.allowed ? Decision.ALLOWED : Decision.DENIED,
        denyReason: denyReasonToMsg(o.denyReason),
      };
    },

    async check(req, ctx) {
      const token = customerTokenOf(ctx);
      if (token) checkScope(token, req.customerId, req.featureKey);
      const c = await meter.check(req.customerId, req.featureKey, req.amount);
      setCacheControl(ctx);
      return { allowed: c.allowed, usage: usageToMsg(c.usage), denyReason: denyReasonToMsg(c.denyReason) };
    },

    async getMetrics(req, ctx) {
      const token = customerTokenOf(ctx);
      if (token) checkScope(token, req.customerId, req.featureKey);
      if (req.at) checkTimestampFields(req.at, "at");
      const at = req.at ? timestampDate(req.at) : null;
      setCacheControl(ctx);
      return { metrics: visibleTo(token, await metrics.get(req.customerId, req.featureKey, at)).map(metricToMsg) };
    },

    async listEvents(req, ctx) {
      const token = customerTokenOf(ctx);
      if (token) checkScope(token, req.customerId, req.featureKey);
      const listing = listingFromMsg(req, token?.featureKeys ?? null);
      const page = await meter.listEvents(listing);
      setCacheControl(ctx, { to: listing.to, maxBackdateMs: meter.window.maxBackdateMs });
      return { events: page.events.map(ledgerEventToMsg), nextPageToken: page.nextPageToken };
    },

    async queryUsage(req, ctx) {
      const token = customerTokenOf(ctx);
      if (token) {
        checkScope(token, req.customerId, "");
        req.featureKeys.forEach((featureKey) => checkScope(token, req.customerId, featureKey));
      } else if (req.customerId === "") {
        requireSecretKey(ctx, "QueryUsage over every customer");
      }
      const query = usageQueryFromMsg(req);
      const buckets = await meter.queryUsage(query);
      setCacheControl(ctx, { to: query.to, maxBackdateMs: meter.window.maxBackdateMs });
      return { buckets: buckets.map(usageBucketToMsg) };
    },

    // With a customer token, the stream ends with UNAUTHENTICATED when the token expires.
    async *watchUsage(req, ctx) {
      const token = customerTokenOf(ctx);
      if (token) checkScope(token, req.customerId, req.featureKey);
      const expiry = new AbortController();
      const timer = token ? setTimeout(() => expiry.abort(), Math.max(0, token.expiresAt - Date.now())) : undefined;
      try {
        let first = true;
        for await (const batch of metrics.watch(req.customerId, req.featureKey, AbortSignal.any([ctx.signal, expiry.signal]))) {
          const shown = visibleTo(token, batch);
          if (first || shown.length > 0) yield { metrics: shown.map(metricToMsg) };
          first = false;
        }
      } finally {
        clearTimeout(timer);
      }
      if (token && expiry.signal.aborted && !ctx.signal.aborted) throw tokenExpired(token);
    },
  };
}

