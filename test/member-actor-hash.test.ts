import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { type Kysely, sql } from "kysely";
import { dialects } from "./helpers/databases.ts";
import { migrateTo, migrateToLatest } from "../src/db/migrate.ts";
import type { DB } from "../src/db/schema.ts";
import { canSeeMembers } from "../src/members/visibility.ts";
import type { Union } from "../src/unions/unions.ts";

// Migration 0074 (PostgreSQL): members keep no btree over actor URLs (storage at
// 10^6 members, issue 16). One actor once per union is kept by a trigger, and
// "does an active member live on the signer's server" (the `members` roster
// setting) is answered from member_origins. SQLite keeps its unique btree: the
// behaviour is checked on both.

const unionRow = (id: string) => ({
  id, slug: id, name: id, purpose: "p", leader_handle: null, icon_url: null, manually_approves_followers: 1, created_at: 1,
  join_policy: "approval", member_invite_limit: 5, welcome_text: null, members_visibility: "members",
});
const memberRow = (id: string, unionId: string, actorId: string | null, state = "active") =>
  ({ id, union_id: unionId, actor_id: actorId, handle: null, state, role: "member", subtree_size: 0, created_at: 1 });
const unionOf = (id: string) => ({ id, membersVisibility: "members" }) as unknown as Union;
const sees = (db: Kysely<DB>, unionId: string, actorId: string) => canSeeMembers(db, unionOf(unionId), { via: "federation", actorId });

async function indexesOfMembers(db: Kysely<DB>, pg: boolean): Promise<Record<string, string>> {
  return pg
    ? Object.fromEntries((await sql<{ name: string; def: string }>`select indexname as name, indexdef as def from pg_indexes where tablename = 'members'`.execute(db)).rows.map((r) => [r.name, r.def]))
    : Object.fromEntries((await sql<{ name: string; def: string }>`select name, coalesce(sql, '') as def from sqlite_master where type = 'index' and tbl_name = 'members'`.execute(db)).rows.map((r) => [r.name, r.def]));
}

