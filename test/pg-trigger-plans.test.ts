import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { sql } from "kysely";
import { dialects } from "./helpers/databases.ts";

// Migration 0076 (PostgreSQL): 0054's fan-out trigger functions plan with no
// sequential scan. A plpgsql function keeps its statements' plans for the
// connection; made while members was small, the actor trigger's lookup of an
// actor's memberships scanned all of members on every actor inserted for the
// rest of that connection's life (the storage bench on main: 155 members/s).
// Also checks 0076's fill factors (append-ordered members indexes 100,
// member_origins 50) and the sponsor index narrowed to (sponsor_id).

const postgres = dialects.find((d) => d.name === "postgres")!;

const unionRow = (id: string) => ({
  id, slug: id, name: id, purpose: "p", leader_handle: null, icon_url: null, manually_approves_followers: 1, created_at: 1,
  join_policy: "approval", member_invite_limit: 5, welcome_text: null, members_visibility: "members",
});
const memberRow = (id: string, actorId: string) =>
  ({ id, union_id: "u1", actor_id: actorId, handle: null, state: "active", role: "member", subtree_size: 0, created_at: 1 });
const actorRow = (id: string) => ({ id, type: "Person", handle: null, name: null, inbox: "", shared_inbox: null, fetched_at: 1 });

describe("fan-out trigger plans and fill factors on postgres (0076)", { skip: postgres.skip }, () => {
  it("an actor inserted on a connection whose trigger plans were made while members was small does not scan members", async () => {
    const tdb = await postgres.create();
    const { db, close } = tdb.open();
    try {
      // No autoanalyze in the middle (it would invalidate the cached plans and hide the old behaviour).
      await sql`alter table members set (autovacuum_enabled = false)`.execute(db);
      await db.insertInto("unions").values(unionRow("u1") as never).execute();
      await db.insertInto("members").values(memberRow("m0", "https://a.example/users/0") as never).execute();
      await sql`analyze members`.execute(db);
      await db.connection().execute(async (conn) => {
        // Plans made (custom five times, then generic) while members is one page.
        for (let i = 0; i < 12; i++) await conn.insertInto("remote_actors").values(actorRow(`https://early.example/users/${i}`) as never).execute();
        // members grows without an ANALYZE (as between autovacuum's visits).
        for (let from = 0; from < 6000; from += 2000) {
          await conn.insertInto("members").values(Array.from({ length: 2000 }, (_, k) => memberRow(`m${from + k + 1}`, `https://b${(from + k) % 50}.example/users/${from + k}`)) as never).execute();
        }
        await conn.transaction().execute(async (trx) => {
          for (let i = 0; i < 20; i++) await trx.insertInto("remote_actors").values(actorRow(`https://b${i}.example/users/${i}`) as never).execute();
          const scans = await sql<{ n: string }>`select seq_scan as n from pg_stat_xact_user_tables where relname = 'members'`.execute(trx);
          assert.equal(Number(scans.rows[0]?.n ?? 0), 0, "sequential scans of members while inserting 20 actors");
        });
      });
      // The triggers still count the members those actors serve.
      const counted = await sql<{ n: string }>`select coalesce(sum(members), 0) as n from fanout_targets where union_id = 'u1'`.execute(db);
      assert.equal(Number(counted.rows[0]!.n), 20 * 1, "one member of u1 per actor inserted after it");
    } finally {
      await close();
      await tdb.destroy();
    }
  });

  it("the (actor, union) uniqueness check reads the actor's rows by its hash index, never a union-wide range", async () => {
    const tdb = await postgres.create();
    const { db, close } = tdb.open();
    try {
      await sql`alter table members set (autovacuum_enabled = false)`.execute(db);
      await db.insertInto("unions").values(unionRow("u1") as never).execute();
      for (let from = 0; from < 20_000; from += 2000) {
        await db.insertInto("members").values(Array.from({ length: 2000 }, (_, k) => memberRow(`m${from + k}`, `https://b${(from + k) % 50}.example/users/${from + k}`)) as never).execute();
      }
      // The function's own statement, with the new row's values in place, planned as the function plans it.
      const src = (await sql<{ s: string }>`select prosrc as s from pg_proc where proname = 'members_actor_union_unique'`.execute(db)).rows[0]!.s;
      const query = /if exists \((select 1 from members where .*?)\) then/s.exec(src)?.[1];
      assert.ok(query, src);
      const literal = query.replaceAll("new.actor_id", "'https://b1.example/users/1'").replaceAll("new.union_id", "'u1'").replaceAll("new.id", "'m-new'");
      const plan = await db.connection().execute(async (conn) => {
        await sql`set enable_seqscan = off`.execute(conn);
        return (await sql<{ "QUERY PLAN": string }>`explain ${sql.raw(literal)}`.execute(conn)).rows.map((r) => r["QUERY PLAN"]).join("\n");
      });
      assert.match(plan, /members_actor/);
      assert.doesNotMatch(plan, /members_union|members_pkey|BitmapAnd/, plan);
    } finally {
      await close();
      await tdb.destroy();
    }
  });

  it("the append-ordered members indexes fill their pages; member_origins leaves room for HOT updates", async () => {
    const tdb = await postgres.create();
    const { db, close } = tdb.open();
    try {
      const options = async (name: string) =>
        (await sql<{ o: string[] | null }>`select reloptions as o from pg_class where relname = ${name}`.execute(db)).rows[0]?.o ?? [];
      for (const index of ["members_pkey", "members_union_state_id", "members_union_joined"]) assert.deepEqual(await options(index), ["fillfactor=100"], index);
      assert.deepEqual(await options("member_origins"), ["fillfactor=50"]);
      // A sponsor's recruits by sponsor_id alone (state checked on the rows).
      const sponsorIndexes = (await sql<{ name: string; def: string }>`select indexname as name, indexdef as def from pg_indexes where tablename = 'members' and indexdef like '%sponsor_id%'`.execute(db)).rows;
      assert.deepEqual(sponsorIndexes.map((r) => r.name).sort(), ["members_sponsor", "members_union_roots"]);
      assert.match(sponsorIndexes.find((r) => r.name === "members_sponsor")!.def, /USING btree \(sponsor_id\)$/);
      for (const f of ["fanout_targets_members", "fanout_targets_actors"]) {
        const config = await sql<{ c: string[] | null }>`select proconfig as c from pg_proc where proname = ${f}`.execute(db);
        assert.deepEqual(config.rows[0]?.c, ["enable_seqscan=off"], f);
      }
    } finally {
      await close();
      await tdb.destroy();
    }
  });
});
