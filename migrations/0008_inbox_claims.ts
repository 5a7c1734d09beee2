import type { Kysely } from "kysely";

// An inbound activity id is claimed here before it is processed, so that
// copies of one activity delivered at once are processed once. A claim is a
// lease: a process that dies mid-work leaves one that a later redelivery may
// take over once it has expired. inbox_activities keeps meaning "processed".
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createTable("inbox_claims")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("claimed_until", "bigint", (c) => c.notNull())
    .execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropTable("inbox_claims").execute();
}
