// Configuration, parsed once from the environment into one typed object with defaults.
import path from "node:path";
import { MIN_SIGNING_SECRET_LENGTH, SIGNING_KEY_ID } from "./auth/customer-tokens.js";
import { parseRate, type Rate } from "./auth/rate-limit.js";

export interface Config {
  grpcPort: number;
  httpPort: number;
  /** Bind address of both listeners. */
  host: string;
  /** Secret keys accepted as `authorization: Bearer <key>` or `x-api-key: <key>`. Empty: a development key is made. */
  secretKeys: string[];
  corsOrigins: string[];
  /**
   * Keys that sign customer tokens: the first signs, all verify. Empty: one key derived from each
   * secret key (or from the development key).
   */
  tokenKeys: Array<{ id: string; secret: string }>;
  /** Per-customer-token rate limit; null: none. */
  tokenRate: Rate | null;
  /** Embedded default: where PGlite and the development key live. */
  dataDir: string;
  redisUrl: string | null;
  /** Prefix of every Redis key, so that several deployments (or tests) can share one Redis. */
  redisPrefix: string;
  databaseUrl: string | null;
  catalogFile: string | null;
  /** Events may be backdated this far. */
  maxBackdateMs: number;
  /** Events may be dated this far ahead. */
  maxFutureMs: number;
  /** Largest request message, in bytes; larger ones get RESOURCE_EXHAUSTED. */
  maxMessageBytes: number;
  /** Client deadlines are capped at this. */
  maxTimeoutMs: number;
  logLevel: string;
  tuning: Tuning;
}

/** Operational settings: each has a default that fits one small replica, documented in the README. */
export interface Tuning {
  /** Share (0 to 1) of successful Track, TrackBatch, TrackStream, Check and GetMetrics calls in the access log. */
  accessLogSample: number;
  /** How long a SIGTERM drain waits for calls in flight. */
  shutdownGraceMs: number;
  /** Outbox events pending this long are taken for stranded and committed by the sweeper... */
  sweepAfterMs: number;
  /** ...which looks this often. */
  sweepEveryMs: number;
  /** A Redis command that takes longer fails (and the call gets UNAVAILABLE). */
  redisCommandTimeoutMs: number;
  /** Postgres connections per process. */
  pgPoolSize: number;
  /** Most events in one group commit. */
  commitMaxEvents: number;
  /** Group commits in flight at once on Postgres (the embedded ledger takes one). */
  concurrentCommits: number;
  /** The most events in one TrackBatch call or TrackStream request (the API's limit is 1,000). */
  maxBatchEvents: number;
  /** How often readiness (GET /readyz, grpc.health.v1) checks Redis and Postgres... */
  readinessEveryMs: number;
  /** ...and how long each may take to answer before it counts as down. */
  readinessTimeoutMs: number;
  /** How long Redis alone answers a retry of a committed event (the ledger answers after that). */
  settledTtlSeconds: number;
  /** After Redis lost its data, how long a customer's first event waits for commits in flight before its counters are rebuilt. */
  rebuildGraceMs: number;
}

export class ConfigError extends Error {}

/** pino's levels; "silent" logs nothing. */
const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"];

function redisPrefix(env: Env): string {
  const prefix = str(env, "METERD_REDIS_PREFIX") ?? "meterd:";
  // "{" and "}" would break the keys' Cluster hash tags; a tab, the outbox records.
  if (/[{}\t]/.test(prefix)) throw new ConfigError(`METERD_REDIS_PREFIX may not contain "{", "}" or a tab, got ${JSON.stringify(prefix)}`);
  return prefix;
}

function logLevel(env: Env): string {
  const level = str(env, "METERD_LOG_LEVEL") ?? "info";
  if (!LOG_LEVELS.includes(level)) throw new ConfigError(`METERD_LOG_LEVEL must be one of ${LOG_LEVELS.join(", ")}, got "${level}"`);
  return level;
}

type Env = Record<string, string | undefined>;

function int(env: Env, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(`${name} must be an integer from ${min} to ${max}, got "${raw}"`);
  }
  return value;
}

function fraction(env: Env, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw.trim() === "") return fallback;
  const value = Number(raw);
  if (raw.trim() === "" || !Number.isFinite(value) || value < 0 || value > 1) throw new ConfigError(`${name} must be a number from 0 to 1, got "${raw}"`);
  return value;
}

function list(env: Env, name: string): string[] {
  return (env[name] ?? "").split(",").map((s) => s.trim()).filter((s) => s !== "");
}

function str(env: Env, name: string): string | null {
  const raw = env[name];
  return raw === undefined || raw.trim() === "" ? null : raw.trim();
}

