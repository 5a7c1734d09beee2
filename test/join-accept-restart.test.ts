import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Accept, Create } from "@fedify/vocab";
import { findMemberByActor } from "../src/members/members.ts";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { eventually, makeUnion, startMuster, type TestMuster } from "./helpers/muster.ts";
import { type Peer, startPeer } from "./helpers/peer.ts";

/*
 * A crash between the 202 and the Accept loses nothing: the follow's fast
 * path commits the Accept and the welcome with the join (their activities in
 * their own queue rows, their keys not stored), so a server stopped right
 * after answering 202, before any delivery, sends both once it runs again,
 * signing with keys it resolves afresh.
 */
for (const d of dialects) {
  describe(`a join's Accept after a restart, on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase | undefined;
    let m: TestMuster | undefined;
    let peer: Peer | undefined;
    after(async () => {
      await m?.stop();
      await peer?.close();
      await tdb?.destroy();
    });

    it("a Follow answered 202 by a server whose queue never ran: the next start delivers its Accept and welcome, once each", async () => {
      tdb = await d.create();
      peer = await startPeer(["ann"]);
      m = await startMuster(tdb, { worker: false });
      const riders = await makeUnion(m, "riders", { joinPolicy: "open", leaderHandle: "@lead@leader.invalid" });
      const port = Number(m.origin.port);
      const inbox = new URL("/u/riders/inbox", m.origin);
      const actor = peer.actorId("ann").href;
      const follow = { "@context": "https://www.w3.org/ns/activitystreams", id: new URL(`/follows/${crypto.randomUUID()}`, peer.origin).href, type: "Follow", actor, object: new URL("/u/riders", m.origin).href };
      const text = JSON.stringify(follow);
      const signed = await peer.signedPost(inbox, text, { as: "ann", spec: "draft-cavage-http-signatures-12" });
      const res = await fetch(inbox, { method: "POST", headers: new Headers(signed.headers), body: text });
      assert.equal(res.status, 202);
      assert.equal((await findMemberByActor(m.muster.database.db, riders.id, actor))?.state, "active");
      await m.stop();
      m = undefined;
      assert.equal(peer.received.length, 0, "nothing was delivered before the stop");

      m = await startMuster(tdb, { port });
      const accepts = async () => {
        let n = 0;
        for (const a of peer!.received) if (a instanceof Accept && (await a.getObject({ crossOrigin: "trust" }))?.id?.href === follow.id) n++;
        return n;
      };
      await eventually(async () => (await accepts()) === 1 && peer!.received.some((a) => a instanceof Create), "the Accept and the welcome after the restart", 30_000);
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(await accepts(), 1, "one Accept");
      assert.equal(peer.received.filter((a) => a instanceof Create).length, 1, "one welcome");
    });
  });
}
