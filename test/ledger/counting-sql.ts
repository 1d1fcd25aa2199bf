// A SqlClient wrapper for tests: counts the ledger's write statements (each one is its own
// transaction) and their commits, injects commit failures, and leaves the shared client open when
// the code under test closes it.
import type { QueryOptions, SqlClient, SqlExecutor, SqlResult } from "../../src/ledger/sql.js";

/** The name SqlLedger gives its one write statement (the INSERT of a group commit). */
const LEDGER_WRITE = "meterd_ledger_insert";

export class CountingSql implements SqlClient {
  /** Write statements sent, each a transaction of its own, plus explicit transactions. */
  transactions = 0;
  commits = 0;
  closed = false;
  /** The next write does its work, then fails instead of committing (it is rolled back). */
  failNextCommit: Error | null = null;
  /** Ledger writes sent and not answered yet, and the most there were at once. */
  inFlight = 0;
  maxInFlight = 0;

  constructor(private readonly inner: SqlClient) {}

  async query<Row = Record<string, unknown>>(text: string, values?: unknown[], options?: QueryOptions): Promise<SqlResult<Row>> {
    if (options?.name !== LEDGER_WRITE) return this.inner.query<Row>(text, values, options);
    this.transactions++;
    const failure = this.failNextCommit;
    this.failNextCommit = null;
    if (failure) {
      // The statement runs inside a transaction that is then rolled back: sent, done, not committed.
      await this.inner.transaction(async (tx) => {
        await tx.query(text, values);
        throw failure;
      });
    }
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      const result = await this.inner.query<Row>(text, values, options);
      this.commits++;
      return result;
    } finally {
      this.inFlight--;
    }
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
