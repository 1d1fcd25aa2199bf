// The reconcile command as a user runs it: against Redis and Postgres, with its report on stdout.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../support/cli.js";
import { createTestDatabase, postgresSkipReason, type TestDatabase } from "../support/pg.js";
import { connectTestRedis, keysByPrefix, REDIS_URL, redisSkipReason, testPrefix } from "../support/redis.js";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { MeteringService } from "../../gen/meterd/v1/metering_pb.js";
import { auth, makeDataDir, removeDir, startMeterd } from "../server/harness.js";

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

    it("exits 3 when the fast path differs from the ledger, repairs it, then exits 0", async () => {
      const env = { REDIS_URL, DATABASE_URL: db.url, METERD_REDIS_PREFIX: prefix };
      const dataDir = await makeDataDir();
      const server = await startMeterd(dataDir, env);
      const redis = await connectTestRedis(prefix);
      try {
        const metering = createClient(MeteringService, createConnectTransport({ baseUrl: `http://127.0.0.1:${server.httpPort}`, httpVersion: "1.1" }));
        await metering.track({ customerId: "cus_drift", featureKey: "api_calls", amount: 2, idempotencyKey: "d-1" }, { headers: auth });
        const [counter] = (await keysByPrefix(redis.redis, prefix)).filter((k) => k.includes("{c:cus_drift}:u:api_calls:"));
        expect(counter).toBeDefined();
        await redis.redis.incrby(counter!, 5); // the fast path now says 7 where the ledger holds 2

        const dry = await runCli(["reconcile", "--dry-run", "--customer", "cus_drift"], env);
        expect(dry.code).toBe(3);
        expect(dry.stdout).toMatch(/^cus_drift\tapi_calls .*\tfast path 7\tledger 2\tnot changed \(dry run\)$/m);
        const repair = await runCli(["reconcile", "--customer", "cus_drift"], env);
        expect(repair.code).toBe(3);
        expect(repair.stdout).toMatch(/1 differences in 1 customers, repaired/);
        const again = await runCli(["reconcile", "--customer", "cus_drift"], env);
        expect([again.code, again.stdout]).toEqual([0, "checked 1 customers: the fast path matches the ledger\n"]);
      } finally {
        await server.close(500);
        await redis.cleanup();
        await removeDir(dataDir);
      }
    }, 60_000);
  });
});
