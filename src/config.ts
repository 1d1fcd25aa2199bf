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
  };
}
