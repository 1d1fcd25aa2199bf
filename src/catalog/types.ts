// The catalogue's domain types: what is metered, what each plan allows, and who is on which plan.
// Quantities are exact decimal strings here; the metering code turns them into integer units.

export type FeatureKind = "consumable" | "persistent";
export type ResetInterval = "day" | "week" | "month" | "year" | "never";
export type ResetAnchor = "calendar" | "billing";

export interface Feature {
  key: string;
  title: string;
  productName: string;
  kind: FeatureKind;
  interval: ResetInterval;
  anchor: ResetAnchor;
  unit: string;
  /** Decimal places kept, 0..6. */
  precision: number;
  /** Credits per unit as an exact decimal, or null when the feature is not credit-funded. */
  creditCost: string | null;
}

export interface Entitlement {
  featureKey: string;
  /** Exact decimal, or null for unlimited. */
  limit: string | null;
  hard: boolean;
  /** Percentages to report, ascending, for example [80, 100]. */
  thresholds: number[];
}

export interface Plan {
  key: string;
  title: string;
  entitlements: Entitlement[];
}

export interface Customer {
  id: string;
  /** null: the plan keyed DEFAULT_PLAN. */
  planKey: string | null;
  overrides: Entitlement[];
  billingAnchor: Date | null;
}

/** The plan that applies to every customer who has none. */
export const DEFAULT_PLAN = "default";

export interface CatalogSnapshot {
  features: Feature[];
  plans: Plan[];
  customers: Customer[];
}

/** Durable storage of the catalogue. The in-memory Catalog caches it and answers every lookup. */
export type CatalogKind = "feature" | "plan" | "customer";

export interface CatalogStore {
  load(): Promise<CatalogSnapshot>;
  /** One entry as stored now, or null (another replica may have written it). */
  loadOne(kind: CatalogKind, key: string): Promise<Feature | Plan | Customer | null>;
  putFeature(feature: Feature): Promise<void>;
  putPlan(plan: Plan): Promise<void>;
  putCustomer(customer: Customer): Promise<void>;
}
