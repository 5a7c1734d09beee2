import "../src/temporal.ts";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { Create, Note } from "@fedify/vocab";
import { type FanoutDeps, fanOut, type FanoutPage, handleFanoutPage, waitForRoom } from "../federation/fanout-pages.ts";
import { sql } from "kysely";
import { asBulkWork } from "../federation/queue-lanes.ts";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { makeUnion, startMuster, type TestMuster } from "./helpers/muster.ts";
import { dedupeText, deliveriesOf } from "./helpers/done-keys.ts";
import { deliveryKey, storedKey } from "../federation/kysely-message-queue.ts";

/*
 * A fan-out reads the roster a page (500 members) at a time, each page a
 * queue message that queues its deliveries and then the next page. Handled
 * again (a crash after its work, before it was marked done), a page queues
 * no delivery and no next page twice; a server's shared inbox, whose members
 * are in every page, gets one delivery.
 */

// Every fourth member is on the server with a shared inbox, so every page has some.
const PEOPLE = Array.from({ length: 1500 }, (_, i) => i % 4 === 3
  ? { id: `http://shared.example/users/s${i}`, shared: "http://shared.example/inbox" }
  : { id: `http://p${i % 30}.example/users/p${i}`, shared: null });
const PERSONAL = PEOPLE.filter((p) => p.shared === null).length;

