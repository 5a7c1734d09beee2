import type { Kysely } from "kysely";
import { autoIncrementId } from "./dialect.ts";

export async function up(db: Kysely<any>): Promise<void> {
  // The creation of a union's treasury (dues mint, multisig, token account),
  // signed and kept before it is submitted, so a crash resubmits the same
  // bytes instead of creating a second treasury.
  await db.schema.createTable("treasury_setups")
    .addColumn("union_id", "text", (c) => c.primaryKey())
    .addColumn("raw", "text", (c) => c.notNull())
    .addColumn("last_valid_block_height", "bigint", (c) => c.notNull())
    .addColumn("treasury", "text", (c) => c.notNull())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .execute();
  // Transfers out of a multisig treasury waiting for officers' signatures.
  // `message` is the transaction's message (base64), fixed at preparation by a
  // durable nonce so co-signers may take hours; `signatures` maps signer
  // address to base58 signature. Amounts are u64 as decimal text.
  await autoIncrementId(db, db.schema.createTable("treasury_transfers"))
    .addColumn("union_id", "text", (c) => c.notNull())
    .addColumn("destination", "text", (c) => c.notNull())
    .addColumn("amount", "text", (c) => c.notNull())
    .addColumn("memo", "text")
    .addColumn("nonce_account", "text", (c) => c.notNull())
    .addColumn("message", "text", (c) => c.notNull())
    .addColumn("required", "text", (c) => c.notNull())
    .addColumn("signatures", "text", (c) => c.notNull())
    .addColumn("state", "text", (c) => c.notNull())
    .addColumn("signature", "text")
    .addColumn("reason", "text")
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("updated_at", "bigint", (c) => c.notNull())
    .execute();
  // Wallet ownership challenges: each nonce is answered once.
  await db.schema.createTable("wallet_challenges")
    .addColumn("nonce", "text", (c) => c.primaryKey())
    .addColumn("union_id", "text", (c) => c.notNull())
    .addColumn("member_id", "text", (c) => c.notNull())
    .addColumn("message", "text", (c) => c.notNull())
    .addColumn("expires_at", "bigint", (c) => c.notNull())
    .addColumn("used_at", "bigint")
    .execute();
  // The signed challenge that proves a linked wallet is the member's (null
  // for a link the operator made without proof).
  await db.schema.alterTable("member_wallets").addColumn("proof_message", "text").execute();
  await db.schema.alterTable("member_wallets").addColumn("proof_signature", "text").execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("member_wallets").dropColumn("proof_signature").execute();
  await db.schema.alterTable("member_wallets").dropColumn("proof_message").execute();
  for (const t of ["wallet_challenges", "treasury_transfers", "treasury_setups"]) await db.schema.dropTable(t).execute();
}