for (const d of dialects) {
  const pg = d.name === "postgres";
  describe(`members without a btree over actor URLs on ${d.name}`, { skip: d.skip }, () => {
    it("PostgreSQL holds no btree over actor_id; the `members` setting still shows the roster exactly to servers hosting an active member", async () => {
      const tdb = await d.create();
      const { db, close } = tdb.open();
      try {
        const indexes = await indexesOfMembers(db, pg);
        if (pg) {
          for (const [name, def] of Object.entries(indexes)) assert.ok(!/btree \(actor_id/.test(def), `${name}: ${def}`);
          assert.match(indexes.members_actor!, /USING hash \(actor_id\)/);
        } else {
          assert.ok(indexes.members_actor_union !== undefined);
        }
        await db.insertInto("unions").values([unionRow("u1"), unionRow("u2")] as never).execute();
        await db.insertInto("members").values([
          memberRow("m1", "u1", "https://a.example/users/x"),
          memberRow("m2", "u1", "https://b.example/users/y", "pending"),
          memberRow("m3", "u2", "https://c.example/users/z"),
          memberRow("m4", "u1", null, "reserved"),
          memberRow("m5", "u1", "https://a.example.org/users/w", "left"),
        ] as never).execute();
        assert.equal(await sees(db, "u1", "https://a.example/actor"), true, "any account on a member's server");
        assert.equal(await sees(db, "u1", "https://a.example/users/x"), true, "the member");
        assert.equal(await sees(db, "u1", "https://b.example/users/y"), false, "a pending applicant's server");
        assert.equal(await sees(db, "u1", "https://c.example/users/z"), false, "a member of another union");
        assert.equal(await sees(db, "u1", "https://a.example.org/users/w"), false, "a server whose origin only begins like a member's, its own member gone");
        assert.equal(await sees(db, "u1", "http://a.example/users/x"), false, "another scheme is another server");
        // The applicant is accepted, the member leaves: it follows.
        await db.updateTable("members").set({ state: "active" }).where("id", "=", "m2").execute();
        await db.updateTable("members").set({ state: "left" }).where("id", "=", "m1").execute();
        assert.equal(await sees(db, "u1", "https://b.example/inbox-actor"), true);
        assert.equal(await sees(db, "u1", "https://a.example/actor"), false, "the member left");
        // Two members on one server: one leaving keeps the server in; a Move to another server takes it along.
        await db.insertInto("members").values([memberRow("m6", "u1", "https://d.example/users/1"), memberRow("m7", "u1", "https://d.example/users/2")] as never).execute();
        await db.deleteFrom("members").where("id", "=", "m6").execute();
        assert.equal(await sees(db, "u1", "https://d.example/users/9"), true);
        await db.updateTable("members").set({ actor_id: "https://e.example/users/2" }).where("id", "=", "m7").execute();
        assert.equal(await sees(db, "u1", "https://d.example/users/9"), false);
        assert.equal(await sees(db, "u1", "https://e.example/users/9"), true);
        // The reserved place gets its account.
        await db.updateTable("members").set({ actor_id: "https://f.example/users/l", state: "active" }).where("id", "=", "m4").execute();
        assert.equal(await sees(db, "u1", "https://f.example/x"), true);
        if (pg) {
          const counts = (await db.selectFrom("member_origins").selectAll().orderBy("union_id").orderBy("origin").execute()).map((r) => `${r.union_id} ${r.origin} ${r.members}`);
          assert.deepEqual(counts, ["u1 https://b.example 1", "u1 https://e.example 1", "u1 https://f.example 1", "u2 https://c.example 1"]);
        }
      } finally {
        await close();
        await tdb.destroy();
      }
    });

    it("one account once per union, also when two transactions insert it at once; in another union it may be", async () => {
      const tdb = await d.create();
      const { db, close } = tdb.open();
      try {
        if (pg) assert.equal((await indexesOfMembers(db, pg)).members_actor_union, undefined, "no unique btree (0074)");
        await db.insertInto("unions").values([unionRow("u1"), unionRow("u2")] as never).execute();
        await db.insertInto("members").values(memberRow("m1", "u1", "https://a.example/users/x") as never).execute();
        await db.insertInto("members").values(memberRow("m2", "u2", "https://a.example/users/x") as never).execute();
        const duplicate = (e: unknown) => /unique/i.test(String((e as Error).message)) && (!pg || (e as { code?: string }).code === "23505");
        await assert.rejects(db.insertInto("members").values(memberRow("m3", "u1", "https://a.example/users/x", "left") as never).execute(), duplicate);
        await assert.rejects(db.insertInto("members").values([memberRow("m4", "u1", "https://b.example/users/y"), memberRow("m5", "u1", "https://b.example/users/y")] as never).execute(), duplicate, "two in one statement");
        await db.insertInto("members").values(memberRow("m6", "u1", "https://c.example/users/z") as never).execute();
        await assert.rejects(db.updateTable("members").set({ actor_id: "https://a.example/users/x" }).where("id", "=", "m6").execute(), duplicate, "a Move onto an account already a member");
        await db.updateTable("members").set({ state: "left", handle: "h" }).where("id", "=", "m1").execute();
        if (pg) {
          // Two transactions at once: the second waits for the first, then sees its row.
          let release!: () => void;
          const held = new Promise<void>((r) => (release = r));
          let inserted!: () => void;
          const first = new Promise<void>((r) => (inserted = r));
          const a = db.transaction().execute(async (trx) => {
            await trx.insertInto("members").values(memberRow("m7", "u1", "https://g.example/users/q") as never).execute();
            inserted();
            await held;
          });
          await first;
          const b = db.transaction().execute(async (trx) => {
            await trx.insertInto("members").values(memberRow("m8", "u1", "https://g.example/users/q") as never).execute();
          });
          const outcome = Promise.allSettled([b]);
          await new Promise((r) => setTimeout(r, 300));
          release();
          await a;
          const [r] = await outcome;
          assert.equal(r!.status, "rejected");
          assert.ok(duplicate((r as PromiseRejectedResult).reason), String((r as PromiseRejectedResult).reason));
          // And the other way round: the first rolls back, the second gets in.
          const c = db.transaction().execute(async (trx) => {
            await trx.insertInto("members").values(memberRow("m9", "u1", "https://h.example/users/q") as never).execute();
            await new Promise((r) => setTimeout(r, 300));
            throw new Error("rolled back");
          });
          await new Promise((r) => setTimeout(r, 100));
          const e = db.insertInto("members").values(memberRow("m10", "u1", "https://h.example/users/q") as never).execute();
          await assert.rejects(c, /rolled back/);
          await e;
        }
        if (pg) {
          // A bulk insert of 20,000 members in one transaction (an import): the check takes no lock per row (an advisory
          // lock per pair ran out of PostgreSQL's lock table: "out of shared memory").
          await db.transaction().execute(async (trx) => {
            for (let s = 0; s < 20_000; s += 2000) {
              await trx.insertInto("members").values(Array.from({ length: 2000 }, (_, k) => memberRow(`b${s + k}`, "u2", `https://bulk-${(s + k) % 300}.example/users/${s + k}`)) as never).execute();
            }
          });
          assert.equal(Number((await db.selectFrom("members").select((eb) => eb.fn.countAll().as("n")).where("union_id", "=", "u2").executeTakeFirstOrThrow()).n), 20_001);
        }
        const rows = await db.selectFrom("members").select(["id"]).where("union_id", "=", "u1").orderBy("id").execute();
        assert.deepEqual(rows.map((r) => r.id).sort(), (pg ? ["m1", "m10", "m6", "m7"] : ["m1", "m6"]).sort());
      } finally {
        await close();
        await tdb.destroy();
      }
    });

    it("0074 upgrades a database with members: counts per server, the same answers, and down brings the btree back", async () => {
      const tdb = await d.create();
      const { db, close } = tdb.open();
      try {
        await migrateTo(db, "0072_sqlite_queue_lease_index");
        await db.insertInto("unions").values([unionRow("u1"), unionRow("u2")] as never).execute();
        await db.insertInto("members").values([
          memberRow("m1", "u1", "https://a.example/users/x"), memberRow("m2", "u1", "https://a.example/users/y"),
          memberRow("m3", "u1", "https://b.example/users/y", "left"), memberRow("m4", "u2", "https://b.example/users/y"),
          memberRow("m5", "u1", null, "reserved"), memberRow("m6", "u1", "https://c.example:8443/users/q"),
        ] as never).execute();
        await migrateToLatest(db);
        if (pg) {
          const counts = (await db.selectFrom("member_origins").selectAll().orderBy("union_id").orderBy("origin").execute()).map((r) => `${r.union_id} ${r.origin} ${r.members}`);
          assert.deepEqual(counts, ["u1 https://a.example 2", "u1 https://c.example:8443 1", "u2 https://b.example 1"]);
        }
        assert.equal(await sees(db, "u1", "https://a.example/z"), true);
        assert.equal(await sees(db, "u1", "https://b.example/z"), false);
        assert.equal(await sees(db, "u2", "https://b.example/z"), true);
        assert.equal(await sees(db, "u1", "https://c.example:8443/z"), true);
        assert.equal(await sees(db, "u1", "https://c.example/z"), false);
        await migrateTo(db, "0072_sqlite_queue_lease_index");
        const indexes = await indexesOfMembers(db, pg);
        assert.ok(indexes.members_actor_union !== undefined && indexes.members_actor === undefined);
        await assert.rejects(db.insertInto("members").values(memberRow("m7", "u1", "https://a.example/users/x") as never).execute());
        await migrateToLatest(db);
      } finally {
        await close();
        await tdb.destroy();
      }
    });
  });
}
