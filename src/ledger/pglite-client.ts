// SqlClient over PGlite, the embedded default: real Postgres in WASM, in one process.
import { mkdir } from "node:fs/promises";
import { PGlite, type Results } from "@electric-sql/pglite";
import type { SqlClient, SqlExecutor, SqlResult } from "./sql.js";

const INT8 = 20;
const NUMERIC = 1700;
const asText = (value: string): string => value;

function toResult<Row>(res: Results<Row>): SqlResult<Row> {
  return { rows: res.rows, rowCount: res.rowCount ?? res.affectedRows ?? res.rows.length };
}

/** Wraps an open PGlite. Its int8 and NUMERIC parsers must return strings (openPgliteClient does that). */
export function pgliteClient(db: PGlite): SqlClient {
  let closed: Promise<void> | null = null;
  return {
    async query<Row>(text: string, values?: unknown[]) {
      return toResult(await db.query<Row>(text, values));
    },

    transaction<T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T> {
      return db.transaction((tx) =>
        fn({
          async query<Row>(text: string, values?: unknown[]) {
            return toResult(await tx.query<Row>(text, values));
          },
        }),
      );
    },

    close() {
      closed ??= db.close();
      return closed;
    },
  };
}

/**
 * Opens PGlite on a directory (created if missing), or in memory when dataDir is null. int8 and
 * NUMERIC come back as strings, the same shapes as the pg adapter. Only one process may open a
 * directory at a time.
 */
export async function openPgliteClient(dataDir: string | null): Promise<SqlClient> {
  const options = { parsers: { [INT8]: asText, [NUMERIC]: asText } };
  if (dataDir === null) return pgliteClient(await PGlite.create(options));
  await mkdir(dataDir, { recursive: true });
  return pgliteClient(await PGlite.create(dataDir, options));
}
