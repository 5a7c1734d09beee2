import { type Kysely, sql } from "kysely";

// Queue lanes: the one fedify_mq table now holds several named lanes, each
// claimed on its own ("inbox", "outbox", "delivery", "fanout", "domain"), so
// a join's Accept never waits behind a call-to-action's 10^5 deliveries.
// Messages queued before the upgrade sat in the single "default" lane; they
// move to the lane their type belongs to (Fedify writes `type` first).
//
// A fan-out's deliveries no longer carry the activity and the sender's
// private key each: the activity is kept once in fedify_mq_payloads, and the
// message names it (fedify_mq.payload) and the keyId only.
export async function up(db: Kysely<any>): Promise<void> {
  await sql`update fedify_mq set queue = 'inbox' where queue = 'default' and message like '{"type":"inbox"%'`.execute(db);
  await sql`update fedify_mq set queue = 'fanout' where queue = 'default' and message like '{"type":"fanout"%'`.execute(db);
  await sql`update fedify_mq set queue = 'outbox' where queue = 'default'`.execute(db);
  await db.schema.createTable("fedify_mq_payloads")
    .addColumn("id", "varchar(64)", (c) => c.primaryKey())
    .addColumn("body", "text", (c) => c.notNull())
    .addColumn("created_at", "bigint", (c) => c.notNull())
    .execute();
  await db.schema.alterTable("fedify_mq").addColumn("payload", "varchar(64)").execute();
  await db.schema.createIndex("fedify_mq_payload").on("fedify_mq").column("payload").execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.dropIndex("fedify_mq_payload").execute();
  await db.schema.alterTable("fedify_mq").dropColumn("payload").execute();
  await db.schema.dropTable("fedify_mq_payloads").execute();
  await sql`update fedify_mq set queue = 'default' where queue in ('inbox', 'outbox', 'delivery', 'fanout')`.execute(db);
}
