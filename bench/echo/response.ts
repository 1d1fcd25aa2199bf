// What the bare echo servers answer: a TrackResponse shaped like meterd's answer to a bench Track (an
// event id, ALLOWED, the usage block with both period bounds), so that the floor encodes as many bytes.
import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { type TrackRequest, type TrackResponse, TrackResponseSchema } from "../../gen/meterd/v1/metering_pb.js";
import { Decision, LimitKind } from "../../gen/meterd/v1/usage_pb.js";

const now = new Date();
const periodStart = timestampFromMs(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
const periodEnd = timestampFromMs(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1));
let consumed = 0;

/** A new response per call (a fresh event id), as meterd makes one. */
export function echoResponse(req: TrackRequest): TrackResponse {
  consumed += req.amount ?? 1;
  return create(TrackResponseSchema, {
    eventId: randomUUID(),
    decision: Decision.ALLOWED,
    usage: {
      featureKey: req.featureKey,
      consumed,
      limit: 1e9,
      remaining: 1e9 - consumed,
      percentageUsed: (consumed / 1e9) * 100,
      periodStart,
      periodEnd,
      limitKind: LimitKind.HARD,
    },
  });
}
