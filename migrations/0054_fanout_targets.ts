import { type Kysely, sql } from "kysely";
import { autoIncrementId, isPostgres } from "./dialect.ts";

// A call-to-action goes to each distinct inbox of a union's active members:
// its shared inbox where the member's server has one, else the member's own.
// Read from the roster, a fan-out to 10^6 members on 2·10^4 servers read and
// threw away 50 member rows per delivery (about 1 ms each, half the
// fan-out's CPU). This table keeps the distinct inboxes per union with how
// many active members each one serves, so a fan-out reads one row per
// delivery (federation/fanout-pages.ts).
//
// Triggers keep it, so every path that changes a member (join, leave,
// removal, a Move, a bulk import) or a cached actor's inboxes (a refetch, an
// Update, pruning) keeps it right inside the same transaction, and no code
// path can forget to. The inbox is stored absolute, computed exactly as
// src/actors/remote-actors.ts inboxUrl reads the relative forms of 0049.
// A row whose count reaches 0 is deleted. `id` orders the pages: targets come
// in the order they first appeared, which spreads a page over many servers
// (ordered by URL, a page of personal inboxes would be a few servers' worth,
// and the delivery lane sends to one server at a time).

/** SQL for inboxUrl(id, stored) of src/actors/remote-actors.ts. */
function absolute(pg: boolean, id: string, stored: string): string {
  const instr = (hay: string, needle: string) => (pg ? `strpos(${hay}, ${needle})` : `instr(${hay}, ${needle})`);
  const scheme = instr(id, "'://'");
  const slash = instr(`substr(${id}, ${scheme} + 3)`, "'/'");
  const origin = `(case when ${scheme} = 0 then '' when ${slash} = 0 then ${id} else substr(${id}, 1, ${scheme} + ${slash} + 1) end)`;
  return `(case when ${stored} is null then null when ${stored} = '' then ${id} || '/inbox' when substr(${stored}, 1, 1) = '/' then ${origin} || ${stored} else ${stored} end)`;
}

/** Where a fan-out reaches the actor of row `a`: its shared inbox, else its own. */
export function targetOf(pg: boolean, a: string): string {
  return `coalesce(${absolute(pg, `${a}.id`, `${a}.shared_inbox`)}, ${absolute(pg, `${a}.id`, `${a}.inbox`)})`;
}

/** 1 when that target is a shared inbox. */
function sharedOf(pg: boolean, a: string): string {
  return `(case when ${absolute(pg, `${a}.id`, `${a}.shared_inbox`)} is null then 0 else 1 end)`;
}

