import type { Kysely } from "kysely";

// A fan-out reads the roster a page at a time in member-id order
// (src/members/roster.ts deliveryRecipients). With only (union_id, state)
// each page fetched every active member, joined its cached actor and sorted
// them all to keep 500: at 10^5 members 50 ms of CPU a page and 1.6 s under
// load, so a 10^5 fan-out spent minutes paging and 10^6 would be quadratic.
// With the id in the index a page is a range scan that stops at the limit.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createIndex("members_union_state_id").on("members").columns(["union_id", "state", "id"]).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex("members_union_state_id").execute();
}
