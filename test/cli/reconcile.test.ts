// The reconcile command as a user runs it: against Redis and Postgres, with its report on stdout.
import { spawn } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTestDatabase, postgresSkipReason, type TestDatabase } from "../support/pg.js";
import { REDIS_URL, redisSkipReason, testPrefix } from "../support/redis.js";

const skip = (await postgresSkipReason()) ?? (await redisSkipReason());

function run(args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", "src/cli.ts", ...args], {
      env: { PATH: process.env.PATH ?? "", ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.on("error", reject);
    child.on("exit", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

describe("meterd reconcile", () => {
  it("refuses to run on the embedded default, and says why", async () => {
    const { code, stderr } = await run(["reconcile"], {});
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
      const { code, stdout } = await run(["reconcile", "--dry-run"], env);
      expect(code).toBe(0);
      expect(stdout).toMatch(/checked 0 customers: the fast path matches the ledger/);
      const one = await run(["reconcile", "--customer", "cus_x"], env);
      expect(one.code).toBe(0);
      expect(one.stdout).toMatch(/checked 1 customers/);
      // stderr is a pipe here, not a terminal: progress comes as plain lines, the last one at the end.
      expect(one.stderr).toMatch(/^reconcile 0\/1 customers \(0%\) \| 0 differences \| .* left$/m);
      expect(one.stderr).toMatch(/^reconcile 1\/1 customers \(100%\) \| 0 differences \| .* left$/m);
      expect(one.stderr).not.toMatch(/\u001b\[/);
    });
  });
});
