// meterd import as a user runs it: a file that meterd export wrote, sent over the network to another
// (empty) meterd, gives back the same events (kinds, amounts bit-exact, keys, times, properties); importing it
// again, as NDJSON or CSV, counts nothing twice; what meterd refuses lands in the rejects file.
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../support/cli.js";
import { CatalogService } from "../../gen/meterd/v1/catalog_pb.js";
import { MeteringService } from "../../gen/meterd/v1/metering_pb.js";
import type { Server } from "../../src/server.js";
import { auth, KEY, makeDataDir, removeDir, startMeterd } from "../server/harness.js";
import { createTestDatabase, postgresSkipReason, type TestDatabase } from "../support/pg.js";

const skip = await postgresSkipReason();


interface Deployment {
  db: TestDatabase;
  dataDir: string;
  server: Server;
  url: string;
}

async function deploy(): Promise<Deployment> {
  const db = await createTestDatabase("meterd_import");
  const dataDir = await makeDataDir();
  const server = await startMeterd(dataDir, { DATABASE_URL: db.url });
  return { db, dataDir, server, url: `http://127.0.0.1:${server.httpPort}` };
}

/** An export, as comparable records: without what a new deployment gives anew (ids, commit times). */
function comparable(ndjson: string, ids: Map<string, string>): unknown[] {
  return ndjson
    .trimEnd()
    .split("\n")
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .map(({ id, recorded_at, ...rest }) => {
      void recorded_at;
      const key = rest["idempotency_key"] ?? `import:${String(id)}`;
      ids.set(String(id), String(key));
      return { ...rest, idempotency_key: key };
    })
    .sort((a, b) => String(a.idempotency_key).localeCompare(String(b.idempotency_key)));
}

describe.skipIf(skip !== null && !process.env.CI)("meterd import", () => {
  let source: Deployment;
  let target: Deployment;
  let dir: string;

  beforeAll(async () => {
    [source, target] = await Promise.all([deploy(), deploy()]);
    dir = await mkdtemp(path.join(os.tmpdir(), "meterd-import-"));
    const transport = createConnectTransport({ baseUrl: source.url, httpVersion: "1.1" });
    const metering = createClient(MeteringService, transport);
    const catalog = createClient(CatalogService, transport);
    const headers = { headers: auth };
    const twoDaysAgo = timestampFromMs(Date.now() - 2 * 86_400_000);
    await metering.track({ customerId: "cus_a", featureKey: "api_calls", amount: 3, idempotencyKey: "a-1", timestamp: twoDaysAgo }, headers);
    await metering.track({ customerId: "cus_a", featureKey: "api_calls", amount: -1, idempotencyKey: "a-fix" }, headers);
    await metering.track({ customerId: "cus_a", featureKey: "storage_gb", amount: 0.1, idempotencyKey: "a-gb", properties: { note: 'a "quoted", comma\nand a line' } }, headers);
    await metering.track({ customerId: "cus_b", featureKey: "storage_gb", amount: 41.123456 }, headers);
    await catalog.topUpCredits({ customerId: "cus_b", amount: 12.5, idempotencyKey: "b-credits", description: "welcome, 12.5 credits", timestamp: twoDaysAgo }, headers);
    await metering.track({ customerId: "cus_b", featureKey: "ai_tokens", amount: 1500, idempotencyKey: "b-ai" }, headers);
    await metering.setUsage({ customerId: "cus_b", featureKey: "seats", used: 4, idempotencyKey: "b-seats" }, headers);
    // Set events of every sign: a delta of 0 (the same total again) and a lower total.
    await metering.setUsage({ customerId: "cus_b", featureKey: "seats", used: 4, idempotencyKey: "b-seats-same" }, headers);
    await metering.setUsage({ customerId: "cus_b", featureKey: "seats", used: 2, idempotencyKey: "b-seats-down" }, headers);
  }, 120_000);

  afterAll(async () => {
    for (const d of [source, target]) {
      await d?.server.close(500);
      await d?.db.drop();
      if (d) await removeDir(d.dataDir);
    }
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("gives back the same events in another deployment, and a second import (NDJSON, then CSV) counts nothing", async () => {
    const file = path.join(dir, "events.ndjson");
    expect((await runCli(["export", "--out", file], { DATABASE_URL: source.db.url })).code).toBe(0);
    const first = await runCli(["import", file, "--url", target.url, "--key", KEY]);
    expect(first.stderr).toMatch(/^imported 9 events, 0 already there, 0 rejected$/m);
    expect(first.code).toBe(0);

    const back = await runCli(["export"], { DATABASE_URL: target.db.url });
    const ids = new Map<string, string>();
    expect(comparable(back.stdout, new Map())).toEqual(comparable(await readFile(file, "utf8"), ids));

    const again = await runCli(["import", file, "--url", target.url, "--key", KEY]);
    expect(again.stderr).toMatch(/^imported 0 events, 9 already there, 0 rejected$/m);
    const csv = path.join(dir, "events.csv");
    expect((await runCli(["export", "--format", "csv", "--out", csv], { DATABASE_URL: source.db.url })).code).toBe(0);
    const fromCsv = await runCli(["import", csv, "--url", target.url], { METERD_KEY: KEY });
    expect(fromCsv.stderr).toMatch(/^imported 0 events, 9 already there, 0 rejected$/m);
    expect((await runCli(["export"], { DATABASE_URL: target.db.url })).stdout.trimEnd().split("\n")).toHaveLength(9);
    expect(first.stderr).toMatch(/^import \d+\/\d+ bytes \(100%\)/m);
  });

  it("writes what meterd refuses to the rejects file with the reason, and exits 3", async () => {
    const file = path.join(dir, "bad.ndjson");
    await writeFile(
      file,
      [
        JSON.stringify({ id: "x1", customer_id: "cus_c", feature_key: "api_calls", kind: "track", amount: "1", idempotency_key: "c-ok" }),
        JSON.stringify({ id: "x2", customer_id: "cus_c", feature_key: "no_such_feature", kind: "track", amount: "1", idempotency_key: "c-bad" }),
        "this is not json",
        JSON.stringify({ customer_id: "cus_c", feature_key: "api_calls", kind: "track", amount: "1" }),
      ].join("\n"),
    );
    const { code, stderr } = await runCli(["import", file, "--url", target.url, "--key", KEY]);
    expect(code).toBe(3);
    expect(stderr).toMatch(/^imported 1 events, 0 already there, 3 rejected \(reasons in .*bad\.ndjson\.rejects\.ndjson\)$/m);
    const rejects = (await readFile(`${file}.rejects.ndjson`, "utf8")).trimEnd().split("\n").map((l) => JSON.parse(l) as { line: number; reason: string });
    expect(rejects.map((r) => [r.line, r.reason])).toEqual([
      [3, "NOT_AN_EVENT"],
      [4, "NOT_AN_EVENT"],
      [2, "UNKNOWN_FEATURE"],
    ]);
  });

  it("refuses to start without a file or a key, in one line", async () => {
    expect(await runCli(["import"])).toMatchObject({ code: 2, stderr: expect.stringMatching(/^meterd import: name the file to import/) });
    expect(await runCli(["import", path.join(dir, "none.ndjson"), "--key", KEY])).toMatchObject({ code: 2, stderr: expect.stringMatching(/cannot read/) });
    expect(await runCli(["import", path.join(dir, "x.ndjson")])).toMatchObject({ code: 2, stderr: expect.stringMatching(/--key \(or METERD_KEY\)/) });
  });
});
