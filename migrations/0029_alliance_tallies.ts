import type { Kysely } from "kysely";

// Issue 17, second part: what allies and chapters report to each other, the
// server block list, and which passed proposal ratified a relationship.

export async function up(db: Kysely<any>): Promise<void> {
  // At the relaying union: its own members' responses to a call it relayed
  // from an ally or parent (the call is not ours, so action_responses cannot
  // hold them). One row per source activity and kind, like action_responses.
  await db.schema.createTable("relayed_responses")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("union_id", "text", (c) => c.notNull())
    .addColumn("note_id", "text", (c) => c.notNull())
    .addColumn("member_id", "text", (c) => c.notNull())
    .addColumn("kind", "text", (c) => c.notNull())
    .addColumn("source_id", "text", (c) => c.notNull())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("undone_at", "bigint")
    .execute();
  await db.schema.createIndex("relayed_responses_source").on("relayed_responses").columns(["union_id", "source_id", "kind"]).unique().execute();
  await db.schema.createIndex("relayed_responses_note").on("relayed_responses").columns(["union_id", "note_id"]).execute();

  // At the originating union: the latest totals each relaying union reported
  // for one of our calls. Totals replace totals (never increments), and an
  // older report never overwrites a newer one.
  await db.schema.createTable("relay_tallies")
    .addColumn("union_id", "text", (c) => c.notNull())
    .addColumn("action_id", "text", (c) => c.notNull())
    .addColumn("reporter_actor_id", "text", (c) => c.notNull())
    .addColumn("reporter_name", "text")
    .addColumn("commitments", "integer", (c) => c.notNull())
    .addColumn("replies", "integer", (c) => c.notNull())
    .addColumn("likes", "integer", (c) => c.notNull())
    .addColumn("reported_at", "bigint", (c) => c.notNull())
    .addColumn("received_at", "bigint", (c) => c.notNull())
    .addPrimaryKeyConstraint("relay_tallies_pk", ["union_id", "action_id", "reporter_actor_id"])
    .execute();

  // At a parent: each chapter's latest report of itself and its own subtree
  // (JSON), replaced whole by a newer one.
  await db.schema.createTable("chapter_reports")
    .addColumn("union_id", "text", (c) => c.notNull())
    .addColumn("chapter_actor_id", "text", (c) => c.notNull())
    .addColumn("report", "text", (c) => c.notNull())
    .addColumn("reported_at", "bigint", (c) => c.notNull())
    .addColumn("received_at", "bigint", (c) => c.notNull())
    .addPrimaryKeyConstraint("chapter_reports_pk", ["union_id", "chapter_actor_id"])
    .execute();

  // Servers whose unions may not ally or be chapters, and whose activities are dropped at the inbox.
  await db.schema.createTable("blocked_servers")
    .addColumn("host", "text", (c) => c.primaryKey())
    .addColumn("reason", "text")
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .execute();

  // A passed proposal ratifies one relationship step only.
  await db.schema.alterTable("relationship_events").addColumn("proposal_id", "text").execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("relationship_events").dropColumn("proposal_id").execute();
  await db.schema.dropTable("blocked_servers").execute();
  await db.schema.dropTable("chapter_reports").execute();
  await db.schema.dropTable("relay_tallies").execute();
  await db.schema.dropTable("relayed_responses").execute();
}
