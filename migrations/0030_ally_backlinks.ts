import type { Kysely } from "kysely";

// Cross-union backlinks (issue 17): a member of an allied union sponsors
// someone into this one. The sponsor is outside this union's tree, so the
// edge is kept beside it (the recruit's sponsor_id stays an in-union
// member), and the tree stays acyclic.

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("invites").addColumn("ally_sponsor_actor_id", "text").execute();
  await db.schema.alterTable("invites").addColumn("ally_sponsor_union", "text").execute();
  await db.schema.alterTable("members").addColumn("ally_sponsor_actor_id", "text").execute();
  await db.schema.alterTable("members").addColumn("ally_sponsor_union", "text").execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("members").dropColumn("ally_sponsor_union").execute();
  await db.schema.alterTable("members").dropColumn("ally_sponsor_actor_id").execute();
  await db.schema.alterTable("invites").dropColumn("ally_sponsor_union").execute();
  await db.schema.alterTable("invites").dropColumn("ally_sponsor_actor_id").execute();
}
