import { type Kysely, sql } from "kysely";
import { isPostgres } from "./dialect.ts";

// Storage at a million members on PostgreSQL (issue 16). members_actor_union,
// a unique btree on (actor_id, union_id), was the largest members index:
// every entry repeats the member's actor URL (about 49 bytes) and the union
// id, and actors join in no URL order, so its leaves stay about two thirds
// full: 126 bytes a member at 10^5 (bench/storage.ts), 120 MiB at 10^6.
//
// It served two kinds of lookup:
// - by equality on actor_id (and the union): every inbox activity's member
//   lookup, the join's read, the fast path's, pruning's, an actor's unions.
//   A hash index on actor_id answers these with a 4-byte hash per member
//   instead of the URL (42 bytes a member at 10^5, built or grown);
// - "any active member on this server" (src/members/visibility.ts
//   hostsMember), a range of actor URLs under the signer's origin, which a
//   hash index cannot answer. members_union_origin holds the origin of each
//   active member's actor URL (scheme, host and port: everything before the
//   first "/" after "scheme://"), with its union; members of one server share
//   a key, which PostgreSQL's btree deduplication stores once with a list of
//   row pointers (21 bytes a member at 10^5 with 5 members a server, less at
//   10^6 with 50). hostsMember asks for the same expression on PostgreSQL.
//   The expression finds the first "/" from the 9th character: after
//   "https://" or within the host after "http://", so both schemes work.
//
// - the uniqueness of (actor_id, union_id): one account holds one place in a
//   union. A hash index cannot be unique, and an exclusion constraint over a
//   hash index takes one column (actor_id alone would refuse one account in
//   two unions). A trigger keeps it instead, before each insert or change of
//   a member's actor or union: it locks the union's row as every write of
//   members.actor_id does already (src/members/members.ts lockUnion, so on
//   the join path it waits for nothing), then refuses a second row of the
//   same account in the union with the unique violation (23505) the index
//   raised, naming members_actor_union. The lock makes the check safe against
//   a concurrent insert the way the unique index was: the second writer waits
//   for the first to commit, then sees its row (each statement of a PL/pgSQL
//   function reads a fresh snapshot under READ COMMITTED).
//
// remote_actors_pkey, the btree of every cached actor's URL (110 bytes a
// member at 10^5: the URL, and leaves two thirds full), becomes an exclusion
// constraint over a hash index, as fedify_public_keys' key id did in 0067:
// ids stay unique, and every read of the table is by equality on id (the
// joins' and fan-out's lookups, the triggers of fanout_targets). Its upsert
// (src/actors/remote-actors.ts) becomes an update and an insert in one
// statement on PostgreSQL: ON CONFLICT DO UPDATE takes no exclusion
// constraint as its arbiter.
//
// SQLite: nothing. It has no hash indexes, and at 10^6 members it is under
// 1 GiB already with the btree.
// Down brings both btrees back and drops the trigger.
const CHECK = `create function members_one_place() returns trigger language plpgsql as $$
  begin
    perform 1 from unions where id = new.union_id for no key update;
    if exists (select 1 from members where actor_id = new.actor_id and union_id = new.union_id and id <> new.id) then
      raise unique_violation using constraint = 'members_actor_union',
        message = 'duplicate key value violates unique constraint "members_actor_union"',
        detail = format('Key (actor_id, union_id)=(%s, %s) already exists.', new.actor_id, new.union_id);
    end if;
    return new;
  end $$`;

export async function up(db: Kysely<any>): Promise<void> {
  if (!isPostgres(db)) return;
  await sql`create index members_actor_hash on members using hash (actor_id)`.execute(db);
  await sql`create index members_union_origin on members (union_id, (substr(actor_id, 1, strpos(substr(actor_id, 9), '/') + 7)))
    where state = 'active' and actor_id is not null`.execute(db);
  await sql.raw(CHECK).execute(db);
  await sql`create trigger members_one_place before insert or update of actor_id, union_id on members for each row
    when (new.actor_id is not null) execute function members_one_place()`.execute(db);
  await db.schema.dropIndex("members_actor_union").execute();
  await sql`alter table remote_actors drop constraint remote_actors_pkey`.execute(db);
  await sql`alter table remote_actors alter column id set not null`.execute(db);
  await sql`alter table remote_actors add constraint remote_actors_id exclude using hash (id with =)`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  if (!isPostgres(db)) return;
  await sql`alter table remote_actors drop constraint remote_actors_id`.execute(db);
  await sql`alter table remote_actors add primary key (id)`.execute(db);
  await db.schema.createIndex("members_actor_union").on("members").columns(["actor_id", "union_id"]).unique().execute();
  await sql`drop trigger members_one_place on members`.execute(db);
  await sql`drop function members_one_place()`.execute(db);
  await db.schema.dropIndex("members_union_origin").execute();
  await db.schema.dropIndex("members_actor_hash").execute();
}
