import type { Kysely } from "kysely";
import { autoIncrementId } from "./dialect.ts";

export async function up(db: Kysely<any>): Promise<void> {
  const unionColumns: [string, string, unknown][] = [
    ["actions_visibility", "text", "members"],
    ["publish_time", "text", "09:00"],
    ["time_zone", "text", "UTC"],
    ["commitment_words", "text", "in,done,committed"],
    ["relay_policy", "text", "off"],
  ];
  for (const [name, type, dflt] of unionColumns) {
    await db.schema.alterTable("unions").addColumn(name, type as "text", (c) => c.notNull().defaultTo(dflt)).execute();
  }
  await db.schema.alterTable("unions").addColumn("last_published_on", "text").execute();

  await db.schema.createTable("actions")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("union_id", "text", (c) => c.notNull().references("unions.id"))
    .addColumn("seq", "integer")
    .addColumn("title", "text", (c) => c.notNull())
    .addColumn("body_md", "text", (c) => c.notNull())
    .addColumn("body_html", "text", (c) => c.notNull())
    .addColumn("kind", "text", (c) => c.notNull())
    .addColumn("link", "text")
    .addColumn("goal", "integer")
    .addColumn("deadline", "bigint")
    .addColumn("state", "text", (c) => c.notNull())
    .addColumn("created_by", "text")
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("published_at", "bigint")
    .addColumn("updated_at", "bigint")
    .addColumn("retracted_at", "bigint")
    .addColumn("goal_reached_at", "bigint")
    .addColumn("closed_at", "bigint")
    .execute();
  await db.schema.createIndex("actions_union_state").on("actions").columns(["union_id", "state", "created_at"]).execute();
  await db.schema.createIndex("actions_union_seq").on("actions").columns(["union_id", "seq"]).unique().execute();

  // The tamper-evident feed: every publication, edit and retraction appends
  // an entry whose hash covers its content and the previous entry's hash.
  await db.schema.createTable("action_log")
    .addColumn("union_id", "text", (c) => c.notNull())
    .addColumn("n", "integer", (c) => c.notNull())
    .addColumn("action_id", "text", (c) => c.notNull())
    .addColumn("event", "text", (c) => c.notNull())
    .addColumn("payload", "text", (c) => c.notNull())
    .addColumn("prev_hash", "text", (c) => c.notNull())
    .addColumn("hash", "text", (c) => c.notNull())
    .addColumn("at", "bigint", (c) => c.notNull())
    .addPrimaryKeyConstraint("action_log_pk", ["union_id", "n"])
    .execute();
  await db.schema.createIndex("action_log_action").on("action_log").columns(["action_id", "n"]).execute();

  await db.schema.createTable("action_responses")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("action_id", "text", (c) => c.notNull())
    .addColumn("union_id", "text", (c) => c.notNull())
    .addColumn("member_id", "text", (c) => c.notNull())
    .addColumn("kind", "text", (c) => c.notNull())
    .addColumn("source", "text", (c) => c.notNull())
    .addColumn("source_id", "text", (c) => c.notNull())
    .addColumn("content", "text")
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("undone_at", "bigint")
    .execute();
  // One response per source activity (a Like, a reply, a boost, a web click):
  // the network repeating an activity cannot count it twice.
  await db.schema.createIndex("action_responses_source").on("action_responses").columns(["source_id", "kind"]).unique().execute();
  await db.schema.createIndex("action_responses_action").on("action_responses").columns(["action_id", "kind"]).execute();
  await db.schema.createIndex("action_responses_member").on("action_responses").columns(["union_id", "member_id"]).execute();

  // Member posts waiting for an officer before the union relays them.
  await autoIncrementId(db, db.schema.createTable("relay_requests"))
    .addColumn("union_id", "text", (c) => c.notNull())
    .addColumn("note_id", "text", (c) => c.notNull())
    .addColumn("create_id", "text")
    .addColumn("author_id", "text", (c) => c.notNull())
    .addColumn("state", "text", (c) => c.notNull())
    .addColumn("excerpt", "text")
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("decided_at", "bigint")
    .execute();
  await db.schema.createIndex("relay_requests_note").on("relay_requests").columns(["union_id", "note_id"]).unique().execute();

  // Fedify re-running a fan-out after a crash re-enqueues deliveries it had
  // already queued or made; a per-delivery key lets the queue drop those.
  await db.schema.alterTable("fedify_mq").addColumn("dedupe_key", "text").execute();
  await db.schema.createIndex("fedify_mq_dedupe").on("fedify_mq").column("dedupe_key").unique().execute();
  await db.schema.createTable("fedify_mq_done")
    .addColumn("dedupe_key", "text", (c) => c.primaryKey())
    .addColumn("done_at", "bigint", (c) => c.notNull())
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("fedify_mq_done").execute();
  await db.schema.dropIndex("fedify_mq_dedupe").execute();
  await db.schema.alterTable("fedify_mq").dropColumn("dedupe_key").execute();
  for (const t of ["relay_requests", "action_responses", "action_log", "actions"]) await db.schema.dropTable(t).execute();
  for (const c of ["last_published_on", "relay_policy", "commitment_words", "time_zone", "publish_time", "actions_visibility"]) {
    await db.schema.alterTable("unions").dropColumn(c).execute();
  }
}
