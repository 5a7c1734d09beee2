import { type Kysely, sql } from "kysely";

// Issue 16: the goal check counted every commitment of the call again inside
// each new commitment's transaction (O(n) per response, O(n²) per call). Now
// a counter: one row per (call, member) with how many of that member's
// commitments are standing, and on the call how many members have one.

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createTable("action_committers")
    .addColumn("action_id", "text", (c) => c.notNull())
    .addColumn("member_id", "text", (c) => c.notNull())
    .addColumn("standing", "integer", (c) => c.notNull())
    .addPrimaryKeyConstraint("action_committers_pk", ["action_id", "member_id"])
    .execute();
  await db.schema.alterTable("actions").addColumn("committers", "integer", (c) => c.notNull().defaultTo(0)).execute();
  await sql`insert into action_committers (action_id, member_id, standing)
    select action_id, member_id, count(*) from action_responses
    where undone_at is null and kind in ('commit', 'done') group by action_id, member_id`.execute(db);
  await sql`update actions set committers = (select count(*) from action_committers c where c.action_id = actions.id and c.standing > 0)`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("actions").dropColumn("committers").execute();
  await db.schema.dropTable("action_committers").execute();
}
