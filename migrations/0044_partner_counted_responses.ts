import type { Kysely } from "kysely";

// Issue 17, counting back with stock Mastodon: a member of ally B who likes
// or replies to union A's call that B relayed sends it to A (the author), not
// to B. A asks B whether that actor is B's member and, if so, counts it here,
// attributed to B. One row per source activity and kind, like action_responses.

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createTable("partner_counted_responses")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("union_id", "text", (c) => c.notNull())
    .addColumn("action_id", "text", (c) => c.notNull())
    .addColumn("via_actor_id", "text", (c) => c.notNull())
    .addColumn("actor_id", "text", (c) => c.notNull())
    .addColumn("kind", "text", (c) => c.notNull())
    .addColumn("source_id", "text", (c) => c.notNull())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("undone_at", "bigint")
    .execute();
  await db.schema.createIndex("partner_counted_responses_source").on("partner_counted_responses").columns(["union_id", "source_id", "kind"]).unique().execute();
  await db.schema.createIndex("partner_counted_responses_action").on("partner_counted_responses").columns(["union_id", "action_id"]).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("partner_counted_responses").execute();
}
