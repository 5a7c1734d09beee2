import { readdirSync } from "node:fs";
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { type Kysely, sql } from "kysely";
import { generateActorKeys } from "../federation/keys.ts";
import { migrateTo, migrateToLatest } from "../src/db/migrate.ts";
import type { DB } from "../src/db/schema.ts";
import { createEventBus } from "../src/events.ts";
import { getRemoteActor, upsertRemoteActor } from "../src/actors/remote-actors.ts";
import { findMemberByActor } from "../src/members/members.ts";
import { unionsOfActor } from "../src/members/membership.ts";
import { deliveryRecipients } from "../src/members/roster.ts";
import { canSeeMembers } from "../src/members/visibility.ts";
import { createUnion, type Union } from "../src/unions/unions.ts";
import { dialects } from "./helpers/databases.ts";
import { seedFollowers } from "./helpers/seed-followers.ts";

// Storage at a million members on PostgreSQL (issue 16), migration 0070:
// members_actor_union, the unique btree on (actor_id, union_id), becomes a
// hash index on actor_id and a btree of each active member's origin with
// its union (for "any member on this server"). SQLite keeps its btree.

const MIGRATION = readdirSync(new URL("../migrations/", import.meta.url)).find((f) => f.startsWith("0070_"))?.replace(/\.ts$/, "") ?? "0070_pg_actor_hash_indexes";
/** The migration before 0070, whichever it is. */
const PREVIOUS = readdirSync(new URL("../migrations/", import.meta.url)).filter((f) => /^\d{4}_.*\.ts$/.test(f) && f < "0070").sort().at(-1)!.replace(/\.ts$/, "");

async function indexes(db: Kysely<DB>, dialect: string): Promise<string[]> {
  return (dialect === "sqlite"
    ? (await sql<{ name: string }>`select name from sqlite_master where type = 'index' and tbl_name = 'members' and sql is not null order by name`.execute(db)).rows
    : (await sql<{ name: string }>`select indexname as name from pg_indexes where tablename = 'members' order by indexname`.execute(db)).rows).map((r) => r.name);
}

/** What the reads that used members_actor_union answer, for every member and a few strangers. */
async function answers(db: Kysely<DB>, unions: Union[]): Promise<unknown> {
  const members = await db.selectFrom("members").selectAll().orderBy("id").execute();
  const norm = (v: unknown) => JSON.parse(JSON.stringify(v, (_k, x) => (typeof x === "bigint" ? Number(x) : x)));
  const out: Record<string, unknown> = { members: norm(members), actors: norm(await db.selectFrom("remote_actors").selectAll().orderBy("id").execute()) };
  out.cached = await Promise.all(members.filter((r) => r.actor_id !== null).slice(0, 30).map((m) => getRemoteActor(db, m.actor_id!)));
  for (const u of unions) {
    const byActor: unknown[] = [];
    for (const m of members.filter((r) => r.actor_id !== null)) byActor.push([u.id, m.actor_id, (await findMemberByActor(db, u.id, m.actor_id!))?.id ?? null]);
    out[`byActor ${u.slug}`] = byActor;
    const sees: unknown[] = [];
    // Accounts on servers with members (active or not), on servers without, an http:// server, a port, a look-alike host.
    for (const actorId of ["https://s0.example/users/other", "https://s3.example/users/zz", "https://s8.example/actor", "https://nobody.example/users/x",
      "http://plain.example/users/p", "https://port.example:8443/u/q", "https://s1.example.evil/users/x", "https://s1.exampl/users/x", "not a url"]) {
      sees.push([actorId, await canSeeMembers(db, u, { via: "federation", actorId })]);
    }
    out[`sees ${u.slug}`] = sees;
    out[`recipients ${u.slug}`] = norm(await deliveryRecipients(db, u.id, "", 1000));
  }
  out.unionsOf = await Promise.all(members.filter((r) => r.actor_id !== null).slice(0, 40).map(async (m) => [m.actor_id, (await unionsOfActor(db, m.actor_id!)).sort()]));
  return out;
}

