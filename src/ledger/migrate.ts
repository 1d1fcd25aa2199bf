// Schema migrations: ordered SQL files in ./migrations, applied in one transaction under an advisory
// lock, so that replicas starting together apply each file exactly once. The same transaction then
// makes the ledger's monthly partitions for the months around now (see partitions.ts).
import { readdir, readFile } from "node:fs/promises";
import { ensurePartitions, hasPartitions } from "./partitions.js";
import type { SqlClient, SqlExecutor } from "./sql.js";

/** pg_advisory_xact_lock key: "meterd" in ASCII. Any process migrating this database takes it. */
export const MIGRATION_LOCK_KEY = "120279469470308";

export const MIGRATIONS_DIR = new URL("./migrations/", import.meta.url);

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

export interface MigrateResult {
  /** Names of the files applied by this call, in order; empty when the schema was up to date. */
  applied: string[];
  /** Highest version now recorded in meterd_schema_version. */
  version: number;
}

const FILE_NAME = /^(\d+)_[A-Za-z0-9_-]+\.sql$/;

export async function loadMigrations(dir: URL = MIGRATIONS_DIR): Promise<Migration[]> {
  const names = (await readdir(dir)).filter((name) => name.endsWith(".sql"));
  const migrations: Migration[] = [];
  for (const name of names) {
    const match = FILE_NAME.exec(name);
    if (!match) throw new Error(`migration file "${name}" must be named like 001_description.sql`);
    migrations.push({ version: Number(match[1]), name, sql: await readFile(new URL(name, dir), "utf8") });
  }
  migrations.sort((a, b) => a.version - b.version);
  for (let i = 1; i < migrations.length; i++) {
    if (migrations[i]!.version === migrations[i - 1]!.version) {
      throw new Error(`two migration files have version ${migrations[i]!.version}`);
    }
  }
  return migrations;
}

export async function migrate(sql: SqlClient, dir: URL = MIGRATIONS_DIR): Promise<MigrateResult> {
  const migrations = await loadMigrations(dir);
  return sql.transaction(async (tx) => {
    // The lock comes first: even CREATE TABLE IF NOT EXISTS fails when two sessions race it.
    await tx.query(`SELECT pg_advisory_xact_lock(${MIGRATION_LOCK_KEY})`);
    await tx.query(`CREATE TABLE IF NOT EXISTS meterd_schema_version (
      version    INTEGER PRIMARY KEY,
      name       TEXT NOT NULL,
      applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
    )`);
    const done = new Set(
      (await tx.query<{ version: number }>("SELECT version FROM meterd_schema_version")).rows.map((r) => r.version),
    );
    const applied: string[] = [];
    for (const migration of migrations) {
      if (done.has(migration.version)) continue;
      await apply(tx, migration);
      applied.push(migration.name);
    }
    if (await hasPartitions(tx)) await ensurePartitions(tx);
    const top = await tx.query<{ version: number | null }>("SELECT max(version) AS version FROM meterd_schema_version");
    return { applied, version: top.rows[0]?.version ?? 0 };
  });
}

async function apply(tx: SqlExecutor, migration: Migration): Promise<void> {
  for (const statement of splitStatements(migration.sql)) {
    try {
      await tx.query(statement);
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      throw new Error(`migration ${migration.name} failed: ${message}\n${statement}`, { cause: err });
    }
  }
  await tx.query("INSERT INTO meterd_schema_version (version, name) VALUES ($1, $2)", [
    migration.version,
    migration.name,
  ]);
}

/**
 * Splits a SQL script into statements at top-level semicolons. PGlite's query() takes one statement
 * at a time, so the migrator sends them one by one. Understands quotes, dollar quotes and comments.
 */
export function splitStatements(script: string): string[] {
  const statements: string[] = [];
  let start = 0;
  let i = 0;
  const push = (end: number) => {
    const text = script.slice(start, end).trim();
    if (stripComments(text) !== "") statements.push(text);
  };
  while (i < script.length) {
    const ch = script[i]!;
    const next = script[i + 1];
    if (ch === "-" && next === "-") {
      const eol = script.indexOf("\n", i);
      i = eol === -1 ? script.length : eol + 1;
    } else if (ch === "/" && next === "*") {
      i = skipBlockComment(script, i);
    } else if (ch === "'" || ch === '"') {
      const escapes = ch === "'" && /[eE]/.test(script[i - 1] ?? "") && !/\w/.test(script[i - 2] ?? "");
      i = skipQuoted(script, i, ch, escapes);
    } else if (ch === "$") {
      const tag = /^\$(?:[A-Za-z_][A-Za-z0-9_]*)?\$/.exec(script.slice(i));
      if (tag && !/\w/.test(script[i - 1] ?? "")) {
        const end = script.indexOf(tag[0], i + tag[0].length);
        if (end === -1) throw new Error(`unterminated dollar quote ${tag[0]}`);
        i = end + tag[0].length;
      } else {
        i++;
      }
    } else if (ch === ";") {
      push(i);
      start = ++i;
    } else {
      i++;
    }
  }
  push(script.length);
  return statements;
}

function skipBlockComment(script: string, from: number): number {
  let depth = 0;
  let i = from;
  while (i < script.length) {
    if (script.startsWith("/*", i)) {
      depth++;
      i += 2;
    } else if (script.startsWith("*/", i)) {
      depth--;
      i += 2;
      if (depth === 0) return i;
    } else {
      i++;
    }
  }
  throw new Error("unterminated block comment");
}

function skipQuoted(script: string, from: number, quote: string, backslashEscapes: boolean): number {
  let i = from + 1;
  while (i < script.length) {
    const ch = script[i]!;
    if (backslashEscapes && ch === "\\") {
      i += 2;
    } else if (ch === quote) {
      if (script[i + 1] === quote) i += 2;
      else return i + 1;
    } else {
      i++;
    }
  }
  throw new Error(`unterminated ${quote === "'" ? "string" : "quoted identifier"}`);
}

function stripComments(text: string): string {
  return text.replace(/--[^\n]*/g, "").replace(/\/\*[\s\S]*?\*\//g, "").trim();
}
