// Catalogue changes reach other replicas through Redis pub/sub within a second.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Catalog, type CatalogChange } from "../../src/catalog/catalog.js";
import { applyCatalogFile } from "../../src/catalog/file.js";
import { MemoryCatalogStore } from "../../src/catalog/memory-store.js";
import { RedisCatalogSync } from "../../src/catalog/redis-sync.js";
import { UsageChanges } from "../../src/metering/changes.js";
import { EXAMPLE_CATALOG } from "../support/meter.js";
import { connectTestRedis, redisSkipReason, type TestRedis } from "../support/redis.js";

const skip = await redisSkipReason();
const quiet = { warn() {} };

async function until(condition: () => boolean, ms: number): Promise<number> {
  const start = Date.now();
  while (!condition()) {
    if (Date.now() - start > ms) throw new Error(`not within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return Date.now() - start;
}

describe.skipIf(skip !== null)("catalogue sync between replicas", () => {
  let t: TestRedis;
  let a: { catalog: Catalog; changes: UsageChanges; sync: RedisCatalogSync };
  let b: typeof a;

  beforeAll(async () => {
    t = await connectTestRedis();
    // Two replicas: one shared store (the database), a catalogue cache each.
    const store = new MemoryCatalogStore();
    const seed = await Catalog.open(store);
    await applyCatalogFile(seed, EXAMPLE_CATALOG);
    const replica = async () => {
      const catalog = await Catalog.open(store);
      const changes = new UsageChanges();
      return { catalog, changes, sync: await RedisCatalogSync.start(catalog, t.redis, t.prefix, changes, quiet) };
    };
    a = await replica();
    b = await replica();
  });
  afterAll(async () => {
    await a?.sync.stop();
    await b?.sync.stop();
    await t?.cleanup();
  });

  it("given a new limit written on one replica, the other uses it within a second, and its watchers hear of it", async () => {
    const id = `cust_${Date.now()}`;
    expect(b.catalog.entitlement(b.catalog.customer(id), "api_calls")?.limit).toBe("1000");
    const heard: Array<string | null> = [];
    const unsubscribe = b.changes.subscribe(id, (feature) => heard.push(feature));
    await a.catalog.putCustomer({
      id,
      planKey: null,
      overrides: [{ featureKey: "api_calls", limit: "5", hard: true, thresholds: [] }],
      billingAnchor: null,
    });
    const took = await until(() => b.catalog.entitlement(b.catalog.customer(id), "api_calls")?.limit === "5", 1000);
    expect(took).toBeLessThan(1000);
    await until(() => heard.length > 0, 1000);
    expect(heard).toEqual([null]);
    unsubscribe();
  });

  it("a replica does not reload its own changes", async () => {
    const remote: CatalogChange[] = [];
    const listener = (c: CatalogChange) => {
      if (c.remote) remote.push(c);
    };
    a.catalog.events.on("change", listener);
    const plan = a.catalog.plan("default")!;
    await a.catalog.putPlan({ ...plan, title: "Free (renamed)" });
    await until(() => b.catalog.plan("default")?.title === "Free (renamed)", 1000);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(remote).toEqual([]);
    a.catalog.events.off("change", listener);
  });
});
