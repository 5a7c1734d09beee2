import type { Kysely } from "kysely";

export async function up(db: Kysely<any>): Promise<void> {
  // The union's treasury key: pays chain fees and holds the badge mint's
  // authorities. As sensitive as actor_keys; never logged or served.
  await db.schema.createTable("treasury_keys")
    .addColumn("union_id", "text", (c) => c.primaryKey())
    .addColumn("public_key", "text", (c) => c.notNull())
    .addColumn("secret_key", "text", (c) => c.notNull())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .execute();
  // A member's own wallet, where their badge goes.
  await db.schema.createTable("member_wallets")
    .addColumn("union_id", "text", (c) => c.notNull())
    .addColumn("member_id", "text", (c) => c.notNull())
    .addColumn("address", "text", (c) => c.notNull())
    .addColumn("linked_at", "bigint", (c) => c.notNull())
    .addPrimaryKeyConstraint("member_wallets_pk", ["union_id", "member_id"])
    .execute();
  // One badge mint per union. `raw` keeps the signed creation until it is
  // seen, so a crash resubmits the same bytes instead of creating twice.
  await db.schema.createTable("badge_mints")
    .addColumn("union_id", "text", (c) => c.primaryKey())
    .addColumn("mint", "text", (c) => c.notNull())
    .addColumn("signature", "text")
    .addColumn("raw", "text")
    .addColumn("last_valid_block_height", "bigint")
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .execute();
  // Each member's badge: the wallet it was minted to and the pending
  // transaction (mint or burn) whose bytes are resubmitted after a crash.
  await db.schema.createTable("badges")
    .addColumn("union_id", "text", (c) => c.notNull())
    .addColumn("member_id", "text", (c) => c.notNull())
    .addColumn("wallet", "text", (c) => c.notNull())
    .addColumn("state", "text", (c) => c.notNull())
    .addColumn("signature", "text")
    .addColumn("raw", "text")
    .addColumn("last_valid_block_height", "bigint")
    .addColumn("updated_at", "bigint", (c) => c.notNull())
    .addPrimaryKeyConstraint("badges_pk", ["union_id", "member_id"])
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const t of ["badges", "badge_mints", "member_wallets", "treasury_keys"]) await db.schema.dropTable(t).execute();
}
