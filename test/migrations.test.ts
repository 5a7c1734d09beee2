import { readdirSync } from "node:fs";
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { type Kysely, sql } from "kysely";
import { dialects } from "./helpers/databases.ts";
import { migrateTo, migrateToLatest } from "../src/db/migrate.ts";
import { getRemoteActor, remoteActorRow } from "../src/actors/remote-actors.ts";
import { getMember, storedFollowId } from "../src/members/members.ts";

for (const d of dialects) {
  describe(`migrations on ${d.name}`, { skip: d.skip }, () => {
    it("create every table, and a second run is a no-op", async () => {
      const tdb = await d.create();
      const { db, close } = tdb.open();
      try {
        const again = await migrateToLatest(db);
        assert.deepEqual(again.results, []);
        const tables = (await db.introspection.getTables()).map((t) => t.name).sort();
        for (const t of ["unions", "actor_keys", "remote_actors", "inbox_activities", "fedify_kv", "fedify_mq", "fedify_mq_dead"]) {
          assert.ok(tables.includes(t), `missing table ${t}`);
        }
        // The auto-increment spelling differs per dialect: both must hand out ids.
        const now = Date.now();
        const ids = [];
        for (let i = 0; i < 2; i++) {
          const r = await db.insertInto("fedify_mq").values({ queue: "q", message: "{}", available_at: now, attempts: 0, created_at: now })
            .returning("id").executeTakeFirstOrThrow();
          ids.push(r.id);
        }
        assert.ok(ids[1]! > ids[0]!);
        const big = await sql<{ n: number }>`select created_at as n from fedify_mq limit 1`.execute(db);
        assert.equal(typeof big.rows[0]!.n, "number");
      } finally {
        await close();
        await tdb.destroy();
      }
    });

    it("0090: a queued message is compressed with lz4 on PostgreSQL (pglz before, and after down); a message stored before it reads back the same", { skip: d.name !== "postgres" && "PostgreSQL's TOAST compression" }, async () => {
      const tdb = await d.create();
      const { db, close } = tdb.open();
      const files = readdirSync(new URL("../migrations/", import.meta.url)).filter((f) => /^\d{4}_.*\.ts$/.test(f)).sort().map((f) => f.replace(/\.ts$/, ""));
      const lz4 = files.find((f) => f.startsWith("0090_"))!;
      const before = files.filter((f) => f < lz4).at(-1)!;
      // A join's Accept and welcome in one message are over the 2 KB at which PostgreSQL compresses a row's text.
      const message = JSON.stringify({ type: "outbox", activity: { content: "Welcome to Riders United! ".repeat(120) } });
      const queue = async (q: string) => {
        await db.insertInto("fedify_mq").values({ queue: q, message, available_at: 0, attempts: 0, created_at: 0 }).execute();
        return (await sql<{ c: string; m: string }>`select pg_column_compression(message) as c, message as m from fedify_mq where queue = ${q}`.execute(db)).rows[0]!;
      };
      try {
        await migrateTo(db, before);
        assert.deepEqual(await queue("before"), { c: "pglz", m: message });
        await migrateTo(db, lz4);
        assert.deepEqual(await queue("after"), { c: "lz4", m: message });
        assert.deepEqual((await sql<{ c: string; m: string }>`select pg_column_compression(message) as c, message as m from fedify_mq where queue = 'before'`.execute(db)).rows[0], { c: "pglz", m: message }, "a stored row kept as it was");
        await migrateTo(db, before);
        assert.equal((await queue("down")).c, "pglz");
        await migrateToLatest(db);
      } finally {
        await close();
        await tdb.destroy();
      }
    });

    it("0036: the commitment counters start from the responses already recorded", async () => {
      const tdb = await d.create();
      const { db, close } = tdb.open();
      try {
        await migrateTo(db, "0031_featured_collections");
        await db.insertInto("unions").values({
          id: "u", slug: "u", name: "u", purpose: "p", leader_handle: null, icon_url: null, manually_approves_followers: 1, created_at: 1,
          join_policy: "approval", member_invite_limit: 5, welcome_text: null,
        } as never).execute();
        const action = (id: string, seq: number) => ({
          id, union_id: "u", seq, title: "t", body_md: "b", body_html: "<p>b</p>", kind: "other", link: null, goal: 2, deadline: null, state: "published",
          created_by: null, created_at: 1, published_at: 1, updated_at: null, retracted_at: null, goal_reached_at: null, closed_at: null,
        });
        await db.insertInto("actions").values([action("a1", 1), action("a2", 2)] as never).execute();
        let n = 0;
        const response = (actionId: string, member: string, kind: string, undone: number | null = null) => ({
          id: `r${++n}`, action_id: actionId, union_id: "u", member_id: member, kind, source: "like", source_id: `s${n}`, content: null, created_at: 1, undone_at: undone,
        });
        await db.insertInto("action_responses").values([
          response("a1", "ann", "commit"), response("a1", "ann", "done"), // one member, two standing commitments
          response("a1", "bob", "commit", 5), // withdrawn
          response("a1", "cat", "comment"), response("a1", "cat", "boost"), // not commitments
          response("a1", "dan", "commit"),
          response("a2", "bob", "done"),
        ] as never).execute();
        await migrateToLatest(db);
        const committers = await db.selectFrom("action_committers").select(["action_id", "member_id", "standing"]).orderBy("action_id").orderBy("member_id").execute();
        assert.deepEqual(committers.map((c) => [c.action_id, c.member_id, Number(c.standing)]), [["a1", "ann", 2], ["a1", "dan", 1], ["a2", "bob", 1]]);
        const counts = await db.selectFrom("actions").select(["id", "committers"]).orderBy("id").execute();
        assert.deepEqual(counts.map((c) => [c.id, Number(c.committers)]), [["a1", 2], ["a2", 1]]);
        await migrateTo(db, "0031_featured_collections");
        await migrateToLatest(db);
      } finally {
        await close();
        await tdb.destroy();
      }
    });

    it("0038: one index on (actor_id, union_id) keeps an account a member once per union and serves both lookups", async () => {
      const tdb = await d.create();
      const { db, close } = tdb.open();
      const union = (id: string) => ({
        id, slug: id, name: id, purpose: "p", leader_handle: null, icon_url: null, manually_approves_followers: 1, created_at: 1,
        join_policy: "approval", member_invite_limit: 5, welcome_text: null,
      });
      const member = (id: string, unionId: string, actorId: string) => ({ id, union_id: unionId, actor_id: actorId, handle: null, state: "active", role: "member", subtree_size: 0, created_at: 1 });
      try {
        await db.insertInto("unions").values([union("u1"), union("u2")] as never).execute();
        await db.insertInto("members").values([member("m1", "u1", "https://a.example/users/x"), member("m2", "u2", "https://a.example/users/x")] as never).execute();
        await assert.rejects(db.insertInto("members").values(member("m3", "u1", "https://a.example/users/x") as never).execute(), "the same account twice in one union is refused");
        const indexes = d.name === "sqlite"
          ? (await sql<{ name: string }>`select name from sqlite_master where type = 'index' and tbl_name = 'members'`.execute(db)).rows.map((r) => r.name)
          : (await sql<{ name: string }>`select indexname as name from pg_indexes where tablename = 'members'`.execute(db)).rows.map((r) => r.name);
        if (d.name === "sqlite") {
          assert.ok(indexes.includes("members_actor_union"));
          assert.ok(!indexes.includes("members_actor") && !indexes.includes("members_union_actor"), "the two indexes it replaces are gone");
        } else {
          // 0074: PostgreSQL keeps it once per union by a trigger, and looks actors up by a hash index.
          assert.ok(!indexes.includes("members_actor_union") && indexes.includes("members_actor") && !indexes.includes("members_union_actor"));
        }
        if (d.name === "sqlite") {
          const plan = async (q: ReturnType<typeof sql>) => JSON.stringify((await q.execute(db)).rows);
          assert.match(await plan(sql`explain query plan select id from members where union_id = ${"u1"} and actor_id = ${"https://a.example/users/x"}`), /members_actor_union/);
          assert.match(await plan(sql`explain query plan select union_id from members where actor_id = ${"https://a.example/users/x"}`), /members_actor_union/);
        }
        await migrateTo(db, "0031_featured_collections");
        await migrateToLatest(db);
      } finally {
        await close();
        await tdb.destroy();
      }
    });

    it("0049: inboxes stored relative to the actor id read back the same, on both schemes; another origin's stays absolute; down restores them", async () => {
      const tdb = await d.create();
      const { db, close } = tdb.open();
      const actor = (id: string, inbox: string | null, shared: string | null) => ({ id, type: "Person", handle: null, name: null, inbox, shared_inbox: shared, fetched_at: 1 });
      const rows = [
        actor("https://a.example/users/x", "https://a.example/users/x/inbox", "https://a.example/inbox"),
        actor("http://127.0.0.1:8080/u/y", "http://127.0.0.1:8080/u/y/in", "http://127.0.0.1:8080/shared"),
        actor("https://b.example/users/z", "https://c.example/inboxes/z", "https://c.example/inbox"),
        actor("https://d.example/users/n", null, null),
      ];
      const read = async () => db.selectFrom("remote_actors").select(["id", "inbox", "shared_inbox"]).orderBy("id").execute();
      try {
        await migrateTo(db, "0048_members_narrow_indexes");
        await db.insertInto("remote_actors").values(rows).execute();
        const before = await read();
        await migrateToLatest(db);
        assert.deepEqual((await read()).map((r) => [r.inbox, r.shared_inbox]), [
          ["/u/y/in", "/shared"], ["", "/inbox"], ["https://c.example/inboxes/z", "https://c.example/inbox"], [null, null],
        ]);
        for (const r of rows) {
          const a = await getRemoteActor(db, r.id);
          assert.deepEqual([a?.inbox, a?.sharedInbox], [r.inbox, r.shared_inbox], r.id);
        }
        await migrateTo(db, "0048_members_narrow_indexes");
        assert.deepEqual(await read(), before);
        await migrateToLatest(db);
      } finally {
        await close();
        await tdb.destroy();
      }
    });

    it("0046-0048: cached actors keep their kept fields, members their rows; a replaced or deleted member's Follow id is recorded; down and up again work", async () => {
      const tdb = await d.create();
      const { db, close } = tdb.open();
      const any = db as unknown as Kysely<any>;
      const union = { id: "u1", slug: "u1", name: "u1", purpose: "p", leader_handle: null, icon_url: null, manually_approves_followers: 1, created_at: 1, join_policy: "approval", member_invite_limit: 5, welcome_text: null };
      const member = (id: string, actor: string, follow: string | null) => ({ id, union_id: "u1", actor_id: actor, handle: `@${id}@a.example`, state: "active", role: "member", subtree_size: 0, follow_id: follow, created_at: 1 });
      const recorded = async () => (await db.selectFrom("inbox_activities").select(["id", "type", "actor", "union_id"]).orderBy("id").execute()).map((r) => [r.id, r.type, r.actor, r.union_id]);
      try {
        await migrateTo(db, "0045_spends_and_crowdfund_votes");
        await any.insertInto("unions").values(union).execute();
        await any.insertInto("remote_actors").values({
          id: "https://a.example/users/x", type: "Person", handle: "@x@a.example", preferred_username: "x", name: "X", summary: "<p>bio</p>",
          url: "https://a.example/@x", avatar_url: "https://a.example/x.png", inbox: "https://a.example/users/x/inbox", shared_inbox: "https://a.example/inbox", fetched_at: 5,
        }).execute();
        await any.insertInto("members").values([member("m1", "https://a.example/users/x", "https://a.example/follow/1"), member("m2", "https://a.example/users/y", "https://a.example/follow/2")]).execute();
        await migrateToLatest(db);

        // 0049 stores the inboxes relative to the id: "" for `${id}/inbox`, a path on the id's origin; 0057 the id's usual handle as "".
        // (On PostgreSQL the row also has 0075's columns for the actor's cached key, empty here.)
        assert.deepEqual(await db.selectFrom("remote_actors").select(["id", "type", "handle", "name", "inbox", "shared_inbox", "fetched_at"]).execute(), [{
          id: "https://a.example/users/x", type: "Person", handle: "", name: null, inbox: "", shared_inbox: "/inbox", fetched_at: 5,
        }]);
        assert.equal((await getRemoteActor(db, "https://a.example/users/x"))?.handle, "@x@a.example");
        assert.deepEqual([(await getRemoteActor(db, "https://a.example/users/x"))?.inbox, (await getRemoteActor(db, "https://a.example/users/x"))?.sharedInbox],
          ["https://a.example/users/x/inbox", "https://a.example/inbox"]);
        assert.deepEqual(await recorded(), [], "a current Follow needs no record");
        await db.updateTable("members").set({ follow_id: "https://a.example/follow/3" }).where("id", "=", "m1").execute();
        await db.updateTable("members").set({ handle: "@m1@b.example" }).where("id", "=", "m1").execute();
        await db.deleteFrom("members").where("id", "=", "m2").execute();
        assert.deepEqual(await recorded(), [
          ["https://a.example/follow/1", "Follow", "https://a.example/users/x", "u1"],
          ["https://a.example/follow/2", "Follow", "https://a.example/users/y", "u1"],
        ], "the replaced and the deleted member's Follow ids, once each");
        const at = await db.selectFrom("inbox_activities").select("received_at").executeTakeFirstOrThrow();
        assert.ok(Math.abs(Number(at.received_at) - Date.now()) < 60_000, "recorded now, in epoch milliseconds");
        await db.updateTable("members").set({ follow_id: null }).where("id", "=", "m1").execute();
        assert.equal((await recorded()).length, 3, "leaving records the Follow too");

        const indexes = d.name === "sqlite"
          ? (await sql<{ name: string }>`select name from sqlite_master where type = 'index' and tbl_name in ('members', 'remote_actors')`.execute(db)).rows.map((r) => r.name)
          : (await sql<{ name: string }>`select indexname as name from pg_indexes where tablename in ('members', 'remote_actors')`.execute(db)).rows.map((r) => r.name);
        for (const gone of ["members_union_state", "members_union_handle", "members_union_created", "remote_actors_handle"]) assert.ok(!indexes.includes(gone), gone);
        for (const kept of ["members_handle", "members_union_joined", "members_union_state_id"]) assert.ok(indexes.includes(kept), kept);
        // The tree's sponsor index differs: SQLite (no statistics) needs created_at to find the roots in order.
        // On PostgreSQL 0056 replaces (union_id, sponsor_id, state) by (sponsor_id, state) and a partial index of the roots.
        // 0076 narrows that to (sponsor_id).
        assert.ok(indexes.includes(d.name === "sqlite" ? "members_union_sponsor_created" : "members_sponsor"));

        await migrateTo(db, "0045_spends_and_crowdfund_votes");
        await db.updateTable("members").set({ follow_id: "https://a.example/follow/4" }).where("id", "=", "m1").execute();
        assert.equal((await recorded()).length, 3, "down removes the triggers");
        await migrateToLatest(db);
      } finally {
        await close();
        await tdb.destroy();
      }
    });

    it("0056: on PostgreSQL, handles in a hash index and recruits by (sponsor_id, state), roots in a partial index; the same rows found; down restores 0048's", async () => {
      const tdb = await d.create();
      const { db, close } = tdb.open();
      const union = (id: string) => ({ id, slug: id, name: id, purpose: "p", leader_handle: null, icon_url: null, manually_approves_followers: 1, created_at: 1, join_policy: "approval", member_invite_limit: 5, welcome_text: null });
      const member = (id: string, unionId: string, sponsor: string | null, handle: string | null, state = "active") =>
        ({ id, union_id: unionId, actor_id: handle ? `https://a.example/users/${id}` : null, handle, state, role: "member", sponsor_id: sponsor, subtree_size: 0, created_at: Number(id.slice(1)) });
      const indexes = async () => d.name === "sqlite"
        ? Object.fromEntries((await sql<{ name: string; sql: string }>`select name, sql from sqlite_master where type = 'index' and tbl_name = 'members' and sql is not null`.execute(db)).rows.map((r) => [r.name, r.sql]))
        : Object.fromEntries((await sql<{ name: string; sql: string }>`select indexname as name, indexdef as sql from pg_indexes where tablename = 'members'`.execute(db)).rows.map((r) => [r.name, r.sql]));
      // What the tree, sign-in and invites ask, read the same before and after.
      const answers = async () => ({
        byHandle: (await db.selectFrom("members").select("id").where("union_id", "=", "u1").where("handle", "=", "@m2@a.example").execute()).map((r) => r.id),
        noHandle: (await db.selectFrom("members").select("id").where("handle", "=", "@nobody@a.example").execute()).length,
        recruits: (await db.selectFrom("members").select("id").where("union_id", "=", "u1").where("sponsor_id", "=", "m1").where("state", "in", ["active", "left"]).orderBy("id").execute()).map((r) => r.id),
        roots: (await db.selectFrom("members").select("id").where("union_id", "=", "u1").where("sponsor_id", "is", null).where("state", "in", ["active", "reserved"]).orderBy("created_at").execute()).map((r) => r.id),
      });
      // With enable_seqscan off the planner takes an index when one can answer; the plan names it.
      const planOf = async (q: string) => {
        return await db.transaction().execute(async (trx) => {
          await sql`set local enable_seqscan = off`.execute(trx);
          return (await sql<{ "QUERY PLAN": string }>`explain ${sql.raw(q)}`.execute(trx)).rows.map((r) => r["QUERY PLAN"]).join("\n");
        });
      };
      try {
        await migrateTo(db, "0049_relative_inboxes");
        await db.insertInto("unions").values([union("u1"), union("u2")] as never).execute();
        await db.insertInto("members").values([
          member("m1", "u1", null, "@m1@a.example"), member("m2", "u1", "m1", "@m2@a.example"), member("m3", "u1", "m1", "@m3@a.example", "left"),
          member("m4", "u1", "m2", "@m4@a.example"), member("m5", "u1", null, null, "reserved"), member("m6", "u2", null, "@m2@a.example"),
          member("m7", "u1", "m1", "@m7@a.example", "removed"),
        ] as never).execute();
        const before = await answers();
        assert.deepEqual(before, { byHandle: ["m2"], noHandle: 0, recruits: ["m2", "m3"], roots: ["m1", "m5"] });
        const old = await indexes();
        // 0063 changes SQLite's, and its own test checks them.
        await migrateTo(db, "0058_relative_follow_ids");
        assert.deepEqual(await answers(), before);
        const now = await indexes();
        if (d.name === "sqlite") {
          assert.deepEqual(now, old, "SQLite's indexes are unchanged");
        } else {
          assert.match(now.members_handle!, /USING hash \(handle\)/);
          assert.match(now.members_sponsor_state!, /USING btree \(sponsor_id, state\)/);
          assert.match(now.members_union_roots!, /\(union_id, sponsor_id, state\) WHERE \(sponsor_id IS NULL\)/);
          assert.equal(now.members_union_sponsor, undefined, "the union-wide sponsor index is gone");
          assert.match(await planOf("select id from members where union_id = 'u1' and handle = '@m2@a.example'"), /members_handle/);
          assert.match(await planOf("select id from members where union_id = 'u1' and sponsor_id = 'm1' and state in ('active', 'left')"), /members_sponsor_state/);
          assert.match(await planOf("select id from members where union_id = 'u1' and sponsor_id is null and state in ('active', 'reserved')"), /members_union_roots/);
          // A member joining and one becoming a root are found through the new indexes.
          await db.insertInto("members").values([member("m8", "u1", "m4", "@m8@a.example"), member("m9", "u1", null, "@m9@a.example")] as never).execute();
          assert.deepEqual((await db.selectFrom("members").select("id").where("sponsor_id", "=", "m4").execute()).map((r) => r.id), ["m8"]);
          assert.deepEqual((await db.selectFrom("members").select("id").where("handle", "=", "@m9@a.example").execute()).map((r) => r.id), ["m9"]);
          await db.deleteFrom("members").where("id", "in", ["m8", "m9"]).execute();
        }
        await migrateTo(db, "0049_relative_inboxes");
        assert.deepEqual(await indexes(), old, "down restores the indexes as they were");
        assert.deepEqual(await answers(), before);
        await migrateToLatest(db);
      } finally {
        await close();
        await tdb.destroy();
      }
    });

    it("0057: cached handles equal to the id's usual handle are stored as \"\", as the code stores them; each reads back as it was; down restores them", async () => {
      const tdb = await d.create();
      const { db, close } = tdb.open();
      // [id, handle]: the usual Mastodon shape, and every way of not being it.
      const cases: [string, string | null][] = [
        ["https://social.example/users/alice", "@alice@social.example"],
        ["https://social.example:8443/users/bob", "@bob@social.example:8443"],
        ["https://x.example/@carol", "@@carol@x.example"],
        ["https://x.example/carol", "@carol@x.example"],
        ["https://misskey.example/users/9abcdef", "@dave@misskey.example"],
        ["https://split.example/users/erin", "@erin@example"],
        ["https://social.example/users/alice/", "@alice@social.example"],
        ["https://social.example", "@social.example@social.example"],
        ["https://social.example/users/frank?x=1", "@frank?x=1@social.example"],
        ["https://social.example/users/gina", "@Gina@social.example"],
        ["https://bücher.example/users/jürgen", "@jürgen@bücher.example"],
        ["https://a.example/users/h", "@h@b.example"],
        ["https://a.example/x://y/users/ivan", "@ivan@a.example"],
        ["https://a.example/users/evil@b.example", "@evil@b.example@a.example"],
        ["tag:a.example,2026:users/kim", "@kim@a.example"],
        ["https://a.example/users/nobody", null],
      ];
      const row = ([id, handle]: [string, string | null], i: number) => ({ id, type: "Person", handle, name: null, inbox: "", shared_inbox: null, fetched_at: i });
      const stored = async () => Object.fromEntries((await db.selectFrom("remote_actors").select(["id", "handle"]).execute()).map((r) => [r.id, r.handle]));
      try {
        await migrateTo(db, "0056_pg_narrow_member_indexes");
        await db.insertInto("remote_actors").values(cases.map(row) as never).execute();
        const before = await stored();
        await migrateToLatest(db);
        const after = await stored();
        // What remoteActorRow writes for the same actor, row for row.
        for (const [id, handle] of cases) {
          assert.equal(after[id], remoteActorRow({ id, type: "Person", handle, name: null, inbox: null, sharedInbox: null, fetchedAt: 0 }).handle, id);
          assert.equal((await getRemoteActor(db, id))!.handle, handle, id);
        }
        assert.deepEqual(cases.filter(([id]) => after[id] === "").map(([id]) => id), [
          "https://social.example/users/alice", "https://social.example:8443/users/bob", "https://x.example/@carol", "https://x.example/carol",
          "https://social.example/users/frank?x=1", "https://bücher.example/users/jürgen", "https://a.example/x://y/users/ivan", "https://a.example/users/evil@b.example",
        ]);
        await migrateTo(db, "0056_pg_narrow_member_indexes");
        assert.deepEqual(await stored(), before, "down writes every handle back as it was");
        await migrateToLatest(db);
      } finally {
        await close();
        await tdb.destroy();
      }
    });

    it("0058: members' Follow ids stored relative to their actor's origin, as the code stores them; nothing recorded by the rewrite; the triggers record them absolute; down restores them", async () => {
      const tdb = await d.create();
      const { db, close } = tdb.open();
      const union = { id: "u1", slug: "u1", name: "u1", purpose: "p", leader_handle: null, icon_url: null, manually_approves_followers: 1, created_at: 1, join_policy: "approval", member_invite_limit: 5, welcome_text: null };
      // [member id, actor, Follow id]
      const cases: [string, string | null, string | null][] = [
        ["m1", "https://social.example/users/alice", "https://social.example/0a5a7c83-5c1c-4e2e-9b59-4c3f1b0d1f0e"],
        ["m2", "https://social.example:8443/users/bob", "https://social.example:8443/users/bob/follow/01HXYZ"],
        ["m3", "https://social.example/users/carol", "https://social.example:8443/follows/1"],
        ["m4", "https://social.example/users/dave", "https://other.example/follows/1"],
        ["m5", "http://plain.example/users/erin", "http://plain.example/activities/2"],
        ["m6", "https://social.example/users/frank", "https://social.example.evil/follows/3"],
        ["m7", "https://social.example/users/gina", "https://social.example"],
        ["m8", "https://social.example/users/hal", "https://social.example/"],
        ["m9", "https://social.example/users/ivy", "f-local-9"],
        ["m10", "https://bücher.example/users/jürgen", "https://bücher.example/föllow/10"],
        ["m11", null, null],
        ["m12", "https://social.example/users/kim", null],
      ];
      const stored = async () => Object.fromEntries((await db.selectFrom("members").select(["id", "follow_id"]).execute()).map((r) => [r.id, r.follow_id]));
      const recorded = async () => (await db.selectFrom("inbox_activities").select(["id", "actor"]).orderBy("id").execute()).map((r) => [r.id, r.actor]);
      try {
        await migrateTo(db, "0057_usual_handles");
        await db.insertInto("unions").values(union as never).execute();
        await db.insertInto("members").values(cases.map(([id, actor, follow], i) => ({ id, union_id: "u1", actor_id: actor, handle: null, state: actor ? "active" : "reserved", role: "member", sponsor_id: null, subtree_size: 0, follow_id: follow, created_at: i })) as never).execute();
        const before = await stored();
        await migrateToLatest(db);
        const after = await stored();
        for (const [id, actor, follow] of cases) {
          assert.equal(after[id], storedFollowId(actor, follow), id);
          assert.equal((await getMember(db, "u1", id))!.followId, follow, id);
        }
        assert.deepEqual([after.m1, after.m2, after.m5, after.m8], ["/0a5a7c83-5c1c-4e2e-9b59-4c3f1b0d1f0e", "/users/bob/follow/01HXYZ", "/activities/2", "/"]);
        assert.deepEqual(await recorded(), [], "rewriting the stored form records no Follow");
        const fillfactor = async () => d.name === "sqlite" ? null
          : (await sql<{ o: string[] | null }>`select reloptions as o from pg_class where relname = 'fanout_targets'`.execute(db)).rows[0]!.o;
        assert.deepEqual(await fillfactor(), d.name === "sqlite" ? null : ["fillfactor=50"], "PostgreSQL: half of each fanout_targets page left for its counts' updates");

        // A Move to another server with the same Follow: stored whole for the new actor, and no Follow was superseded.
        await db.updateTable("members").set({ actor_id: "https://new.example/users/alice", follow_id: storedFollowId("https://new.example/users/alice", before.m1!) }).where("id", "=", "m1").execute();
        assert.equal((await stored()).m1, before.m1);
        assert.deepEqual(await recorded(), []);
        // A new Follow replaces m2's, and m5 is deleted: each old Follow recorded absolute, with its actor.
        await db.updateTable("members").set({ follow_id: storedFollowId(cases[1]![1], "https://social.example:8443/follows/new") }).where("id", "=", "m2").execute();
        await db.deleteFrom("members").where("id", "=", "m5").execute();
        assert.deepEqual(await recorded(), [[before.m5, cases[4]![1]], [before.m2, cases[1]![1]]].sort((a, b) => (a[0]! < b[0]! ? -1 : 1)));

        await migrateTo(db, "0057_usual_handles");
        const down = await stored();
        assert.equal(down.m2, "https://social.example:8443/follows/new");
        assert.equal(await fillfactor(), null);
        for (const id of ["m3", "m4", "m6", "m7", "m8", "m9", "m10", "m11", "m12"]) assert.equal(down[id], before[id], id);
        // 0047's triggers as they were: compared as stored, recorded as stored.
        await db.deleteFrom("inbox_activities").execute();
        await db.updateTable("members").set({ follow_id: "https://social.example/follows/again" }).where("id", "=", "m10").execute();
        assert.deepEqual(await recorded(), [[before.m10, cases[9]![1]]]);
        await migrateToLatest(db);
      } finally {
        await close();
        await tdb.destroy();
      }
    });

    it("0063: the role index holds the leader and officers only; the same rows found, through it; down restores it", async () => {
      const tdb = await d.create();
      const { db, close } = tdb.open();
      const union = (id: string) => ({ id, slug: id, name: id, purpose: "p", leader_handle: null, icon_url: null, manually_approves_followers: 1, created_at: 1, join_policy: "approval", member_invite_limit: 5, welcome_text: null });
      const member = (id: string, unionId: string, sponsor: string | null, role: string, state = "active") =>
        ({ id, union_id: unionId, actor_id: `https://a.example/users/${id}`, handle: `@${id}@a.example`, state, role, sponsor_id: sponsor, subtree_size: 0, created_at: Number(id.slice(1)) });
      const indexes = async () => d.name === "sqlite"
        ? Object.fromEntries((await sql<{ name: string; sql: string }>`select name, sql from sqlite_master where type = 'index' and tbl_name = 'members' and sql is not null`.execute(db)).rows.map((r) => [r.name, r.sql]))
        : Object.fromEntries((await sql<{ name: string; sql: string }>`select indexname as name, indexdef as sql from pg_indexes where tablename = 'members'`.execute(db)).rows.map((r) => [r.name, r.sql]));
      const officers = (q: ReturnType<typeof db.selectFrom<"members">>) => q.where("role", "<>", sql.lit("member"));
      const answers = async () => ({
        leader: (await officers(db.selectFrom("members")).select("id").where("union_id", "=", "u1").where("role", "=", "leader").execute()).map((r) => r.id),
        cabinet: (await officers(db.selectFrom("members")).select("id").where("union_id", "=", "u1").where("state", "=", "active").where("role", "in", ["leader", "officer"]).orderBy("id").execute()).map((r) => r.id),
        recruits: (await db.selectFrom("members").select("id").where("union_id", "=", "u1").where("sponsor_id", "=", "m1").where("state", "in", ["active", "left"]).orderBy("id").execute()).map((r) => r.id),
        roots: (await db.selectFrom("members").select("id").where("union_id", "=", "u1").where("sponsor_id", "is", null).where("state", "in", ["active", "reserved"]).orderBy("created_at").execute()).map((r) => r.id),
      });
      const planOf = async (q: string) => d.name === "sqlite"
        ? (await sql<{ detail: string }>`explain query plan ${sql.raw(q)}`.execute(db)).rows.map((r) => r.detail).join("\n")
        : await db.transaction().execute(async (trx) => {
          await sql`set local enable_seqscan = off`.execute(trx);
          return (await sql<{ "QUERY PLAN": string }>`explain ${sql.raw(q)}`.execute(trx)).rows.map((r) => r["QUERY PLAN"]).join("\n");
        });
      try {
        await migrateTo(db, "0058_relative_follow_ids");
        await db.insertInto("unions").values([union("u1"), union("u2")] as never).execute();
        const rows = [
          member("m1", "u1", null, "leader"), member("m2", "u1", "m1", "officer"), member("m3", "u1", "m1", "member", "left"),
          member("m4", "u1", "m2", "member"), member("m5", "u1", null, "member", "reserved"), member("m6", "u2", null, "leader"),
          member("m7", "u1", "m1", "officer", "removed"),
        ];
        for (let i = 10; i < 60; i++) rows.push(member(`m${i}`, "u1", "m4", "member"));
        await db.insertInto("members").values(rows as never).execute();
        const before = await answers();
        assert.deepEqual(before, { leader: ["m1"], cabinet: ["m1", "m2"], recruits: ["m2", "m3"], roots: ["m1", "m5"] });
        const old = await indexes();
        await migrateToLatest(db);
        assert.deepEqual(await answers(), before);
        const now = await indexes();
        assert.equal(now.members_union_role, undefined);
        assert.match(now.members_union_officers!, /\(union_id, role\) WHERE \(?\(?role\)?(::text)? <> '?member'?/i);
        // PostgreSQL: 0074 replaced members_actor_union by members_actor (a hash index), 0076 members_sponsor_state by members_sponsor.
        const later = d.name === "postgres" ? ["members_actor", "members_actor_union", "members_sponsor", "members_sponsor_state"] : [];
        // PostgreSQL: 0076 set the append-ordered indexes' fill factor to 100 (same columns).
        for (const [name, def] of Object.entries(now)) if (name !== "members_union_officers" && !later.includes(name)) assert.equal(def.replace(/ WITH \(fillfactor='100'\)$/, ""), old[name], name);
        if (d.name === "sqlite") {
          // Only the leaders and officers are in it (both unions').
          const entries = Number((await sql<{ n: number }>`select count(*) as n from members indexed by members_union_officers where role <> 'member'`.execute(db)).rows[0]!.n);
          assert.equal(entries, 4);
        }
        assert.match(await planOf("select id from members where union_id = 'u1' and role = 'leader' and role <> 'member'"), /members_union_officers/);
        assert.match(await planOf("select id from members where union_id = 'u1' and role in ('leader', 'officer') and role <> 'member'"), /members_union_officers/);
        // A new officer and a new root are found.
        await db.insertInto("members").values([member("m70", "u1", "m4", "officer"), member("m71", "u1", null, "member")] as never).execute();
        assert.deepEqual((await answers()).cabinet, ["m1", "m2", "m70"]);
        assert.deepEqual((await answers()).roots, ["m1", "m5", "m71"]);
        await db.deleteFrom("members").where("id", "in", ["m70", "m71"]).execute();

        await migrateTo(db, "0058_relative_follow_ids");
        assert.deepEqual(await indexes(), old, "down restores the indexes as they were");
        assert.deepEqual(await answers(), before);
        await migrateToLatest(db);
        assert.deepEqual(await answers(), before);
      } finally {
        await close();
        await tdb.destroy();
      }
    });

    it("0007: new unions default to the strict roster setting; existing unions keep theirs", async () => {
      const tdb = await d.create();
      const { db, close } = tdb.open();
      const union = (id: string, visibility?: string) => ({
        id, slug: id, name: id, purpose: "p", leader_handle: null, icon_url: null, manually_approves_followers: 1, created_at: 1,
        join_policy: "approval", member_invite_limit: 5, welcome_text: null, ...(visibility ? { members_visibility: visibility } : {}),
      });
      const visibilityOf = async (id: string) =>
        (await db.selectFrom("unions").select("members_visibility").where("id", "=", id).executeTakeFirstOrThrow()).members_visibility;
      try {
        await migrateTo(db, "0006_queue_claim_order");
        await db.insertInto("unions").values(union("old-default") as never).execute();
        await db.insertInto("unions").values(union("old-officers", "officers") as never).execute();
        await db.insertInto("unions").values(union("old-public", "public") as never).execute();
        assert.equal(await visibilityOf("old-default"), "members");
        await migrateToLatest(db);
        assert.equal(await visibilityOf("old-default"), "members", "what members were told when they joined stays true");
        assert.equal(await visibilityOf("old-officers"), "officers");
        assert.equal(await visibilityOf("old-public"), "public");
        await db.insertInto("unions").values(union("new") as never).execute();
        assert.equal(await visibilityOf("new"), "signed-in");
        // Down maps the value the old code does not know to its strict neighbour.
        await migrateTo(db, "0006_queue_claim_order");
        assert.equal(await visibilityOf("new"), "officers");
        assert.equal(await visibilityOf("old-default"), "members");
        await migrateToLatest(db);
      } finally {
        await close();
        await tdb.destroy();
      }
    });
  });
}
