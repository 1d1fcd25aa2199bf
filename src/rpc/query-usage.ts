// QueryUsage between protobuf and the metering rules: the window and the range in, exact buckets out.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampDate, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { type QueryUsageRequest, type UsageBucketSchema, UsageWindow } from "../../gen/meterd/v1/metering_pb.js";
import { invalid } from "../metering/errors.js";
import type { UsageBucket, UsageHistoryQuery, UsageWindow as Window } from "../metering/usage-history.js";
import { checkTimestampFields } from "../metering/validate.js";

const WINDOWS: ReadonlyMap<UsageWindow, Window> = new Map([
  [UsageWindow.HOUR, "hour"],
  [UsageWindow.DAY, "day"],
  [UsageWindow.MONTH, "month"],
  [UsageWindow.PERIOD, "period"],
]);

export function usageQueryFromMsg(req: QueryUsageRequest): UsageHistoryQuery {
  if (req.from) checkTimestampFields(req.from, "from");
  if (req.to) checkTimestampFields(req.to, "to");
  const window = WINDOWS.get(req.window);
  if (window === undefined) throw invalid("window", "must be USAGE_WINDOW_HOUR, _DAY, _MONTH or _PERIOD", "WINDOW_INVALID");
  return {
    customerId: req.customerId,
    featureKeys: req.featureKeys,
    from: req.from ? timestampDate(req.from) : null,
    to: req.to ? timestampDate(req.to) : null,
    window,
    timeZone: req.timeZone,
    groupBy: req.groupBy,
    filter: Object.entries(req.filter).map(([key, v]) => [key, v.values] as const),
  };
}

export function usageBucketToMsg(b: UsageBucket): MessageInitShape<typeof UsageBucketSchema> {
  return { featureKey: b.featureKey, start: timestampFromMs(b.start.getTime()), end: timestampFromMs(b.end.getTime()), value: b.value, group: b.group };
}
