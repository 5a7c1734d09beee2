import type { Kysely } from "kysely";

// A join's Accept and welcome (one outbox message, direct-send.ts) are sent
// only while the member is active, and only through the batch sender while
// its server has no circuit-breaker state: on PostgreSQL the outbox lane's
// claim read both with the message (kysely-message-queue.ts, gatesWithClaim),
// finding the gate's ids and the inbox's scheme and host with two
// regexp_match calls over the message's whole text (a few KB, often stored
// compressed, so decompressed for each). Those calls were 13 % of
// PostgreSQL's samples of the lane's claim and settle. The enqueue now writes
// them in columns of their own, from the message object Muster built (never
// from text a remote party could shape), and the claim reads the columns.
//
// Nullable, unindexed (the lease stays a HOT update, migration 0079), and
// written only by the lanes that read them: other rows are unchanged. A row
// queued before this migration (or by a process still running the code
// before it) has none: its claim reads no hint, so its gate is asked with a
// query and its server's state is read by the batch sender, as for any
// message without a hint. Both dialects, so the table is the same for
// Kysely's types; only PostgreSQL's claim reads them.
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("fedify_mq").addColumn("gate_union_id", "text").execute();
  await db.schema.alterTable("fedify_mq").addColumn("gate_member_id", "text").execute();
  await db.schema.alterTable("fedify_mq").addColumn("inbox_origin", "text").execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("fedify_mq").dropColumn("inbox_origin").execute();
  await db.schema.alterTable("fedify_mq").dropColumn("gate_member_id").execute();
  await db.schema.alterTable("fedify_mq").dropColumn("gate_union_id").execute();
}
