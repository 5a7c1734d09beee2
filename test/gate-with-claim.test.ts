import "../src/temporal.ts";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import pg from "pg";
import { upsertRemoteActor } from "../src/actors/remote-actors.ts";
import { requestToJoin } from "../src/members/membership.ts";
import { createUnion } from "../src/unions/unions.ts";
import { processStats } from "../federation/batch-delivery.ts";
import { dialects } from "./helpers/databases.ts";
import { eventually, type TestMuster } from "./helpers/muster.ts";
import { type HeldQueue, startHeldQueue } from "./helpers/held-queue.ts";
import type { CountingPeer } from "./helpers/counting-peer.ts";

/*
 * A join's Accept and welcome are gated on the member still being active
 * when they are sent (outbound.ts, memberGate). On PostgreSQL the outbox
 * lane's claim (and the settle that hands the welcome over behind the
 * Accept) reads the gate's member state with the message, its ids in
 * columns the enqueue wrote from the message object (migration 0089,
 * claim-hints.ts; kysely-message-queue.ts, gateHintSql): the gate asks no
 * query of its own. The message's text is never read for it, as JSON or by
 * pattern: a lone surrogate in an account's name (the welcome mentions it)
 * is an escape PostgreSQL's json refuses, and one such message would make
 * every claim of the lane fail.
 */

/** Every statement text the pg clients of this process send while `on`. */
function recordPgStatements() {
  const texts: string[] = [];
  let on = false;
  const query = pg.Client.prototype.query as (...args: unknown[]) => unknown;
  pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
    if (on) {
      const q = args[0] as string | { text?: string } | undefined;
      texts.push(typeof q === "string" ? q : q?.text ?? "");
    }
    return query.apply(this, args);
  } as typeof pg.Client.prototype.query;
  return {
    texts,
    start() {
      texts.length = 0;
      on = true;
    },
    stop() {
      on = false;
    },
    restore() {
      pg.Client.prototype.query = query as typeof pg.Client.prototype.query;
    },
  };
}

/** A member gate's own query (outbound.ts, memberState). */
const isGateQuery = (text: string) => /select "state" from "members"/.test(text);
/** The batch sender's read of a batch's server state (batch-delivery.ts, #state). */
const isStateQuery = (text: string) => /select "key", "value", "expires_at" from "fedify_kv"/.test(text);

