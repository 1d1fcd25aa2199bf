// The real meterd server for end-to-end tests: startServer() with a configuration made by loadConfig()
// from a plain environment (ports 0, a fresh data directory, one secret key, the example catalogue),
// so that what runs is exactly what `meterd serve` runs: the real Meter on PGlite on disk.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { timestampMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { Http2SessionManager } from "@connectrpc/connect-node";
import { pino } from "pino";
import { afterAll, beforeAll } from "vitest";
import { loadConfig } from "../../src/config.js";
import { startServer, type Server } from "../../src/server.js";

export const ROOT = path.resolve(import.meta.dirname, "../..");
export const PROTO_DIR = path.join(ROOT, "proto");
export const EXAMPLE_CATALOG = path.join(ROOT, "examples/catalog.json");
export const KEY = "sk_test_server_e2e_0123456789abcdef";
export const auth = { authorization: `Bearer ${KEY}` };

/** A fresh, empty data directory; remove it with removeDir(). */
export function makeDataDir(): Promise<string> {
  return mkdtemp(path.join(tmpdir(), "meterd-e2e-"));
}

export async function removeDir(dir: string | undefined): Promise<void> {
  if (dir !== undefined) await rm(dir, { recursive: true, force: true });
}

/** Starts the real server on free ports over `dataDir`, configured the way the CLI configures it. */
export async function startMeterd(dataDir: string, env: Record<string, string> = {}): Promise<Server> {
  const config = loadConfig({
    METERD_GRPC_PORT: "0",
    METERD_HTTP_PORT: "0",
    METERD_DATA_DIR: dataDir,
    METERD_SECRET_KEYS: KEY,
    METERD_CATALOG: EXAMPLE_CATALOG,
    ...env,
  });
  return startServer(config, pino({ level: "silent" }));
}

/** HTTP/2 session managers made by a test file; abort them all in afterAll. */
export class Sessions {
  private readonly all: Http2SessionManager[] = [];

  h2(url: string): Http2SessionManager {
    const manager = new Http2SessionManager(url);
    this.all.push(manager);
    return manager;
  }

  abortAll(): void {
    for (const manager of this.all) manager.abort();
  }
}

/**
 * A meterd for the enclosing describe block (or the file): started in beforeAll on a data directory of
 * its own with `env`, closed (with its HTTP/2 sessions) and removed in afterAll.
 */
export function meterdForSuite(env: Record<string, string> = {}): { readonly server: Server; readonly sessions: Sessions } {
  const sessions = new Sessions();
  let server: Server | undefined;
  let dataDir: string | undefined;
  beforeAll(async () => {
    dataDir = await makeDataDir();
    server = await startMeterd(dataDir, env);
  });
  afterAll(async () => {
    sessions.abortAll();
    await server?.close(1000);
    await removeDir(dataDir);
  });
  return {
    get server(): Server {
      if (server === undefined) throw new Error("meterd is started in beforeAll: read the server inside a test or hook");
      return server;
    },
    sessions,
  };
}

/** The error a call fails with; fails the test if the call succeeds. */
export async function errorOf(call: () => Promise<unknown>): Promise<ConnectError> {
  try {
    await call();
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("the call succeeded");
}

export { Code };

/** The current calendar month in UTC, [start, end), as ms: the period of the example's monthly features. */
export function currentMonth(now = new Date()): { start: number; end: number } {
  return {
    start: Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1),
    end: Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1),
  };
}

export function ms(ts: Timestamp | undefined): number | undefined {
  return ts === undefined ? undefined : timestampMs(ts);
}