for (const d of dialects) {
  describe(`a streamed fan-out, a page at a time, on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    let m: TestMuster;
    let unionId: string;
    let deps: FanoutDeps;

    before(async () => {
      tdb = await d.create();
      m = await startMuster(tdb, { worker: false });
      const union = await makeUnion(m, "riders");
      unionId = union.id;
      const db = m.muster.database.db;
      const root = await db.selectFrom("members").select("id").where("union_id", "=", unionId).where("role", "=", "leader").executeTakeFirstOrThrow();
      const now = Date.now();
      const people = PEOPLE;
      for (let from = 0; from < people.length; from += 500) {
        const chunk = people.slice(from, from + 500);
        await db.insertInto("remote_actors").values(chunk.map((p) => ({
          id: p.id, type: "Person", handle: null, name: null, 
          inbox: `${p.id}/inbox`, shared_inbox: p.shared, fetched_at: now,
        }))).execute();
        await db.insertInto("members").values(chunk.map((p) => ({
          id: randomUUID(), union_id: unionId, actor_id: p.id, handle: null, state: "active", role: "member", portfolio: null,
          sponsor_id: root.id, subtree_size: 0, follow_id: `${p.id}#follow`, invite_id: null, joined_at: now, left_at: null, left_reason: null, removed_by: null, created_at: now,
        }))).execute();
      }
      deps = { db, federation: m.muster.federation, origin: m.origin, enqueue: (page, o) => m.muster.lanes.fedify.fanout.enqueue(page, o) };
    });
    after(async () => {
      await m?.stop();
      await tdb?.destroy();
    });

    for (const signedOnce of [false, true]) it(`queues each inbox once across pages, and each next page once, even when a page is handled twice (${signedOnce ? "signed once, later pages queued directly" : "every page through Fedify's sendActivity"})`, async () => {
      const db = m.muster.database.db;
      const ctx = m.muster.federation.createContext(m.origin, undefined);
      const groupId = ctx.getActorUri("riders");
      const activityId = new URL(`/u/riders/test-fanout-${signedOnce}/activity`, m.origin);
      // Each delivery queued with its done key, as the page's done check computed it (not computed again by the queue).
      const carried: { message: unknown; storedKey: string | undefined }[] = [];
      const deps1: FanoutDeps = signedOnce ? { ...deps, enqueueDelivery: (message, o) => (carried.push({ message, storedKey: o.storedKey }), m.muster.lanes.lanes.delivery.enqueue(message, o)) } : deps;
      await fanOut(deps1, ctx, unionId, new Create({ id: activityId, actor: groupId, object: new Note({ content: "Streamed." }) }), "streamed");

      const pagesOf = async () => (await db.selectFrom("fedify_mq").select("message").where("queue", "=", "fanout").orderBy("id").execute())
        .map((r) => JSON.parse(r.message) as FanoutPage);
      let handled = 0;
      for (;;) {
        const pages = await pagesOf();
        assert.ok(pages.length <= 1, `one page queued at a time, not ${pages.length}`);
        const page = pages[0];
        if (!page) break;
        // Handled twice, as after a crash before the queue marked it done.
        await asBulkWork(() => handleFanoutPage(deps1, page));
        await asBulkWork(() => handleFanoutPage(deps1, page));
        await db.deleteFrom("fedify_mq").where("queue", "=", "fanout").where("message", "=", JSON.stringify(page)).execute();
        handled++;
        assert.ok(handled < 10, "the chain of pages ends");
      }
      assert.ok(handled >= 3, `the roster was read in pages (${handled})`);

      const rows = await db.selectFrom("fedify_mq").select(["queue", "message", "dedupe_key", "payload"]).where(dedupeText, "like", deliveriesOf(db, activityId.href)).execute();
      const inboxes = rows.map((r) => (JSON.parse(r.message) as { inbox: string }).inbox);
      assert.equal(new Set(inboxes).size, inboxes.length, "no inbox queued twice");
      assert.equal(inboxes.length, PERSONAL + 1, "every personal inbox, and the shared inbox once");
      assert.equal(inboxes.filter((i) => i === "http://shared.example/inbox").length, 1);
      assert.deepEqual([...new Set(rows.map((r) => r.queue))], ["delivery"]);
      assert.ok(rows.every((r) => !r.message.includes("privateKey")), "no private key in a delivery row");
      // One stored activity: every page's deliveries carry what was signed for the first page.
      if (signedOnce) assert.equal(new Set(rows.map((r) => r.payload)).size, 1);
      if (signedOnce) {
        assert.ok(carried.length > 0);
        for (const c of carried) assert.equal(c.storedKey, storedKey(db, deliveryKey(c.message)!), "the page's key, given to the enqueue");
      }
      const sample = JSON.parse(rows[0]!.message) as { type: string; keys: { keyId: string }[]; orderingKey: string; attempt: number };
      assert.equal(sample.type, "outbox");
      assert.equal(sample.attempt, 0);
      assert.ok(sample.keys.length >= 1 && sample.keys.every((k) => k.keyId.startsWith(m.origin.href)));
      assert.ok(sample.orderingKey.startsWith("streamed\n"));
      await db.deleteFrom("fedify_mq").where(dedupeText, "like", deliveriesOf(db, activityId.href)).execute();
    });

    it("reads a row per inbox, not per member: 2,400 members on 6 shared-inbox servers are one page of 6 deliveries, and a server whose members all left gets none", async () => {
      const db = m.muster.database.db;
      const crowd = await makeUnion(m, "crowd");
      const root = await db.selectFrom("members").select("id").where("union_id", "=", crowd.id).where("role", "=", "leader").executeTakeFirstOrThrow();
      const now = Date.now();
      const people = Array.from({ length: 2400 }, (_, i) => ({ id: `http://c${i % 6}.example/users/c${i}`, shared: `http://c${i % 6}.example/inbox` }));
      for (let from = 0; from < people.length; from += 400) {
        const chunk = people.slice(from, from + 400);
        await db.insertInto("remote_actors").values(chunk.map((p) => ({ id: p.id, type: "Person", handle: null, name: null, inbox: `${p.id}/inbox`, shared_inbox: p.shared, fetched_at: now }))).execute();
        await db.insertInto("members").values(chunk.map((p) => ({
          id: randomUUID(), union_id: crowd.id, actor_id: p.id, handle: null, state: "active", role: "member", portfolio: null,
          sponsor_id: root.id, subtree_size: 0, follow_id: `${p.id}#follow`, invite_id: null, joined_at: now, left_at: null, left_reason: null, removed_by: null, created_at: now,
        }))).execute();
      }
      // Everyone on c5 leaves or is removed.
      await db.updateTable("members").set({ state: "left" }).where("union_id", "=", crowd.id).where("actor_id", "like", "http://c5.example/%").where("actor_id", "not like", "%0").execute();
      await db.updateTable("members").set({ state: "removed" }).where("union_id", "=", crowd.id).where("actor_id", "like", "http://c5.example/%0").execute();

      const ctx = m.muster.federation.createContext(m.origin, undefined);
      const activityId = new URL("/u/crowd/test-fanout-targets/activity", m.origin);
      await fanOut(deps, ctx, crowd.id, new Create({ id: activityId, actor: ctx.getActorUri("crowd"), object: new Note({ content: "Few servers." }) }), "few");
      let pages = 0;
      for (;;) {
        const row = await db.selectFrom("fedify_mq").select(["id", "message"]).where("queue", "=", "fanout").orderBy("id").executeTakeFirst();
        if (!row) break;
        await asBulkWork(() => handleFanoutPage(deps, JSON.parse(row.message) as FanoutPage));
        await db.deleteFrom("fedify_mq").where("id", "=", row.id).execute();
        assert.ok(++pages < 10, "the chain of pages ends");
      }
      assert.equal(pages, 1, "one page for 6 servers, not one per 500 members");
      const inboxes = (await db.selectFrom("fedify_mq").select("message").where(dedupeText, "like", deliveriesOf(db, activityId.href)).execute())
        .map((r) => (JSON.parse(r.message) as { inbox: string }).inbox).sort();
      assert.deepEqual(inboxes, [0, 1, 2, 3, 4].map((i) => `http://c${i}.example/inbox`));
      await db.deleteFrom("fedify_mq").where(dedupeText, "like", deliveriesOf(db, activityId.href)).execute();
    });

    /*
     * PostgreSQL walks a delivery key's queued rows on every claim and
     * settle (the leased-key check), so a fan-out queues its deliveries a page
     * at a time as the delivery lane's ready backlog drains, not the whole
     * roster at once (main.ts gives the pages waitForRoom over the lane's
     * readyBacklog).
     */
    it("counts the delivery lane's ready backlog up to a limit, and a page waits for room before queueing its deliveries", { skip: d.name !== "postgres" && "the pages wait for room on PostgreSQL only" }, async () => {
      const db = m.muster.database.db;
      const delivery = m.muster.lanes.lanes.delivery;
      const now = Date.now();
      // 60 ready filler messages on 3 keys, and 10 delayed ones (a retry's): only the ready count.
      await sql`insert into fedify_mq (queue, message, ordering_key, available_at, attempts, created_at)
        select 'delivery', '{"type":"filler"}', 'filler\n' || (g % 3), case when g > 60 then ${now + 3_600_000}::bigint else ${now}::bigint end, 0, ${now}::bigint
        from generate_series(1, 70) g`.execute(db);
      try {
        assert.equal(await delivery.readyBacklog(1000), 60, "ready rows only, not the delayed ones");
        assert.equal(await delivery.readyBacklog(25), 25, "counted up to the limit");

        const ctx = m.muster.federation.createContext(m.origin, undefined);
        const activityId = new URL("/u/riders/test-fanout-room/activity", m.origin);
        const room = () => waitForRoom((n) => delivery.readyBacklog(n), { limit: 40, maxWaitMs: 1500, pollMs: 20 });
        const paced: FanoutDeps = { ...deps, enqueueDelivery: (message, o) => delivery.enqueue(message, o), room };
        await fanOut(paced, ctx, unionId, new Create({ id: activityId, actor: ctx.getActorUri("riders"), object: new Note({ content: "Paced." }) }), "paced");
        const queued = async () => Number((await db.selectFrom("fedify_mq").select((eb) => eb.fn.countAll().as("n")).where(dedupeText, "like", deliveriesOf(db, activityId.href)).executeTakeFirstOrThrow()).n);
        const firstPage = async () => JSON.parse((await db.selectFrom("fedify_mq").select("message").where("queue", "=", "fanout").where("message", "like", "%test-fanout-room%").orderBy("id").executeTakeFirstOrThrow()).message) as FanoutPage;

        // 60 ready > 40: the page waits its longest, then queues anyway (a backlog held by slow servers must not stop a fan-out).
        const first = await firstPage();
        let t0 = Date.now();
        await asBulkWork(() => handleFanoutPage(paced, first));
        assert.ok(Date.now() - t0 >= 1400, `waited for room (${Date.now() - t0} ms)`);
        const afterFirst = await queued();
        assert.ok(afterFirst > 0, "then queued its deliveries");
        await db.deleteFrom("fedify_mq").where("queue", "=", "fanout").where("message", "like", "%test-fanout-room%").where("message", "not like", '%"cursor":"%').execute();

        // The backlog drains while the next page waits: it goes on as soon as there is room, not after its longest wait.
        const next = await firstPage();
        const drained = (async () => {
          await new Promise((r) => setTimeout(r, 300));
          await db.deleteFrom("fedify_mq").where("queue", "=", "delivery").execute();
        })();
        t0 = Date.now();
        await asBulkWork(() => handleFanoutPage(paced, next));
        const waited = Date.now() - t0;
        await drained;
        assert.ok(waited >= 250 && waited < 1400, `waited until the backlog drained (${waited} ms)`);
        assert.ok(await queued() > 0, "and queued the next page's deliveries");
      } finally {
        await db.deleteFrom("fedify_mq").where((eb) => eb.or([eb("message", "=", '{"type":"filler"}'), eb("message", "like", "%test-fanout-room%")])).execute();
      }
    });
  });
}

