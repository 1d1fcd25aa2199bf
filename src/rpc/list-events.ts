// ListEvents between protobuf and the metering rules: the request's enums and timestamps in, the
// ledger's events out, with exact decimal strings for amounts and credits.
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampDate, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { EventKind, EventOrder, type LedgerEventSchema, type ListEventsRequest } from "../../gen/meterd/v1/metering_pb.js";
import type { EventKind as LedgerKind, StoredEvent } from "../ledger/ledger.js";
import { invalid } from "../metering/errors.js";
import type { EventListing } from "../metering/event-list.js";
import { checkTimestampFields } from "../metering/validate.js";

const KIND_IN: ReadonlyMap<EventKind, LedgerKind> = new Map([
  [EventKind.TRACK, "track"],
  [EventKind.SET, "set"],
  [EventKind.ADJUSTMENT, "adjustment"],
  [EventKind.TOP_UP, "topup"],
]);
const KIND_OUT: ReadonlyMap<LedgerKind, EventKind> = new Map([...KIND_IN].map(([msg, kind]) => [kind, msg]));

/** The listing a request asks for; `onlyFeatures` are a customer token's features (null: any). */
export function listingFromMsg(req: ListEventsRequest, onlyFeatures: readonly string[] | null): EventListing {
  if (req.from) checkTimestampFields(req.from, "from");
  if (req.to) checkTimestampFields(req.to, "to");
  const kinds = req.kinds.map((k, i) => {
    const kind = KIND_IN.get(k);
    if (kind === undefined) throw invalid(`kinds[${i}]`, "must be EVENT_KIND_TRACK, _SET, _ADJUSTMENT or _TOP_UP", "EVENT_KIND_INVALID");
    return kind;
  });
  if (req.order !== EventOrder.UNSPECIFIED && req.order !== EventOrder.NEWEST_FIRST && req.order !== EventOrder.OLDEST_FIRST) {
    throw invalid("order", "must be EVENT_ORDER_NEWEST_FIRST or EVENT_ORDER_OLDEST_FIRST", "EVENT_ORDER_INVALID");
  }
  return {
    customerId: req.customerId,
    featureKey: req.featureKey,
    onlyFeatures,
    from: req.from ? timestampDate(req.from) : null,
    to: req.to ? timestampDate(req.to) : null,
    kinds,
    idempotencyKey: req.idempotencyKey,
    newestFirst: req.order !== EventOrder.OLDEST_FIRST,
    pageSize: req.pageSize,
    pageToken: req.pageToken,
  };
}

export function ledgerEventToMsg(e: StoredEvent): MessageInitShape<typeof LedgerEventSchema> {
  return {
    id: e.id,
    customerId: e.customerId,
    featureKey: e.featureKey ?? "",
    kind: KIND_OUT.get(e.kind) ?? EventKind.UNSPECIFIED,
    amount: e.amount,
    credits: e.credits,
    idempotencyKey: e.idempotencyKey ?? "",
    occurredAt: timestampFromMs(e.occurredAt.getTime()),
    recordedAt: timestampFromMs(e.recordedAt.getTime()),
    properties: e.properties,
  };
}
