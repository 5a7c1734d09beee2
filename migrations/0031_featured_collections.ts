import type { Kysely } from "kysely";

// FEP-7aa9 featured collections (Mastodon 4.6 "Collections"): the allies and
// the cabinet a union publishes, each item backed by the featured actor's
// consent stamp, and the stamps this union issues when others feature it.

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createTable("featured_items")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("union_id", "text", (c) => c.notNull().references("unions.id"))
    .addColumn("collection", "text", (c) => c.notNull())
    .addColumn("actor_id", "text", (c) => c.notNull())
    .addColumn("state", "text", (c) => c.notNull())
    .addColumn("stamp", "text")
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("updated_at", "bigint", (c) => c.notNull())
    .execute();
  await db.schema.createIndex("featured_items_actor").on("featured_items").columns(["union_id", "collection", "actor_id", "state"]).execute();
  await db.schema.createIndex("featured_items_stamp").on("featured_items").columns(["stamp"]).execute();

  await db.schema.createTable("feature_stamps")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("union_id", "text", (c) => c.notNull().references("unions.id"))
    .addColumn("request_id", "text", (c) => c.notNull())
    .addColumn("requester", "text", (c) => c.notNull())
    .addColumn("collection", "text", (c) => c.notNull())
    .addColumn("state", "text", (c) => c.notNull())
    .addColumn("decided_by", "text")
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("updated_at", "bigint", (c) => c.notNull())
    .execute();
  // A FeatureRequest names one stamp: a repeated delivery finds the row it made.
  await db.schema.createIndex("feature_stamps_request").on("feature_stamps").columns(["union_id", "request_id"]).unique().execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("feature_stamps").execute();
  await db.schema.dropTable("featured_items").execute();
}
