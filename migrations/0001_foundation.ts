import type { Kysely } from "kysely";
import { autoIncrementId } from "./dialect.ts";

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createTable("unions")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("slug", "text", (c) => c.notNull().unique())
    .addColumn("name", "text", (c) => c.notNull())
    .addColumn("purpose", "text", (c) => c.notNull())
    .addColumn("leader_handle", "text")
    .addColumn("icon_url", "text")
    .addColumn("manually_approves_followers", "integer", (c) => c.notNull().defaultTo(1))
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .execute();

  await db.schema.createTable("actor_keys")
    .addColumn("owner", "text", (c) => c.notNull())
    .addColumn("algorithm", "text", (c) => c.notNull())
    .addColumn("private_jwk", "text", (c) => c.notNull())
    .addColumn("public_jwk", "text", (c) => c.notNull())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addPrimaryKeyConstraint("actor_keys_pk", ["owner", "algorithm"])
    .execute();

  await db.schema.createTable("remote_actors")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("type", "text", (c) => c.notNull())
    .addColumn("handle", "text")
    .addColumn("preferred_username", "text")
    .addColumn("name", "text")
    .addColumn("summary", "text")
    .addColumn("url", "text")
    .addColumn("avatar_url", "text")
    .addColumn("inbox", "text")
    .addColumn("shared_inbox", "text")
    .addColumn("fetched_at", "bigint", (c) => c.notNull())
    .execute();
  await db.schema.createIndex("remote_actors_handle").on("remote_actors").column("handle").execute();

  await db.schema.createTable("inbox_activities")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("type", "text", (c) => c.notNull())
    .addColumn("actor", "text", (c) => c.notNull())
    .addColumn("union_id", "text")
    .addColumn("received_at", "bigint", (c) => c.notNull())
    .execute();

  await db.schema.createTable("instance_settings")
    .addColumn("key", "text", (c) => c.primaryKey())
    .addColumn("value", "text", (c) => c.notNull())
    .execute();

  await db.schema.createTable("fedify_kv")
    .addColumn("key", "text", (c) => c.primaryKey())
    .addColumn("value", "text", (c) => c.notNull())
    .addColumn("expires_at", "bigint")
    .execute();

  await autoIncrementId(db, db.schema.createTable("fedify_mq"))
    .addColumn("queue", "text", (c) => c.notNull())
    .addColumn("message", "text", (c) => c.notNull())
    .addColumn("ordering_key", "text")
    .addColumn("available_at", "bigint", (c) => c.notNull())
    .addColumn("lease_owner", "text")
    .addColumn("lease_until", "bigint")
    .addColumn("attempts", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("last_error", "text")
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .execute();
  await db.schema.createIndex("fedify_mq_ready").on("fedify_mq").columns(["queue", "available_at"]).execute();
  await db.schema.createIndex("fedify_mq_ordering").on("fedify_mq").columns(["ordering_key", "id"]).execute();

  await db.schema.createTable("fedify_mq_dead")
    .addColumn("id", "bigint", (c) => c.primaryKey())
    .addColumn("queue", "text", (c) => c.notNull())
    .addColumn("message", "text", (c) => c.notNull())
    .addColumn("ordering_key", "text")
    .addColumn("attempts", "integer", (c) => c.notNull())
    .addColumn("last_error", "text")
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("died_at", "bigint", (c) => c.notNull())
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  for (const t of ["fedify_mq_dead", "fedify_mq", "fedify_kv", "instance_settings", "inbox_activities", "remote_actors", "actor_keys", "unions"]) {
    await db.schema.dropTable(t).execute();
  }
}
