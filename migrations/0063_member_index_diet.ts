import { type Kysely, sql } from "kysely";

// Storage at a million members (issue 16): two members indexes held an entry
// per member that only a few members' lookups ever use.
//
// - members_union_role (union_id, role): every lookup by role asks for the
//   leader or the officers (src/members/roster.ts readModerators, getLeader,
//   visibility, featured collections, leadership changes), never for plain
//   members, yet every member had an entry (about 67 bytes a member on
//   SQLite for a union with a UUID id, 41 for a new one; PostgreSQL's
//   deduplication had already shrunk it to about 7). It becomes a partial
//   index holding the leader and officers only. Every query that reads it
//   says `role <> 'member'` in so many words (SQLite uses a partial index
//   only for a query whose WHERE holds its predicate's term; PostgreSQL
//   would prove it from `role = 'leader'` anyway).
// SQLite's (union_id, sponsor_id, created_at) stays: as (sponsor_id, state),
// as PostgreSQL has since 0056, SQLite without statistics found a sponsor's
// recruits through (union_id, state, id), the whole union.
// test/member-query-plans.test.ts checks the plans on both dialects.
export async function up(db: Kysely<any>): Promise<void> {
  await sql`create index members_union_officers on members (union_id, role) where role <> 'member'`.execute(db);
  await db.schema.dropIndex("members_union_role").execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.createIndex("members_union_role").on("members").columns(["union_id", "role"]).execute();
  await db.schema.dropIndex("members_union_officers").execute();
}
