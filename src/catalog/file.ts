// The declarative catalogue file (METERD_CATALOG): a meterd.v1.Catalog in protobuf JSON, applied at
// start-up on top of what the store holds, so that `npm start` serves a working example at once.
import { readFile } from "node:fs/promises";
import { fromJsonString } from "@bufbuild/protobuf";
import { CatalogSchema } from "../../gen/meterd/v1/catalog_pb.js";
import { ConfigError } from "../config.js";
import { MeterError } from "../metering/errors.js";
import type { Catalog } from "./catalog.js";
import { customerFromMsg, featureFromMsg, planFromMsg } from "./convert.js";

/** A catalogue file that cannot be applied: a configuration error, reported in one line. */
export class CatalogFileError extends ConfigError {}

export async function applyCatalogFile(catalog: Catalog, file: string): Promise<{ features: number; plans: number; customers: number }> {
  let msg;
  try {
    msg = fromJsonString(CatalogSchema, await readFile(file, "utf8"));
  } catch (error) {
    throw new CatalogFileError(`${file}: ${(error as Error).message}`);
  }
  try {
    // Features first: plans and customers refer to them, and may refer to ones defined in the store.
    const features = msg.features.map((f, i) => featureFromMsg(f, `features[${i}]`));
    const featureKeys = new Set([...features.map((f) => f.key), ...catalog.listFeatures().map((f) => f.key)]);
    const plans = msg.plans.map((p, i) => planFromMsg(p, (k) => featureKeys.has(k), `plans[${i}]`));
    const planKeys = new Set([...plans.map((p) => p.key), ...catalog.listPlans().map((p) => p.key)]);
    const known = { feature: (k: string) => featureKeys.has(k), plan: (k: string) => planKeys.has(k) };
    const customers = msg.customers.map((c, i) => customerFromMsg(c, known, `customers[${i}]`));
    for (const f of features) {
      const existing = catalog.feature(f.key);
      if (existing && existing.precision !== f.precision) {
        throw new CatalogFileError(`${file}: features[${f.key}].precision cannot change once set (it is ${existing.precision})`);
      }
    }
    for (const f of features) await catalog.putFeature(f);
    for (const p of plans) await catalog.putPlan(p);
    for (const c of customers) await catalog.putCustomer(c);
    return { features: features.length, plans: plans.length, customers: customers.length };
  } catch (error) {
    if (error instanceof MeterError) throw new CatalogFileError(`${file}: ${error.rawMessage}`);
    throw error;
  }
}
