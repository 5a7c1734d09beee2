import { type Kysely, sql } from "kysely";

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("unions").addColumn("join_policy", "text", (c) => c.notNull().defaultTo("approval")).execute();
  await db.schema.alterTable("unions").addColumn("member_invite_limit", "integer", (c) => c.notNull().defaultTo(5)).execute();
  await db.schema.alterTable("unions").addColumn("members_visibility", "text", (c) => c.notNull().defaultTo("members")).execute();
  await db.schema.alterTable("unions").addColumn("welcome_text", "text").execute();
  await db.updateTable("unions").set({ join_policy: "open" }).where("manually_approves_followers", "=", 0).execute();

  // The member tree is an adjacency list (sponsor_id) with a maintained count
  // of active descendants: a join or a leave touches the member, its recruits
  // and its ancestor chain, never the whole subtree, so both stay cheap at a
  // million members; chains are walked with a recursive query over the
  // primary key.
  await db.schema.createTable("members")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("union_id", "text", (c) => c.notNull().references("unions.id"))
    .addColumn("actor_id", "text")
    .addColumn("handle", "text")
    .addColumn("state", "text", (c) => c.notNull())
    .addColumn("role", "text", (c) => c.notNull().defaultTo("member"))
    .addColumn("portfolio", "text")
    .addColumn("sponsor_id", "text")
    .addColumn("subtree_size", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("follow_id", "text")
    .addColumn("invite_id", "text")
    .addColumn("joined_at", "bigint")
    .addColumn("left_at", "bigint")
    .addColumn("left_reason", "text")
    .addColumn("removed_by", "text")
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .execute();
  await db.schema.createIndex("members_union_actor").on("members").columns(["union_id", "actor_id"]).unique().execute();
  await db.schema.createIndex("members_union_sponsor").on("members").columns(["union_id", "sponsor_id", "state"]).execute();
  await db.schema.createIndex("members_union_state").on("members").columns(["union_id", "state"]).execute();
  await db.schema.createIndex("members_actor").on("members").column("actor_id").execute();
  await db.schema.createIndex("members_union_handle").on("members").columns(["union_id", "handle"]).execute();

  await db.schema.createTable("member_moves")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("union_id", "text", (c) => c.notNull())
    .addColumn("member_id", "text", (c) => c.notNull())
    .addColumn("from_sponsor_id", "text")
    .addColumn("to_sponsor_id", "text")
    .addColumn("reason", "text", (c) => c.notNull())
    .addColumn("at", "bigint", (c) => c.notNull())
    .execute();
  await db.schema.createIndex("member_moves_member").on("member_moves").columns(["union_id", "member_id"]).execute();

  await db.schema.createTable("invites")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("union_id", "text", (c) => c.notNull().references("unions.id"))
    .addColumn("code", "text", (c) => c.notNull().unique())
    .addColumn("created_by", "text")
    .addColumn("max_uses", "integer")
    .addColumn("uses", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("expires_at", "bigint")
    .addColumn("revoked_at", "bigint")
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .execute();
  await db.schema.createIndex("invites_creator").on("invites").columns(["union_id", "created_by"]).execute();

  // A newcomer who opened an invite link and named their handle: when a
  // Follow from that account arrives, it is matched to the invite.
  await db.schema.createTable("join_claims")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("union_id", "text", (c) => c.notNull())
    .addColumn("invite_id", "text", (c) => c.notNull())
    .addColumn("handle", "text", (c) => c.notNull())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("expires_at", "bigint", (c) => c.notNull())
    .addColumn("used_at", "bigint")
    .execute();
  await db.schema.createIndex("join_claims_handle").on("join_claims").columns(["union_id", "handle"]).execute();

  // Unions created before this migration get their leader's place in the tree.
  await sql`insert into members (id, union_id, handle, state, role, subtree_size, created_at)
    select 'leader-' || id, id, leader_handle, 'reserved', 'leader', 0, created_at from unions where leader_handle is not null`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const t of ["join_claims", "invites", "member_moves", "members"]) await db.schema.dropTable(t).execute();
  for (const c of ["welcome_text", "members_visibility", "member_invite_limit", "join_policy"]) {
    await db.schema.alterTable("unions").dropColumn(c).execute();
  }
}
