import { type Kysely, sql } from "kysely";
import { isPostgres } from "./dialect.ts";

// A fan-out to 10^5 personal inboxes on PostgreSQL (issue 16) spent most of
// PostgreSQL's time in per-row index work: every delivery is leased by an
// UPDATE (the claim, or a settle's hand-over) that sets lease_until, which
// fedify_mq_key_lease (queue, ordering_key, lease_until) indexes, so none of
// those updates could be HOT: each wrote a new entry into all six indexes of
// fedify_mq (text keys among them) and left six dead ones for VACUUM.
//
// The index goes on PostgreSQL too (0072 dropped it on SQLite). It served
// one check of the claim and of the settle's hand-over: that no message of a
// candidate's ordering key is leased. PostgreSQL still needs that check (a
// transaction may commit a lower id after a higher one of its key was
// claimed), but it is as cheap through fedify_mq_key_order (queue,
// ordering_key, id), filtering the key's few rows on lease_until in the heap:
// a key holds one message per shared inbox or at most a page's worth of a
// personal inbox's. The claim and the hand-over now change no indexed column
// (lease_owner, lease_until, attempts, last_error), and fillfactor 50 leaves
// room on each page for the new version: the lease becomes a HOT update (no
// index entry at all), and its dead version is pruned with the page. Not 70:
// a claim leases the oldest ready rows, which lie side by side, and a new
// version is larger than its row (lease_owner and lease_until set), so a
// claim of a whole page's rows found room for fewer than half of them (275
// of 600 updates HOT in test/message-queue.test.ts's case, 600 at 50). The
// queue's table is transient (empty at rest), so the doubled pages cost
// nothing lasting.
// Only a retry (#fail: available_at, indexed by fedify_mq_claim) is not HOT.
// The fillfactor applies to pages written from now on; a queue's rows come
// and go, so its table turns over to it as it is used.
export async function up(db: Kysely<any>): Promise<void> {
  if (!isPostgres(db)) return;
  await db.schema.dropIndex("fedify_mq_key_lease").ifExists().execute();
  await sql`alter table fedify_mq set (fillfactor = 50)`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  if (!isPostgres(db)) return;
  await sql`alter table fedify_mq reset (fillfactor)`.execute(db);
  await db.schema.createIndex("fedify_mq_key_lease").ifNotExists().on("fedify_mq").columns(["queue", "ordering_key", "lease_until"]).execute();
}
