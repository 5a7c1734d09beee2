import "../src/temporal.ts";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { createServer, type Server, type Socket } from "node:net";
import { Accept } from "@fedify/vocab";
import { composeAction } from "../src/actions/actions.ts";
import { OPERATOR } from "../src/members/members.ts";
import { dialects } from "./helpers/databases.ts";
import { eventually, startMuster, type TestMuster } from "./helpers/muster.ts";
import { type HeldQueue, startHeldQueue } from "./helpers/held-queue.ts";
import type { CountingPeer } from "./helpers/counting-peer.ts";
import { joinAsRemoteMember } from "./helpers/remote-member.ts";
import { createUnion } from "../src/unions/unions.ts";
import { processStats } from "../federation/batch-delivery.ts";
import { sql } from "kysely";
import { type StartedUnion, unionWithPeer } from "./helpers/union-with-peer.ts";
import { LANES, laneConcurrency, queueConnections } from "../federation/queue-lanes.ts";
import { dedupeText, deliveriesOf } from "./helpers/done-keys.ts";

/*
 * A call-to-action to thousands of members whose servers accept connections
 * and never answer: every delivery handler is stuck on them (until the 10 s
 * HTTP timeout) and thousands more deliveries wait. A person who follows the
 * union meanwhile must still get their Accept: the Follow is claimed from the
 * inbox lane and the Accept from the outbox lane, not after the fan-out.
 * With one queue for everything, the Follow waited behind every delivery.
 */

const FOLLOWERS = 3000;
// More servers than delivery handlers (16): deliveries to one server go one
// at a time (Fedify's ordering key is per activity and origin).
const SERVERS = 40;

/** Servers that take the connection and never say a word. */
async function startStalledServers(n: number): Promise<{ origins: string[]; connections(): number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  let connections = 0;
  const servers: Server[] = [];
  for (let i = 0; i < n; i++) {
    const s = createServer((socket) => {
      connections++;
      sockets.add(socket);
      socket.on("error", () => {});
      socket.on("close", () => sockets.delete(socket));
    });
    await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
    servers.push(s);
  }
  return {
    origins: servers.map((s) => `http://127.0.0.1:${(s.address() as { port: number }).port}`),
    connections: () => connections,
    async close() {
      for (const s of servers) s.close();
      for (const socket of sockets) socket.destroy();
      await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
    },
  };
}

describe("the lanes", () => {
  it("include the ledger lane, whose handler the PostgreSQL pool counts, beside one shared LISTEN", () => {
    assert.ok(LANES.includes("ledger"));
    const c = laneConcurrency(16);
    assert.equal(c.ledger, 1);
    assert.equal(queueConnections(16), LANES.reduce((n, l) => n + c[l], 0) + 1);
    assert.equal(queueConnections(16), 44);
  });

  const pgCase = dialects.find((d) => d.name === "postgres")!;
  it("share one LISTEN connection per process on PostgreSQL", { skip: pgCase.skip }, async () => {
    const tdb = await pgCase.create();
    const m = await startMuster(tdb);
    try {
      const database = new URL(tdb.url).pathname.slice(1);
      const listening = async () => {
        const r = await sql<{ n: number }>`select count(*)::int as n from pg_stat_activity where datname = ${database} and query like 'LISTEN %'`.execute(m.muster.database.db);
        return r.rows[0]!.n;
      };
      // Every lane is listening once the domain lane's first poll has run; give the others a moment.
      await new Promise((r) => setTimeout(r, 1500));
      assert.equal(await listening(), 1, "six lanes, one LISTEN");
      // And it still wakes a lane: a message enqueued by another pool is handled without waiting for a poll.
      assert.equal(m.muster.lanes.handlers, LANES.reduce((n, l) => n + laneConcurrency(16)[l], 0));
    } finally {
      await m.stop();
      await tdb.destroy();
    }
  });
});

