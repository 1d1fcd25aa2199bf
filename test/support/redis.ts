// Test connections to the machine's Redis. CI shares the server with other runs, so each connection
// gets its own random key prefix, and cleanup() deletes every key under it before disconnecting.
import { randomBytes } from "node:crypto";
import { Redis } from "ioredis";

/** The server the Redis suites use; override with METERD_TEST_REDIS_URL. */
export const REDIS_URL = process.env.METERD_TEST_REDIS_URL ?? "redis://127.0.0.1:6379";

export interface TestRedis {
  redis: Redis;
  /** A fresh prefix, "meterd_test:<random>:", that no other test uses. */
  prefix: string;
  /** Deletes every key under the prefix, then closes the connection. Safe to call twice. */
  cleanup(): Promise<void>;
}

export function testPrefix(): string {
  return `meterd_test:${randomBytes(6).toString("hex")}:`;
}

/** A new connection, ready to use. An unreachable server fails here, within a few seconds. */
export async function connectTestRedis(prefix = testPrefix()): Promise<TestRedis> {
  const redis = new Redis(REDIS_URL, {
    lazyConnect: true,
    connectTimeout: 3000,
    maxRetriesPerRequest: 3,
    retryStrategy: (attempt) => (attempt > 3 ? null : 100 * attempt),
  });
  let lastError: unknown;
  redis.on("error", (err) => {
    lastError = err;
  });
  try {
    await redis.connect();
  } catch (err) {
    const cause = lastError ?? err;
    throw new Error(`cannot connect to Redis at ${REDIS_URL}: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
  }
  let cleaned: Promise<void> | null = null;
  return {
    redis,
    prefix,
    cleanup() {
      cleaned ??= (async () => {
        try {
          await deleteByPrefix(redis, prefix);
        } finally {
          await redis.quit().catch(() => redis.disconnect());
        }
      })();
      return cleaned;
    },
  };
}

/** Every key under `prefix` (a prefix without glob characters), sorted. */
export async function keysByPrefix(redis: Redis, prefix: string): Promise<string[]> {
  if (/[*?[\]\\]/.test(prefix)) throw new Error(`prefix ${JSON.stringify(prefix)} holds glob characters`);
  const found = new Set<string>();
  let cursor = "0";
  do {
    const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}*`, "COUNT", 1000);
    for (const key of keys) found.add(key);
    cursor = next;
  } while (cursor !== "0");
  return [...found].sort();
}

/** Deletes every key under `prefix`; returns how many there were. */
export async function deleteByPrefix(redis: Redis, prefix: string): Promise<number> {
  const keys = await keysByPrefix(redis, prefix);
  let deleted = 0;
  for (let at = 0; at < keys.length; at += 1000) deleted += await redis.unlink(...keys.slice(at, at + 1000));
  return deleted;
}

/**
 * Why the Redis suites should skip, or null to run them. In CI (process.env.CI set) this is always
 * null, so that an unreachable server fails the run instead of skipping silently.
 */
export async function redisSkipReason(): Promise<string | null> {
  if (process.env.CI) return null;
  const redis = new Redis(REDIS_URL, { lazyConnect: true, connectTimeout: 2000, maxRetriesPerRequest: 0, retryStrategy: () => null });
  let lastError: unknown;
  redis.on("error", (err) => {
    lastError = err;
  });
  try {
    await redis.connect();
    await redis.ping();
    return null;
  } catch (err) {
    const cause = lastError ?? err;
    const reason = `Redis at ${REDIS_URL} is unreachable (${cause instanceof Error ? cause.message : String(cause)}); ` +
      "skipping the Redis suites. Set CI=1 to make this a failure.";
    console.warn(reason);
    return reason;
  } finally {
    redis.disconnect();
  }
}
