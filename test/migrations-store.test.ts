import { readdirSync } from "node:fs";
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { type Kysely, sql } from "kysely";
import { seedMembers } from "../bench/storage.ts";
import { generateActorKeys } from "../federation/keys.ts";
import { getRemoteActor, upsertRemoteActor, deleteRemoteActor } from "../src/actors/remote-actors.ts";
import { migrateTo, migrateToLatest } from "../src/db/migrate.ts";
import type { DB } from "../src/db/schema.ts";
import { createEventBus } from "../src/events.ts";
import { createUnion } from "../src/unions/unions.ts";
import { dialects } from "./helpers/databases.ts";

// Storage at a million members (issue 16), migration 0066: SQLite's
// remote_actors is a WITHOUT ROWID table, so the actor URL is stored once
// (the row lives in the primary key's b-tree) instead of in the row and again
// in sqlite_autoindex_remote_actors_1.

const sqlite = dialects.find((d) => d.name === "sqlite")!;

/** The migration before 0066, whichever it is (another branch may add 0065). */
const PREVIOUS = readdirSync(new URL("../migrations/", import.meta.url)).filter((f) => /^\d{4}_.*\.ts$/.test(f) && f < "0066").sort().at(-1)!.replace(/\.ts$/, "");

async function withoutRowid(db: Kysely<any>): Promise<boolean> {
  const r = await sql<{ sql: string }>`select sql from sqlite_schema where type = 'table' and name = 'remote_actors'`.execute(db);
  return /without rowid\s*$/i.test(r.rows[0]!.sql);
}

async function triggerNames(db: Kysely<any>): Promise<string[]> {
  const r = await sql<{ name: string }>`select name from sqlite_schema where type = 'trigger' order by name`.execute(db);
  return r.rows.map((t) => t.name);
}

async function targets(db: Kysely<DB>) {
  return (await db.selectFrom("fanout_targets").select(["union_id", "inbox", "members", "shared"]).orderBy("union_id").orderBy("inbox").execute())
    .map((t) => ({ ...t, members: Number(t.members), shared: Number(t.shared) }));
}

