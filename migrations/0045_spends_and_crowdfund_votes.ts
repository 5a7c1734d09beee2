import type { Kysely } from "kysely";

// A passed spend proposal, carried out by the treasury: one row per proposal
// (queued in the transaction that closed it), then either linked to the one
// treasury transfer that pays it (unique: a retried job never pays twice) or
// refused with its reason (recipient not an address, another mint, too little
// in the treasury).

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createTable("treasury_spends")
    .addColumn("proposal_id", "text", (c) => c.primaryKey())
    .addColumn("union_id", "text", (c) => c.notNull())
    .addColumn("number", "integer", (c) => c.notNull())
    // queued, transfer (see transfer_id), refused (see reason).
    .addColumn("state", "text", (c) => c.notNull())
    .addColumn("transfer_id", "integer")
    .addColumn("reason", "text")
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("updated_at", "bigint", (c) => c.notNull())
    .execute();
  await db.schema.createIndex("treasury_spends_transfer").on("treasury_spends").columns(["transfer_id"]).unique().execute();
  await db.schema.createIndex("treasury_spends_union").on("treasury_spends").columns(["union_id", "number"]).execute();

  // Under the crowdfundApproval bylaw `member_vote`, the passed resolution that
  // approved a crowdfund: unique, so one vote approves one crowdfund.
  await db.schema.alterTable("crowdfunds").addColumn("approved_by_proposal", "text").execute();
  await db.schema.createIndex("crowdfunds_approved_by_proposal").on("crowdfunds").columns(["approved_by_proposal"]).unique().execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex("crowdfunds_approved_by_proposal").execute();
  await db.schema.alterTable("crowdfunds").dropColumn("approved_by_proposal").execute();
  await db.schema.dropTable("treasury_spends").execute();
}
