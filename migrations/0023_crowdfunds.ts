import type { Kysely } from "kysely";
import { autoIncrementId } from "./dialect.ts";

// Crowdfund vaults (issue 15). Amounts are u64 decimal text, like the ledger's:
// exact on both dialects and never through the PostgreSQL INT8 parser.

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createTable("crowdfunds")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("union_id", "text", (c) => c.notNull())
    // The number members say (#3), per union.
    .addColumn("seq", "integer", (c) => c.notNull())
    .addColumn("title", "text", (c) => c.notNull())
    .addColumn("body_md", "text", (c) => c.notNull())
    .addColumn("body_html", "text", (c) => c.notNull())
    .addColumn("goal", "text", (c) => c.notNull())
    .addColumn("deadline", "bigint", (c) => c.notNull())
    .addColumn("beneficiary", "text", (c) => c.notNull())
    .addColumn("proposer_id", "text")
    .addColumn("state", "text", (c) => c.notNull())
    // Fixed when officers approve: a later bylaw change does not move a running crowdfund's cut.
    .addColumn("cut_bps", "integer")
    .addColumn("mint", "text")
    // The vault token account and the Solana Pay style reference key every pledge carries.
    .addColumn("vault", "text")
    .addColumn("reference", "text")
    // The vault's creation, signed and stored before it is submitted.
    .addColumn("vault_raw", "text")
    .addColumn("vault_last_valid_block_height", "bigint")
    .addColumn("vault_signature", "text")
    .addColumn("action_id", "text")
    .addColumn("decided_by", "text")
    .addColumn("decision_note", "text")
    .addColumn("total", "text")
    .addColumn("cut", "text")
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("decided_at", "bigint")
    .addColumn("settled_at", "bigint")
    .addUniqueConstraint("crowdfunds_union_seq", ["union_id", "seq"])
    .execute();
  await db.schema.createIndex("crowdfunds_due").on("crowdfunds").columns(["state", "deadline"]).execute();

  // Every token transfer seen into a vault or naming a crowdfund's reference,
  // once per transaction signature. Unmatched ones keep the reason; those that
  // landed in a vault are returned to their source at settlement.
  await db.schema.createTable("crowdfund_pledges")
    .addColumn("signature", "text", (c) => c.primaryKey())
    .addColumn("union_id", "text", (c) => c.notNull())
    .addColumn("crowdfund_id", "text", (c) => c.notNull())
    .addColumn("member_id", "text")
    .addColumn("memo", "text")
    .addColumn("wallet", "text", (c) => c.notNull())
    .addColumn("source", "text", (c) => c.notNull())
    .addColumn("destination", "text", (c) => c.notNull())
    .addColumn("mint", "text", (c) => c.notNull())
    .addColumn("amount", "text", (c) => c.notNull())
    .addColumn("status", "text", (c) => c.notNull())
    .addColumn("reason", "text")
    .addColumn("in_vault", "integer", (c) => c.notNull())
    .addColumn("refund_signature", "text")
    .addColumn("pledged_at", "bigint", (c) => c.notNull())
    .addColumn("recorded_at", "bigint", (c) => c.notNull())
    .execute();
  await db.schema.createIndex("crowdfund_pledges_crowdfund").on("crowdfund_pledges").columns(["crowdfund_id", "pledged_at"]).execute();

  // The settlement's transactions (one payout, or refund batches), decided and
  // signed in one database transaction with the crowdfund's state change, the
  // bytes stored before the first submit.
  await autoIncrementId(db, db.schema.createTable("crowdfund_transactions"))
    .addColumn("crowdfund_id", "text", (c) => c.notNull())
    .addColumn("kind", "text", (c) => c.notNull())
    .addColumn("raw", "text", (c) => c.notNull())
    .addColumn("last_valid_block_height", "bigint", (c) => c.notNull())
    .addColumn("signature", "text", (c) => c.notNull().unique())
    .addColumn("state", "text", (c) => c.notNull())
    // JSON array of the pledge signatures a refund batch returns.
    .addColumn("pledges", "text", (c) => c.notNull())
    .addColumn("amount", "text", (c) => c.notNull())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("confirmed_at", "bigint")
    .execute();
  await db.schema.createIndex("crowdfund_transactions_crowdfund").on("crowdfund_transactions").columns(["crowdfund_id", "id"]).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const t of ["crowdfund_transactions", "crowdfund_pledges", "crowdfunds"]) await db.schema.dropTable(t).execute();
}
