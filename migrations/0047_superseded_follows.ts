import { type Kysely, sql } from "kysely";
import { isPostgres } from "./dialect.ts";

// A processed Follow's id was kept in inbox_activities forever, one row per
// join (about 300 bytes a member on SQLite, 380 on PostgreSQL at a million),
// so that an old Undo arriving after the member rejoined is told apart from a
// current one (federation/inbox-membership.ts staleFollowGuard). A member's
// current Follow id is already in members.follow_id, so its record can go once
// past the replay window (federation/pruning.ts); what must stay is every
// Follow id that stopped being a member's current one. These triggers record
// it the moment it stops, whichever code path changes or deletes the member
// row, with the actor and union it belonged to. The insert is a no-op when
// the record is still there.

export async function up(db: Kysely<any>): Promise<void> {
  if (isPostgres(db)) {
    await sql`create function members_record_follow() returns trigger language plpgsql as $$
      begin
        insert into inbox_activities (id, type, actor, union_id, received_at)
          values (old.follow_id, 'Follow', coalesce(old.actor_id, ''), old.union_id, (extract(epoch from clock_timestamp()) * 1000)::bigint)
          on conflict (id) do nothing;
        return null;
      end $$`.execute(db);
    await sql`create trigger members_superseded_follow after update of follow_id on members for each row
      when (old.follow_id is not null and old.follow_id is distinct from new.follow_id) execute function members_record_follow()`.execute(db);
    await sql`create trigger members_deleted_follow after delete on members for each row
      when (old.follow_id is not null) execute function members_record_follow()`.execute(db);
    return;
  }
  const record = sql`insert or ignore into inbox_activities (id, type, actor, union_id, received_at)
      values (old.follow_id, 'Follow', coalesce(old.actor_id, ''), old.union_id, cast(unixepoch('subsec') * 1000 as integer))`;
  await sql`create trigger members_superseded_follow after update of follow_id on members for each row
    when old.follow_id is not null and old.follow_id is not new.follow_id begin ${record}; end`.execute(db);
  await sql`create trigger members_deleted_follow after delete on members for each row
    when old.follow_id is not null begin ${record}; end`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop trigger members_superseded_follow${isPostgres(db) ? sql` on members` : sql``}`.execute(db);
  await sql`drop trigger members_deleted_follow${isPostgres(db) ? sql` on members` : sql``}`.execute(db);
  if (isPostgres(db)) await sql`drop function members_record_follow()`.execute(db);
}
