import type { Kysely } from "kysely";
import { isPostgres } from "./dialect.ts";

// Every members index led with the 36-character union id, about 37 bytes of
// every entry on SQLite and more on PostgreSQL (issue 16: a million members).
// A handle is one account's, in as many unions as it joined, so (handle)
// alone finds a member by handle as well as (union_id, handle) did.
// The sponsor index keeps its union id (the tree's roots have no sponsor to
// narrow by) but ends in created_at instead of state: the roots are read
// oldest first, and with (union_id, sponsor_id, state) SQLite, which has no
// statistics here, walked the whole union in join order to find them. A
// sponsor's recruits are few, so state is checked on the rows. PostgreSQL,
// which has statistics, keeps (union_id, sponsor_id, state): there a
// sponsor's recruits share one deduplicated entry, about 55 bytes a member
// less than with created_at.
// Listings in join order page by (created_at, id): (union_id, created_at)
// gives that order but for members who joined in the same millisecond, which
// SQLite and PostgreSQL sort as they go (a temp b-tree for the right part of
// the order, an incremental sort); the id, a third of each entry, goes. It is
// created before members_handle on purpose: without statistics SQLite weighs
// (union_id=?) and (handle=?) alike and was seen to take the index created
// last, which must be the handle's for a lookup by handle.
// test/member-query-plans.test.ts checks these plans on both dialects.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createIndex("members_union_joined").on("members").columns(["union_id", "created_at"]).execute();
  await db.schema.dropIndex("members_union_created").execute();
  await db.schema.createIndex("members_handle").on("members").column("handle").execute();
  await db.schema.dropIndex("members_union_handle").execute();
  if (!isPostgres(db)) {
    await db.schema.createIndex("members_union_sponsor_created").on("members").columns(["union_id", "sponsor_id", "created_at"]).execute();
    await db.schema.dropIndex("members_union_sponsor").execute();
  }
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.createIndex("members_union_created").on("members").columns(["union_id", "created_at", "id"]).execute();
  await db.schema.dropIndex("members_union_joined").execute();
  await db.schema.createIndex("members_union_handle").on("members").columns(["union_id", "handle"]).execute();
  await db.schema.dropIndex("members_handle").execute();
  if (!isPostgres(db)) {
    await db.schema.createIndex("members_union_sponsor").on("members").columns(["union_id", "sponsor_id", "state"]).execute();
    await db.schema.dropIndex("members_union_sponsor_created").execute();
  }
}