for (const d of dialects) {
  describe(`queue lanes: a join is answered while a fan-out is stuck, on ${d.name}`, { skip: d.skip }, () => {
    const world = unionWithPeer(d, { actors: ["lead", "joiner"], joinPolicy: "open" });
    let u: StartedUnion;
    let stalled: Awaited<ReturnType<typeof startStalledServers>>;

    before(async () => {
      u = await world.start();
      stalled = await startStalledServers(SERVERS);
      const db = world.db();
      const root = await db.selectFrom("members").select("id").where("union_id", "=", u.unionId).where("role", "=", "leader").executeTakeFirstOrThrow();
      const now = Date.now();
      for (let from = 0; from < FOLLOWERS; from += 500) {
        const ids = Array.from({ length: Math.min(500, FOLLOWERS - from) }, (_, k) => {
          const i = from + k;
          return { i, id: `${stalled.origins[i % SERVERS]}/users/m${i}` };
        });
        await db.insertInto("remote_actors").values(ids.map(({ i, id }) => ({
          id, type: "Person", handle: `@m${i}@${new URL(id).host}`, name: `m${i}`, 
          inbox: `${id}/inbox`, shared_inbox: null, fetched_at: now,
        }))).execute();
        await db.insertInto("members").values(ids.map(({ i, id }) => ({
          id: randomUUID(), union_id: u.unionId, actor_id: id, handle: `@m${i}@${new URL(id).host}`, state: "active", role: "member", portfolio: null,
          sponsor_id: root.id, subtree_size: 0, follow_id: `${id}#follow`, invite_id: null, joined_at: now, left_at: null, left_reason: null, removed_by: null, created_at: now,
        }))).execute();
      }
    });
    after(async () => {
      // Refused from now on: the stuck deliveries fail and are queued for a retry later.
      await stalled?.close();
      await world.stop();
    });

    it("the Follow's Accept goes out while thousands of the call's deliveries are still queued", async () => {
      const db = world.db();
      const action = await composeAction(u.m.muster.membership, u.unionId, OPERATOR, { title: "Stuck call", text: "Everyone, now.", kind: "other" }, { publishNow: true });
      const createId = new URL(`/u/riders/actions/${action.id}/activity`, u.m.origin).href;
      const queued = async () => Number((await db.selectFrom("fedify_mq").select((e) => e.fn.countAll<number>().as("n"))
        .where(dedupeText, "like", deliveriesOf(db, createId)).executeTakeFirstOrThrow()).n);
      // Every page of the roster queued, and every delivery handler stuck on a silent server.
      await eventually(async () => await queued() >= FOLLOWERS - 100 && stalled.connections() >= 16, "the fan-out to be queued and its handlers stuck", 30_000);

      const follow = await world.follow("joiner");
      const accept = await world.answerTo(follow, Accept);
      assert.ok(accept instanceof Accept);
      const left = await queued();
      assert.ok(left >= FOLLOWERS - 100, `the Accept overtook the fan-out: ${left} of ${FOLLOWERS} deliveries still queued`);

      // The deliveries sit in their own lane, each naming a stored copy of the
      // activity (one per page of the roster, as each page signs it), and
      // none carries the union's private key.
      const rows = await db.selectFrom("fedify_mq").select(["queue", "message", "payload"]).where(dedupeText, "like", deliveriesOf(db, createId)).execute();
      assert.deepEqual([...new Set(rows.map((r) => r.queue))], ["delivery"]);
      const copies = new Set(rows.map((r) => r.payload)).size;
      assert.ok(copies >= 1 && copies <= Math.ceil(FOLLOWERS / 500), `${copies} copies of the activity for ${rows.length} deliveries`);
      assert.ok(rows.every((r) => !r.message.includes("privateKey") && !r.message.includes("Everyone, now.")), "no key and no activity body in a delivery row");
      const stored = await db.selectFrom("fedify_mq_payloads").select("body").where("id", "=", rows[0]!.payload!).executeTakeFirstOrThrow();
      assert.ok(stored.body.includes("Everyone, now."));
    });
  });
}

/*
 * A join's Accept and welcome are gated on the member still being active
 * when they are sent (outbound.ts, memberGate). The gate is asked for a
 * claimed batch too, so they go out through the lane's batch sender rather
 * than Fedify's handler; a member no longer active still gets neither.
 */
for (const d of dialects) {
  describe(`queue lanes: gated deliveries through the batch sender, on ${d.name}`, { skip: d.skip }, () => {
    let world: HeldQueue;
    let m: TestMuster;
    let peer: CountingPeer;

    before(async () => {
      world = await startHeldQueue(d, ["stays", "late"]);
      ({ m, peer } = world);
    });
    after(async () => {
      await world?.stop();
    });

    it("sends the Accept and welcome of a member still active through the batch sender, and withholds those of one who is not", async () => {
      const db = m.muster.database.db;
      const union = await createUnion(m.muster.unions, { slug: "riders", name: "Riders United", purpose: "Fair pay", joinPolicy: "open" });
      for (const name of ["stays", "late"]) await joinAsRemoteMember(m.muster.membership, union.id, peer.origin, name, null);
      // Not through leaveUnion, which withdraws the queued deliveries: only the gate at sending time holds these back.
      await db.updateTable("members").set({ state: "removed" }).where("actor_id", "=", peer.actorId("late").href).execute();
      const before = { ...processStats };

      world.runQueue();
      const verified = (name: string, type: string) => peer.received.filter((a) => a.id?.href.includes("/activities/") && a.constructor.name === type && peer.hits.some((h) => h.id === a.id?.href && h.path === `/users/${name}/inbox`));
      await eventually(async () => verified("stays", "Accept").length === 1 && verified("stays", "Create").length === 1, "the Accept and welcome of the member who stayed, verified at their server");
      await eventually(async () => (await db.selectFrom("fedify_mq").select("id").execute()).length === 0, "the queues to drain");
      assert.deepEqual(peer.hits.filter((h) => h.path === "/users/late/inbox").map((h) => h.type), [], "nothing for a member no longer active when it was sent");
      assert.deepEqual({ sent: processStats.sent - before.sent, fallback: processStats.fallback - before.fallback }, { sent: 1, fallback: 0 },
        "both sent by the batch sender (one message: the Accept and its welcome), none handed to Fedify's handler");
      assert.deepEqual(await db.selectFrom("fedify_mq_dead").select("id").execute(), [], "the withheld ones are settled, not dead-lettered");
    });
  });
}
