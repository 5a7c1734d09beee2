import type { Kysely } from "kysely";
import { autoIncrementId } from "./dialect.ts";

// Moving a union's treasury to a new SPL multisig when its signers or
// threshold change: the new multisig and token account (created from stored
// signed bytes, like treasury_setups), then the whole balance moved by a
// transaction the old multisig's threshold co-signs (treasury_transfers).
// Kept after it executes: the transparency page lists every move.

export async function up(db: Kysely<any>): Promise<void> {
  await autoIncrementId(db, db.schema.createTable("treasury_moves"))
    .addColumn("union_id", "text", (c) => c.notNull())
    .addColumn("from_authority", "text", (c) => c.notNull())
    .addColumn("from_token_account", "text", (c) => c.notNull())
    .addColumn("from_threshold", "integer", (c) => c.notNull())
    .addColumn("from_signers", "text", (c) => c.notNull())
    .addColumn("to_authority", "text", (c) => c.notNull())
    .addColumn("to_token_account", "text", (c) => c.notNull())
    .addColumn("to_threshold", "integer", (c) => c.notNull())
    .addColumn("to_signers", "text", (c) => c.notNull())
    // The signed creation of the new multisig and its token account (base64), sent again after a crash.
    .addColumn("setup_raw", "text", (c) => c.notNull())
    .addColumn("setup_last_valid_block_height", "bigint", (c) => c.notNull())
    .addColumn("transfer_id", "integer")
    // u64 base units as decimal text.
    .addColumn("amount", "text")
    // setup (new multisig being created), signing (the move awaits signatures), executed, failed.
    .addColumn("state", "text", (c) => c.notNull())
    .addColumn("signature", "text")
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("updated_at", "bigint", (c) => c.notNull())
    .execute();
  await db.schema.createIndex("treasury_moves_union").on("treasury_moves").columns(["union_id", "id"]).execute();
  await db.schema.createIndex("treasury_moves_transfer").on("treasury_moves").columns(["transfer_id"]).execute();

  // Role badges (leader, officer): one soulbound Token-2022 mint per union and
  // role, like the member badge's badge_mints; the creation is kept signed
  // until it lands.
  await db.schema.createTable("role_badge_mints")
    .addColumn("union_id", "text", (c) => c.notNull())
    .addColumn("role", "text", (c) => c.notNull())
    .addColumn("mint", "text", (c) => c.notNull())
    .addColumn("signature", "text")
    .addColumn("raw", "text")
    .addColumn("last_valid_block_height", "bigint")
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addPrimaryKeyConstraint("role_badge_mints_pk", ["union_id", "role"])
    .execute();
  // Who holds (or held) a role badge, like badges: state minted, burned, or
  // pending_mint / pending_burn with the signed bytes kept until they land.
  await db.schema.createTable("role_badges")
    .addColumn("union_id", "text", (c) => c.notNull())
    .addColumn("member_id", "text", (c) => c.notNull())
    .addColumn("role", "text", (c) => c.notNull())
    .addColumn("wallet", "text", (c) => c.notNull())
    .addColumn("state", "text", (c) => c.notNull())
    .addColumn("signature", "text")
    .addColumn("raw", "text")
    .addColumn("last_valid_block_height", "bigint")
    .addColumn("updated_at", "bigint", (c) => c.notNull())
    .addPrimaryKeyConstraint("role_badges_pk", ["union_id", "member_id", "role"])
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const t of ["role_badges", "role_badge_mints", "treasury_moves"]) await db.schema.dropTable(t).execute();
}
