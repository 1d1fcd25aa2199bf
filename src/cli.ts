#!/usr/bin/env node
// The meterd command line: serve (the default), migrate, reconcile, export and import. Configuration comes from the
// environment (see the README); flags override it.
import { parseArgs } from "node:util";
import { type Config, ConfigError, loadConfig } from "./config.js";
import { openLedger } from "./ledger/index.js";
import { createLogger } from "./log.js";
import { startServer } from "./server.js";
import { openApp } from "./app.js";
import { type Difference, Reconciler } from "./metering/reconcile.js";
import { exportCommand } from "./export-command.js";
import { importCommand } from "./import-command.js";
import { progressBar } from "./progress.js";
import { isWorker, parseWorkers, type Ready, reportReady, requireSharedStorage, runPrimary, workerId } from "./workers.js";

import path from "node:path";

const USAGE = `Usage: meterd <command> [options]

Commands:
  serve      Serve the gRPC and Connect listeners (the default command)
  migrate    Apply pending ledger migrations, then exit
  reconcile  Compare the Redis counters and wallets with the ledger, and repair the differences
             (needs REDIS_URL and DATABASE_URL)
  export     Write the ledger's events as NDJSON or CSV, oldest first, to stdout or --out FILE
             (DATABASE_URL, or the embedded ledger of a meterd that is stopped)
  import FILE  Send the events of an NDJSON or CSV file (as export writes them) to a running meterd
             through TrackBatch and TopUpCredits; what it refuses goes to a rejects file

Options:
  --catalog FILE      Catalogue file to apply at start-up (overrides METERD_CATALOG)
  --workers N         serve: run N worker processes on the same ports (node:cluster), "auto" for one
                      per core; default 1, one process (overrides METERD_WORKERS). Needs REDIS_URL
                      and DATABASE_URL when N > 1
  --customer ID       reconcile: only this customer (repeatable); export: only this customer
  --dry-run           reconcile: report the differences, change nothing
  --feature KEY       export: only this feature
  --from, --to TIME   export: events that occurred from --from (included) to --to (excluded), ISO 8601
  --format F          export: ndjson (default) or csv (properties as a JSON object in one field)
  --out FILE          export: write to FILE instead of stdout
  --format F          import: csv or ndjson (default: from the file's extension)
  --url URL           import: the meterd to send to (default http://127.0.0.1:<METERD_HTTP_PORT>)
  --key KEY           import: a secret key of that meterd (or METERD_KEY)
  --rejects FILE      import: where refused and denied events go (default FILE.rejects.ndjson)
  -h, --help          Show this help

Exit codes: 0 done; 1 an error (one line on stderr); 2 a mistaken command line; 3 reconcile found
differences (repaired unless --dry-run), or import refused events (see its rejects file).

Storage: with neither REDIS_URL nor DATABASE_URL set, meterd runs embedded, keeping its data
under METERD_DATA_DIR (default ./.meterd).`;

function banner(config: Config, ready: Ready): string {
  const host = config.host;
  const lines = [
    `meterd is serving (${ready.storage} storage${config.catalogFile ? `, catalogue ${config.catalogFile}` : ""})`,
    `  gRPC     ${host}:${ready.grpcPort}   (grpc-js: internal services)`,
    `  Connect  http://${host}:${ready.httpPort}   (Connect, gRPC-web and gRPC over HTTP/1.1 and h2c)`,
    `  usage page  http://${host}:${ready.httpPort}/ui/   (open it with #token=<a customer token>)`,
  ];
  if (ready.devKey?.created) {
    lines.push(`  development key (made now, kept in ${path.join(config.dataDir, "dev-key")}):`, `    ${ready.devKey.key}`);
  } else if (ready.devKey) {
    lines.push(`  development key: ${ready.devKey.key}  (from ${path.join(config.dataDir, "dev-key")})`);
  }
  if (ready.devKey && ready.storage !== "embedded") {
    lines.push(`  WARNING: no METERD_SECRET_KEYS, so the development key above is the only key: set your own keys in production`);
  }
  return `${lines.join("\n")}\n`;
}

/** Serves until a signal; with workers > 1, runs the primary of that many workers (see workers.ts). */
async function serve(config: Config, workers: number): Promise<number> {
  if (workers > 1 && !isWorker()) {
    requireSharedStorage(config, workers);
    return runPrimary({ workers, logger: createLogger(config.logLevel), banner: (ready) => banner(config, ready) });
  }
  const logger = isWorker() ? createLogger(config.logLevel).child({ worker: workerId() }) : createLogger(config.logLevel);
  const server = await startServer(config, logger);
  if (server.devKey && server.app.storage !== "embedded") {
    logger.warn("serving Redis or Postgres with the development key: set METERD_SECRET_KEYS in production");
  }
  const ready: Ready = { storage: server.app.storage, grpcPort: server.grpcPort, httpPort: server.httpPort, devKey: server.devKey };
  if (isWorker()) reportReady(ready);
  // On stderr: stdout carries the JSON log lines only, for a log collector.
  else process.stderr.write(banner(config, ready));

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "shutting down: draining calls and flushing the ledger");
    server.close(config.tuning.shutdownGraceMs).then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: error }, "shutdown failed");
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
  return -1;
}

