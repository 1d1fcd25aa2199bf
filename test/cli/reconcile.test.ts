// The reconcile command as a user runs it: against Redis and Postgres, with its report on stdout.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../support/cli.js";
import { createTestDatabase, postgresSkipReason, type TestDatabase } from "../support/pg.js";
import { REDIS_URL, redisSkipReason, testPrefix } from "../support/redis.js";

const skip = (await postgresSkipReason()) ?? (await redisSkipReason());


describe("meterd reconcile", () => {
  it("refuses to run on the embedded default, and says why", async () => {
    const { code, stderr } = await runCli(["reconcile"], {});
    expect(code).toBe(2);
    expect(stderr).toMatch(/needs REDIS_URL and DATABASE_URL/);
  });

  describe.skipIf(skip !== null)("on Redis and Postgres", () => {
    let db: TestDatabase;
    const prefix = testPrefix();
    beforeAll(async () => {
      db = await createTestDatabase("meterd_cli");
    });
    afterAll(async () => {
      await db?.drop();
    });

    it("checks every customer of the ledger and reports that the fast path matches", async () => {
      const env = { REDIS_URL, DATABASE_URL: db.url, METERD_REDIS_PREFIX: prefix };
      const { code, stdout } = await runCli(["reconcile", "--dry-run"], env);
      expect(code).toBe(0);
      expect(stdout).toMatch(/checked 0 customers: the fast path matches the ledger/);
      const one = await runCli(["reconcile", "--customer", "cus_x"], env);
      expect(one.code).toBe(0);
      expect(one.stdout).toMatch(/checked 1 customers/);
      // stderr is a pipe here, not a terminal: progress comes as plain lines, the last one at the end.
      expect(one.stderr).toMatch(/^reconcile 0\/1 customers \(0%\) \| 0 differences \| .* left$/m);
      expect(one.stderr).toMatch(/^reconcile 1\/1 customers \(100%\) \| 0 differences \| .* left$/m);
      expect(one.stderr).not.toMatch(/\u001b\[/);
    });
  });
});
