import { type Kysely, sql } from "kysely";
import { isPostgres } from "./dialect.ts";

// Storage at a million members (issue 16), SQLite: remote_actors becomes a
// WITHOUT ROWID table. Its only index was the primary key's
// (sqlite_autoindex_remote_actors_1), which repeated every actor URL beside
// the row that already held it: about 63 bytes a member. Now the rows are
// stored in the primary key's b-tree itself; measured by bench/storage.ts,
// 145 -> about 100 bytes a member (the rows fill their pages less tightly,
// since actors arrive in no key order). Every read of the table is by id
// (getRemoteActor, the joins' lookups, the fan-out triggers), which is the
// table's own key now; nothing reads it by rowid.
//
// SQLite cannot change that in place: the table is rebuilt (the documented
// procedure: a new table, the rows copied in key order, the old one dropped,
// the new one renamed). Triggers that name remote_actors (the fan-out
// targets' triggers on both tables) are dropped first and created again,
// word for word, afterwards; so are any other indexes of the table.
// 10^5 actors take about a second (see test/migrations-store.test.ts).
//
// PostgreSQL: nothing (a heap with its primary key is already what it is).
// Down rebuilds the rowid table.

async function rebuild(db: Kysely<any>, withoutRowid: boolean): Promise<void> {
  await db.transaction().execute(async (trx) => {
    const schema = await sql<{ type: string; name: string; tbl_name: string; sql: string }>`
      select type, name, tbl_name, sql from sqlite_schema
      where sql is not null and name <> 'remote_actors'
        and ((type = 'index' and tbl_name = 'remote_actors') or (type = 'trigger' and sql like '%remote_actors%'))`.execute(trx);
    const table = await sql<{ sql: string }>`select sql from sqlite_schema where type = 'table' and name = 'remote_actors'`.execute(trx);
    const create = table.rows[0]!.sql.replace(/\s*without rowid\s*$/i, "");
    const renamed = create.replace(/^CREATE TABLE\s+("remote_actors"|remote_actors)/i, 'CREATE TABLE "remote_actors_rebuilt"');
    if (renamed === create) throw new Error(`unexpected remote_actors definition: ${create}`);
    for (const t of schema.rows.filter((r) => r.type === "trigger")) await sql`drop trigger ${sql.id(t.name)}`.execute(trx);
    await sql.raw(withoutRowid ? `${renamed} without rowid` : renamed).execute(trx);
    // In key order, so the new b-tree is written left to right (a rowid table takes any order).
    // A rowid table's text primary key lets a NULL in; a WITHOUT ROWID one does not (such a row is unreadable by id anyway).
    await sql`insert into remote_actors_rebuilt select * from remote_actors where id is not null order by id`.execute(trx);
    await sql`drop table remote_actors`.execute(trx);
    await sql`alter table remote_actors_rebuilt rename to remote_actors`.execute(trx);
    for (const r of schema.rows) await sql.raw(r.sql).execute(trx);
  });
}

export async function up(db: Kysely<any>): Promise<void> {
  if (isPostgres(db)) return;
  await rebuild(db, true);
}

export async function down(db: Kysely<any>): Promise<void> {
  if (isPostgres(db)) return;
  await rebuild(db, false);
}
