import { type Kysely, sql } from "kysely";
import { isPostgres } from "./dialect.ts";

// Storage at a million members (issue 16), PostgreSQL only; SQLite: nothing.
//
// 1. Members' b-trees that grow at their right edge keep their pages full.
//    A new member's id grows with time (src/members/member-id.ts), and so do
//    created_at and, within one union, (union_id, state, id) for the active
//    members: members_pkey, members_union_state_id and members_union_joined
//    are appended to, and a b-tree splits its rightmost leaf at the index's
//    fill factor (90 by default), so every leaf stayed a tenth empty for
//    rows that would never come (about 15 bytes a member, 14 MiB at 10^6).
//    At 100 the left page of a rightmost split is full. Entries that do land
//    in the middle (a leave changes state; a non-HOT update of a member adds
//    a version's entry) split that page as they would any page, and PostgreSQL
//    removes old versions' entries from a full leaf before splitting it
//    (bottom-up deletion), so the cost is bounded by how many pages such
//    writes touch. Applies to pages split from now on (no REINDEX here).
//
// 2. member_origins (0074) gets fill factor 50, as fanout_targets got in 0058
//    for the same reason: every join and leave updates its origin's count;
//    on a full page the new version goes to another page (not a HOT update,
//    with a new primary key entry) and VACUUM frees the old one without
//    shrinking the file. With half of each page free an update stays on its
//    page and the next visit prunes the old version. Storage bench at 10^5
//    members on 2·10^4 servers: 8 MiB of heap for about 1.5 MiB of live rows.
//
// 3. 0054's fan-out trigger functions plan with no sequential scan, as 0074's
//    and 0075's do. A plpgsql function keeps each statement's plan for its
//    connection; one made while members was small scanned all of members on
//    every actor inserted for the rest of that connection's life (the storage
//    bench on main seeded 155 members/s: 90,021 sequential scans of members).
//    Every statement in them is an equality on an index: fanout_targets by
//    (union_id, inbox), remote_actors by id, members by actor_id (0074's hash
//    index; before 0074 the (actor_id, union_id) btree).
//
// 4. members_sponsor_state (sponsor_id, state) -> members_sponsor (sponsor_id):
//    a sponsor's recruits are found by sponsor_id (every query that reads them
//    has it: recruitsOf, countRecruits, detach, the console); state is checked
//    on the rows found. The state text was 8 of every entry's 40 bytes (about
//    9 bytes a member). The cost: a sponsor's recruits who left or were
//    removed are read and dropped where the index used to skip them. Still a
//    btree, not a hash (a leader can sponsor most of the union: equal keys
//    share a deduplicated entry). The tree's roots keep members_union_roots.
const APPENDED = ["members_pkey", "members_union_state_id", "members_union_joined"];
const TRIGGER_FUNCTIONS = ["fanout_targets_members()", "fanout_targets_actors()"];

export async function up(db: Kysely<any>): Promise<void> {
  if (!isPostgres(db)) return;
  for (const index of APPENDED) await sql.raw(`alter index ${index} set (fillfactor = 100)`).execute(db);
  await sql`alter table member_origins set (fillfactor = 50)`.execute(db);
  for (const f of TRIGGER_FUNCTIONS) await sql.raw(`alter function ${f} set enable_seqscan = off`).execute(db);
  await sql`create index members_sponsor on members (sponsor_id)`.execute(db);
  await sql`drop index members_sponsor_state`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  if (!isPostgres(db)) return;
  await sql`create index members_sponsor_state on members (sponsor_id, state)`.execute(db);
  await sql`drop index members_sponsor`.execute(db);
  for (const f of TRIGGER_FUNCTIONS) await sql.raw(`alter function ${f} reset enable_seqscan`).execute(db);
  await sql`alter table member_origins reset (fillfactor)`.execute(db);
  for (const index of APPENDED) await sql.raw(`alter index ${index} reset (fillfactor)`).execute(db);
}
