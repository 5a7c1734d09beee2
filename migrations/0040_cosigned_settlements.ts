import type { Kysely } from "kysely";

// A crowdfund's settlement under a treasury that needs officers' signatures:
// each of its transactions is a co-signed treasury transaction (durable
// nonce, treasury_transfers row) instead of bytes the server signs alone.

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("crowdfund_transactions").addColumn("transfer_id", "integer").execute();
  await db.schema.createIndex("crowdfund_transactions_transfer").on("crowdfund_transactions").columns(["transfer_id"]).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex("crowdfund_transactions_transfer").execute();
  await db.schema.alterTable("crowdfund_transactions").dropColumn("transfer_id").execute();
}
