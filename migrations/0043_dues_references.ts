import type { Kysely } from "kysely";

// The Solana Pay reference keys the server issues, one per dues transaction
// it builds (issue 15). Kept so the scheduled scan can look each one up on
// the chain: a payment sent to a wrong account or in a wrong mint is found by
// its reference, and recorded unmatched with the reason, never lost.

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createTable("dues_references")
    .addColumn("reference", "text", (c) => c.primaryKey())
    .addColumn("union_id", "text", (c) => c.notNull())
    .addColumn("member_id", "text", (c) => c.notNull())
    .addColumn("payer", "text", (c) => c.notNull())
    // What was asked: u64 decimal text, the mint and the treasury account.
    .addColumn("amount", "text", (c) => c.notNull())
    .addColumn("mint", "text", (c) => c.notNull())
    .addColumn("destination", "text", (c) => c.notNull())
    .addColumn("issued_at", "bigint", (c) => c.notNull())
    // The transaction can land only until its blockhash expires; after that a scan that finds nothing closes it.
    .addColumn("expires_at", "bigint", (c) => c.notNull())
    // issued, then paid (a payment carried it) or expired (none did).
    .addColumn("state", "text", (c) => c.notNull())
    .addColumn("signature", "text")
    .execute();
  await db.schema.createIndex("dues_references_open").on("dues_references").columns(["union_id", "state", "issued_at"]).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("dues_references").execute();
}
