import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Create, Follow, Note } from "@fedify/vocab";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { eventually, freePort, makeUnion, startMuster } from "./helpers/muster.ts";
import { type Peer, startPeer } from "./helpers/peer.ts";

for (const d of dialects) {
  describe(`queue survives a restart on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    let peer: Peer;
    before(async () => {
      tdb = await d.create();
      peer = await startPeer();
    });
    after(async () => {
      await peer?.close();
      await tdb?.destroy();
    });

    it("finishes inbound and outbound work enqueued before the stop, exactly once", async () => {
      const port = await freePort();
      // First process: accepts work but runs no queue worker, then stops.
      const first = await startMuster(tdb, { port, worker: false });
      await makeUnion(first, "riders");
      const actorId = new URL("/u/riders", first.origin);
      const inbound = new Follow({ id: new URL("/activities/restart-in", peer.origin), actor: peer.actorId("alice"), object: actorId });
      const body = JSON.stringify(await inbound.toJsonLd({ format: "compact" }));
      const res = await fetch(await peer.signedPost(new URL("/u/riders/inbox", first.origin), body, { as: "alice" }));
      assert.equal(res.status, 202, "accepted for later processing");

      const outbound = new Create({
        id: new URL("/u/riders/activities/restart-out", first.origin),
        actor: actorId,
        to: peer.actorId("bob"),
        object: new Note({ id: new URL("/u/riders/notes/restart-out", first.origin), attribution: actorId, content: "after the restart", to: peer.actorId("bob") }),
      });
      const ctx = first.muster.federation.createContext(first.origin, undefined);
      await ctx.sendActivity({ identifier: "riders" }, { id: peer.actorId("bob"), inboxId: new URL("/users/bob/inbox", peer.origin) }, outbound);

      const db1 = first.muster.database.db;
      const pending = await db1.selectFrom("fedify_mq").select("id").execute();
      assert.ok(pending.length >= 2, `work is queued in the database (${pending.length})`);
      assert.equal((await db1.selectFrom("inbox_activities").selectAll().execute()).length, 0, "nothing processed yet");
      assert.equal(peer.received.length, 0, "nothing delivered yet");
      await first.stop();

      // Second process on the same database, with its worker.
      const second = await startMuster(tdb, { port, worker: true });
      try {
        const db2 = second.muster.database.db;
        await eventually(async () => (await db2.selectFrom("fedify_mq").select("id").execute()).length === 0, "queue drained after restart");
        await eventually(async () => peer.received.some((a) => a.id?.href === outbound.id!.href), "outbound delivered");
        const rows = await db2.selectFrom("inbox_activities").selectAll().where("id", "=", inbound.id!.href).execute();
        assert.equal(rows.length, 1, "inbound processed once");
        // Let any duplicate delivery surface before counting.
        await new Promise((r) => setTimeout(r, 500));
        assert.equal(peer.received.filter((a) => a.id?.href === outbound.id!.href).length, 1, "outbound delivered once");
      } finally {
        await second.stop();
      }
    });
  });
}
