// One contract for every CatalogStore. reset() empties the store between tests.
import { beforeAll, beforeEach, afterAll, describe, expect, it } from "vitest";
import type { CatalogStore, Customer, Feature, Plan } from "../../src/catalog/types.js";

export interface StoreFixture {
  store: CatalogStore;
  reset(): Promise<void>;
  /** A second store over the same storage, as after a restart; null when there is no storage. */
  reopen: (() => CatalogStore) | null;
  close(): Promise<void>;
}

const feature = (key: string, over: Partial<Feature> = {}): Feature => ({
  key,
  title: `Feature ${key}`,
  productName: "Acme API",
  kind: "consumable",
  interval: "month",
  anchor: "billing",
  unit: "call",
  precision: 0,
  creditCost: null,
  ...over,
});

const plan: Plan = {
  key: "pro",
  title: "Pro",
  entitlements: [
    { featureKey: "api_calls", limit: "1000000", hard: true, thresholds: [80, 100] },
    { featureKey: "gpu_seconds", limit: null, hard: false, thresholds: [] },
  ],
};

const customer: Customer = {
  id: "acme",
  planKey: "pro",
  overrides: [{ featureKey: "api_calls", limit: "2500000.5", hard: false, thresholds: [50] }],
  billingAnchor: new Date("2025-01-15T09:30:00.123Z"),
};

export function catalogStoreContract(name: string, open: () => Promise<StoreFixture>, skip: string | null = null) {
  describe.skipIf(skip !== null)(`CatalogStore contract: ${name}`, () => {
    let fx: StoreFixture;
    beforeAll(async () => {
      fx = await open();
    });
    beforeEach(async () => {
      await fx.reset();
    });
    afterAll(async () => {
      await fx?.close();
    });

    it("given nothing stored, then load is empty", async () => {
      expect(await fx.store.load()).toEqual({ features: [], plans: [], customers: [] });
    });

    it("given a feature, a plan and customers, then load returns them as stored, Dates revived", async () => {
      const credits = feature("gpu_seconds", { precision: 3, creditCost: "0.0125", kind: "persistent", interval: "never" });
      await fx.store.putFeature(credits);
      await fx.store.putFeature(feature("api_calls"));
      await fx.store.putPlan(plan);
      await fx.store.putCustomer(customer);
      await fx.store.putCustomer({ id: "beta", planKey: null, overrides: [], billingAnchor: null });

      const loaded = await fx.store.load();
      expect(loaded).toEqual({
        features: [feature("api_calls"), credits],
        plans: [plan],
        customers: [customer, { id: "beta", planKey: null, overrides: [], billingAnchor: null }],
      });
      expect(loaded.customers[0]!.billingAnchor).toBeInstanceOf(Date);
      expect(loaded.customers[0]!.billingAnchor!.toISOString()).toBe("2025-01-15T09:30:00.123Z");
    });

    it("given stored entries, then loadOne returns each as stored, and null for an unknown key", async () => {
      await fx.store.putFeature(feature("api_calls"));
      await fx.store.putPlan(plan);
      await fx.store.putCustomer(customer);
      expect(await fx.store.loadOne("feature", "api_calls")).toEqual(feature("api_calls"));
      expect(await fx.store.loadOne("plan", plan.key)).toEqual(plan);
      const one = await fx.store.loadOne("customer", customer.id);
      expect(one).toEqual(customer);
      expect((one as typeof customer).billingAnchor).toBeInstanceOf(Date);
      expect(await fx.store.loadOne("feature", "nope")).toBeNull();
      expect(await fx.store.loadOne("plan", "api_calls")).toBeNull();
    });

    it("given a key stored twice, then the last put wins", async () => {
      await fx.store.putFeature(feature("api_calls", { title: "old" }));
      await fx.store.putFeature(feature("api_calls", { title: "new" }));
      await fx.store.putCustomer({ ...customer, planKey: "free" });
      await fx.store.putCustomer({ ...customer, billingAnchor: null });
      const loaded = await fx.store.load();
      expect(loaded.features.map((f) => f.title)).toEqual(["new"]);
      expect(loaded.customers).toEqual([{ ...customer, billingAnchor: null }]);
    });

    it("given a stored object mutated by its caller, then the store keeps what was put", async () => {
      const mine = structuredClone(plan);
      await fx.store.putPlan(mine);
      mine.entitlements[0]!.limit = "1";
      const loaded = await fx.store.load();
      expect(loaded.plans).toEqual([plan]);
      loaded.plans[0]!.title = "changed";
      expect((await fx.store.load()).plans).toEqual([plan]);
    });

    it("given a restart, then a new store over the same storage sees everything", async () => {
      if (!fx.reopen) return;
      await fx.store.putFeature(feature("api_calls"));
      await fx.store.putPlan(plan);
      await fx.store.putCustomer(customer);
      expect(await fx.reopen().load()).toEqual(await fx.store.load());
    });
  });
}