async function migrateOnly(config: Config): Promise<void> {
  const { ledger, migrated } = await openLedger({
    databaseUrl: config.databaseUrl,
    dataDir: config.databaseUrl === null ? path.join(config.dataDir, "ledger") : null,
  });
  await ledger.close();
  for (const name of migrated.applied) process.stdout.write(`applied ${name}\n`);
  process.stdout.write(
    migrated.applied.length === 0
      ? `ledger schema is up to date (migration ${migrated.version})\n`
      : `ledger schema is now at migration ${migrated.version}\n`,
  );
}

async function reconcile(config: Config, only: string[], dryRun: boolean): Promise<number> {
  if (config.redisUrl === null || config.databaseUrl === null) {
    process.stderr.write("reconcile needs REDIS_URL and DATABASE_URL: the embedded fast path is rebuilt from the ledger at every start\n");
    return 2;
  }
  const logger = createLogger(config.logLevel === "info" ? "warn" : config.logLevel);
  const app = await openApp(config, logger);
  try {
    const reconciler = new Reconciler(app.catalog, app.fastPath, app.ledger);
    const total = only.length > 0 ? only.length : await app.ledger.countCustomers();
    const bar = progressBar("reconcile", "customers", "{differences} differences");
    bar.start(total, 0, { differences: 0 });
    const found: Difference[] = [];
    const pages = only.length > 0 ? [only] : reconciler.customers();
    for await (const page of pages) {
      for (const customerId of page) {
        found.push(...(await reconciler.check(customerId, !dryRun)));
        bar.increment(1, { differences: found.length });
      }
    }
    bar.stop();
    for (const d of found) {
      const what = d.featureKey === null ? "credit wallet" : `${d.featureKey} (period ${d.periodKey === "p" ? "persistent" : new Date(Number(d.periodKey)).toISOString()})`;
      process.stdout.write(`${d.customerId}\t${what}\tfast path ${d.fastPath}\tledger ${d.expected}\t${dryRun ? "not changed (dry run)" : "reset: rebuilt from the ledger on next use"}\n`);
    }
    const customers = new Set(found.map((d) => d.customerId)).size;
    process.stdout.write(
      found.length === 0
        ? `checked ${total} customers: the fast path matches the ledger\n`
        : `checked ${total} customers: ${found.length} differences in ${customers} customers${dryRun ? "" : ", repaired"}\n`,
    );
    // 3, as `import` does when it refused events: a cron job or a script can tell "found differences".
    return found.length === 0 ? 0 : 3;
  } finally {
    await app.close();
  }
}

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        catalog: { type: "string" },
        customer: { type: "string", multiple: true },
        "dry-run": { type: "boolean" },
        feature: { type: "string" },
        from: { type: "string" },
        to: { type: "string" },
        format: { type: "string" },
        out: { type: "string" },
        url: { type: "string" },
        key: { type: "string" },
        rejects: { type: "string" },
        workers: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (error) {
    process.stderr.write(`${(error as Error).message}\n\n${USAGE}\n`);
    return 2;
  }
  const command = parsed.positionals[0] ?? "serve";
  if (parsed.values.help || command === "help") {
    process.stdout.write(`${USAGE}\n`);
    return 0;
  }
  if (parsed.values.workers !== undefined && command !== "serve") {
    process.stderr.write(`--workers applies to serve only\n\n${USAGE}\n`);
    return 2;
  }
  const config = loadConfig();
  if (parsed.values.catalog !== undefined) config.catalogFile = parsed.values.catalog;
  switch (command) {
    case "serve":
      return serve(
        config,
        parsed.values.workers !== undefined ? parseWorkers(parsed.values.workers, "--workers") : parseWorkers(process.env.METERD_WORKERS, "METERD_WORKERS"),
      );
    case "migrate":
      await migrateOnly(config);
      return 0;
    case "reconcile":
      return reconcile(config, parsed.values.customer ?? [], parsed.values["dry-run"] === true);
    case "import":
      return importCommand({
        file: parsed.positionals[1],
        format: parsed.values.format,
        url: parsed.values.url ?? `http://127.0.0.1:${config.httpPort}`,
        key: parsed.values.key ?? process.env.METERD_KEY,
        rejects: parsed.values.rejects,
      });
    case "export":
      return exportCommand(config, {
        customer: parsed.values.customer ?? [],
        feature: parsed.values.feature,
        from: parsed.values.from,
        to: parsed.values.to,
        format: parsed.values.format,
        out: parsed.values.out,
      });
    default:
      process.stderr.write(`unknown command "${command}"\n\n${USAGE}\n`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exit(code);
  },
  (error: unknown) => {
    const message = error instanceof ConfigError ? error.message : error instanceof Error ? (error.stack ?? error.message) : String(error);
    process.stderr.write(`meterd: ${message}\n`);
    process.exit(1);
  },
);
