import type { Kysely } from "kysely";

export async function up(db: Kysely<any>): Promise<void> {
  // The daily on-chain anchor of a union's call-to-action hash chain. The
  // (union, day) key lets one worker claim the day; `raw` keeps the signed
  // Memo transaction until it is seen, so a crash resubmits the same bytes.
  await db.schema.createTable("chain_anchors")
    .addColumn("union_id", "text", (c) => c.notNull())
    .addColumn("day", "text", (c) => c.notNull())
    .addColumn("n", "bigint", (c) => c.notNull())
    .addColumn("head", "text", (c) => c.notNull())
    .addColumn("memo", "text", (c) => c.notNull())
    .addColumn("signature", "text")
    // Where anyone checks the transaction (an explorer on the ledger's cluster).
    .addColumn("explorer_url", "text")
    .addColumn("raw", "text")
    .addColumn("last_valid_block_height", "bigint")
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("anchored_at", "bigint")
    .addPrimaryKeyConstraint("chain_anchors_pk", ["union_id", "day"])
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("chain_anchors").execute();
}
