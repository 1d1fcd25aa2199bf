// SqlClient over node-postgres: a pool for single statements, a checked-out client for transactions.
import pg from "pg";
import type { QueryOptions, SqlClient, SqlExecutor, SqlResult } from "./sql.js";

const INT8 = 20;
const NUMERIC = 1700;

/**
 * int8 and NUMERIC stay strings, exactly as Postgres wrote them (node-postgres#884: parseInt loses
 * precision). Registered on this pool only, never on the global pg.types.
 */
const exactTypes: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: "text" | "binary") => {
    if (oid === INT8 || oid === NUMERIC) return (value: string) => value;
    return format === undefined ? pg.types.getTypeParser(oid) : pg.types.getTypeParser(oid, format);
  }) as pg.CustomTypesConfig["getTypeParser"],
};

export interface PgClientOptions {
  /** Most connections the pool opens. Default 10. */
  max?: number;
  /**
   * Called when an idle pooled connection fails (for example, the server restarted). The pool drops
   * that connection, and the next query opens a new one. Without a handler, pg would crash the process.
   */
  onError?: (err: Error) => void;
}

function toResult<Row>(res: pg.QueryResult): SqlResult<Row> {
  return { rows: res.rows as Row[], rowCount: res.rowCount ?? res.rows.length };
}

export function createPgClient(connectionString: string, options: PgClientOptions = {}): SqlClient {
  const pool = new pg.Pool({ connectionString, max: options.max ?? 10, types: exactTypes });
  pool.on("error", (err) => options.onError?.(err));
  let closed: Promise<void> | null = null;

  return {
    async query<Row>(text: string, values?: unknown[], options?: QueryOptions) {
      const config: pg.QueryConfig = options?.name === undefined ? { text, values: values ?? [] } : { name: options.name, text, values: values ?? [] };
      return toResult<Row>(await pool.query(config));
    },

    async transaction<T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T> {
      const client = await pool.connect();
      // A client whose ROLLBACK failed is in an unknown state: destroy it instead of reusing it.
      let broken: Error | undefined;
      // pg-pool listens for errors only on idle clients: while checked out, a connection reset would
      // be an "error" with no listener, which ends the process. The failing query rejects as well.
      const onError = (err: Error) => {
        broken = err;
      };
      client.on("error", onError);
      try {
        await client.query("BEGIN");
        try {
          const tx: SqlExecutor = {
            async query<Row>(text: string, values?: unknown[]) {
              return toResult<Row>(await client.query(text, values));
            },
          };
          const result = await fn(tx);
          await client.query("COMMIT");
          return result;
        } catch (err) {
          try {
            await client.query("ROLLBACK");
          } catch (rollbackErr) {
            broken = rollbackErr instanceof Error ? rollbackErr : new Error(String(rollbackErr));
          }
          throw err;
        }
      } finally {
        client.off("error", onError);
        client.release(broken);
      }
    },

    close() {
      closed ??= pool.end();
      return closed;
    },
  };
}
