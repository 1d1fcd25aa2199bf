// The one database interface the ledger needs. pg and PGlite both sit behind it, so the same SQL
// and migrations serve production and the embedded default.

export interface SqlResult<Row> {
  rows: Row[];
  rowCount: number;
}

export interface QueryOptions {
  /**
   * Names the statement so that the driver parses and plans it once per connection (pg's named
   * prepared statements). A name must always go with the same text. Drivers without them ignore it.
   */
  name?: string;
}

export interface SqlExecutor {
  query<Row = Record<string, unknown>>(text: string, values?: unknown[], options?: QueryOptions): Promise<SqlResult<Row>>;
}

export interface SqlClient extends SqlExecutor {
  /** Runs fn in one transaction on one connection: committed if fn resolves, rolled back if it throws. */
  transaction<T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T>;
  close(): Promise<void>;
}