for (const d of dialects) {
  describe(`members looked up by actor after ${MIGRATION} on ${d.name}`, { skip: d.skip }, () => {
    it("every member, lookup by actor, an actor's unions, 'a member on this server' and the fan-out answer the same up, down and up again", async () => {
      const tdb = await d.create();
      const { db, close } = tdb.open();
      try {
        const deps = { db, events: createEventBus(), generateKeys: generateActorKeys };
        const a = await createUnion(deps, { slug: "a", name: "A", purpose: "p", membersVisibility: "members", leaderHandle: "@lead@a.example" });
        const b = await createUnion(deps, { slug: "b", name: "B", purpose: "p", membersVisibility: "members", leaderHandle: "@lead@b.example" });
        await seedFollowers(db, a.id, 120, (i) => ({ origin: `https://s${i % 9}.example`, shared: i % 3 !== 0 }));
        // Union b: some of a's accounts (one account in two unions), an http:// server and one with a port.
        await seedFollowers(db, b.id, 20, (i) => ({ origin: i % 2 === 0 ? "http://plain.example" : "https://port.example:8443", shared: true }));
        const shared = await db.selectFrom("members").selectAll().where("union_id", "=", a.id).where("role", "=", "member").where("actor_id", "like", "https://s1.example/%").orderBy("id").limit(10).execute();
        await db.insertInto("members").values(shared.map((m) => ({ ...m, id: `${m.id.slice(0, -3)}bbb`, union_id: b.id }))).execute();
        // Members who left (their place kept, no actor) and a pending one on s8 only: s8 must not count as hosting a member.
        await db.updateTable("members").set({ state: "left", actor_id: null }).where("union_id", "=", a.id).where("actor_id", "like", "https://s7.example/%").execute();
        await db.updateTable("members").set({ state: "pending" }).where("actor_id", "like", "https://s8.example/%").execute();
        const unions = [a, b];
        const before = await answers(db, unions);
        // The seeded shape is what the checks need: a's members on s0..s6, none active on s7 and s8.
        const sees = (before as Record<string, [string, boolean][]>)["sees a"]!;
        assert.deepEqual(sees.map(([, v]) => v), [true, true, false, false, false, false, false, false, false]);
        assert.deepEqual((before as Record<string, [string, boolean][]>)["sees b"]!.map(([, v]) => v), [false, false, false, false, true, true, false, false, false]);
        assert.equal(await canSeeMembers(db, b, { via: "federation", actorId: "https://s1.example/users/someone" }), true);

        const now = await indexes(db, d.name);
        if (d.name === "postgres") {
          assert.ok(now.includes("members_actor_hash") && now.includes("members_union_origin") && !now.includes("members_actor_union"), now.join(", "));
        } else {
          assert.ok(now.includes("members_actor_union") && !now.includes("members_actor_hash") && !now.includes("members_union_origin"), now.join(", "));
        }
        await migrateTo(db, PREVIOUS);
        const down = await indexes(db, d.name);
        assert.ok(down.includes("members_actor_union") && !down.includes("members_actor_hash") && !down.includes("members_union_origin"), down.join(", "));
        assert.deepEqual(await answers(db, unions), before, "down");
        if (d.name === "postgres") {
          // Down's index is unique again.
          const m = await db.selectFrom("members").selectAll().where("union_id", "=", a.id).where("state", "=", "active").where("role", "=", "member").limit(1).executeTakeFirstOrThrow();
          await assert.rejects(db.insertInto("members").values({ ...m, id: `${m.id.slice(0, -2)}zz` }).execute(), /members_actor_union/);
        }
        await migrateToLatest(db);
        assert.deepEqual(await indexes(db, d.name), now);
        assert.deepEqual(await answers(db, unions), before, "up again");

        // A join after the upgrade is found by every lookup.
        await seedFollowers(db, a.id, 1, () => ({ origin: "https://s8.example", shared: true }));
        const newcomer = await db.selectFrom("members").select(["id", "actor_id"]).where("union_id", "=", a.id).where("actor_id", "like", "https://s8.example/%").where("state", "=", "active").executeTakeFirstOrThrow();
        assert.equal((await findMemberByActor(db, a.id, newcomer.actor_id!))?.id, newcomer.id);
        assert.equal(await canSeeMembers(db, a, { via: "federation", actorId: "https://s8.example/actor" }), true);

        // One account holds one place in a union, as the unique index kept it (on PostgreSQL a trigger now):
        // a second row, a change of actor or of union onto a taken place are refused; another union takes it.
        const taken = await db.selectFrom("members").selectAll().where("union_id", "=", a.id).where("state", "=", "active").where("role", "=", "member").where("actor_id", "like", "https://s2.example/%").orderBy("id").limit(2).execute();
        const copy = { ...taken[0]!, id: `${taken[0]!.id.slice(0, -3)}dup` };
        await assert.rejects(db.insertInto("members").values(copy).execute(), d.name === "postgres" ? /members_actor_union/ : /UNIQUE/);
        await assert.rejects(db.insertInto("members").values([{ ...copy, id: "x1", actor_id: "https://twice.example/u/x" }, { ...copy, id: "x2", actor_id: "https://twice.example/u/x" }]).execute(), /members_actor_union|UNIQUE/);
        await assert.rejects(db.updateTable("members").set({ actor_id: taken[0]!.actor_id }).where("id", "=", taken[1]!.id).execute(), /members_actor_union|UNIQUE/);
        const inB = await db.selectFrom("members").selectAll().where("union_id", "=", b.id).where("actor_id", "=", shared[0]!.actor_id).executeTakeFirstOrThrow();
        await assert.rejects(db.updateTable("members").set({ union_id: a.id }).where("id", "=", inB.id).execute(), /members_actor_union|UNIQUE/);
        await db.insertInto("members").values({ ...copy, union_id: b.id, id: `${copy.id.slice(0, -3)}inb` }).execute();
        // The cached actor's upsert: a newer fetch replaces the row, an older one is ignored, a new actor is stored; ids stay unique.
        const actor = (await getRemoteActor(db, taken[0]!.actor_id!))!;
        await upsertRemoteActor(db, { ...actor, name: "Newer", type: "Group", fetchedAt: actor.fetchedAt + 1000 });
        await upsertRemoteActor(db, { ...actor, name: "Older", type: "Group", fetchedAt: actor.fetchedAt + 500 });
        assert.deepEqual(await getRemoteActor(db, actor.id), { ...actor, name: "Newer", type: "Group", fetchedAt: actor.fetchedAt + 1000 });
        const fresh = { ...actor, type: "Group" as const, name: "Fresh", id: "https://fresh.example/users/f", inbox: "https://fresh.example/users/f/inbox", sharedInbox: "https://fresh.example/inbox" };
        await upsertRemoteActor(db, fresh);
        assert.deepEqual(await getRemoteActor(db, fresh.id), fresh);
        const stored = await db.selectFrom("remote_actors").selectAll().where("id", "=", fresh.id).executeTakeFirstOrThrow();
        await assert.rejects(db.insertInto("remote_actors").values(stored).execute(), d.name === "postgres" ? /remote_actors_id/ : /UNIQUE/);
        if (d.name === "postgres") {
          // Two transactions adding the same account at once: the second waits for the first and is refused once it commits.
          const row = { ...copy, id: "race1", actor_id: "https://race.example/users/r" };
          let release!: () => void;
          const held = new Promise<void>((r) => (release = r));
          const first = db.transaction().execute(async (trx) => {
            await trx.insertInto("members").values(row).execute();
            await held;
          });
          await new Promise((r) => setTimeout(r, 100));
          const second = db.transaction().execute(async (trx) => trx.insertInto("members").values({ ...row, id: "race2" }).execute());
          await new Promise((r) => setTimeout(r, 200));
          release();
          await first;
          await assert.rejects(second, /members_actor_union/);
          assert.equal((await db.selectFrom("members").select("id").where("actor_id", "=", row.actor_id).execute()).length, 1);
          // Each lookup finds its rows through the new indexes, not by walking the union.
          await sql`analyze members`.execute(db);
          const plan = async (q: ReturnType<typeof sql>) => db.transaction().execute(async (trx) => {
            await sql`set local enable_seqscan = off`.execute(trx);
            return JSON.stringify((await q.execute(trx)).rows);
          });
          // (By union and actor as well: test/member-query-plans.test.ts, with enough members that the plan means something.)
          assert.match(await plan(sql`explain select union_id from members where actor_id = ${newcomer.actor_id} and state in ('active', 'pending')`), /members_actor_hash/);
          assert.match(await plan(sql`explain select * from remote_actors where id = ${fresh.id}`), /remote_actors_id/);
          assert.match(await plan(sql`explain select id from members where union_id = ${a.id} and state = 'active' and actor_id is not null
            and substr(actor_id, 1, strpos(substr(actor_id, 9), '/') + 7) = ${"https://s8.example"} limit 1`), /members_union_origin/);
        }
      } finally {
        await close();
        await tdb.destroy();
      }
    });
  });
}

