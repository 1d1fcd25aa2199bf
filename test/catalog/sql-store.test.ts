import { SqlCatalogStore } from "../../src/catalog/sql-store.js";
import { migrate } from "../../src/ledger/migrate.js";
import { createPgClient } from "../../src/ledger/pg-client.js";
import { openPgliteClient } from "../../src/ledger/pglite-client.js";
import type { SqlClient } from "../../src/ledger/sql.js";
import { createTestDatabase, postgresSkipReason } from "../support/pg.js";
import { catalogStoreContract, type StoreFixture } from "./store-contract.js";

async function fixture(sql: SqlClient, dispose: () => Promise<void>): Promise<StoreFixture> {
  await migrate(sql);
  return {
    store: new SqlCatalogStore(sql),
    async reset() {
      await sql.query("DELETE FROM meterd_catalog");
    },
    reopen: () => new SqlCatalogStore(sql),
    close: dispose,
  };
}

catalogStoreContract("SQL on PGlite in memory", async () => {
  const sql = await openPgliteClient(null);
  return fixture(sql, () => sql.close());
});

catalogStoreContract(
  "SQL on Postgres (pg)",
  async () => {
    const db = await createTestDatabase();
    const sql = createPgClient(db.url);
    return fixture(sql, async () => {
      await sql.close();
      await db.drop();
    });
  },
  await postgresSkipReason(),
);
