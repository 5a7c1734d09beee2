import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Accept, Follow, type Group, Reject, Undo } from "@fedify/vocab";
import { dialects } from "./helpers/databases.ts";
import { eventually, type TestMuster } from "./helpers/muster.ts";
import type { Peer } from "./helpers/peer.ts";
import { unionWithPeer } from "./helpers/union-with-peer.ts";
import { createInvite } from "../src/members/invites.ts";
import { OPERATOR } from "../src/members/members.ts";
import { removeMember } from "../src/members/membership.ts";
import { sponsorChain } from "../src/members/tree.ts";

for (const d of dialects) {
  describe(`joining from another server, end to end, on ${d.name}`, { skip: d.skip }, () => {
    const fx = unionWithPeer(d, { actors: ["lead", "alice", "bob", "carol", "carol2", "dave", "eve"], joinPolicy: "approval" });
    const { handleOf, db, member, follow, answerTo } = fx;
    let m: TestMuster;
    let peer: Peer;
    let group: Group;
    let unionId: string;
    let n = 0;

    before(async () => {
      ({ m, peer, group, unionId } = await fx.start());
    });
    after(() => fx.stop());

    /** The invite link in the welcome DM the peer's actor received. */
    async function welcomeInvite(name: string): Promise<string> {
      return eventually(async () => (await fx.linksTo(name, "join"))[0], `welcome DM to ${name}`);
    }

    async function claim(code: string, name: string): Promise<Response> {
      return fetch(new URL(`/u/riders/join/${code}`, m.origin), {
        method: "POST",
        body: new URLSearchParams({ handle: handleOf(name) }),
        redirect: "manual",
      });
    }

    it("the leader's Follow takes the root of the tree; Accept embeds the original Follow", async () => {
      const f = await follow("lead");
      const accept = await answerTo(f, Accept);
      assert.equal(accept.actorId?.href, group.id!.href);
      const lead = await member("lead");
      assert.equal(lead?.state, "active");
      assert.equal(lead?.role, "leader");
      assert.equal(lead?.sponsorId, null);
    });

    it("invites build a tree three levels deep", async () => {
      const first = await createInvite(m.muster.membership, unionId, { by: OPERATOR, maxUses: 1 });
      const page = await fetch(new URL(`/u/riders/join/${first.code}`, m.origin));
      assert.equal(page.status, 200);
      assert.match(await page.text(), /Join Riders United/);
      const claimed = await claim(first.code, "alice");
      assert.equal(claimed.status, 200);
      assert.match(await claimed.text(), new RegExp(`@riders@${m.origin.host.replace(/\./g, "\\.")}`), "the fallback page names the union to search for");
      await answerTo(await follow("alice"), Accept);
      const aliceCode = await welcomeInvite("alice");

      assert.equal((await claim(aliceCode, "bob")).status, 200);
      await answerTo(await follow("bob"), Accept);
      const bobCode = await welcomeInvite("bob");
      assert.equal((await claim(bobCode, "carol")).status, 200);
      await answerTo(await follow("carol"), Accept);

      const carol = (await member("carol"))!;
      const chain = await sponsorChain(db(), carol.id);
      assert.deepEqual(chain.map((x) => x.actorId), ["carol", "bob", "alice", "lead"].map((x) => peer.actorId(x).href));
      assert.equal((await member("lead"))!.subtreeSize, 3);
      assert.equal((await member("alice"))!.subtreeSize, 2);
    });

    it("refuses an invite reused past its limit, and changes nothing", async () => {
      const once = await createInvite(m.muster.membership, unionId, { by: OPERATOR, maxUses: 1 });
      assert.equal((await claim(once.code, "dave")).status, 200);
      const f = await follow("dave");
      await answerTo(f, Accept);
      const res = await claim(once.code, "eve");
      assert.equal(res.status, 400);
      assert.match(await res.text(), /used as many times as it allows/);
      assert.equal(await member("eve"), undefined);
    });

    it("a follow without an invite waits for approval under the approval policy", async () => {
      await follow("eve");
      const eve = await eventually(async () => (await member("eve"))?.state === "pending" && member("eve"), "eve pending");
      assert.equal(eve && eve.sponsorId, null);
    });

    it("a forged Undo of someone else's Follow changes nothing", async () => {
      const alice = (await member("alice"))!;
      const forged = new Undo({
        id: new URL(`/undo/forged-${++n}`, peer.origin),
        actor: peer.actorId("eve"),
        object: new Follow({ id: new URL(alice.followId!), actor: peer.actorId("alice"), object: group.id }),
      });
      await peer.send("eve", group, forged);
      await new Promise((r) => setTimeout(r, 500));
      assert.equal((await member("alice"))!.state, "active");
    });

    it("a member who leaves is replaced by their sponsor for their recruits", async () => {
      const bob = (await member("bob"))!;
      const undo = new Undo({
        id: new URL(`/undo/bob-${++n}`, peer.origin),
        actor: peer.actorId("bob"),
        object: new Follow({ id: new URL(bob.followId!), actor: peer.actorId("bob"), object: group.id }),
      });
      await peer.send("bob", group, undo);
      await eventually(async () => (await member("bob"))?.state === "left", "bob left");
      const carol = (await member("carol"))!;
      assert.equal(carol.sponsorId, (await member("alice"))!.id);
      const moves = await db().selectFrom("member_moves").selectAll().where("member_id", "=", carol.id).execute();
      assert.equal(moves.length, 1);
      assert.equal(moves[0]!.from_sponsor_id, bob.id);
      assert.equal((await member("lead"))!.subtreeSize, 3, "alice, carol and dave remain under the leader");
    });

    it("a member who migrates keeps their place under the new account", async () => {
      const carol = (await member("carol"))!;
      peer.setMigration("carol2", { alsoKnownAs: ["carol"] });
      peer.setMigration("carol", { movedTo: "carol2" });
      const f = await follow("carol2");
      await answerTo(f, Accept);
      const moved = (await member("carol2"))!;
      assert.equal(moved.id, carol.id, "same place in the tree");
      assert.equal(moved.sponsorId, carol.sponsorId);
      assert.equal(await member("carol"), undefined);
    });

    it("an expelled member's server receives a Reject of their Follow", async () => {
      const dave = (await member("dave"))!;
      await removeMember(m.muster.membership, unionId, dave.id, OPERATOR, { reason: "broke the bylaws", expel: true });
      const reject = await eventually(async () => {
        for (const a of peer.received) {
          if (!(a instanceof Reject)) continue;
          const obj = await a.getObject({ crossOrigin: "trust" });
          if (obj instanceof Follow && obj.id?.href === dave.followId) return a;
        }
        return undefined;
      }, "Reject for dave");
      assert.equal(reject.actorId?.href, group.id!.href);
      const after = (await member("dave"))!;
      assert.equal(after.state, "expelled");
      assert.equal(after.leftReason, "broke the bylaws");
      // Following again does not get them back in.
      const again = await follow("dave");
      await answerTo(again, Reject);
      assert.equal((await member("dave"))!.state, "expelled");
    });

    it("publishes active members as the Group's followers, to the leader and not to an unsigned fetch", async () => {
      for (const url of [group.followersId!, new URL(`${group.followersId!.href}?cursor=`)]) {
        const refused = await fetch(url, { headers: { Accept: "application/activity+json" } });
        assert.equal(refused.status, 401, url.href);
        assert.ok(!(await refused.text()).includes(peer.actorId("alice").href), "no member's id to an unsigned fetch");
      }
      const res = await fetch(await peer.signedGet(group.followersId!, { as: "lead" }));
      const json = await res.json() as { totalItems: number };
      // lead, alice, carol2 (dave expelled, bob left, eve pending)
      assert.equal(json.totalItems, 3);
    });
  });
}
