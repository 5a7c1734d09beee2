import type { Kysely } from "kysely";

// The claim takes the oldest ready messages, by (available_at, id): this one
// index gives both the range (available_at <= now) and the order, so a claim
// reads a few index entries instead of sorting every ready row. SQLite chose
// the old (queue, available_at) index and sorted: 13.6 ms a claim at depth
// 1,000, 668 ms at 5,000 (with the ordering-key check below it, quadratic).
//
// The ordering-key checks look up earlier messages of a key, and leased ones:
// each has an index matching all its columns, queue first. With a partial
// match (ordering_key, id), PostgreSQL on stale statistics combined it with
// the claim index and read half the queue per check (14.7 s a claim at
// 20,000 messages).
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createIndex("fedify_mq_claim").on("fedify_mq").columns(["queue", "available_at", "id"]).execute();
  await db.schema.createIndex("fedify_mq_key_order").on("fedify_mq").columns(["queue", "ordering_key", "id"]).execute();
  await db.schema.createIndex("fedify_mq_key_lease").on("fedify_mq").columns(["queue", "ordering_key", "lease_until"]).execute();
  await db.schema.dropIndex("fedify_mq_ready").execute();
  await db.schema.dropIndex("fedify_mq_queue_id").execute();
  await db.schema.dropIndex("fedify_mq_ordering").execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.createIndex("fedify_mq_ordering").on("fedify_mq").columns(["ordering_key", "id"]).execute();
  await db.schema.createIndex("fedify_mq_queue_id").on("fedify_mq").columns(["queue", "id"]).execute();
  await db.schema.createIndex("fedify_mq_ready").on("fedify_mq").columns(["queue", "available_at"]).execute();
  await db.schema.dropIndex("fedify_mq_key_lease").execute();
  await db.schema.dropIndex("fedify_mq_key_order").execute();
  await db.schema.dropIndex("fedify_mq_claim").execute();
}