describe("remote_actors storage on sqlite (0066)", () => {
  it("the migration keeps every actor, the fan-out triggers and their effect, and down brings the rowid table back", async () => {
    const tdb = await sqlite.create();
    const { db, close } = tdb.open();
    try {
      await migrateTo(db, PREVIOUS);
      const before = await triggerNames(db);
      const union = await createUnion({ db, events: createEventBus(), generateKeys: generateActorKeys }, { slug: "m", name: "M", purpose: "p" });
      // Real rows: actors with the stored forms of their inboxes, and members whose triggers count fan-out targets.
      const actors = Array.from({ length: 50 }, (_, i) => ({
        id: `https://s${i % 7}.example/users/u${i}`, type: "Person" as const, handle: `@u${i}@s${i % 7}.example`, name: null,
        inbox: `https://s${i % 7}.example/users/u${i}/inbox`, sharedInbox: i % 3 === 0 ? null : `https://s${i % 7}.example/inbox`, fetchedAt: 1_000 + i,
      }));
      for (const a of actors) await upsertRemoteActor(db, a);
      // A Group with a name and an inbox on another origin, stored as it came.
      await upsertRemoteActor(db, { id: "https://g.example/groups/x", type: "Group", handle: null, name: "Allies", inbox: "https://other.example/in", sharedInbox: null, fetchedAt: 5 });
      for (const [i, a] of actors.entries()) {
        await db.insertInto("members").values({ id: `m${String(i).padStart(3, "0")}`, union_id: union.id, actor_id: a.id, handle: a.handle, state: "active", role: "member", subtree_size: 0, joined_at: i, created_at: i } as never).execute();
      }
      const rowsBefore = await db.selectFrom("remote_actors").selectAll().orderBy("id").execute();
      const targetsBefore = await targets(db);
      assert.ok(targetsBefore.length > 7);
      assert.equal(await withoutRowid(db), false);

      await migrateTo(db, "0066_remote_actors_without_rowid");
      assert.equal(await withoutRowid(db), true);
      assert.deepEqual(await db.selectFrom("remote_actors").selectAll().orderBy("id").execute(), rowsBefore);
      assert.deepEqual(await triggerNames(db), before);
      const indexes = await sql<{ name: string }>`select name from sqlite_schema where type = 'index' and tbl_name = 'remote_actors'`.execute(db);
      assert.deepEqual(indexes.rows.map((r) => r.name), [], "the primary key is the table itself: no autoindex");
      // A read by id is the table's own key.
      const plan = await sql<{ detail: string }>`explain query plan select * from remote_actors where id = ${actors[0]!.id}`.execute(db);
      assert.match(plan.rows.map((r) => r.detail).join("\n"), /SEARCH remote_actors USING PRIMARY KEY \(id=\?\)/);
      assert.deepEqual(await targets(db), targetsBefore);

      // The triggers still keep fanout_targets: an actor whose shared inbox moves, one deleted, one added.
      await upsertRemoteActor(db, { ...actors[1]!, sharedInbox: "https://s1.example/inbox2", fetchedAt: 9_999 });
      assert.ok((await targets(db)).some((t) => t.inbox === "https://s1.example/inbox2" && t.members === 1));
      await deleteRemoteActor(db, actors[0]!.id);
      assert.ok(!(await targets(db)).some((t) => t.inbox === `${actors[0]!.id}/inbox`));
      await upsertRemoteActor(db, actors[0]!);
      assert.ok((await targets(db)).some((t) => t.inbox === `${actors[0]!.id}/inbox` && t.members === 1));
      assert.deepEqual(await getRemoteActor(db, actors[2]!.id), { ...actors[2]!, name: null });
      // The primary key still refuses a second row of an id.
      await assert.rejects(sql`insert into remote_actors (id, type, fetched_at) values (${actors[2]!.id}, 'Person', 1)`.execute(db), /UNIQUE/);
      const rowsAfter = await db.selectFrom("remote_actors").selectAll().orderBy("id").execute();
      const targetsAfter = await targets(db);

      await migrateTo(db, PREVIOUS);
      assert.equal(await withoutRowid(db), false);
      assert.deepEqual(await db.selectFrom("remote_actors").selectAll().orderBy("id").execute(), rowsAfter);
      assert.deepEqual(await triggerNames(db), before);
      assert.deepEqual(await targets(db), targetsAfter);
      await deleteRemoteActor(db, actors[3]!.id);
      assert.ok(!(await targets(db)).some((t) => t.inbox === `${actors[3]!.id}/inbox`));

      await migrateToLatest(db);
      assert.equal(await withoutRowid(db), true);
      assert.equal((await db.selectFrom("remote_actors").select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirstOrThrow()).n, 50);
    } finally {
      await close();
      await tdb.destroy();
    }
  });

  it("a member's cached actor costs under 110 bytes (it was 145: the row and the primary key's index)", async () => {
    const tdb = await sqlite.create();
    const { db, close } = tdb.open();
    try {
      const union = await createUnion({ db, events: createEventBus(), generateKeys: generateActorKeys }, { slug: "b", name: "B", purpose: "p" });
      const n = 10_000;
      // What a join leaves per member, shaped from a real Mastodon actor (bench/storage.ts).
      await seedMembers(db, union.id, n, "test");
      await sql`pragma wal_checkpoint(TRUNCATE)`.execute(db);
      const bytes = Number((await sql<{ b: number }>`select coalesce(sum(pgsize), 0) as b from dbstat where name = 'remote_actors' or name like 'sqlite_autoindex_remote_actors%'`.execute(db)).rows[0]!.b);
      assert.ok(bytes / n < 110, `${(bytes / n).toFixed(1)} bytes per member in remote_actors`);
    } finally {
      await close();
      await tdb.destroy();
    }
  });
});
