import { type Kysely, sql } from "kysely";
import { isPostgres } from "./dialect.ts";

// A member's Follow id is stored relative to the origin of the member's actor
// (src/members/members.ts storedFollowId): Mastodon's `https://host/<uuid>`
// keeps "/<uuid>", about 30 bytes a member at a million (issue 16). Rows
// written before read as they were (an absolute id reads as itself); this
// brings them to the short form, and down writes them back absolute.
//
// 0047's triggers record a Follow id in inbox_activities the moment it stops
// being a member's current one. They now record it absolute, and compare the
// absolute ids, so a Move that stores the same Follow relative to another
// actor is no change, and this migration's own rewrite records nothing: the
// triggers are replaced before the rows are rewritten, and on the way down
// the rows are written back before the old triggers return.

// Also (PostgreSQL only): fanout_targets gets fillfactor 50. Every join and
// leave updates its target's member count; with full pages the new row
// version goes to another page (not a HOT update), with new index entries, and
// VACUUM frees the old ones without shrinking the file. Measured by
// bench/storage.ts at 10^6 members on 2·10^4 servers: 118.6 MiB of heap and
// 14.1 MiB of indexes for 2·10^4 rows of about 100 bytes. With half of each
// page free, an update stays on its page and the next visit prunes the old
// version. Applies to pages written from now on.

/** SQL for followIdOf(actor, stored) of src/members/members.ts (the origin as 0054 computes it). */
function absolute(pg: boolean, actor: string, stored: string): string {
  const instr = (hay: string, needle: string) => (pg ? `strpos(${hay}, ${needle})` : `instr(${hay}, ${needle})`);
  const scheme = instr(actor, "'://'");
  const slash = instr(`substr(${actor}, ${scheme} + 3)`, "'/'");
  const origin = `(case when ${actor} is null or ${scheme} = 0 then '' when ${slash} = 0 then ${actor} else substr(${actor}, 1, ${scheme} + ${slash} + 1) end)`;
  return `(case when substr(${stored}, 1, 1) = '/' then ${origin} || ${stored} else ${stored} end)`;
}

async function triggers(db: Kysely<any>, relative: boolean): Promise<void> {
  const pg = isPostgres(db);
  const follow = (r: string) => (relative ? absolute(pg, `${r}.actor_id`, `${r}.follow_id`) : `${r}.follow_id`);
  if (pg) {
    await sql`drop trigger members_superseded_follow on members`.execute(db);
    await sql`drop trigger members_deleted_follow on members`.execute(db);
    await sql`create or replace function members_record_follow() returns trigger language plpgsql as $$
      begin
        insert into inbox_activities (id, type, actor, union_id, received_at)
          values (${sql.raw(follow("old"))}, 'Follow', coalesce(old.actor_id, ''), old.union_id, (extract(epoch from clock_timestamp()) * 1000)::bigint)
          on conflict (id) do nothing;
        return null;
      end $$`.execute(db);
    await sql`create trigger members_superseded_follow after update of follow_id on members for each row
      when (old.follow_id is not null and ${sql.raw(follow("old"))} is distinct from ${sql.raw(follow("new"))}) execute function members_record_follow()`.execute(db);
    await sql`create trigger members_deleted_follow after delete on members for each row
      when (old.follow_id is not null) execute function members_record_follow()`.execute(db);
    return;
  }
  await sql`drop trigger members_superseded_follow`.execute(db);
  await sql`drop trigger members_deleted_follow`.execute(db);
  const record = sql`insert or ignore into inbox_activities (id, type, actor, union_id, received_at)
      values (${sql.raw(follow("old"))}, 'Follow', coalesce(old.actor_id, ''), old.union_id, cast(unixepoch('subsec') * 1000 as integer))`;
  await sql`create trigger members_superseded_follow after update of follow_id on members for each row
    when old.follow_id is not null and ${sql.raw(follow("old"))} is not ${sql.raw(follow("new"))} begin ${record}; end`.execute(db);
  await sql`create trigger members_deleted_follow after delete on members for each row
    when old.follow_id is not null begin ${record}; end`.execute(db);
}

export async function up(db: Kysely<any>): Promise<void> {
  const pg = isPostgres(db);
  if (pg) await sql`alter table fanout_targets set (fillfactor = 50)`.execute(db);
  await triggers(db, true);
  const instr = pg ? sql.raw("strpos") : sql.raw("instr");
  for (const scheme of ["https://", "http://"]) {
    const p = scheme.length;
    // "https://host" of "https://host/users/x": the scheme, then up to the first "/" (as 0049).
    const origin = sql`substr(actor_id, 1, ${sql.lit(p)} + ${instr}(substr(actor_id, ${sql.lit(p + 1)}), '/') - 1)`;
    await sql`update members set follow_id = substr(follow_id, length(${origin}) + 1)
      where follow_id is not null and substr(actor_id, 1, ${sql.lit(p)}) = ${scheme} and ${instr}(substr(actor_id, ${sql.lit(p + 1)}), '/') > 0
        and substr(follow_id, 1, length(${origin}) + 1) = ${origin} || '/'`.execute(db);
  }
}

export async function down(db: Kysely<any>): Promise<void> {
  const pg = isPostgres(db);
  await sql`update members set follow_id = ${sql.raw(absolute(pg, "actor_id", "follow_id"))} where substr(follow_id, 1, 1) = '/'`.execute(db);
  await triggers(db, false);
  if (pg) await sql`alter table fanout_targets reset (fillfactor)`.execute(db);
}
