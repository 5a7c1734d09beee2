import { type Kysely, sql } from "kysely";
import { isPostgres } from "./dialect.ts";

// Storage at a million members (issue 16), PostgreSQL: fedify_public_keys,
// one cached key per member, held its key id twice: in the row and in the
// primary key's btree (about 97 bytes a member: the key id, a tuple header,
// and leaves about two thirds full, since key ids arrive in no order).
//
// - The key id is kept unique by an exclusion constraint over a hash index
//   instead: a 4-byte hash per key. Every read of the table is by equality on
//   the key id (get, delete, a listing of one key) or a scan (expired rows, a
//   listing of all), which the hash index answers as the btree did. Its one
//   writer (federation/kysely-kv-store.ts writePublicKey) deletes and inserts
//   in one statement, since ON CONFLICT DO UPDATE takes no exclusion
//   constraint as its arbiter.
// - The columns are laid out for alignment: the bigint and the smallint first,
//   then the texts and the key, so no padding sits before the 8-byte expiry
//   (344 -> 336 bytes a row: 24 rows a page instead of 23).
// The table is rebuilt (copied into a new one, the old dropped): 10^5 keys in
// about a second. SQLite: nothing (its table is WITHOUT ROWID: the key id is
// stored once already).
// Down brings the btree primary key and the old column order back.

async function rebuild(db: Kysely<any>, hash: boolean): Promise<void> {
  const columns = hash
    ? sql`expires_at bigint not null, form smallint not null, key_id text not null, owner text, key bytea not null,
        constraint fedify_public_keys_key_id exclude using hash (key_id with =)`
    : sql`key_id text primary key, owner text, key bytea not null, form smallint not null, expires_at bigint not null`;
  await sql`create table fedify_public_keys_rebuilt (${columns})`.execute(db);
  await sql`insert into fedify_public_keys_rebuilt (key_id, owner, key, form, expires_at)
    select key_id, owner, key, form, expires_at from fedify_public_keys`.execute(db);
  await sql`drop table fedify_public_keys`.execute(db);
  await sql`alter table fedify_public_keys_rebuilt rename to fedify_public_keys`.execute(db);
  if (!hash) await sql`alter index fedify_public_keys_rebuilt_pkey rename to fedify_public_keys_pkey`.execute(db);
}

export async function up(db: Kysely<any>): Promise<void> {
  if (!isPostgres(db)) return;
  await rebuild(db, true);
}

export async function down(db: Kysely<any>): Promise<void> {
  if (!isPostgres(db)) return;
  await rebuild(db, false);
}
