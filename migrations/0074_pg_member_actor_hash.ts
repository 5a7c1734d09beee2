import { type Kysely, sql } from "kysely";
import { isPostgres } from "./dialect.ts";

// Storage at a million members (issue 16), PostgreSQL: members' unique btree
// over (actor_id, union_id) held every member's actor URL again, about 126
// bytes a member. It served three things:
// - lookups by actor (and union): a hash index on actor_id answers every
//   equality on it (a 4-byte hash a member, about 48 bytes with its tuple);
// - one actor once per union: a trigger (below) instead of the index. It
//   locks the union's row (FOR NO KEY UPDATE, the lock every join already
//   holds: src/members/members.ts lockUnion) before it looks, so of two
//   transactions inserting the same pair the second waits for the first to
//   commit and then sees its row (each statement of a plpgsql function takes a
//   fresh snapshot under READ COMMITTED, which is all Muster uses). It raises
//   the unique index's own error (23505, constraint members_actor_union). Not
//   an advisory lock per (union, actor): a transaction holds each until it
//   ends, and a bulk insert of 20,000 members ran out of the lock table
//   ("out of shared memory", max_locks_per_transaction);
// - "does any active member live on this server" (src/members/visibility.ts
//   hostsMember), a range scan over the actor URLs of the signer's origin:
//   now member_origins, the active members of each union per origin (the
//   actor URL up to the slash after its host), kept by triggers like
//   fanout_targets (0054): about 20,000 rows for a million members on 2·10^4
//   servers. Not an expression index on members: last session's 0070 had one,
//   (union_id, origin) where active, and PostgreSQL member inserts became 30-50
//   times slower past 10^5 members.
// SQLite: nothing (its btree is what the range scan and uniqueness use; its
// storage target is met).
// Down brings the btree back and drops the rest.

/** The actor URL up to the first slash after "://" (what URL.origin gives for a normalised href), or null. */
function originOf(r: string): string {
  const scheme = `strpos(${r}.actor_id, '://')`;
  const slash = `strpos(substr(${r}.actor_id, ${scheme} + 3), '/')`;
  return `(case when ${scheme} = 0 or ${slash} = 0 then null else substr(${r}.actor_id, 1, ${scheme} + ${slash} + 1) end)`;
}

export async function up(db: Kysely<any>): Promise<void> {
  if (!isPostgres(db)) return;
  await sql`create table member_origins (union_id text not null, origin text not null, members integer not null, primary key (union_id, origin))`.execute(db);
  await sql.raw(`insert into member_origins (union_id, origin, members)
    select union_id, o, count(*) from (select m.union_id, ${originOf("m")} as o from members m where m.state = 'active' and m.actor_id is not null) x
    where o is not null group by union_id, o`).execute(db);

  const active = (r: string) => `${r}.state = 'active' and ${r}.actor_id is not null`;
  // A plpgsql function keeps each statement's plan for its connection; one planned while members (or
  // member_origins) was small would scan the whole table on every row for the rest of the connection's life
  // (seen in the storage bench on main: 0054's fan-out trigger scanned all of members on each actor insert,
  // 155 members/s seeded). So these two plan with no sequential scan: every statement in them is an
  // equality on an index.
  await sql.raw(`create function member_origins_count() returns trigger language plpgsql set enable_seqscan = off as $$
    begin
      if tg_op in ('UPDATE', 'DELETE') and ${active("old")} and ${originOf("old")} is not null then
        update member_origins set members = members - 1 where union_id = old.union_id and origin = ${originOf("old")};
        delete from member_origins where union_id = old.union_id and origin = ${originOf("old")} and members <= 0;
      end if;
      if tg_op in ('UPDATE', 'INSERT') and ${active("new")} and ${originOf("new")} is not null then
        insert into member_origins (union_id, origin, members) values (new.union_id, ${originOf("new")}, 1)
          on conflict (union_id, origin) do update set members = member_origins.members + 1;
      end if;
      return null;
    end $$`).execute(db);
  const changed = "old.state is distinct from new.state or old.actor_id is distinct from new.actor_id or old.union_id is distinct from new.union_id";
  await sql.raw(`create trigger member_origins_insert after insert on members for each row when (${active("new")}) execute function member_origins_count()`).execute(db);
  await sql.raw(`create trigger member_origins_update after update of state, actor_id, union_id on members for each row
    when ((${active("old")} or ${active("new")}) and (${changed})) execute function member_origins_count()`).execute(db);
  await sql.raw(`create trigger member_origins_delete after delete on members for each row when (${active("old")}) execute function member_origins_count()`).execute(db);

  await sql`create index members_actor on members using hash (actor_id)`.execute(db);
  await sql`drop index members_actor_union`.execute(db);
  // The union is compared as an expression no index holds, so only the actor's hash index can serve the
  // check (an actor is in few unions; its rows are all there is to look at). Compared as a column, a plan made
  // while members was not yet analyzed (the planner's default selectivity for union_id = ? is 0.5 %) ANDed the
  // hash index with a union_id range of a members btree: every insert read the whole union's entries, 70 s per
  // 20,000 members from about 10^5 instead of 2 (bench/pg-member-inserts.ts; test/pg-trigger-plans.test.ts).
  await sql`create function members_actor_union_unique() returns trigger language plpgsql set enable_seqscan = off as $$
    begin
      perform 1 from unions where id = new.union_id for no key update;
      if exists (select 1 from members where actor_id = new.actor_id and (union_id || '') = new.union_id and id <> new.id) then
        raise exception 'duplicate key value violates unique constraint "members_actor_union"'
          using errcode = 'unique_violation', constraint = 'members_actor_union', table = 'members',
            detail = format('Key (actor_id, union_id)=(%s, %s) already exists.', new.actor_id, new.union_id);
      end if;
      return new;
    end $$`.execute(db);
  await sql`create trigger members_actor_union_insert before insert on members for each row when (new.actor_id is not null)
    execute function members_actor_union_unique()`.execute(db);
  await sql`create trigger members_actor_union_update before update of actor_id, union_id on members for each row
    when (new.actor_id is not null and (old.actor_id is distinct from new.actor_id or old.union_id is distinct from new.union_id))
    execute function members_actor_union_unique()`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  if (!isPostgres(db)) return;
  await sql`drop trigger members_actor_union_insert on members`.execute(db);
  await sql`drop trigger members_actor_union_update on members`.execute(db);
  await sql`drop function members_actor_union_unique()`.execute(db);
  await sql`create unique index members_actor_union on members (actor_id, union_id)`.execute(db);
  await sql`drop index members_actor`.execute(db);
  for (const t of ["insert", "update", "delete"]) await sql.raw(`drop trigger member_origins_${t} on members`).execute(db);
  await sql`drop function member_origins_count()`.execute(db);
  await sql`drop table member_origins`.execute(db);
}
