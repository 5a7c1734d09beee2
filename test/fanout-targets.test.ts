import { describe, it } from "node:test";
import assert from "node:assert/strict";
import type { Kysely } from "kysely";
import { dialects } from "./helpers/databases.ts";
import { migrateTo, migrateToLatest } from "../src/db/migrate.ts";
import type { DB } from "../src/db/schema.ts";
import { deleteRemoteActor, inboxUrl, upsertRemoteActor } from "../src/actors/remote-actors.ts";

// fanout_targets (migration 0054) is kept by triggers: whatever changes a
// member or a cached actor, the table must equal the distinct inboxes the
// roster gives (shared inbox, else the member's own) with their active
// member counts. Checked against a recomputation from the roster after every
// step of a random walk of joins, leaves, removals, rejoins, Moves, actor
// refetches with changed inboxes, actors cached late and pruned.

const union = (id: string) => ({
  id, slug: id, name: id, purpose: "p", leader_handle: null, icon_url: null, manually_approves_followers: 1, created_at: 1, join_policy: "approval", member_invite_limit: 5, welcome_text: null,
});

/** What the table must hold: from the roster, as federation/followers.ts read it before. */
async function expected(db: Kysely<DB>): Promise<string[]> {
  const rows = await db.selectFrom("members as m").innerJoin("remote_actors as a", "a.id", "m.actor_id")
    .select(["m.union_id", "m.actor_id", "a.inbox", "a.shared_inbox"]).where("m.state", "=", "active").execute();
  const counts = new Map<string, number>();
  for (const r of rows) {
    const shared = inboxUrl(r.actor_id!, r.shared_inbox);
    const target = shared ?? inboxUrl(r.actor_id!, r.inbox);
    if (target === null) continue;
    const k = `${r.union_id} ${target} ${shared === null ? "own" : "shared"}`;
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  return [...counts].map(([k, n]) => `${k} ${n}`).sort();
}

async function actual(db: Kysely<DB>): Promise<string[]> {
  const rows = await db.selectFrom("fanout_targets").select(["union_id", "inbox", "members", "shared"]).execute();
  return rows.map((r) => `${r.union_id} ${r.inbox} ${Number(r.shared) === 1 ? "shared" : "own"} ${r.members}`).sort();
}

/** A small deterministic generator, so a failure replays. */
function rng(seed: number) {
  // mulberry32
  let a = seed;
  return (n: number) => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return Math.floor((((t ^ (t >>> 14)) >>> 0) / 4294967296) * n);
  };
}

