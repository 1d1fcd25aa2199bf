// Test databases on the machine's Postgres. Each test file makes its own database and drops it, since
// CI shares the server with other runs.
import { randomBytes } from "node:crypto";
import pg from "pg";

/** The server's admin database; override with METERD_TEST_PG_URL. */
export const ADMIN_URL = process.env.METERD_TEST_PG_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";

export interface TestDatabase {
  name: string;
  url: string;
  /** Drops the database, closing any connection still open to it. */
  drop(): Promise<void>;
}

async function withAdmin<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: ADMIN_URL, connectionTimeoutMillis: 5000 });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

export async function createTestDatabase(prefix = "meterd_test"): Promise<TestDatabase> {
  const name = `${prefix}_${randomBytes(6).toString("hex")}`;
  await withAdmin((c) => c.query(`CREATE DATABASE ${name}`));
  const url = new URL(ADMIN_URL);
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

/**
 * Why the Postgres suites should skip, or null to run them. In CI (process.env.CI set) this is always
 * null, so that an unreachable server fails the run instead of skipping silently.
 */
export async function postgresSkipReason(): Promise<string | null> {
  if (process.env.CI) return null;
  try {
    await withAdmin((c) => c.query("SELECT 1"));
    return null;
  } catch (err) {
    const reason = `Postgres at ${ADMIN_URL} is unreachable (${err instanceof Error ? err.message : String(err)}); ` +
      "skipping the Postgres suites. Set CI=1 to make this a failure.";
    console.warn(reason);
    return reason;
  }
}
