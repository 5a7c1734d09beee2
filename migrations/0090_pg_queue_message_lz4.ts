import { type Kysely, sql } from "kysely";
import { isPostgres } from "./dialect.ts";

// A queued message is compressed as PostgreSQL stores it: a join's Accept
// and welcome in one message (direct-send.ts) is 3.2 KB of JSON, over the
// 2 KB at which a row's text is compressed, and pglz (the default) spent
// 13-14 us of the backend's CPU on each such insert against lz4's 4.3 us
// (5,000 inserts of that message: 65-71 against 22 ms; stored inline in
// 1,485 and 1,659 bytes; read back in the same time): about 0.01 ms of
// PostgreSQL's ~0.45 ms a join in the workers benchmark. Rows already
// stored keep pglz (PostgreSQL reads either); only new values use lz4. A
// server built without lz4 keeps pglz.
export async function up(db: Kysely<any>): Promise<void> {
  if (!isPostgres(db) || !(await hasLz4(db))) return;
  await sql`alter table fedify_mq alter column message set compression lz4`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  if (!isPostgres(db)) return;
  await sql`alter table fedify_mq alter column message set compression default`.execute(db);
}

async function hasLz4(db: Kysely<any>): Promise<boolean> {
  const { rows } = await sql<{ lz4: boolean }>`select 'lz4' = any(enumvals) as lz4 from pg_settings where name = 'default_toast_compression'`.execute(db);
  return rows[0]?.lz4 === true;
}