/*
 * A page waiting for room counted the backlog every pollMs (each count walks
 * up to 8,192 rows on PostgreSQL). Told how many deliveries this process has
 * settled, it counts again once those cover what was over the limit, and
 * otherwise every ROOM_RECOUNT_MS (500 ms) for what other processes settle.
 */
describe("waitForRoom with this process's settles", () => {
  it("counts the backlog twice while this process's settles drain it, and goes on as soon as they have", async () => {
    let settled = 0;
    const start = 1000 + 300;
    let counts = 0;
    const asked: number[] = [];
    // 100 deliveries settled here every 20 ms: 300 over the limit drain in 60 ms.
    const timer = setInterval(() => (settled += 100), 20);
    try {
      const t0 = Date.now();
      await waitForRoom(async (n) => {
        counts++;
        asked.push(n);
        return Math.min(n, Math.max(0, start - settled));
      }, { limit: 1000, pollMs: 5, maxWaitMs: 2000, settled: () => settled });
      const waited = Date.now() - t0;
      assert.ok(counts <= 3, `${counts} counts`);
      assert.ok(waited < 400, `waited ${waited} ms`);
      assert.ok(asked[0]! > 1001, `counted past the limit (${asked[0]}), so the excess is known`);
    } finally {
      clearInterval(timer);
    }
  });

  it("counts again every 500 ms while the backlog drains elsewhere, and gives up at maxWaitMs", async () => {
    let counts = 0;
    const t0 = Date.now();
    await waitForRoom(async () => {
      counts++;
      return 5000;
    }, { limit: 1000, pollMs: 5, maxWaitMs: 1200, settled: () => 0 });
    const waited = Date.now() - t0;
    assert.ok(waited >= 1150, `waited ${waited} ms`);
    assert.ok(counts >= 3 && counts <= 5, `${counts} counts in ${waited} ms`);
  });
});
