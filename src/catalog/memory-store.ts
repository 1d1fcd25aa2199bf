// In-memory CatalogStore for tests and for runs that need no durability. Stores copies, so that a
// caller mutating its objects afterwards changes nothing here, as with the SQL store.
import type { CatalogKind, CatalogSnapshot, CatalogStore, Customer, Feature, Plan } from "./types.js";

export class MemoryCatalogStore implements CatalogStore {
  private readonly features = new Map<string, Feature>();
  private readonly plans = new Map<string, Plan>();
  private readonly customers = new Map<string, Customer>();

  constructor(initial?: Partial<CatalogSnapshot>) {
    for (const f of initial?.features ?? []) this.features.set(f.key, structuredClone(f));
    for (const p of initial?.plans ?? []) this.plans.set(p.key, structuredClone(p));
    for (const c of initial?.customers ?? []) this.customers.set(c.id, structuredClone(c));
  }

  async load(): Promise<CatalogSnapshot> {
    return {
      features: sortedCopies(this.features),
      plans: sortedCopies(this.plans),
      customers: sortedCopies(this.customers),
    };
  }

  async loadOne(kind: CatalogKind, key: string): Promise<Feature | Plan | Customer | null> {
    const map = kind === "feature" ? this.features : kind === "plan" ? this.plans : this.customers;
    const value = map.get(key);
    return value === undefined ? null : structuredClone(value);
  }

  async putFeature(feature: Feature): Promise<void> {
    this.features.set(feature.key, structuredClone(feature));
  }

  async putPlan(plan: Plan): Promise<void> {
    this.plans.set(plan.key, structuredClone(plan));
  }

  async putCustomer(customer: Customer): Promise<void> {
    this.customers.set(customer.id, structuredClone(customer));
  }
}

/** Ordered by key, the same order as SqlCatalogStore.load(). */
function sortedCopies<T>(map: Map<string, T>): T[] {
  return [...map.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, v]) => structuredClone(v));
}
