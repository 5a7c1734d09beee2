import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Accept, Follow, type Group } from "@fedify/vocab";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { eventually, makeUnion, startMuster, type TestMuster } from "./helpers/muster.ts";
import { type Peer, startPeer } from "./helpers/peer.ts";
import { findMemberByActor } from "../src/members/members.ts";

// A join used to fetch the follower's actor document twice: once for the
// key that verifies the Follow's signature, once more to check its
// migration links. The second is now answered from the first
// (federation/recent-actors.ts). Counted at a real peer's HTTP server.

for (const d of dialects) {
  describe(`fetches per join on ${d.name}`, { skip: d.skip }, () => {
    const runs: { tdb: TestDatabase; m: TestMuster }[] = [];
    let peer: Peer;
    before(async () => {
      peer = await startPeer(["lead", "ann", "ben"]);
    });
    after(async () => {
      for (const { m, tdb } of runs) {
        await m.stop();
        await tdb.destroy();
      }
      await peer?.close();
    });

    async function join(name: string, reuse: boolean): Promise<number> {
      const tdb = await d.create();
      const m = await startMuster(tdb, { muster: { reuseFetchedActors: reuse } });
      runs.push({ tdb, m });
      const union = await makeUnion(m, "riders", { leaderHandle: `@lead@${peer.origin.host}`, joinPolicy: "open" });
      const group = await peer.lookup(new URL("/u/riders", m.origin)) as Group;
      const path = `/users/${name}`;
      const before = peer.gets.filter((p) => p === path).length;
      const follow = new Follow({ id: new URL(`/follows/${name}-${Date.now()}`, peer.origin), actor: peer.actorId(name), object: group.id });
      await peer.send(name, group, follow);
      await eventually(async () => {
        for (const a of peer.received) if (a instanceof Accept && (await a.getObject({ crossOrigin: "trust" }))?.id?.href === follow.id!.href) return true;
        return false;
      }, `the Accept of ${name}'s Follow`);
      assert.equal((await findMemberByActor(m.muster.database.db, union.id, peer.actorId(name).href))?.state, "active");
      return peer.gets.filter((p) => p === path).length - before;
    }

    it("fetches the follower's actor once per join (twice without reusing the verified document)", async () => {
      assert.equal(await join("ann", true), 1, "one GET of the follower's actor");
      assert.equal(await join("ben", false), 2, "the old path: key fetch, then the actor again");
    });
  });
}
