import type { Kysely } from "kysely";

// A member was indexed by actor twice: (union_id, actor_id), unique, for
// "is this account a member of this union", and (actor_id) for "which unions
// is this account in" (a Delete, a Move). One unique index on (actor_id,
// union_id) answers both, since neither lookup ranges over actor_id. At a
// million members the second index cost about 60 bytes each on SQLite and
// 130 on PostgreSQL (npm run bench -- --only storage).
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createIndex("members_actor_union").on("members").columns(["actor_id", "union_id"]).unique().execute();
  await db.schema.dropIndex("members_union_actor").execute();
  await db.schema.dropIndex("members_actor").execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.createIndex("members_union_actor").on("members").columns(["union_id", "actor_id"]).unique().execute();
  await db.schema.createIndex("members_actor").on("members").column("actor_id").execute();
  await db.schema.dropIndex("members_actor_union").execute();
}
