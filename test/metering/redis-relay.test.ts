// Usage-change notices reach watchers on other replicas through Redis pub/sub.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { UsageChanges } from "../../src/metering/changes.js";
import { RedisUsageRelay } from "../../src/metering/redis-relay.js";
import { connectTestRedis, redisSkipReason, type TestRedis } from "../support/redis.js";

const skip = await redisSkipReason();
const quiet = { warn() {} };

describe.skipIf(skip !== null)("usage relay between replicas", () => {
  let t: TestRedis;
  const a = new UsageChanges();
  const b = new UsageChanges();
  let relays: RedisUsageRelay[] = [];

  beforeAll(async () => {
    t = await connectTestRedis();
    relays = [await RedisUsageRelay.start(a, t.redis, t.prefix, quiet), await RedisUsageRelay.start(b, t.redis, t.prefix, quiet)];
  });
  afterAll(async () => {
    for (const r of relays) await r.stop();
    await t?.cleanup();
  });

  it("given a watcher on replica B, a change on replica A reaches it, batched, and A's own watchers hear it once", async () => {
    const onB: Array<string | null> = [];
    const onA: Array<string | null> = [];
    const offB = b.subscribe("cus_1", (f) => onB.push(f));
    const offA = a.subscribe("cus_1", (f) => onA.push(f));
    a.notify("cus_1", "api_calls");
    a.notify("cus_1", "api_calls");
    a.notify("cus_1", "seats");
    a.notify("cus_2", "seats");
    const start = Date.now();
    while (onB.length < 2 && Date.now() - start < 1000) await new Promise((resolve) => setTimeout(resolve, 5));
    await new Promise((resolve) => setTimeout(resolve, 100));
    // Duplicates within one batch are merged; a customer nobody watches on B is not delivered there.
    expect(onB.sort()).toEqual(["api_calls", "seats"]);
    expect(onA).toEqual(["api_calls", "api_calls", "seats"]);
    offA();
    offB();
  });
});
