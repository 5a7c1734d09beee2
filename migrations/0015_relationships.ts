import type { Kysely } from "kysely";
import { autoIncrementId } from "./dialect.ts";

// Union-to-union relationships (DESIGN.md: other unions are never members).
// One row per relationship as this union sees it, and an append-only history.

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createTable("union_relationships")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("union_id", "text", (c) => c.notNull().references("unions.id"))
    .addColumn("peer_actor_id", "text", (c) => c.notNull())
    .addColumn("peer_handle", "text")
    .addColumn("kind", "text", (c) => c.notNull())
    .addColumn("direction", "text", (c) => c.notNull())
    .addColumn("state", "text", (c) => c.notNull())
    .addColumn("relay", "text", (c) => c.notNull())
    .addColumn("follow_id", "text", (c) => c.notNull())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .addColumn("updated_at", "bigint", (c) => c.notNull())
    .execute();
  // A Follow names one relationship: a repeated delivery finds the row it made.
  await db.schema.createIndex("union_relationships_follow").on("union_relationships").columns(["union_id", "follow_id"]).unique().execute();
  await db.schema.createIndex("union_relationships_peer").on("union_relationships").columns(["union_id", "peer_actor_id", "state"]).execute();

  await autoIncrementId(db, db.schema.createTable("relationship_events"))
    .addColumn("relationship_id", "text", (c) => c.notNull())
    .addColumn("union_id", "text", (c) => c.notNull())
    .addColumn("event", "text", (c) => c.notNull())
    .addColumn("state", "text", (c) => c.notNull())
    .addColumn("by", "text")
    .addColumn("at", "bigint", (c) => c.notNull())
    .execute();
  await db.schema.createIndex("relationship_events_rel").on("relationship_events").columns(["relationship_id", "id"]).execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("relationship_events").execute();
  await db.schema.dropTable("union_relationships").execute();
}