function tokenKeys(env: Env): Config["tokenKeys"] {
  const keys = list(env, "METERD_TOKEN_KEYS").map((entry) => {
    const colon = entry.indexOf(":");
    const id = colon < 0 ? "" : entry.slice(0, colon).trim();
    const secret = colon < 0 ? "" : entry.slice(colon + 1).trim();
    if (!SIGNING_KEY_ID.test(id)) {
      throw new ConfigError(`METERD_TOKEN_KEYS: each entry must be "id:secret" with an id of 1 to 32 letters, digits, "_" or "-"`);
    }
    if (secret.length < MIN_SIGNING_SECRET_LENGTH) {
      throw new ConfigError(`METERD_TOKEN_KEYS: the secret of key "${id}" must be at least ${MIN_SIGNING_SECRET_LENGTH} characters`);
    }
    return { id, secret };
  });
  const ids = keys.map((k) => k.id);
  const repeated = ids.find((id, i) => ids.indexOf(id) !== i);
  if (repeated !== undefined) throw new ConfigError(`METERD_TOKEN_KEYS: key id "${repeated}" is used twice`);
  return keys;
}

function tokenRate(env: Env): Rate | null {
  const raw = str(env, "METERD_TOKEN_RATE") ?? "10/s";
  if (raw === "off") return null;
  const perSecond = parseRate(raw);
  if (perSecond === null) throw new ConfigError(`METERD_TOKEN_RATE must look like "10/s", "600/m" or "off", got "${raw}"`);
  return { perSecond, burst: int(env, "METERD_TOKEN_BURST", 20, 1, 1_000_000) };
}

const DAY_MS = 86_400_000;

export function loadConfig(env: Env = process.env): Config {
  return {
    grpcPort: int(env, "METERD_GRPC_PORT", 50051, 0, 65535),
    httpPort: int(env, "METERD_HTTP_PORT", 8080, 0, 65535),
    host: str(env, "METERD_HOST") ?? "127.0.0.1",
    secretKeys: list(env, "METERD_SECRET_KEYS"),
    corsOrigins: list(env, "METERD_CORS_ORIGINS"),
    tokenKeys: tokenKeys(env),
    tokenRate: tokenRate(env),
    dataDir: path.resolve(str(env, "METERD_DATA_DIR") ?? ".meterd"),
    redisUrl: str(env, "REDIS_URL"),
    redisPrefix: redisPrefix(env),
    databaseUrl: str(env, "DATABASE_URL"),
    catalogFile: str(env, "METERD_CATALOG"),
    maxBackdateMs: int(env, "METERD_MAX_BACKDATE_DAYS", 35, 0, 3650) * DAY_MS,
    maxFutureMs: int(env, "METERD_MAX_FUTURE_SECONDS", 300, 0, 86_400) * 1000,
    maxMessageBytes: int(env, "METERD_MAX_MESSAGE_BYTES", 4 * 1024 * 1024, 1024, 64 * 1024 * 1024),
    maxTimeoutMs: int(env, "METERD_MAX_TIMEOUT_MS", 30_000, 100, 600_000),
    logLevel: logLevel(env),
    tuning: tuning(env),
  };
}

function tuning(env: Env): Tuning {
  const t: Tuning = {
    accessLogSample: fraction(env, "METERD_ACCESS_LOG_SAMPLE", 0.01),
    shutdownGraceMs: int(env, "METERD_SHUTDOWN_GRACE_MS", 10_000, 0, 600_000),
    sweepAfterMs: int(env, "METERD_SWEEP_AFTER_MS", 3_000, 100, 3_600_000),
    sweepEveryMs: int(env, "METERD_SWEEP_EVERY_MS", 1_000, 100, 3_600_000),
    redisCommandTimeoutMs: int(env, "METERD_REDIS_COMMAND_TIMEOUT_MS", 1_000, 50, 60_000),
    pgPoolSize: int(env, "METERD_PG_POOL_SIZE", 10, 2, 1_000),
    commitMaxEvents: int(env, "METERD_COMMIT_MAX_EVENTS", 5_000, 1_000, 100_000),
    concurrentCommits: int(env, "METERD_CONCURRENT_COMMITS", 2, 1, 16),
    maxBatchEvents: int(env, "METERD_MAX_BATCH_EVENTS", 1_000, 1, 1_000),
    readinessEveryMs: int(env, "METERD_READINESS_EVERY_MS", 5_000, 500, 600_000),
    readinessTimeoutMs: int(env, "METERD_READINESS_TIMEOUT_MS", 2_000, 100, 60_000),
    settledTtlSeconds: int(env, "METERD_SETTLED_TTL_SECONDS", 7 * 86_400, 60, 365 * 86_400),
    rebuildGraceMs: int(env, "METERD_REBUILD_GRACE_MS", 3_000, 0, 600_000),
  };
  // Each commit in flight holds a connection; reads and the catalogue need at least one more.
  if (t.pgPoolSize <= t.concurrentCommits) {
    throw new ConfigError(`METERD_PG_POOL_SIZE (${t.pgPoolSize}) must be larger than METERD_CONCURRENT_COMMITS (${t.concurrentCommits})`);
  }
  return t;
}
