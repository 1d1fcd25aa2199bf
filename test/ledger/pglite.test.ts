import { migrate } from "../../src/ledger/migrate.js";
import { openPgliteClient } from "../../src/ledger/pglite-client.js";
import { ledgerContract } from "./ledger-contract.js";

ledgerContract("PGlite in memory", async () => {
  const sql = await openPgliteClient(null);
  await migrate(sql);
  return { sql, close: () => sql.close() };
});
