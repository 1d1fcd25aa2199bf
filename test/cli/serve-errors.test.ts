// A mistake in meterd's configuration is one line on stderr and exit code 1, never a stack trace:
// a log level pino does not know, a Redis prefix that would break its keys, and a catalogue file that
// is not JSON or breaks the catalogue's rules. And a production start on the development key is warned
// about where an operator looks.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../support/cli.js";
import { createTestDatabase, postgresSkipReason, type TestDatabase } from "../support/pg.js";

const pgSkip = await postgresSkipReason();

describe("meterd serve refuses a bad configuration in one line", () => {
  let dir: string;

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), "meterd-serve-errors-"));
    await writeFile(path.join(dir, "not-json.json"), "{features: [");
    await writeFile(path.join(dir, "bad-feature.json"), JSON.stringify({ features: [{ key: "", title: "No key" }] }));
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it.each([
    ["METERD_LOG_LEVEL=loud", { METERD_LOG_LEVEL: "loud" }, /^meterd: METERD_LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent, got "loud"$/],
    ["a Redis prefix with a brace", { METERD_REDIS_PREFIX: "acme{" }, /^meterd: METERD_REDIS_PREFIX may not contain "\{", "\}" or a tab, got "acme\{"$/],
    ["a catalogue file that is not JSON", { METERD_CATALOG: "not-json.json" }, /^meterd: .*not-json\.json: cannot decode message meterd\.v1\.Catalog from JSON/],
    ["a catalogue file with a feature without a key", { METERD_CATALOG: "bad-feature.json" }, /^meterd: .*bad-feature\.json: features\[0\]\.key /],
  ])("%s", async (_, env, message) => {
    const vars: Record<string, string> = { METERD_DATA_DIR: path.join(dir, "data"), METERD_GRPC_PORT: "0", METERD_HTTP_PORT: "0", ...env };
    if (vars.METERD_CATALOG !== undefined) vars.METERD_CATALOG = path.join(dir, vars.METERD_CATALOG);
    const { code, stdout, stderr } = await runCli(["serve"], vars, 60_000);
    expect(code).toBe(1);
    expect(stdout).toBe("");
    expect(stderr.trimEnd().split("\n")).toHaveLength(1);
    expect(stderr.trimEnd()).toMatch(message);
  });
});

describe.skipIf(pgSkip !== null && !process.env.CI)("meterd serve on Postgres without METERD_SECRET_KEYS", () => {
  let db: TestDatabase;
  let dir: string;

  beforeAll(async () => {
    db = await createTestDatabase("meterd_devkey_warning");
    dir = await mkdtemp(path.join(os.tmpdir(), "meterd-devkey-warning-"));
  });

  afterAll(async () => {
    await db?.drop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it("serves with the development key, and warns about it in the banner and the log", async () => {
    // Killed after a few seconds: what it printed by then is what is checked.
    const { stdout, stderr } = await runCli(["serve"], { DATABASE_URL: db.url, METERD_DATA_DIR: dir, METERD_GRPC_PORT: "0", METERD_HTTP_PORT: "0" }, 8000);
    expect(stderr).toMatch(/^meterd is serving \(postgres storage\)$/m);
    expect(stderr).toMatch(/^ {2}WARNING: no METERD_SECRET_KEYS, so the development key above is the only key: set your own keys in production$/m);
    const warnings = stdout.split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as { level: number; msg: string }).filter((l) => l.level === 40);
    expect(warnings.map((w) => w.msg)).toContain("serving Redis or Postgres with the development key: set METERD_SECRET_KEYS in production");
  }, 30_000);
});
