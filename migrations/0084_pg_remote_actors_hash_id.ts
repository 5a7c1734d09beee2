import { type Kysely, sql } from "kysely";
import { isPostgres } from "./dialect.ts";

// Storage at a million members (issue 16), PostgreSQL: remote_actors' primary
// key was a b-tree over the actor's URL ("https://host/users/name", about 50
// bytes), repeated in every entry: 77 bytes a member when built, 110 grown by
// joins (actors arrive in no order, so the tree's pages split half-full and
// settle about two-thirds full), 105 MiB at 10^6 members. Every reader of the
// table finds an actor by equality on its id (getRemoteActor, the upsert, the
// KV store's key in the actor's row, the fan-out and key triggers, the
// roster's join on members.actor_id); none reads a range or an order of ids.
// So the id is unique by an exclusion constraint over a hash index instead,
// as fedify_public_keys' key id is (0067): a 4-byte hash a row, 36-42 bytes a
// member grown by inserts at 10^6 (measured), and the same error (23P01 instead
// of 23505) for a second row of one id. ON CONFLICT DO UPDATE cannot take an
// exclusion constraint as its arbiter, so on PostgreSQL the cached actor's
// upsert is an UPDATE and an INSERT … WHERE NOT EXISTS … ON CONFLICT DO
// NOTHING in one statement (src/actors/remote-actors.ts).
// The index is built from the rows there (no table rewrite). SQLite: nothing
// (remote_actors is a WITHOUT ROWID table there, 0066: the id is the table's
// own key).
export async function up(db: Kysely<any>): Promise<void> {
  if (!isPostgres(db)) return;
  await sql`alter table remote_actors drop constraint remote_actors_pkey,
    add constraint remote_actors_id exclude using hash (id with =)`.execute(db);
}

export async function down(db: Kysely<any>): Promise<void> {
  if (!isPostgres(db)) return;
  await sql`alter table remote_actors drop constraint remote_actors_id, add constraint remote_actors_pkey primary key (id)`.execute(db);
}
