// `meterd export`: the ledger's events to a CSV or NDJSON file (or stdout), for billing systems and
// audits. It reads the ledger directly (DATABASE_URL, or the embedded ledger of a stopped meterd),
// through a cursor in one snapshot (see ledger/export.ts), with its progress on stderr.
import { createWriteStream } from "node:fs";
import { once } from "node:events";
import { finished } from "node:stream/promises";
import path from "node:path";
import type { Config } from "./config.js";
import { openLedger } from "./ledger/index.js";
import { countExport, CSV_COLUMNS, csvLine, type ExportedEvent, exportEvents, type ExportFilter } from "./ledger/export.js";
import { progressBar } from "./progress.js";

export interface ExportOptions {
  customer: string[];
  feature: string | undefined;
  from: string | undefined;
  to: string | undefined;
  format: string | undefined;
  out: string | undefined;
}

/** A command-line mistake: printed as one line, exit code 2. */
class UsageError extends Error {}

function instant(value: string | undefined, flag: string): Date | null {
  if (value === undefined) return null;
  const ms = Date.parse(value);
  if (Number.isNaN(ms)) throw new UsageError(`${flag} must be an ISO 8601 date or time such as 2026-11-01 or 2026-11-01T00:00:00Z, got "${value}"`);
  return new Date(ms);
}

function filterOf(o: ExportOptions): ExportFilter {
  if (o.customer.length > 1) throw new UsageError("--customer: export takes one customer (or none, for every customer)");
  const filter = { customerId: o.customer[0] ?? null, featureKey: o.feature ?? null, from: instant(o.from, "--from"), to: instant(o.to, "--to") };
  if (filter.from !== null && filter.to !== null && filter.from >= filter.to) throw new UsageError("--to must be after --from");
  return filter;
}

export async function exportCommand(config: Config, o: ExportOptions): Promise<number> {
  let filter: ExportFilter;
  const format = o.format ?? "ndjson";
  try {
    if (format !== "csv" && format !== "ndjson") throw new UsageError(`--format must be csv or ndjson, got "${format}"`);
    filter = filterOf(o);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    process.stderr.write(`meterd export: ${error.message}\n`);
    return 2;
  }
  const started = performance.now();
  const { ledger, sql } = await openLedger({
    databaseUrl: config.databaseUrl,
    dataDir: config.databaseUrl === null ? path.join(config.dataDir, "ledger") : null,
  });
  try {
    const out = o.out === undefined ? process.stdout : createWriteStream(o.out);
    const line = format === "csv" ? csvLine : (e: ExportedEvent) => JSON.stringify(e);
    const bar = progressBar("export", "events");
    bar.start(await countExport(sql, filter), 0);
    if (format === "csv") out.write(`${CSV_COLUMNS.join(",")}\n`);
    const count = await exportEvents(sql, filter, async (events) => {
      if (!out.write(`${events.map(line).join("\n")}\n`)) await once(out, "drain");
      bar.increment(events.length);
    });
    bar.stop();
    if (out !== process.stdout) {
      out.end();
      await finished(out);
    }
    const seconds = (performance.now() - started) / 1000;
    const peakMiB = process.resourceUsage().maxRSS / 1024;
    process.stderr.write(`exported ${count} events (${format}) in ${seconds.toFixed(1)} s; peak RSS ${peakMiB.toFixed(0)} MiB\n`);
    return 0;
  } finally {
    await ledger.close();
  }
}
