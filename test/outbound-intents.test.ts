import "../src/temporal.ts";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { deleteRemoteActor } from "../src/actors/remote-actors.ts";
import { leaveUnion } from "../src/members/membership.ts";
import { createUnion, type Union } from "../src/unions/unions.ts";
import type { CountingPeer } from "./helpers/counting-peer.ts";
import { dialects } from "./helpers/databases.ts";
import { eventually, type TestMuster } from "./helpers/muster.ts";
import { type HeldQueue, startHeldQueue } from "./helpers/held-queue.ts";
import { joinAsRemoteMember } from "./helpers/remote-member.ts";

/*
 * Domain intents queued for a member who is gone by the time the worker
 * handles them: the Accept and the welcome must not go out (they would
 * fetch, and cache again, an account that was deleted), while a member still
 * there gets both. The worker is started only after the departure, so the
 * order is certain. The deliveries are queued with the join itself
 * (outbound.ts, queueOutbox); the gate checked at sending time holds them back.
 */
for (const d of dialects) {
  describe(`intents for a member who left before they were handled, on ${d.name}`, { skip: d.skip }, () => {
    let world: HeldQueue;
    let m: TestMuster;
    let peer: CountingPeer;
    let union: Union;

    before(async () => {
      world = await startHeldQueue(d, ["stays", "gone", "late"]);
      ({ m, peer } = world);
      union = await createUnion(m.muster.unions, { slug: "riders", name: "Riders United", purpose: "Fair pay", joinPolicy: "open" });
    });
    after(async () => {
      await world?.stop();
    });

    it("sends the Accept and welcome to the member who stayed, nothing to the one whose account was deleted", async () => {
      const db = m.muster.database.db;
      for (const name of ["stays", "gone", "late"]) await joinAsRemoteMember(m.muster.membership, union.id, peer.origin, name, null);
      // Each join wrote its Accept and welcome as deliveries in its own transaction, no domain message first,
      // each gated on the member still being active when it is sent.
      const queued = await db.selectFrom("fedify_mq").select(["queue", "message"]).execute();
      assert.deepEqual(queued.filter((q) => q.queue === "domain"), [], "no domain message for a join");
      // The Accept and the welcome of a join in one message (direct-send.ts, joinedDelivery).
      const deliveries = queued.filter((q) => q.queue === "outbox").map((q) => JSON.parse(q.message) as { activityType: string; musterGate?: { memberId: string }; musterThen?: { activityType: string }[] });
      assert.deepEqual(deliveries.flatMap((q) => [q.activityType, ...(q.musterThen ?? []).map((p) => p.activityType)].map((t) => t.replace(/.*#/, ""))), ["Accept", "Create", "Accept", "Create", "Accept", "Create"]);
      assert.ok(deliveries.every((q) => q.musterGate?.memberId), "every one gated on its member");
      const goneId = peer.actorId("gone").href;
      // What a Delete of the account does, before the worker got to the intents.
      await leaveUnion(m.muster.membership, union.id, goneId, "deleted");
      await deleteRemoteActor(db, goneId);
      // Leaving withdrew what was queued to welcome them, in the same transaction.
      const left = (await db.selectFrom("fedify_mq").select("message").where("queue", "=", "outbox").execute()).map((q) => q.message);
      assert.equal(left.length, 2, "gone's Accept and welcome withdrawn");
      assert.ok(left.every((q) => !q.includes(goneId)));
      // A member whose state changed without passing through leaveUnion still gets nothing: the gate at sending time.
      await db.updateTable("members").set({ state: "removed" }).where("actor_id", "=", peer.actorId("late").href).execute();
      const getsBefore = peer.requests.filter((r) => r.method === "GET" && r.path === "/users/gone").length;

      world.runQueue();
      const to = (name: string, type: string) => peer.hits.filter((h) => h.path === `/users/${name}/inbox` && h.type === type);
      await eventually(async () => to("stays", "Accept").length === 1 && to("stays", "Create").length === 1, "the Accept and welcome of the member who stayed");
      await eventually(async () => (await db.selectFrom("fedify_mq").select("id").execute()).length === 0, "the queues to drain");
      assert.equal(to("gone", "Accept").length, 0, "no Accept for the deleted account");
      assert.equal(to("gone", "Create").length, 0, "no welcome for the deleted account");
      assert.deepEqual([to("late", "Accept").length, to("late", "Create").length], [0, 0], "nothing for a member no longer active when it was sent");
      assert.equal(peer.requests.filter((r) => r.method === "GET" && r.path === "/users/gone").length, getsBefore, "the deleted account is not fetched again");
      assert.equal(await db.selectFrom("remote_actors").select("id").where("id", "=", goneId).executeTakeFirst(), undefined, "nor cached again");
    });
  });
}
