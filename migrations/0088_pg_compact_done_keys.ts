import { type Kysely, sql } from "kysely";
import { isPostgres } from "./dialect.ts";

// A fan-out to 10^5 personal inboxes on PostgreSQL (issue 16): after the
// claim's and settle's fixes, the two largest items of PostgreSQL's time
// were the settle (36 % of its samples) and the deliveries' enqueue (17 %),
// both writing or reading a delivery's done key: the text "<activity id>
// <inbox> <attempt>" (100-200 bytes), kept in fedify_mq.dedupe_key's unique
// index while the delivery is queued and in fedify_mq_done's primary key for
// 7 days after (DONE_RETENTION_MS). Both columns become a uuid: 16 bytes,
// SHA-256 of the key's first word (4 bytes, so one fan-out's keys sit
// together in the indexes) and of the whole key (12 bytes), as
// compactKey in federation/kysely-message-queue.ts computes it for new keys.
// The keys already stored are turned into the same values here, so a
// fan-out page handled again after the upgrade still finds its deliveries
// queued (the unique index drops them) or done (the done check deletes
// them): nothing is sent twice across the upgrade.
//
// SQLite keeps its text keys (a no-op there): its fan-out cases pass, and a
// key there costs one B-tree entry in a file, not WAL and buffer traffic.
const compact = (column: string) =>
  sql.raw(`encode(substring(sha256(convert_to(split_part(${column}, ' ', 1), 'UTF8')) from 1 for 4) || substring(sha256(convert_to(${column}, 'UTF8')) from 1 for 12), 'hex')::uuid`);

export async function up(db: Kysely<any>): Promise<void> {
  if (!isPostgres(db)) return;
  await sql`alter table fedify_mq_done alter column dedupe_key type uuid using ${compact("dedupe_key")}`.execute(db);
  await sql`alter table fedify_mq alter column dedupe_key type uuid using ${compact("dedupe_key")}`.execute(db);
}

// The hashes cannot be turned back into their texts: down keeps them as text
// (36 characters), which the code before 0088 never produces, so after a
// downgrade a fan-out handled again would not find the deliveries queued or
// done before it under their old keys (they would be sent again).
export async function down(db: Kysely<any>): Promise<void> {
  if (!isPostgres(db)) return;
  await sql`alter table fedify_mq alter column dedupe_key type text using dedupe_key::text`.execute(db);
  await sql`alter table fedify_mq_done alter column dedupe_key type text using dedupe_key::text`.execute(db);
}
