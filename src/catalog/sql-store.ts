// CatalogStore over the ledger's SqlClient: each feature, plan and customer is one JSON document in
// meterd_catalog, keyed by (kind, key). Dates are stored as ISO strings and revived on load.
import type { SqlExecutor } from "../ledger/sql.js";
import type { CatalogKind, CatalogSnapshot, CatalogStore, Customer, Feature, Plan } from "./types.js";

type Kind = CatalogKind;

const UPSERT = `INSERT INTO meterd_catalog (kind, key, doc) VALUES ($1, $2, $3::jsonb)
  ON CONFLICT (kind, key) DO UPDATE SET doc = EXCLUDED.doc, updated_at = now()`;

export class SqlCatalogStore implements CatalogStore {
  /** sql is usually the ledger's SqlClient; the schema comes from the ledger's migrations. */
  constructor(private readonly sql: SqlExecutor) {}

  async load(): Promise<CatalogSnapshot> {
    const res = await this.sql.query<{ kind: Kind; key: string; doc: unknown }>(
      "SELECT kind, key, doc FROM meterd_catalog",
    );
    const byKey = (a: { key: string }, b: { key: string }) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);
    const rows = res.rows.sort(byKey);
    return {
      features: rows.filter((r) => r.kind === "feature").map((r) => r.doc as Feature),
      plans: rows.filter((r) => r.kind === "plan").map((r) => r.doc as Plan),
      customers: rows.filter((r) => r.kind === "customer").map((r) => reviveCustomer(r.doc as StoredCustomer)),
    };
  }

  async loadOne(kind: Kind, key: string): Promise<Feature | Plan | Customer | null> {
    const res = await this.sql.query<{ doc: unknown }>("SELECT doc FROM meterd_catalog WHERE kind = $1 AND key = $2", [kind, key]);
    const doc = res.rows[0]?.doc;
    if (doc === undefined) return null;
    return kind === "customer" ? reviveCustomer(doc as StoredCustomer) : (doc as Feature | Plan);
  }

  putFeature(feature: Feature): Promise<void> {
    return this.put("feature", feature.key, feature);
  }

  putPlan(plan: Plan): Promise<void> {
    return this.put("plan", plan.key, plan);
  }

  putCustomer(customer: Customer): Promise<void> {
    return this.put("customer", customer.id, customer);
  }

  private async put(kind: Kind, key: string, doc: Feature | Plan | Customer): Promise<void> {
    // JSON.stringify turns a Date into its ISO string (Date.prototype.toJSON).
    await this.sql.query(UPSERT, [kind, key, JSON.stringify(doc)]);
  }
}

type StoredCustomer = Omit<Customer, "billingAnchor"> & { billingAnchor: string | null };

function reviveCustomer(doc: StoredCustomer): Customer {
  return { ...doc, billingAnchor: doc.billingAnchor == null ? null : new Date(doc.billingAnchor) };
}
