import "../src/temporal.ts";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createUnion, type Union } from "../src/unions/unions.ts";
import type { CountingPeer } from "./helpers/counting-peer.ts";
import { dialects } from "./helpers/databases.ts";
import { eventually, type TestMuster } from "./helpers/muster.ts";
import { type HeldQueue, startHeldQueue } from "./helpers/held-queue.ts";
import { joinAsRemoteMember } from "./helpers/remote-member.ts";
import { createQueueLanes } from "../federation/queue-lanes.ts";

/*
 * A join's Accept and welcome are ONE queue message (direct-send.ts,
 * joinedDelivery): one row to write, claim and settle, both POSTs by the
 * worker that claimed it, the Accept first. The guarantees of two messages
 * stay: each activity is delivered with its own stable id, once when nothing
 * fails; a welcome refused is retried without the Accept going out again;
 * a worker that died holding the message loses neither.
 */
for (const d of dialects) {
  describe(`a join's Accept and welcome in one queue message, on ${d.name}`, { skip: d.skip }, () => {
    let world: HeldQueue;
    let m: TestMuster;
    let peer: CountingPeer;
    let union: Union;
    const db = () => m.muster.database.db;
    const to = (name: string, type: string) => peer.hits.filter((h) => h.path === `/users/${name}/inbox` && h.type === type);
    const drained = () => eventually(async () => (await db().selectFrom("fedify_mq").select("id").execute()).length === 0, "the queues to drain", 30_000);

    before(async () => {
      world = await startHeldQueue(d, ["ana", "ben", "cy", "dee", "eve"]);
      ({ m, peer } = world);
      union = await createUnion(m.muster.unions, { slug: "riders", name: "Riders United", purpose: "Fair pay", joinPolicy: "open" });
    });
    after(async () => {
      await world?.stop();
    });

    it("queues one message a join, and sends its Accept then its welcome, once each, also after a worker died holding one", async () => {
      for (const name of ["ana", "ben", "dee", "eve"]) await joinAsRemoteMember(m.muster.membership, union.id, peer.origin, name, null);
      const rows = await db().selectFrom("fedify_mq").select(["id", "queue", "message", "ordering_key"]).where("queue", "=", "outbox").orderBy("id").execute();
      assert.equal(rows.length, 4, "one outbox row a join (was two: the Accept's and the welcome's)");
      const messages = rows.map((r) => JSON.parse(r.message) as { activityType: string; activityId: string; keys: { privateKey?: unknown }[]; musterGate?: unknown; musterThen?: { activityType: string; activityId: string }[] });
      assert.deepEqual(messages.map((q) => [q.activityType.replace(/.*#/, ""), ...(q.musterThen ?? []).map((p) => p.activityType.replace(/.*#/, ""))]), Array(4).fill(["Accept", "Create"]));
      assert.ok(messages.every((q) => q.musterGate !== undefined), "gated on the member");
      assert.ok(messages.every((q) => q.keys.every((k) => k.privateKey === undefined)), "no private key stored");
      const ids = messages.map((q) => [q.activityId, q.musterThen![0]!.activityId]);
      // A worker claimed dee's message and died before sending anything: its lease runs out in 500 ms.
      await db().updateTable("fedify_mq").set({ lease_owner: "dead-worker#1", lease_until: Date.now() + 500, attempts: 1 }).where("id", "=", rows[2]!.id).execute();
      // eve is no longer a member when hers would be sent: neither goes out (the gate at sending time).
      await db().updateTable("members").set({ state: "removed" }).where("actor_id", "=", peer.actorId("eve").href).execute();

      world.runQueue();
      await eventually(async () => ["ana", "ben", "dee"].every((n) => to(n, "Accept").length === 1 && to(n, "Create").length === 1), "the members' Accept and welcome");
      await drained();
      for (const [i, name] of ["ana", "ben", "dee"].entries()) {
        const hits = peer.hits.filter((h) => h.path === `/users/${name}/inbox`);
        assert.deepEqual(hits.map((h) => h.type), ["Accept", "Create"], `${name}: the Accept, then the welcome, once each`);
        assert.deepEqual(hits.map((h) => h.id), ids[i], `${name}: the ids queued with the join`);
        assert.ok(hits.every((h) => h.status !== undefined && h.status >= 200 && h.status < 300), `${name}: both accepted by the receiver (signatures verified)`);
      }
      assert.deepEqual([to("eve", "Accept").length, to("eve", "Create").length], [0, 0], "nothing for a member who left");
    });

    it("retries a refused welcome without sending the Accept again", async () => {
      // cy's server takes the Accept, then refuses everything until told otherwise.
      peer.behaviour.onResponded = (hit) => {
        if (hit.path === "/users/cy/inbox" && hit.type === "Accept") peer.behaviour.failStatus = 500;
      };
      await joinAsRemoteMember(m.muster.membership, union.id, peer.origin, "cy", null);
      await eventually(async () => to("cy", "Create").some((h) => h.status === 500), "the welcome refused");
      // Refused by the batch sender's POST, and again by Fedify's handler (which queues its own retry).
      await eventually(async () => to("cy", "Create").filter((h) => h.status === 500).length >= 2, "the welcome refused on the handler's path too");
      peer.behaviour.onResponded = undefined;
      peer.behaviour.failStatus = null;
      await eventually(async () => to("cy", "Create").some((h) => h.status === 202 || h.status === 200), "the welcome delivered on a retry", 30_000);
      await drained();
      assert.equal(to("cy", "Accept").length, 1, "the Accept sent once: not again with the welcome's retries");
      assert.equal(new Set(to("cy", "Create").map((h) => h.id)).size, 1, "every try of the welcome with the same activity id");
    });
  });

  describe(`two Musters' lanes in one process, on ${d.name}`, { skip: d.skip }, () => {
    it("keep apart the parts each sent: a message one left half sent is sent whole by the other, as by another process", async (t) => {
      const tdb = await d.create();
      // As two Musters on one database: each its own connection and lanes (and so its own sent parts).
      const databases = [tdb.open(), tdb.open()];
      // Slow retries: the first lanes are stopped before the message is due again.
      const [first, second] = databases.map((database) => createQueueLanes(database, { pollIntervalMs: 20, handlerTimeoutMs: 5000, leaseMs: 3000, retryBaseDelayMs: 1000, retryMaxDelayMs: 1000, concurrency: 2 }));
      t.after(async () => {
        await Promise.all([first!.close(), second!.close()]);
        for (const database of databases) await database.close();
        await tdb.destroy();
      });
      const inbox = "https://peer.example/users/ana/inbox";
      const part = (activityId: string) => ({ id: activityId, activity: {}, activityId, activityType: "https://www.w3.org/ns/activitystreams#Create" });
      await first!.lanes.outbox.enqueue({ type: "outbox", inbox, keys: [], headers: {}, ...part("accept"), musterThen: [part("welcome")] });
      const handled: string[] = [];
      const stopFirst = new AbortController();
      // The first sends the Accept; its welcome fails, so the message is retried.
      const firstListening = first!.fedify.outbox.listen(async (m: { activityId: string }) => {
        handled.push(`first:${m.activityId}`);
        if (m.activityId === "welcome") throw new Error("refused");
      }, { signal: stopFirst.signal });
      await eventually(async () => handled.includes("first:welcome"), "the first's try");
      stopFirst.abort();
      await firstListening;
      const stopSecond = new AbortController();
      const secondListening = second!.fedify.outbox.listen(async (m: { activityId: string }) => {
        handled.push(`second:${m.activityId}`);
      }, { signal: stopSecond.signal });
      await eventually(async () => handled.includes("second:welcome"), "the second's try");
      stopSecond.abort();
      await secondListening;
      assert.deepEqual(handled, ["first:accept", "first:welcome", "second:accept", "second:welcome"], "the second knows nothing of what the first sent");
    });
  });
}
