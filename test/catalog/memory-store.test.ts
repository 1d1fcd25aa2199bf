import { expect, it } from "vitest";
import { MemoryCatalogStore } from "../../src/catalog/memory-store.js";
import { catalogStoreContract } from "./store-contract.js";

catalogStoreContract("memory", async () => {
  const fx = {
    store: new MemoryCatalogStore(),
    async reset() {
      fx.store = new MemoryCatalogStore();
    },
    reopen: null,
    async close() {},
  };
  return fx;
});

it("MemoryCatalogStore starts from an initial snapshot", async () => {
  const store = new MemoryCatalogStore({ plans: [{ key: "default", title: "Default", entitlements: [] }] });
  expect(await store.load()).toEqual({
    features: [],
    plans: [{ key: "default", title: "Default", entitlements: [] }],
    customers: [],
  });
});