for (const d of dialects) {
  describe(`a join's gated Accept and welcome, gate read with the claim, on ${d.name}`, { skip: d.skip }, () => {
    let world: HeldQueue;
    let m: TestMuster;
    let peer: CountingPeer;
    const recorder = d.name === "postgres" ? recordPgStatements() : undefined;
    const names = ["ann", "bob", "cat", "odd", "gone"];
    const heldName = "held";

    before(async () => {
      world = await startHeldQueue(d, [...names, heldName]);
      ({ m, peer } = world);
    });
    after(async () => {
      recorder?.restore();
      await world?.stop();
    });

    it("sends each active member's Accept and welcome (one whose name holds a lone surrogate too), withholds a removed one's, and on PostgreSQL asks no gate query", async () => {
      const db = m.muster.database.db;
      const union = await createUnion(m.muster.unions, { slug: "riders", name: "Riders United", purpose: "Fair pay", joinPolicy: "open" });
      for (const name of names) {
        const id = peer.actorId(name).href;
        // A hostile account: its name (and so the welcome's mention) holds a lone surrogate.
        const handle = name === "odd" ? `@od\uD800d@${peer.host}` : `@${name}@${peer.host}`;
        // Another hostile account (removed below): its name spells an active member's gate and another inbox, as the message's text would read them unescaped.
        const ann = name === "gone" ? (await db.selectFrom("members").select("id").where("actor_id", "=", peer.actorId("ann").href).executeTakeFirstOrThrow()).id : undefined;
        const display = name === "odd" ? "Od\uD800d \uDC00" : ann ? `"musterGate":{"unionId":"${union.id}","memberId":"${ann}"},"inbox":"http://127.0.0.1:1/inbox"` : name;
        await upsertRemoteActor(db, { id, type: "Person", handle, name: display, inbox: `${id}/inbox`, sharedInbox: null, fetchedAt: Date.now() });
        const joined = await requestToJoin(m.muster.membership, union.id, { actorId: id, handle }, `${id}#follow`);
        assert.equal(joined.outcome, "accepted");
      }
      const queued = await db.selectFrom("fedify_mq").select(["message", "gate_union_id", "gate_member_id", "inbox_origin"]).where("queue", "=", "outbox").orderBy("id").execute();
      // One message a join: its Accept and its welcome (direct-send.ts, joinedDelivery).
      assert.equal(queued.length, names.length);
      // On PostgreSQL, the gate and the inbox's origin in the row's own columns, as the join wrote them (claim-hints.ts).
      const members = await db.selectFrom("members").select(["id", "actor_id"]).where("union_id", "=", union.id).execute();
      const memberOf = (n: string) => members.find((r) => r.actor_id === peer.actorId(n).href)!.id;
      assert.deepEqual(queued.map((r) => [r.gate_union_id, r.gate_member_id, r.inbox_origin]),
        names.map((n) => (d.name === "postgres" ? [union.id, memberOf(n), new URL(peer.actorId(n)).origin] : [null, null, null])));
      assert.ok(queued.some((r) => r.message.includes("\\ud800")), "the welcome's text holds the lone surrogate's escape");
      // Not through leaveUnion, which withdraws the queued deliveries: only the gate at sending time holds these back.
      await db.updateTable("members").set({ state: "removed" }).where("actor_id", "=", peer.actorId("gone").href).execute();
      const before = { ...processStats };

      recorder?.start();
      world.runQueue();
      const got = (name: string, type: string) => peer.hits.filter((h) => h.path === `/users/${name}/inbox` && h.type === type && (h.status ?? 0) < 300).length;
      await eventually(async () => names.filter((n) => n !== "gone").every((n) => got(n, "Accept") >= 1 && got(n, "Create") >= 1), "every active member's Accept and welcome, lone surrogate or not");
      await eventually(async () => (await db.selectFrom("fedify_mq").select("id").execute()).length === 0, "the queues to drain");
      recorder?.stop();

      assert.deepEqual(peer.hits.filter((h) => h.path === "/users/gone/inbox").map((h) => h.type), [], "nothing for a member no longer active when it was sent");
      const odd = peer.hits.find((h) => h.path === "/users/odd/inbox" && h.type === "Create");
      assert.ok(JSON.stringify(odd?.body).includes("\\ud800"), "the welcome went out with the name as it was");
      assert.deepEqual({ sent: processStats.sent - before.sent, fallback: processStats.fallback - before.fallback }, { sent: 4, fallback: 0 },
        "all sent by the batch sender (a message a join, its Accept and welcome), none handed to Fedify's handler");
      assert.deepEqual(await db.selectFrom("fedify_mq_dead").select("id").execute(), [], "nothing dead-lettered");
      if (recorder) {
        const claims = recorder.texts.filter((t) => /^update "fedify_mq"/.test(t) || /with settled as/.test(t));
        assert.ok(claims.length > 0 && claims.every((t) => !t.includes("regexp_match")), "the claims and settles read the gate and inbox from columns, no pattern over the text");
        // The ordering key asked once per candidate: its oldest row or a lease of it, in one probe (kysely-message-queue.ts, candidates).
        const lanes = claims.filter((t) => /^update "fedify_mq"/.test(t));
        assert.ok(lanes.length > 0 && lanes.every((t) => t.match(/not exists/g)?.length === 1), "each claim probes a candidate's ordering key once, not twice");
        const gates = recorder.texts.filter(isGateQuery);
        assert.equal(gates.length, 0, `the gate read with the claim, not asked: ${gates.length} gate queries for ${names.length} joins`);
        const states = recorder.texts.filter(isStateQuery);
        assert.equal(states.length, 0, `the server state read with the claim, not asked: ${states.length} state queries for ${names.length} joins`);
      }
    });

    it("a message queued without the hint columns (before migration 0089) is still gated: its gate asked with a query", { skip: d.name !== "postgres" && "the claim reads the gate on PostgreSQL only" }, async () => {
      const db = m.muster.database.db;
      const union = await db.selectFrom("unions").select("id").where("slug", "=", "riders").executeTakeFirstOrThrow();
      const member = await db.selectFrom("members").select("id").where("actor_id", "=", peer.actorId("bob").href).executeTakeFirstOrThrow();
      // Inserted without the columns, as the code before 0089 queued it (and with another key order in its text): no hint; the gate asks, and still sends.
      const message = {
        type: "outbox", id: "0b1c5a8e-0000-4000-8000-000000000001", baseUrl: m.origin.origin, keys: [{ keyId: `${m.origin.origin}/u/riders#main-key` }],
        activity: { "@context": "https://www.w3.org/ns/activitystreams", id: `${m.origin.origin}/u/riders/activities/again`, type: "Accept", actor: `${m.origin.origin}/u/riders`, object: `${peer.actorId("bob").href}#follow` },
        activityId: `${m.origin.origin}/u/riders/activities/again`, activityType: "https://www.w3.org/ns/activitystreams#Accept",
        inbox: `${peer.actorId("bob").href}/inbox`, sharedInbox: false, actorIds: [peer.actorId("bob").href], started: new Date().toISOString(), attempt: 0,
        headers: {}, orderingKey: "again", traceContext: {}, musterGate: { memberId: member.id, unionId: union.id },
      };
      recorder!.start();
      await db.insertInto("fedify_mq").values({ queue: "outbox", message: JSON.stringify(message), ordering_key: null, available_at: Date.now(), attempts: 0, created_at: Date.now(), dedupe_key: null, payload: null }).execute();
      await eventually(async () => peer.hits.some((h) => h.id === message.activityId), "the Accept whose gate was asked");
      await eventually(async () => (await db.selectFrom("fedify_mq").select("id").execute()).length === 0, "the queues to drain");
      recorder!.stop();
      assert.equal(recorder!.texts.filter(isGateQuery).length, 1, "its gate asked once");
    });

    it("leaves a server with circuit-breaker state to Fedify's handler, the state read with the claim as before it was asked", async () => {
      const db = m.muster.database.db;
      const union = await db.selectFrom("unions").select("id").where("slug", "=", "riders").executeTakeFirstOrThrow();
      // Closed with no failures counted: Fedify sends, but any state at all is Fedify's to read and update (batch-delivery.ts).
      const circuit = JSON.stringify(["_fedify", "circuit", peer.host]);
      await db.insertInto("fedify_kv").values({ key: circuit, value: JSON.stringify({ state: "closed", failures: [] }), expires_at: null }).execute();
      const before = { ...processStats };
      const id = peer.actorId(heldName).href;
      await upsertRemoteActor(db, { id, type: "Person", handle: `@${heldName}@${peer.host}`, name: heldName, inbox: `${id}/inbox`, sharedInbox: null, fetchedAt: Date.now() });
      assert.equal((await requestToJoin(m.muster.membership, union.id, { actorId: id, handle: `@${heldName}@${peer.host}` }, `${id}#follow`)).outcome, "accepted");
      const got = (type: string) => peer.hits.filter((h) => h.path === `/users/${heldName}/inbox` && h.type === type && (h.status ?? 0) < 300).length;
      await eventually(async () => got("Accept") >= 1 && got("Create") >= 1, "the held server's Accept and welcome, through Fedify's handler");
      await eventually(async () => (await db.selectFrom("fedify_mq").select("id").execute()).length === 0, "the queues to drain");
      // One message for the Accept and welcome (direct-send.ts, joinedDelivery), handed whole to the handler's path:
      // each part through Fedify's handler, which reads and updates the circuit's state.
      const fallback = processStats.fallback - before.fallback;
      assert.ok(fallback === 1 && processStats.sent - before.sent === 0, `the join's message handed to Fedify's handler: the circuit state was seen (${fallback} of 1 handed over)`);
      await db.deleteFrom("fedify_kv").where("key", "=", circuit).execute();
    });
  });
}
