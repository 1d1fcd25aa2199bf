// Configuration, parsed once from the environment into one typed object with defaults.
import path from "node:path";

export interface Config {
  grpcPort: number;
  httpPort: number;
  /** Bind address of both listeners. */
  host: string;
  /** Secret keys accepted as `authorization: Bearer <key>` or `x-api-key: <key>`. Empty: a development key is made. */
  secretKeys: string[];
  corsOrigins: string[];
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

const DAY_MS = 86_400_000;

export function loadConfig(env: Env = process.env): Config {
  return {
    grpcPort: int(env, "METERD_GRPC_PORT", 50051, 0, 65535),
    httpPort: int(env, "METERD_HTTP_PORT", 8080, 0, 65535),
    host: str(env, "METERD_HOST") ?? "127.0.0.1",
    secretKeys: list(env, "METERD_SECRET_KEYS"),
    corsOrigins: list(env, "METERD_CORS_ORIGINS"),
    dataDir: path.resolve(str(env, "METERD_DATA_DIR") ?? ".meterd"),
    redisUrl: str(env, "REDIS_URL"),
    redisPrefix: str(env, "METERD_REDIS_PREFIX") ?? "meterd:",
    databaseUrl: str(env, "DATABASE_URL"),
    catalogFile: str(env, "METERD_CATALOG"),
    maxBackdateMs: int(env, "METERD_MAX_BACKDATE_DAYS", 35, 0, 3650) * DAY_MS,
    maxFutureMs: int(env, "METERD_MAX_FUTURE_SECONDS", 300, 0, 86_400) * 1000,
    maxMessageBytes: int(env, "METERD_MAX_MESSAGE_BYTES", 4 * 1024 * 1024, 1024, 64 * 1024 * 1024),
    maxTimeoutMs: int(env, "METERD_MAX_TIMEOUT_MS", 30_000, 100, 600_000),
    logLevel: str(env, "METERD_LOG_LEVEL") ?? "info",
  };
}
