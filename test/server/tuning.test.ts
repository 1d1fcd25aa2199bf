// Operational settings reach the server: METERD_MAX_BATCH_EVENTS lowers the events a TrackBatch call
// may hold, with the same refusal as the API's own limit.
import { describe, expect, it } from "vitest";
import { Code, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { ErrorDetailSchema } from "../../gen/meterd/v1/usage_pb.js";
import { MeteringService } from "../../gen/meterd/v1/metering_pb.js";
import { auth, errorOf, meterdForSuite } from "./harness.js";

describe("METERD_MAX_BATCH_EVENTS", () => {
  const meterd = meterdForSuite({ METERD_MAX_BATCH_EVENTS: "2" });

  it("refuses a batch over it, and takes one at it", async () => {
    const metering = createClient(MeteringService, createConnectTransport({ baseUrl: `http://127.0.0.1:${meterd.server.httpPort}`, httpVersion: "1.1" }));
    const event = (key: string) => ({ customerId: "cus_tuned", featureKey: "api_calls", idempotencyKey: key });
    const err = await errorOf(() => metering.trackBatch({ events: [event("a"), event("b"), event("c")] }, { headers: auth }));
    expect(err.code).toBe(Code.InvalidArgument);
    expect(err.findDetails(ErrorDetailSchema)[0]).toMatchObject({ field: "events", rule: "must hold at most 2 events", reason: "BATCH_TOO_LARGE" });
    const { results } = await metering.trackBatch({ events: [event("a"), event("b")] }, { headers: auth });
    expect(results.map((r) => r.outcome.case)).toEqual(["tracked", "tracked"]);
  });
});
