import type { Kysely } from "kysely";
import { autoIncrementId } from "./dialect.ts";

export async function up(db: Kysely<any>): Promise<void> {
  // Each member's standing as last computed: what other features (voting,
  // crowdfunds) read instead of recomputing it from payments.
  await db.schema.createTable("member_standing")
    .addColumn("union_id", "text", (c) => c.notNull())
    .addColumn("member_id", "text", (c) => c.notNull())
    .addColumn("standing", "text", (c) => c.notNull())
    .addColumn("paid_through", "bigint")
    .addColumn("changed_at", "bigint", (c) => c.notNull())
    .addPrimaryKeyConstraint("member_standing_pk", ["union_id", "member_id"])
    .execute();
  // Every change of standing, once: the durable record of the domain event.
  await autoIncrementId(db, db.schema.createTable("standing_changes"))
    .addColumn("union_id", "text", (c) => c.notNull())
    .addColumn("member_id", "text", (c) => c.notNull())
    .addColumn("from_standing", "text")
    .addColumn("to_standing", "text", (c) => c.notNull())
    .addColumn("reason", "text", (c) => c.notNull())
    .addColumn("at", "bigint", (c) => c.notNull())
    .execute();
  await db.schema.createIndex("standing_changes_member").on("standing_changes").columns(["union_id", "member_id", "id"]).execute();
  // A scheduled job runs in one worker at a time: whoever holds the lease.
  await db.schema.createTable("job_leases")
    .addColumn("name", "text", (c) => c.primaryKey())
    .addColumn("holder", "text", (c) => c.notNull())
    .addColumn("expires_at", "bigint", (c) => c.notNull())
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const t of ["job_leases", "standing_changes", "member_standing"]) await db.schema.dropTable(t).execute();
}
