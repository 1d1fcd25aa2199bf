// Track one API call and read the customer's usage with the generated client.
// Run against `npm start`:  METERD_KEY=<key> npx tsx examples/track.ts
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { MeteringService } from "../gen/meterd/v1/metering_pb.js";
import { Decision } from "../gen/meterd/v1/usage_pb.js";

const transport = createConnectTransport({
  baseUrl: process.env["METERD_URL"] ?? "http://127.0.0.1:8080",
  httpVersion: "2",
  interceptors: [
    (next) => (req) => {
      req.header.set("authorization", `Bearer ${process.env["METERD_KEY"] ?? ""}`);
      return next(req);
    },
  ],
});
const meterd = createClient(MeteringService, transport);

const res = await meterd.track({
  customerId: "cus_42",
  featureKey: "api_calls",
  amount: 1,
  // A retry with the same key is answered with the original result and counts nothing.
  idempotencyKey: `req-${Date.now()}`,
});
if (res.decision === Decision.DENIED) {
  console.log("over the limit:", res.usage?.consumed, "of", res.usage?.limit);
} else {
  console.log("tracked", res.eventId, "- remaining:", res.usage?.remaining, "crossed:", res.thresholdsCrossed);
}

const { metrics } = await meterd.getMetrics({ customerId: "cus_42" });
for (const m of metrics) {
  const limit = m.unlimited ? "unlimited" : m.limit;
  const resets = m.periodEnd ? `resets in ${m.resetsInDays} days` : "never resets";
  console.log(`${m.featureKey}: ${m.consumed} of ${limit} ${m.unit}, ${resets}`);
}
