import type { Kysely } from "kysely";

// Web sign-in without passwords: a one-time code sent to the member's
// fediverse account as a direct message, exchanged for a session. Codes and
// session tokens are stored only as SHA-256 hashes. Rate-limit hits live in
// the database so a limit holds across every web process.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createTable("login_codes")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("code_hash", "text", (c) => c.notNull().unique())
    .addColumn("union_id", "text", (c) => c.notNull().references("unions.id"))
    .addColumn("member_id", "text", (c) => c.notNull())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("expires_at", "bigint", (c) => c.notNull())
    .addColumn("used_at", "bigint")
    .execute();
  await db.schema.createIndex("login_codes_expiry").on("login_codes").column("expires_at").execute();

  await db.schema.createTable("sessions")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("token_hash", "text", (c) => c.notNull().unique())
    .addColumn("union_id", "text", (c) => c.notNull().references("unions.id"))
    .addColumn("member_id", "text", (c) => c.notNull())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("expires_at", "bigint", (c) => c.notNull())
    .addColumn("revoked_at", "bigint")
    .execute();
  await db.schema.createIndex("sessions_member").on("sessions").columns(["union_id", "member_id"]).execute();
  await db.schema.createIndex("sessions_expiry").on("sessions").column("expires_at").execute();

  await db.schema.createTable("rate_limit_hits")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("bucket", "text", (c) => c.notNull())
    .addColumn("at", "bigint", (c) => c.notNull())
    .execute();
  await db.schema.createIndex("rate_limit_hits_bucket").on("rate_limit_hits").columns(["bucket", "at"]).execute();
  await db.schema.createIndex("rate_limit_hits_at").on("rate_limit_hits").column("at").execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const t of ["rate_limit_hits", "sessions", "login_codes"]) await db.schema.dropTable(t).execute();
}
