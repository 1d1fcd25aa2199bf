// The README's configuration reference is checked against the code, so that the two cannot drift:
// every environment variable src/ reads is a row of the table, every row is a variable src/ reads, and
// where config.ts gives a literal default, the table shows that default.
//
// What config.ts reads is found by running loadConfig on an environment that records each name asked
// for; what the rest of src/ reads is found in the source (process.env.NAME, process.env["NAME"], or
// process.env[CONSTANT] with `const CONSTANT = "NAME"` in the same file). Any other use of process.env
// fails the test, so that a new way of reading the environment cannot slip past it.
import { readdir, readFile } from "node:fs/promises";
import path from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { loadConfig } from "../../src/config.js";
import { parseWorkers } from "../../src/workers.js";

const ROOT = path.resolve(import.meta.dirname, "../..");
const HEADING = "### Configuration reference";

/** Read from the environment, but set by meterd itself, not by whoever runs it. */
const INTERNAL = new Map([["METERD_CLUSTER_WORKER", "set by the primary of --workers in its workers' environment"]]);

interface Row {
  name: string;
  /** The default cell without its backticks; null for "(none)". */
  default: string | null;
}

/** The rows of the first table under the configuration reference heading. */
function readmeTable(readme: string): Row[] {
  const start = readme.indexOf(`\n${HEADING}\n`);
  if (start < 0) throw new Error(`the README has no "${HEADING}" heading`);
  const end = readme.indexOf("\n## ", start + 1);
  const lines = readme.slice(start + 1, end < 0 ? readme.length : end).split("\n");
  const header = lines.findIndex((l) => /^\| variable \| default \| meaning \|/.test(l));
  if (header < 0) throw new Error(`no "| variable | default | meaning |" table under "${HEADING}"`);
  const rows: Row[] = [];
  for (const line of lines.slice(header + 2)) {
    if (!line.startsWith("|")) break;
    const cells = line.split(" | ");
    const name = /^\| `([A-Z][A-Z0-9_]*)`$/.exec(cells[0]!)?.[1];
    if (name === undefined) throw new Error(`cannot read the variable of the row: ${line}`);
    const cell = cells[1]!.trim();
    const literal = /^`([^`]*)`$/.exec(cell)?.[1];
    if (cell !== "(none)" && literal === undefined) throw new Error(`the default of ${name} must be \`value\` or (none), got ${cell}`);
    rows.push({ name, default: literal ?? null });
  }
  return rows;
}

/** Names config.ts asks of the environment, through loadConfig itself. */
function readByLoadConfig(): Set<string> {
  const names = new Set<string>();
  const env = new Proxy({} as Record<string, string | undefined>, {
    get(_target, name) {
      if (typeof name === "string") names.add(name);
      return undefined;
    },
  });
  loadConfig(env);
  return names;
}

async function sourceFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries.filter((e) => e.isFile() && e.name.endsWith(".ts")).map((e) => path.join(e.parentPath, e.name));
}

/** Names the rest of src/ reads from process.env; throws on a use of process.env it cannot read. */
function readFromProcessEnv(file: string, text: string): Set<string> {
  const names = new Set<string>();
  const constants = new Map([...text.matchAll(/const (\w+) = "([A-Za-z_][A-Za-z0-9_]*)";/g)].map((m) => [m[1]!, m[2]!]));
  for (const [index, line] of text.split("\n").entries()) {
    if (/^\s*(\/\/|\*|\/\*)/.test(line)) continue;
    for (const m of line.matchAll(/process\.env(\.(\w+)|\["(\w+)"\]|\[(\w+)\])?/g)) {
      const name = m[2] ?? m[3] ?? (m[4] !== undefined ? constants.get(m[4]) : undefined);
      // config.ts: `loadConfig(env: Env = process.env)`, whose reads readByLoadConfig sees.
      if (name === undefined && path.basename(file) === "config.ts" && /=\s*process\.env\)/.test(line)) continue;
      if (name === undefined) throw new Error(`${path.relative(ROOT, file)}:${index + 1}: cannot tell which variable this reads: ${line.trim()}`);
      names.add(name);
    }
  }
  return names;
}

