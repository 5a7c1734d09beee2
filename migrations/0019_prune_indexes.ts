import type { Kysely } from "kysely";

// Storage is pruned on a schedule (federation/pruning.ts): each delete is a
// range on one of these columns, so it costs the rows it removes, not a scan
// of a table that grows by a row per reply, like or join.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createIndex("inbox_activities_received").on("inbox_activities").column("received_at").execute();
  await db.schema.createIndex("inbox_claims_until").on("inbox_claims").column("claimed_until").execute();
  await db.schema.createIndex("join_claims_expiry").on("join_claims").column("expires_at").execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex("join_claims_expiry").execute();
  await db.schema.dropIndex("inbox_claims_until").execute();
  await db.schema.dropIndex("inbox_activities_received").execute();
}