describe(`a member costs less on postgres (${MIGRATION})`, { skip: dialects.find((x) => x.name === "postgres")!.skip }, () => {
  it("the indexes over actor URLs (members' over actor_id, remote_actors') under 150 bytes a member with actors joining in no URL order", async () => {
    const postgres = dialects.find((x) => x.name === "postgres")!;
    const tdb = await postgres.create();
    const { db, close } = tdb.open();
    try {
      const n = 20_000;
      const union = await createUnion({ db, events: createEventBus(), generateKeys: generateActorKeys }, { slug: "size", name: "S", purpose: "p", leaderHandle: "@lead@size.example" });
      // 400 servers, each member's server cycling: actor URLs arrive in no order, as joins do.
      await seedFollowers(db, union.id, n, (i) => ({ origin: `https://social-${(i * 7919) % 400}.example.net`, shared: true }));
      await sql`vacuum analyze members`.execute(db);
      await sql`vacuum analyze remote_actors`.execute(db);
      const rows = (await sql<{ name: string; b: string }>`select c.relname as name, pg_relation_size(c.oid) as b from pg_index i join pg_class c on c.oid = i.indexrelid
        where i.indrelid = 'members'::regclass and pg_get_indexdef(c.oid) like '%actor_id%'`.execute(db)).rows;
      const actors = Number((await sql<{ b: string }>`select pg_indexes_size('remote_actors') as b`.execute(db)).rows[0]!.b);
      rows.push({ name: "remote_actors' indexes", b: String(actors) });
      const bytes = rows.reduce((s, r) => s + Number(r.b), 0);
      assert.ok(bytes / n < 150, `${(bytes / n).toFixed(1)} bytes per member in the indexes over actor URLs: ${rows.map((r) => `${r.name} ${(Number(r.b) / n).toFixed(1)}`).join(", ")}`);
    } finally {
      await close();
      await tdb.destroy();
    }
  });
});
