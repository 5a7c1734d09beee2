import type { Kysely } from "kysely";

// While a vote is open the union sends its running tally, at most once per
// batch window per proposal. The end of the window an Update is already
// queued for is kept on the proposal, written in the same transaction as the
// ballot that asked for it: a vote in that window queues nothing more, and a
// crash cannot lose or double the Update (its activity id is the window's).

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("proposals").addColumn("tally_due_at", "bigint").execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("proposals").dropColumn("tally_due_at").execute();
}
