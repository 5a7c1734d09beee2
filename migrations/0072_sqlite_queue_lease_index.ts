import type { Kysely } from "kysely";
import { isPostgres } from "./dialect.ts";

// A fan-out to 10^5 personal inboxes (issue 16), SQLite: fedify_mq_key_lease
// (queue, ordering_key, lease_until) served one check of the claim, that no
// message of a candidate's ordering key is being handled. On SQLite that
// check can never find one the other check has not already excluded: a
// candidate must be the first message of its key by id, a message is only
// leased while it is its key's first, and SQLite gives ids in commit order
// (one writer at a time, AUTOINCREMENT never reuses one), so no message of a
// key is ever committed before a leased one. The claim leaves the check out
// there (federation/kysely-message-queue.ts candidates), and the index goes:
// every claim's lease change and every settle's delete rewrote a random page
// of it (10^5 of each, and the enqueue's 10^5 inserts), and the WAL carried
// each page to the checkpoint.
//
// PostgreSQL keeps both: there an id is taken at insert and a transaction may
// commit a lower one after a higher one of its key was claimed.
export async function up(db: Kysely<any>): Promise<void> {
  if (isPostgres(db)) return;
  await db.schema.dropIndex("fedify_mq_key_lease").ifExists().execute();
}

export async function down(db: Kysely<any>): Promise<void> {
  if (isPostgres(db)) return;
  await db.schema.createIndex("fedify_mq_key_lease").ifNotExists().on("fedify_mq").columns(["queue", "ordering_key", "lease_until"]).execute();
}
