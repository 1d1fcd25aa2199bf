// A SqlClient wrapper for tests: counts transactions and commits, injects commit failures, and leaves
// the shared client open when the code under test closes it.
import type { SqlClient, SqlExecutor, SqlResult } from "../../src/ledger/sql.js";

export class CountingSql implements SqlClient {
  transactions = 0;
  commits = 0;
  closed = false;
  /** The next transaction does its work, then fails instead of committing (it is rolled back). */
  failNextCommit: Error | null = null;

  constructor(private readonly inner: SqlClient) {}

  query<Row = Record<string, unknown>>(text: string, values?: unknown[]): Promise<SqlResult<Row>> {
    return this.inner.query<Row>(text, values);
  }

  async transaction<T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T> {
    this.transactions++;
    const failure = this.failNextCommit;
    this.failNextCommit = null;
    const result = await this.inner.transaction(async (tx) => {
      const out = await fn(tx);
      if (failure) throw failure;
      return out;
    });
    this.commits++;
    return result;
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}
