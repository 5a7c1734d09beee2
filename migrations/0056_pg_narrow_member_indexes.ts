import { type Kysely, sql } from "kysely";
import { isPostgres } from "./dialect.ts";

// Storage at a million members on PostgreSQL (issue 16). Every btree entry
// of members carried the 36-character text union id and/or a member id (37
// bytes each, plus an 8-byte tuple header and a 4-byte line pointer), and
// random inserts leave btree leaves about two thirds full.
//
// - members_handle: a handle is only ever looked up by equality (sign-in,
//   invites, the unions' own lookups; the roster's search is lower(handle)
//   LIKE, which no index on handle serves). A hash index keeps a 4-byte hash
//   per member instead of the handle (about 37 bytes): about 105 -> 30 bytes
//   a member. Null handles (reserved places) are not indexed by hash, and are
//   never looked up by handle. Kept as a btree on SQLite, which has no hash.
// - members_union_sponsor (union_id, sponsor_id, state): a sponsor id is a
//   member id, which names one union already, so a sponsor's recruits are
//   found by (sponsor_id, state) as well. The tree's roots (sponsor_id null)
//   keep the old shape as a partial index that holds only the roots.
//   Not a hash index: a leader can sponsor most of the union, and a hash
//   bucket holding one key a million times is a chain walked on every insert.
//
// members_actor_union stays a btree: visibility.ts finds "any member on this
// server" by a range of actor ids, which a hash index cannot answer.
// test/member-query-plans.test.ts checks the plans on both dialects.
export async function up(db: Kysely<any>): Promise<void> {
  if (!isPostgres(db)) return;
  await db.schema.dropIndex("members_handle").execute();
  await sql`create index members_handle on members using hash (handle)`.execute(db);
  await db.schema.createIndex("members_sponsor_state").on("members").columns(["sponsor_id", "state"]).execute();
  await sql`create index members_union_roots on members (union_id, sponsor_id, state) where sponsor_id is null`.execute(db);
  await db.schema.dropIndex("members_union_sponsor").execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  if (!isPostgres(db)) return;
  await db.schema.createIndex("members_union_sponsor").on("members").columns(["union_id", "sponsor_id", "state"]).execute();
  await db.schema.dropIndex("members_union_roots").execute();
  await db.schema.dropIndex("members_sponsor_state").execute();
  await db.schema.dropIndex("members_handle").execute();
  await db.schema.createIndex("members_handle").on("members").column("handle").execute();
}