export async function up(db: Kysely<any>): Promise<void> {
  const pg = isPostgres(db);
  await autoIncrementId(db, db.schema.createTable("fanout_targets"))
    .addColumn("union_id", "text", (c) => c.notNull())
    .addColumn("inbox", "text", (c) => c.notNull())
    .addColumn("members", "integer", (c) => c.notNull())
    // A shared inbox (one delivery serves all its members there; the sender
    // closes its connection after it) or a member's own.
    .addColumn("shared", "integer", (c) => c.notNull())
    .execute();
  await db.schema.createIndex("fanout_targets_inbox").on("fanout_targets").columns(["union_id", "inbox"]).unique().execute();
  await db.schema.createIndex("fanout_targets_page").on("fanout_targets").columns(["union_id", "id"]).execute();

  // Backfill, in the order of each target's first member.
  const t = sql.raw(targetOf(pg, "a"));
  await sql`insert into fanout_targets (union_id, inbox, members, shared)
    select union_id, inbox, n, shared from (
      select m.union_id as union_id, ${t} as inbox, count(*) as n, max(${sql.raw(sharedOf(pg, "a"))}) as shared, min(m.id) as first
      from members m join remote_actors a on a.id = m.actor_id
      where m.state = 'active' and ${t} is not null
      group by m.union_id, ${t}
    ) x order by union_id, first`.execute(db);

  const active = (r: string) => `${r}.state = 'active' and ${r}.actor_id is not null`;
  const targetOfActor = (actorRef: string) => `(select ${targetOf(pg, "a")} from remote_actors a where a.id = ${actorRef})`;
  // One member counted in or out at the target of its cached actor (none while uncached).
  const memberIn = (r: string) => `insert into fanout_targets (union_id, inbox, members, shared)
      select ${r}.union_id, ${targetOf(pg, "a")}, 1, ${sharedOf(pg, "a")} from remote_actors a where a.id = ${r}.actor_id and ${targetOf(pg, "a")} is not null
      on conflict (union_id, inbox) do update set members = fanout_targets.members + 1`;
  const memberOut = (r: string) => [
    `update fanout_targets set members = members - 1 where union_id = ${r}.union_id and inbox = ${targetOfActor(`${r}.actor_id`)}`,
    `delete from fanout_targets where union_id = ${r}.union_id and inbox = ${targetOfActor(`${r}.actor_id`)} and members <= 0`,
  ];
  // Every active membership of actor row `r` counted in or out at `r`'s target.
  const unionsOf = (r: string) => `select m.union_id from members m where m.actor_id = ${r}.id and m.state = 'active'`;
  const actorIn = (r: string) => `insert into fanout_targets (union_id, inbox, members, shared)
      select m.union_id, ${targetOf(pg, r)}, count(*), ${sharedOf(pg, r)} from members m where m.actor_id = ${r}.id and m.state = 'active' and ${targetOf(pg, r)} is not null group by m.union_id
      on conflict (union_id, inbox) do update set members = fanout_targets.members + excluded.members`;
  const actorOut = (r: string) => [
    `update fanout_targets set members = members - (select count(*) from members m where m.actor_id = ${r}.id and m.state = 'active' and m.union_id = fanout_targets.union_id)
      where inbox = ${targetOf(pg, r)} and union_id in (${unionsOf(r)})`,
    `delete from fanout_targets where inbox = ${targetOf(pg, r)} and members <= 0 and union_id in (${unionsOf(r)})`,
  ];
  const memberChanged = "old.state is distinct from new.state or old.actor_id is distinct from new.actor_id or old.union_id is distinct from new.union_id";
  const inboxChanged = `${targetOf(pg, "old")} is distinct from ${targetOf(pg, "new")} or old.id is distinct from new.id`;

  if (pg) {
    await sql.raw(`create function fanout_targets_members() returns trigger language plpgsql as $$
      begin
        if tg_op in ('UPDATE', 'DELETE') then
          if ${active("old")} then ${memberOut("old").join("; ")}; end if;
        end if;
        if tg_op in ('UPDATE', 'INSERT') then
          if ${active("new")} then ${memberIn("new")}; end if;
        end if;
        return null;
      end $$`).execute(db);
    await sql.raw(`create function fanout_targets_actors() returns trigger language plpgsql as $$
      begin
        if tg_op in ('UPDATE', 'DELETE') then ${actorOut("old").join("; ")}; end if;
        if tg_op in ('UPDATE', 'INSERT') then ${actorIn("new")}; end if;
        return null;
      end $$`).execute(db);
    await sql.raw(`create trigger fanout_targets_member_insert after insert on members for each row when (${active("new")}) execute function fanout_targets_members()`).execute(db);
    await sql.raw(`create trigger fanout_targets_member_update after update of state, actor_id, union_id on members for each row
      when ((${active("old")} or ${active("new")}) and (${memberChanged})) execute function fanout_targets_members()`).execute(db);
    await sql.raw(`create trigger fanout_targets_member_delete after delete on members for each row when (${active("old")}) execute function fanout_targets_members()`).execute(db);
    await sql.raw(`create trigger fanout_targets_actor_insert after insert on remote_actors for each row execute function fanout_targets_actors()`).execute(db);
    await sql.raw(`create trigger fanout_targets_actor_update after update of id, inbox, shared_inbox on remote_actors for each row when (${inboxChanged}) execute function fanout_targets_actors()`).execute(db);
    await sql.raw(`create trigger fanout_targets_actor_delete after delete on remote_actors for each row execute function fanout_targets_actors()`).execute(db);
    return;
  }
  // SQLite spells "is distinct from" as "is not".
  const sqlite = (s: string) => s.replaceAll("is distinct from", "is not");
  const body = (statements: string[]) => `begin ${statements.map((s) => `${sqlite(s)};`).join(" ")} end`;
  // An upsert from a SELECT needs a WHERE before ON CONFLICT in SQLite: each has one.
  await sql.raw(`create trigger fanout_targets_member_insert after insert on members for each row when ${active("new")} ${body([memberIn("new")])}`).execute(db);
  await sql.raw(`create trigger fanout_targets_member_update_out after update of state, actor_id, union_id on members for each row
    when ${active("old")} and (${sqlite(memberChanged)}) ${body(memberOut("old"))}`).execute(db);
  await sql.raw(`create trigger fanout_targets_member_update_in after update of state, actor_id, union_id on members for each row
    when ${active("new")} and (${sqlite(memberChanged)}) ${body([memberIn("new")])}`).execute(db);
  await sql.raw(`create trigger fanout_targets_member_delete after delete on members for each row when ${active("old")} ${body(memberOut("old"))}`).execute(db);
  await sql.raw(`create trigger fanout_targets_actor_insert after insert on remote_actors for each row ${body([actorIn("new")])}`).execute(db);
  await sql.raw(`create trigger fanout_targets_actor_update after update of id, inbox, shared_inbox on remote_actors for each row
    when ${sqlite(inboxChanged)} ${body([...actorOut("old"), actorIn("new")])}`).execute(db);
  await sql.raw(`create trigger fanout_targets_actor_delete after delete on remote_actors for each row ${body(actorOut("old"))}`).execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  const pg = isPostgres(db);
  const triggers = pg
    ? ["member_insert", "member_update", "member_delete", "actor_insert", "actor_update", "actor_delete"]
    : ["member_insert", "member_update_out", "member_update_in", "member_delete", "actor_insert", "actor_update", "actor_delete"];
  for (const t of triggers) await sql.raw(`drop trigger fanout_targets_${t}${pg ? ` on ${t.startsWith("member") ? "members" : "remote_actors"}` : ""}`).execute(db);
  if (pg) {
    await sql`drop function fanout_targets_members()`.execute(db);
    await sql`drop function fanout_targets_actors()`.execute(db);
  }
  await db.schema.dropTable("fanout_targets").execute();
}