for (const d of dialects) {
  describe(`fanout_targets on ${d.name}`, { skip: d.skip }, () => {
    it("0054 backfills the distinct inboxes of active members (shared first, relative and absolute forms), and down and up again work", async () => {
      const tdb = await d.create();
      const { db, close } = tdb.open();
      const any = db as unknown as Kysely<any>;
      const actor = (id: string, inbox: string | null, shared: string | null) => ({ id, type: "Person", handle: null, name: null, inbox, shared_inbox: shared, fetched_at: 1 });
      const member = (id: string, u: string, actorId: string, state = "active") => ({ id, union_id: u, actor_id: actorId, handle: null, state, role: "member", subtree_size: 0, created_at: 1 });
      try {
        await migrateTo(db, "0049_relative_inboxes");
        await any.insertInto("unions").values([union("u1"), union("u2")]).execute();
        await any.insertInto("remote_actors").values([
          actor("https://a.example/users/x", "", "/inbox"),
          actor("https://a.example/users/y", "https://a.example/users/y/inbox", "https://a.example/inbox"),
          actor("http://127.0.0.1:8080/u/z", "/u/z/in", null),
          actor("https://b.example/users/w", "https://c.example/in/w", null),
          actor("https://d.example/users/n", null, null),
        ]).execute();
        await any.insertInto("members").values([
          member("m1", "u1", "https://a.example/users/x"), member("m2", "u1", "https://a.example/users/y"),
          member("m3", "u1", "http://127.0.0.1:8080/u/z"), member("m4", "u1", "https://b.example/users/w", "left"),
          member("m5", "u1", "https://d.example/users/n"), member("m6", "u1", "https://e.example/users/uncached"),
          member("m7", "u2", "https://b.example/users/w"),
        ]).execute();
        await migrateToLatest(db);
        assert.deepEqual(await actual(db), [
          "u1 http://127.0.0.1:8080/u/z/in own 1",
          "u1 https://a.example/inbox shared 2",
          "u2 https://c.example/in/w own 1",
        ]);
        assert.deepEqual(await actual(db), await expected(db));
        await migrateTo(db, "0049_relative_inboxes");
        assert.ok(!(await db.introspection.getTables()).some((t) => t.name === "fanout_targets"));
        // The triggers went with the table: members still change.
        await any.updateTable("members").set({ state: "left" }).where("id", "=", "m1").execute();
        await migrateToLatest(db);
        assert.deepEqual(await actual(db), await expected(db));
      } finally {
        await close();
        await tdb.destroy();
      }
    });

    it("stays equal to the roster's distinct inboxes through joins, leaves, removals, rejoins, Moves and actor refetches", async () => {
      const tdb = await d.create();
      const { db, close } = tdb.open();
      const any = db as unknown as Kysely<any>;
      const next = rng(d.name === "sqlite" ? 7 : 11);
      const unions = ["u1", "u2"];
      const actors = Array.from({ length: 12 }, (_, i) => `https://s${i % 4}.example/users/a${i}`);
      const shapes = (id: string): { inbox: string | null; sharedInbox: string | null } => {
        const origin = id.slice(0, id.indexOf("/", 8));
        return [
          { inbox: `${id}/inbox`, sharedInbox: `${origin}/inbox` },
          { inbox: `${id}/inbox`, sharedInbox: null },
          { inbox: `${origin}/personal/${id.length}`, sharedInbox: `https://relay.example/inbox` },
          { inbox: null, sharedInbox: null },
          { inbox: `https://elsewhere.example/in/${id.slice(-3)}`, sharedInbox: null },
        ][next(5)]!;
      };
      const states = ["active", "active", "active", "left", "removed", "pending"];
      let memberSeq = 0;
      let nonEmpty = 0;
      try {
        await any.insertInto("unions").values(unions.map(union)).execute();
        for (let step = 0; step < 300; step++) {
          const op = next(9) % 7;
          const actorId = actors[next(actors.length)]!;
          const u = unions[next(unions.length)]!;
          const existing = await db.selectFrom("members").select(["id", "state"]).where("union_id", "=", u).where("actor_id", "=", actorId).executeTakeFirst();
          let what: string;
          if (op === 0 || op === 1) {
            // The actor is (re)fetched: cached for the first time, or its inboxes change (an Update, a server move).
            await upsertRemoteActor(db, { id: actorId, type: "Person", handle: null, name: null, ...shapes(actorId), fetchedAt: step });
            what = `refetch ${actorId}`;
          } else if (op === 2) {
            if (existing === undefined) {
              await db.insertInto("members").values({ id: `m${++memberSeq}`, union_id: u, actor_id: actorId, handle: null, state: "active", role: "member", subtree_size: 0, created_at: step } as never).execute();
              what = `join ${actorId} ${u}`;
            } else {
              await db.updateTable("members").set({ state: "active" }).where("id", "=", existing.id).execute();
              what = `rejoin ${existing.id}`;
            }
          } else if (op === 3 && existing !== undefined) {
            const state = states[next(states.length)]!;
            await db.updateTable("members").set({ state }).where("id", "=", existing.id).execute();
            what = `${existing.id} ${existing.state} -> ${state}`;
          } else if (op === 4 && existing !== undefined) {
            // A Move: the membership follows the account to its new actor.
            const to = actors[next(actors.length)]!;
            const taken = await db.selectFrom("members").select("id").where("union_id", "=", u).where("actor_id", "=", to).executeTakeFirst();
            if (taken !== undefined) continue;
            await db.updateTable("members").set({ actor_id: to }).where("id", "=", existing.id).execute();
            what = `move ${existing.id} to ${to}`;
          } else if (op === 5) {
            await deleteRemoteActor(db, actorId);
            what = `prune ${actorId}`;
          } else if (op === 6 && existing !== undefined) {
            await db.deleteFrom("members").where("id", "=", existing.id).execute();
            what = `delete ${existing.id}`;
          } else {
            continue;
          }
          const now = await actual(db);
          assert.deepEqual(now, await expected(db), `after step ${step}: ${what}`);
          if (now.length > 2) nonEmpty++;
        }
        assert.ok(nonEmpty > 100, `the walk compared non-empty tables ${nonEmpty} times`);
      } finally {
        await close();
        await tdb.destroy();
      }
    });
  });
}
