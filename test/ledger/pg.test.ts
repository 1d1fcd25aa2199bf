import { migrate } from "../../src/ledger/migrate.js";
import { createPgClient } from "../../src/ledger/pg-client.js";
import { createTestDatabase, postgresSkipReason } from "../support/pg.js";
import { ledgerContract } from "./ledger-contract.js";

ledgerContract(
  "Postgres (pg)",
  async () => {
    const db = await createTestDatabase();
    const sql = createPgClient(db.url);
    await migrate(sql);
    return {
      sql,
      async close() {
        await sql.close();
        await db.drop();
      },
    };
  },
  await postgresSkipReason(),
);
