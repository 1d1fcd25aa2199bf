// The Connect GET form of the read-only calls, as curl sends it: the request message as JSON in the
// query string, the key in the Authorization header. Each answer says how a cache may keep it: private
// always, revalidated unless its range is closed (older than the backdating window). Calls that write
// are not served by GET. Errors come as Connect's JSON error body with meterd's ErrorDetail.
import { beforeAll, describe, expect, it } from "vitest";
import { auth, meterdForSuite } from "./harness.js";

const DAY_MS = 86_400_000;

describe("GET for the read-only calls", () => {
  const meterd = meterdForSuite();

  beforeAll(async () => {
    const res = await fetch(`http://127.0.0.1:${meterd.server.httpPort}/meterd.v1.MeteringService/Track`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/json" },
      body: JSON.stringify({ customerId: "cus_get", featureKey: "api_calls", amount: 2, idempotencyKey: "g-1" }),
    });
    expect(res.status).toBe(200);
  });

  const get = (method: string, message: unknown) =>
    fetch(`http://127.0.0.1:${meterd.server.httpPort}/meterd.v1.${method}?connect=v1&encoding=json&message=${encodeURIComponent(JSON.stringify(message))}`, { headers: auth });

  it("GetMetrics and Check: answered, private and revalidated", async () => {
    const metrics = await get("MeteringService/GetMetrics", { customerId: "cus_get", featureKey: "api_calls" });
    expect(metrics.status).toBe(200);
    expect(metrics.headers.get("cache-control")).toBe("private, no-cache");
    expect(((await metrics.json()) as { metrics: Array<{ consumed: number }> }).metrics[0]?.consumed).toBe(2);
    const check = await get("MeteringService/Check", { customerId: "cus_get", featureKey: "api_calls" });
    expect([check.status, check.headers.get("cache-control")]).toEqual([200, "private, no-cache"]);
  });

  it("QueryUsage and ListEvents: a range still open is revalidated, one past the backdating window may be kept an hour", async () => {
    const now = Date.now();
    const open = await get("MeteringService/QueryUsage", { customerId: "cus_get", featureKeys: ["api_calls"], from: new Date(now - DAY_MS).toISOString(), to: new Date(now + 60_000).toISOString(), window: "USAGE_WINDOW_DAY" });
    expect([open.status, open.headers.get("cache-control")]).toEqual([200, "private, no-cache"]);
    const closedRange = { from: new Date(now - 60 * DAY_MS).toISOString(), to: new Date(now - 40 * DAY_MS).toISOString() };
    const closed = await get("MeteringService/QueryUsage", { customerId: "cus_get", featureKeys: ["api_calls"], ...closedRange, window: "USAGE_WINDOW_DAY" });
    expect([closed.status, closed.headers.get("cache-control")]).toEqual([200, "private, max-age=3600"]);
    const events = await get("MeteringService/ListEvents", { customerId: "cus_get" });
    expect([events.status, events.headers.get("cache-control")]).toEqual([200, "private, no-cache"]);
    expect(((await events.json()) as { events: Array<{ idempotencyKey: string }> }).events.map((e) => e.idempotencyKey)).toEqual(["g-1"]);
    const oldEvents = await get("MeteringService/ListEvents", { customerId: "cus_get", ...closedRange });
    expect(oldEvents.headers.get("cache-control")).toBe("private, max-age=3600");
  });

  it("the catalogue reads too; a call that writes is not served by GET; POST answers carry no cache header", async () => {
    const features = await get("CatalogService/ListFeatures", {});
    expect([features.status, features.headers.get("cache-control")]).toEqual([200, "private, no-cache"]);
    const track = await get("MeteringService/Track", { customerId: "cus_get", featureKey: "api_calls", idempotencyKey: "g-2" });
    expect(track.status).toBe(405);
    const post = await fetch(`http://127.0.0.1:${meterd.server.httpPort}/meterd.v1.MeteringService/GetMetrics`, {
      method: "POST",
      headers: { ...auth, "content-type": "application/json" },
      body: JSON.stringify({ customerId: "cus_get" }),
    });
    expect([post.status, post.headers.get("cache-control")]).toEqual([200, null]);
  });

  it("a refusal is Connect's JSON error body, with meterd's ErrorDetail decoded in debug", async () => {
    const res = await get("MeteringService/GetMetrics", { customerId: "cus_get", featureKey: "no_such_feature" });
    expect(res.status).toBe(400);
    const body = (await res.json()) as { code: string; message: string; details: Array<{ type: string; value: string; debug?: unknown }> };
    expect(body.code).toBe("invalid_argument");
    expect(body.message).toMatch(/^feature_key /);
    expect(body.details[0]).toMatchObject({ type: "meterd.v1.ErrorDetail", debug: { field: "feature_key", reason: "UNKNOWN_FEATURE" } });
  });
});