/**
 * config.ts's literal default for `name`: the numeric fallback of a helper (`int(env, NAME, 30_000, ...)`,
 * `4 * 1024 * 1024` included), the string after `??` (`str(env, NAME) ?? "info"`), null when the helper
 * has neither (`list(env, NAME)`), undefined when it is read some other way.
 */
function literalDefault(configSource: string, name: string): string | null | undefined {
  const call = `\\w+\\(env, ${JSON.stringify(name)}`;
  const numeric = new RegExp(`${call}, ([\\d_.\\s*]+)[,)]`).exec(configSource);
  if (numeric) {
    const factors = numeric[1]!.replace(/_/g, "").split("*").map((f) => Number(f.trim()));
    return factors.some((f) => Number.isNaN(f)) ? undefined : String(factors.reduce((product, f) => product * f, 1));
  }
  const fallback = new RegExp(`${call}\\)\\s*\\?\\?\\s*"([^"]*)"`).exec(configSource);
  if (fallback) return fallback[1]!;
  if (new RegExp(`${call}\\)(?!\\s*\\?\\?)`).test(configSource)) return null;
  return undefined;
}

/** "./.meterd" and ".meterd" are the same directory. */
const normal = (value: string | null): string | null => (value === null ? null : value.replace(/^\.\//, ""));

describe("the README's configuration reference", () => {
  let configSource: string;
  let rows: Row[];
  let documented: Set<string>;
  /** What config.ts reads. */
  let fromConfig: Set<string>;
  /** What src/ reads, config.ts included, less INTERNAL. */
  let read: Set<string>;

  beforeAll(async () => {
    configSource = await readFile(path.join(ROOT, "src/config.ts"), "utf8");
    rows = readmeTable(await readFile(path.join(ROOT, "README.md"), "utf8"));
    documented = new Set(rows.map((r) => r.name));
    fromConfig = readByLoadConfig();
    read = new Set(fromConfig);
    for (const file of await sourceFiles(path.join(ROOT, "src"))) {
      for (const name of readFromProcessEnv(file, await readFile(file, "utf8"))) read.add(name);
    }
    for (const name of INTERNAL.keys()) read.delete(name);
  });

  it("finds what the code reads", () => {
    // A guard on the finders themselves: if they found nothing, both directions would pass vacuously.
    expect(fromConfig).toContain("METERD_HTTP_PORT");
    expect(read).toContain("METERD_WORKERS");
    expect(rows.length).toBeGreaterThan(10);
  });

  it("has one row per variable", () => {
    expect(rows.map((r) => r.name).filter((name, i, all) => all.indexOf(name) !== i)).toEqual([]);
  });

  it("documents every variable the code reads", () => {
    expect([...read].filter((name) => !documented.has(name)).sort()).toEqual([]);
  });

  it("documents no variable the code does not read", () => {
    expect([...documented].filter((name) => !read.has(name)).sort()).toEqual([]);
  });

  it("gives the defaults config.ts gives", () => {
    const unknown: string[] = [];
    for (const name of fromConfig) {
      const expected = literalDefault(configSource, name);
      if (expected === undefined) {
        unknown.push(name);
        continue;
      }
      expect({ name, default: normal(rows.find((r) => r.name === name)?.default ?? null) }).toEqual({ name, default: normal(expected) });
    }
    // config.ts read a variable in a way literalDefault does not know: teach it, so that its default is checked.
    expect(unknown).toEqual([]);
  });

  it("gives the default of METERD_WORKERS", () => {
    expect(rows.find((r) => r.name === "METERD_WORKERS")?.default).toBe(String(parseWorkers(undefined, "METERD_WORKERS")));
  });
});
