import type { Kysely } from "kysely";

// Storage at a million members (issue 16): the cached copy of a remote actor
// kept its bio, profile URL, avatar URL and preferredUsername, which nothing
// in Muster reads (it reads the handle, the name of a partner union, the
// inbox and the shared inbox). They were about 350 bytes of every member's
// row. The handle index served only a lookup no code path uses.
// A person's display name is not shown anywhere either (only a partner
// union's, a Group); it is cleared, and no longer written.
// `members_union_state` is a prefix of 0034's (union_id, state, id), which
// answers every query it answered.
// Down brings the columns and indexes back, empty: the dropped text is gone
// (the next fetch of each actor refills nothing, since nothing writes them).
const DROPPED = ["summary", "url", "avatar_url", "preferred_username"] as const;

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex("members_union_state").execute();
  await db.schema.dropIndex("remote_actors_handle").execute();
  for (const column of DROPPED) await db.schema.alterTable("remote_actors").dropColumn(column).execute();
  await db.updateTable("remote_actors").set({ name: null }).where("type", "=", "Person").where("name", "is not", null).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const column of DROPPED) await db.schema.alterTable("remote_actors").addColumn(column, "text").execute();
  await db.schema.createIndex("remote_actors_handle").on("remote_actors").column("handle").execute();
  await db.schema.createIndex("members_union_state").on("members").columns(["union_id", "state"]).execute();
}
