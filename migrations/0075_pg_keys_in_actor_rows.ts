import { type Kysely, sql } from "kysely";
import { isPostgres } from "./dialect.ts";

// Storage at a million members (issue 16), PostgreSQL: a member's cached public
// key ("https://host/users/x#main-key", owned by that actor) was a row of its
// own in fedify_public_keys: its key id (the actor's URL again), a tuple header
// and a hash index entry, about 120 bytes a member besides the key. Now it
// lives in the actor's remote_actors row (key, key_form, key_expires_at: what
// fedify_public_keys holds as key, form, expires_at; the owner is the actor).
// federation/kysely-kv-store.ts reads and writes both places, each in one
// statement (actorOfKey says which keys may be in a row). A key cached while
// its actor has no row yet (Fedify verifies a signature before anything
// fetches the actor) waits in fedify_public_keys; the row's insert takes it in
// (the trigger below), unless a row with that id is there already (then the
// insert becomes an upsert's update, which would not keep it). Any other key
// (another owner, another shape) stays in fedify_public_keys.
// The columns go at the row's end in alignment order (bigint, smallint, bytea).
// Existing keys move across; SQLite: nothing (its storage target is met).
// Down moves them back and drops the columns.

/** The stored key id (federation/kv-public-keys.ts storedKeyId) of `<r>.id#main-key`, for an https id. */
const keyIdOf = (r: string) => `'a' || substr(${r}.id, 9)`;
const https = (r: string) => `left(${r}.id, 8) = 'https://'`;

export async function up(db: Kysely<any>): Promise<void> {
  if (!isPostgres(db)) return;
  await sql`alter table remote_actors add column key_expires_at bigint, add column key_form smallint, add column key bytea`.execute(db);
  const moved = await sql.raw(`update remote_actors r set key = k.key, key_form = k.form, key_expires_at = k.expires_at
    from fedify_public_keys k where ${https("r")} and k.key_id = ${keyIdOf("r")} and k.owner is null`).execute(db);
  await sql.raw(`delete from fedify_public_keys k using remote_actors r
    where ${https("r")} and k.key_id = ${keyIdOf("r")} and k.owner is null and r.key is not null`).execute(db);
  if (Number(moved.numAffectedRows ?? 0n) > 0) {
    // The update wrote a new version of nearly every row, on new pages (a full page has no room for it): the
    // table would keep both sizes (measured: remote_actors' heap 37 -> 74 MiB at 10^5 members). Rewritten
    // compactly, with its indexes. Not by CLUSTER (or VACUUM FULL): in the transaction that updated the rows, the
    // old versions are "delete in progress" to it, so it copies them too, interleaved with the new ones; once they
    // are vacuumed every page keeps their room (measured: 16 rows a page instead of 21, heap 48.8 MiB instead of
    // 37.2 at 10^5). A column type change with a USING expression that is not the bare column rewrites the table
    // from a snapshot, which sees only the rows' current versions (and writes dropped columns' values as nulls).
    await sql`alter table remote_actors alter column key_expires_at type bigint using key_expires_at + 0`.execute(db);
    // fedify_public_keys lost nearly all its rows: rebuilt with the rest (as 0067 built it), or its heap and hash
    // index would keep their size (a vacuum returns only the pages at the end, and a hash index never shrinks).
    await sql`create table fedify_public_keys_rebuilt (expires_at bigint not null, form smallint not null, key_id text not null, owner text, key bytea not null,
      constraint fedify_public_keys_key_id_rebuilt exclude using hash (key_id with =))`.execute(db);
    await sql`insert into fedify_public_keys_rebuilt (expires_at, form, key_id, owner, key) select expires_at, form, key_id, owner, key from fedify_public_keys`.execute(db);
    await sql`drop table fedify_public_keys`.execute(db);
    await sql`alter table fedify_public_keys_rebuilt rename to fedify_public_keys`.execute(db);
    await sql`alter table fedify_public_keys rename constraint fedify_public_keys_key_id_rebuilt to fedify_public_keys_key_id`.execute(db);
  }
  // Planned once per connection with no sequential scan: a plan made while a table was small would
  // otherwise scan it whole on every insert for the connection's life (see 0074).
  await sql.raw(`create function remote_actors_take_key() returns trigger language plpgsql set enable_seqscan = off as $$
    declare k record;
    begin
      if exists (select 1 from remote_actors where id = new.id) then return new; end if;
      delete from fedify_public_keys where key_id = ${keyIdOf("new")} and owner is null returning key, form, expires_at into k;
      if found then
        new.key := k.key; new.key_form := k.form; new.key_expires_at := k.expires_at;
      end if;
      return new;
    end $$`).execute(db);
  await sql.raw(`create trigger remote_actors_take_key before insert on remote_actors for each row
    when (new.key is null and ${https("new")}) execute function remote_actors_take_key()`).execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  if (!isPostgres(db)) return;
  await sql`drop trigger remote_actors_take_key on remote_actors`.execute(db);
  await sql`drop function remote_actors_take_key()`.execute(db);
  await sql.raw(`insert into fedify_public_keys (key_id, owner, key, form, expires_at)
    select ${keyIdOf("r")}, null, r.key, r.key_form, r.key_expires_at from remote_actors r where r.key is not null
    on conflict do nothing`).execute(db);
  await sql`alter table remote_actors drop column key, drop column key_form, drop column key_expires_at`.execute(db);
}
