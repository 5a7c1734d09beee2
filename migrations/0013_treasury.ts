import type { Kysely } from "kysely";
import { autoIncrementId } from "./dialect.ts";

// Amounts (lamports, token base units) are u64: they are stored as decimal
// text, the one column type that keeps all 64 bits on both dialects and never
// meets the PostgreSQL INT8 parser, which turns BIGINTs into JS numbers.

export async function up(db: Kysely<any>): Promise<void> {
  // The embedded ledger's state: litesvm keeps it in memory only.
  await db.schema.createTable("ledger_accounts")
    .addColumn("address", "text", (c) => c.primaryKey())
    .addColumn("lamports", "text", (c) => c.notNull())
    .addColumn("owner", "text", (c) => c.notNull())
    .addColumn("executable", "integer", (c) => c.notNull())
    .addColumn("rent_epoch", "text", (c) => c.notNull())
    .addColumn("data", "text", (c) => c.notNull())
    .addColumn("updated_slot", "bigint", (c) => c.notNull())
    .execute();
  // Every executed transaction, by signature, with its signed bytes: the
  // index that refuses a replay after a restart, and what getTransaction and
  // payment detection decode (litesvm returns logs only).
  await autoIncrementId(db, db.schema.createTable("ledger_transactions"))
    .addColumn("signature", "text", (c) => c.notNull().unique())
    .addColumn("slot", "bigint", (c) => c.notNull())
    .addColumn("block_time", "bigint", (c) => c.notNull())
    .addColumn("raw", "text", (c) => c.notNull())
    .addColumn("err", "text")
    .addColumn("logs", "text", (c) => c.notNull())
    .addColumn("fee", "text", (c) => c.notNull())
    .addColumn("units", "text", (c) => c.notNull())
    .addColumn("pre_balances", "text", (c) => c.notNull())
    .addColumn("post_balances", "text", (c) => c.notNull())
    .addColumn("pre_token_balances", "text", (c) => c.notNull())
    .addColumn("post_token_balances", "text", (c) => c.notNull())
    .execute();
  // litesvm has no address index: getSignaturesForAddress reads this one.
  await db.schema.createTable("ledger_address_signatures")
    .addColumn("address", "text", (c) => c.notNull())
    .addColumn("tx_id", "bigint", (c) => c.notNull())
    .addPrimaryKeyConstraint("ledger_address_signatures_pk", ["address", "tx_id"])
    .execute();
  await db.schema.createTable("ledger_blockhashes")
    .addColumn("blockhash", "text", (c) => c.primaryKey())
    .addColumn("slot", "bigint", (c) => c.notNull())
    .addColumn("n", "bigint", (c) => c.notNull())
    .execute();
  await db.schema.createTable("ledger_state")
    .addColumn("key", "text", (c) => c.primaryKey())
    .addColumn("value", "text", (c) => c.notNull())
    .execute();

  // Dues payments seen on-chain, once per transaction signature. Unmatched
  // ones keep their reason and are never credited.
  await db.schema.createTable("dues_payments")
    .addColumn("signature", "text", (c) => c.primaryKey())
    .addColumn("union_id", "text", (c) => c.notNull())
    .addColumn("member_id", "text")
    .addColumn("payer", "text", (c) => c.notNull())
    .addColumn("mint", "text", (c) => c.notNull())
    .addColumn("amount", "text", (c) => c.notNull())
    .addColumn("reference", "text")
    .addColumn("status", "text", (c) => c.notNull())
    .addColumn("reason", "text")
    .addColumn("paid_at", "bigint", (c) => c.notNull())
    .addColumn("recorded_at", "bigint", (c) => c.notNull())
    .execute();
  await db.schema.createIndex("dues_payments_member").on("dues_payments").columns(["union_id", "member_id", "paid_at"]).execute();

  // Where a union's treasury lives on-chain; the keys themselves are in
  // treasury_keys, encrypted.
  await db.schema.createTable("treasuries")
    .addColumn("union_id", "text", (c) => c.primaryKey())
    .addColumn("mint", "text", (c) => c.notNull())
    .addColumn("token_program", "text", (c) => c.notNull())
    .addColumn("decimals", "integer", (c) => c.notNull())
    .addColumn("authority", "text", (c) => c.notNull())
    .addColumn("token_account", "text", (c) => c.notNull())
    .addColumn("threshold", "integer", (c) => c.notNull())
    .addColumn("signers", "text", (c) => c.notNull())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .execute();
  await db.schema.createTable("scan_cursors")
    .addColumn("name", "text", (c) => c.primaryKey())
    .addColumn("signature", "text", (c) => c.notNull())
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const t of ["scan_cursors", "treasuries", "dues_payments", "ledger_state", "ledger_blockhashes", "ledger_address_signatures", "ledger_transactions", "ledger_accounts"]) {
    await db.schema.dropTable(t).execute();
  }
}
