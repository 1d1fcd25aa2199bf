// A mistake in meterd's configuration is one line on stderr and exit code 1, never a stack trace:
// a log level pino does not know, and a catalogue file that is not JSON or breaks the catalogue's rules.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../support/cli.js";

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
