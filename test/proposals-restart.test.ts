import "../src/temporal.ts";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { dialects } from "./helpers/databases.ts";
import { eventually, freePort, makeUnion, startMuster, type TestMuster } from "./helpers/muster.ts";
import { joinAsRemoteMember } from "./helpers/remote-member.ts";
import { chainOf } from "../src/actions/chain.ts";
import { type CountingPeer, startCountingPeer } from "./helpers/counting-peer.ts";
import { castVote, createProposal, getProposal } from "../src/bylaws/proposals.ts";
import { findMemberByActor, OPERATOR } from "../src/members/members.ts";

/*
 * Issue 14: a vote whose end time passes while no server runs is closed by
 * the next one to start, once. Three servers start one after another on one
 * database and one port; a real peer counts what reaches its inboxes.
 *
 * Its own file since a session in which, run after the rest of
 * proposals-e2e, the next createFederation failed inside the Temporal
 * polyfill. The cause was litesvm's program JIT leaving the x87 stack full
 * (solana/litesvm-x87.ts, test/litesvm-x87.test.ts), not this sequence.
 */

for (const d of dialects) {
  describe(`proposals across a restart, on ${d.name}`, { skip: d.skip }, () => {
    let peer: CountingPeer;
    before(async () => {
      peer = await startCountingPeer(["ana", "ben"]);
    });
    after(async () => {
      await peer?.close();
    });

    it("a vote that ends while the server is down is closed once after the restart, and its result goes out once", async () => {
      const tdb2 = await d.create();
      const port = await freePort();
      // First process: no worker, so nothing closes it; it stops before the end time.
      const first = await startMuster(tdb2, { port, worker: false });
      let second: TestMuster | undefined;
      let third: TestMuster | undefined;
      try {
        const u = await makeUnion(first, "later", { joinPolicy: "open" });
        const ids: string[] = [];
        for (const name of ["ana", "ben"]) {
          await joinAsRemoteMember(first.muster.membership, u.id, peer.origin, name, new URL("/inbox", peer.origin));
          ids.push((await findMemberByActor(first.muster.database.db, u.id, peer.actorId(name).href))!.id);
        }
        await new Promise((r) => setTimeout(r, 5));
        const p = await createProposal(first.muster.membership, u.id, OPERATOR, { kind: "amendment", title: "Fewer invites", params: { memberInviteLimit: 2 }, closesAt: new Date(Date.now() + 10_500) });
        for (const id of ids) assert.deepEqual(await castVote(first.muster.membership, u.id, p.id, { memberId: id }, ["Yes"], { kind: "web" }), { counted: true });
        await first.stop();
        await new Promise((r) => setTimeout(r, Math.max(0, p.closesAt.getTime() - Date.now() + 100)));

        // Second process on the same database: its worker finds the vote due and closes it.
        second = await startMuster(tdb2, { port, worker: true });
        const db2 = second.muster.database.db;
        const closed = await eventually(async () => {
          const now = await getProposal(db2, u.id, p.id);
          return now?.state !== "open" ? now : undefined;
        }, "closed after the restart", 30_000);
        assert.equal(closed.state, "passed", closed.outcome?.reason);
        const qid = new URL(`/u/later/proposals/${p.id}`, second.origin).href;
        await eventually(async () => peer.hitsOf(`${qid}/closed`).length > 0 && peer.hitsOf(`${qid}/result/activity`).length > 0, "the close and the result delivered");
        await second.stop();
        second = undefined;

        // A third start changes nothing: closed once, one outcome in the chain, each activity sent once.
        third = await startMuster(tdb2, { port, worker: true });
        await new Promise((r) => setTimeout(r, 6000));
        const db3 = third.muster.database.db;
        assert.equal((await chainOf(db3, u.id)).filter((e) => e.event === "outcome").length, 1);
        assert.equal((await db3.selectFrom("bylaws_versions").select("version").where("union_id", "=", u.id).execute()).length, 2, "one new bylaws version");
        assert.equal(peer.hitsOf(`${qid}/closed`).length, 1, "the closing Update went out once");
        assert.equal(peer.hitsOf(`${qid}/result/activity`).length, 1, "the result went out once");
      } finally {
        await second?.stop();
        await third?.stop();
        await tdb2.destroy();
      }
    });
  });
}
