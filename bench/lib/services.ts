// What a bench run makes and must clean up: a fresh Postgres database, a Redis key prefix, and the
// processes (meterd from its build in dist/, the echo servers through tsx), started in the repository root.
import { execFile, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { Redis } from "ioredis";
import pg from "pg";
import { BENCH_KEY } from "./clients.js";
import { type Child, freePort, ROOT, startNode, waitForOutput } from "./proc.js";

export const REDIS_URL = process.env.METERD_BENCH_REDIS_URL ?? "redis://127.0.0.1:6379";
export const PG_ADMIN_URL = process.env.METERD_BENCH_PG_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";

for (const url of [REDIS_URL, PG_ADMIN_URL]) {
  const host = new URL(url).hostname.replace(/^\[|\]$/g, "");
  if (!["127.0.0.1", "localhost", "::1"].includes(host)) throw new Error(`the bench only talks to loopback, not ${url}`);
}

async function withAdmin<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: PG_ADMIN_URL, connectionTimeoutMillis: 5000 });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

export interface BenchDatabase {
  name: string;
  url: string;
  drop(): Promise<void>;
}

export async function createDatabase(runId: string): Promise<BenchDatabase> {
  const name = `meterd_bench_${runId}`;
  await withAdmin((c) => c.query(`CREATE DATABASE ${name}`));
  const url = new URL(PG_ADMIN_URL);
  url.pathname = `/${name}`;
  let dropped: Promise<void> | null = null;
  return {
    name,
    url: url.toString(),
    drop() {
      dropped ??= withAdmin(async (c) => {
        await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      });
      return dropped;
    },
  };
}

/** Deletes every key under `prefix` (which holds no glob characters); returns how many. */
export async function deleteRedisPrefix(prefix: string): Promise<number> {
  if (/[*?[\]\\]/.test(prefix)) throw new Error(`prefix ${prefix} holds glob characters`);
  const redis = new Redis(REDIS_URL, { lazyConnect: true, connectTimeout: 3000, maxRetriesPerRequest: 2 });
  redis.on("error", () => {});
  await redis.connect();
  try {
    let deleted = 0;
    let cursor = "0";
    do {
      const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 5000);
      cursor = next;
      if (keys.length > 0) deleted += await redis.unlink(...keys);
    } while (cursor !== "0");
    return deleted;
  } finally {
    redis.disconnect();
  }
}

export interface Meterd extends Child {
  grpcPort: number;
  httpPort: number;
  dataDir: string;
}

/** Builds meterd (`node scripts/build.mjs`, to dist/) once per bench run: the bench measures what production runs. */
let built: Promise<void> | null = null;
function buildMeterd(): Promise<void> {
  built ??= new Promise<void>((resolve, reject) => {
    execFile(process.execPath, [path.join(ROOT, "scripts/build.mjs")], { cwd: ROOT }, (error, _stdout, stderr) => {
      if (error) reject(new Error(`npm run build failed: ${stderr || error.message}`));
      else resolve();
    });
  });
  return built;
}

/**
 * Builds meterd, then starts `node dist/src/cli.js serve` (as `npm start` and the `meterd` bin do) as its
 * own process, on free ports, against the bench's Redis prefix and database, with the bench catalogue and
 * key. `nodeFlags` go first (e.g. --cpu-prof). Resolves once both listeners are up.
 */
export async function startMeterd(options: { databaseUrl: string; prefix: string; nodeFlags?: string[]; name?: string }): Promise<Meterd> {
  const [grpcPort, httpPort] = [await freePort(), await freePort()];
  const dataDir = mkdtempSync(path.join(os.tmpdir(), "meterd-bench-"));
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const name of Object.keys(env)) {
    if (name.startsWith("METERD_") || name === "DATABASE_URL" || name === "REDIS_URL" || name === "NODE_OPTIONS") delete env[name];
  }
  Object.assign(env, {
    REDIS_URL,
    DATABASE_URL: options.databaseUrl,
    METERD_REDIS_PREFIX: options.prefix,
    METERD_SECRET_KEYS: BENCH_KEY,
    METERD_CATALOG: path.join(ROOT, "bench/catalog.json"),
    METERD_GRPC_PORT: String(grpcPort),
    METERD_HTTP_PORT: String(httpPort),
    METERD_DATA_DIR: dataDir,
  });
  await buildMeterd();
  const child = startNode(options.name ?? "meterd", [...(options.nodeFlags ?? []), "dist/src/cli.js", "serve"], env);
  try {
    await waitForOutput(child, /^ {2}Connect +http:\/\/127\.0\.0\.1:\d+\s/m, 60_000);
  } catch (error) {
    await child.stop(2000);
    rmSync(dataDir, { recursive: true, force: true });
    throw error;
  }
  const stop = child.stop.bind(child);
  return {
    ...child,
    grpcPort,
    httpPort,
    dataDir,
    async stop(graceMs?: number) {
      await stop(graceMs);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** Starts one of the bench's echo servers (bench/echo/<file>), with `extraEnv`, and resolves with its port. */
export async function startEcho(file: string, extraEnv: NodeJS.ProcessEnv = {}): Promise<Child & { port: number }> {
  const env = { ...process.env, ...extraEnv };
  delete env.NODE_OPTIONS;
  const child = startNode(file, ["--import", "tsx", `bench/echo/${file}`], env);
  try {
    const match = await waitForOutput(child, /^port (\d+)$/m, 30_000);
    return Object.assign(child, { port: Number(match[1]) });
  } catch (error) {
    await child.stop(2000);
    throw error;
  }
}

/** The machine, as the README's Performance section states it. */
export async function machineInfo(): Promise<Record<string, string>> {
  const cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  const model = /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? "unknown CPU";
  const memGiB = (os.totalmem() / 2 ** 30).toFixed(1);
  const pgVersion = await withAdmin(async (c) => (await c.query<{ v: string }>("SELECT current_setting('server_version') AS v")).rows[0]?.v ?? "?");
  const pgSettings = await withAdmin(async (c) => {
    const rows = (await c.query<{ name: string; setting: string }>(
      "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'shared_buffers', 'wal_level')",
    )).rows;
    return rows.map((r) => `${r.name}=${r.setting}`).join(" ");
  });
  const redis = new Redis(REDIS_URL, { lazyConnect: true, connectTimeout: 3000 });
  redis.on("error", () => {});
  await redis.connect();
  const info = await redis.info("server");
  redis.disconnect();
  let kernel = os.release();
  try {
    kernel = execFileSync("uname", ["-sr"], { encoding: "utf8" }).trim();
  } catch {
    // keep os.release()
  }
  // Which code ran: the commit, and whether src/ had uncommitted changes (read-only git commands).
  let code = "unknown";
  try {
    const head = execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd: ROOT, encoding: "utf8" }).trim();
    const dirty = execFileSync("git", ["status", "--porcelain", "--", "src", "gen"], { cwd: ROOT, encoding: "utf8" }).trim();
    code = `${head}${dirty === "" ? "" : ` + uncommitted changes in ${dirty.split("\n").length} files of src/ and gen/`}`;
  } catch {
    // not a git checkout
  }
  return {
    code,
    cpu: `${model}, ${os.cpus().length} vCPUs`,
    memory: `${memGiB} GiB`,
    os: kernel,
    node: process.version,
    postgres: `${pgVersion} (${pgSettings})`,
    redis: /redis_version:(\S+)/.exec(info)?.[1] ?? "?",
    redisPid: /process_id:(\d+)/.exec(info)?.[1] ?? "",
  };
}
