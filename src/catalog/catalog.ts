// The catalogue as the metering rules read it: an in-memory copy of the store, so that a Track never
// waits on the database for its limit. Writes go to the store first, then to the copy.
import { EventEmitter } from "node:events";
import {
  type CatalogKind,
  type CatalogStore,
  type Customer,
  DEFAULT_PLAN,
  type Entitlement,
  type Feature,
  type Plan,
} from "./types.js";

export interface CatalogChange {
  kind: CatalogKind;
  key: string;
  /** True when the change was made by another replica and only copied here. */
  remote?: boolean;
}

export class Catalog {
  private readonly features = new Map<string, Feature>();
  private readonly plans = new Map<string, Plan>();
  private readonly customers = new Map<string, Customer>();
  /** Emits "change" with a CatalogChange after each write. */
  readonly events = new EventEmitter().setMaxListeners(0);

  private constructor(private readonly store: CatalogStore) {}

  static async open(store: CatalogStore): Promise<Catalog> {
    const catalog = new Catalog(store);
    const snapshot = await store.load();
    for (const f of snapshot.features) catalog.features.set(f.key, f);
    for (const p of snapshot.plans) catalog.plans.set(p.key, p);
    for (const c of snapshot.customers) catalog.customers.set(c.id, c);
    return catalog;
  }

  feature(key: string): Feature | undefined {
    return this.features.get(key);
  }

  listFeatures(): Feature[] {
    return [...this.features.values()];
  }

  plan(key: string): Plan | undefined {
    return this.plans.get(key);
  }

  listPlans(): Plan[] {
    return [...this.plans.values()];
  }

  /** A customer the catalogue has never seen is on the default plan, with a calendar anchor. */
  customer(id: string): Customer {
    return this.customers.get(id) ?? { id, planKey: null, overrides: [], billingAnchor: null };
  }

  /** The customer's entitlement to a feature: an override first, then the plan's; null if not entitled. */
  entitlement(customer: Customer, featureKey: string): Entitlement | null {
    const override = customer.overrides.find((e) => e.featureKey === featureKey);
    if (override) return override;
    const plan = this.plans.get(customer.planKey ?? DEFAULT_PLAN);
    return plan?.entitlements.find((e) => e.featureKey === featureKey) ?? null;
  }

  /** Every feature the customer is entitled to, in the plan's order, then overrides outside the plan. */
  entitlements(customer: Customer): Array<{ feature: Feature; entitlement: Entitlement }> {
    const plan = this.plans.get(customer.planKey ?? DEFAULT_PLAN);
    const keys = [...(plan?.entitlements ?? []), ...customer.overrides].map((e) => e.featureKey);
    const out: Array<{ feature: Feature; entitlement: Entitlement }> = [];
    for (const key of new Set(keys)) {
      const feature = this.features.get(key);
      const entitlement = this.entitlement(customer, key);
      if (feature && entitlement) out.push({ feature, entitlement });
    }
    return out;
  }

  /** Copies one entry that another replica wrote from the store into this catalogue. */
  async reload(kind: CatalogKind, key: string): Promise<void> {
    const doc = await this.store.loadOne(kind, key);
    if (doc === null) return;
    if (kind === "feature") this.features.set(key, doc as Feature);
    else if (kind === "plan") this.plans.set(key, doc as Plan);
    else this.customers.set(key, doc as Customer);
    this.events.emit("change", { kind, key, remote: true } satisfies CatalogChange);
  }

  /** Reloads everything from the store: the safety net for a missed change notice. */
  async refresh(): Promise<void> {
    const snapshot = await this.store.load();
    for (const f of snapshot.features) this.features.set(f.key, f);
    for (const p of snapshot.plans) this.plans.set(p.key, p);
    for (const c of snapshot.customers) this.customers.set(c.id, c);
  }

  async putFeature(feature: Feature): Promise<void> {
    await this.store.putFeature(feature);
    this.features.set(feature.key, feature);
    this.events.emit("change", { kind: "feature", key: feature.key } satisfies CatalogChange);
  }

  async putPlan(plan: Plan): Promise<void> {
    await this.store.putPlan(plan);
    this.plans.set(plan.key, plan);
    this.events.emit("change", { kind: "plan", key: plan.key } satisfies CatalogChange);
  }

  async putCustomer(customer: Customer): Promise<void> {
    await this.store.putCustomer(customer);
    this.customers.set(customer.id, customer);
    this.events.emit("change", { kind: "customer", key: customer.id } satisfies CatalogChange);
  }
}
