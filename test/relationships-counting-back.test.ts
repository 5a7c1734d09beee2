import "../src/temporal.ts";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { signRequest } from "@fedify/fedify";
import { Accept, Announce, Create, Follow, type Group, Like, Note, PUBLIC_COLLECTION, Undo } from "@fedify/vocab";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { eventually, makeUnion, startMuster, type TestMuster } from "./helpers/muster.ts";
import { type Peer, startPeer } from "./helpers/peer.ts";
import { composeAction } from "../src/actions/actions.ts";
import { OPERATOR } from "../src/members/members.ts";
import { answerOffer, endRelationship, listRelationships } from "../src/relationships/relationships.ts";
import type { Union } from "../src/unions/unions.ts";
import { proposeTo } from "../federation/relationships.ts";
import { CHECKS_PER_SERVER, forgetMembershipAnswers, MEMBERSHIP_CHECK_PATH } from "../federation/partner-membership.ts";
import { talliesOf } from "../src/relationships/tallies.ts";
import { overrideBylaws } from "./helpers/bylaws.ts";

// Counting back with stock Mastodon: B relays A's call; B's member bob likes
// and replies the Mastodon way, to the call's author A. A asks B (a signed
// GET) whether bob is B's member and counts it for A, attributed to B.
// Two real Muster servers and a third (C, no partner), a loopback peer.

for (const d of dialects) {
  describe(`counting back responses that reach the call's author, on ${d.name}`, { skip: d.skip }, () => {
    const dbs: TestDatabase[] = [];
    const servers: TestMuster[] = [];
    let peer: Peer;
    let ma: TestMuster, mb: TestMuster, mc: TestMuster;
    let a: Union, b: Union;
    let call: URL;
    let callId: string;
    let fake: Server | undefined;

    async function server(): Promise<TestMuster> {
      const tdb = await d.create();
      dbs.push(tdb);
      const m = await startMuster(tdb);
      servers.push(m);
      return m;
    }
    const groupId = (m: TestMuster, slug: string) => new URL(`/u/${slug}`, m.origin);
    const seen = (m: TestMuster, id: URL) => eventually(async () =>
      (await m.muster.database.db.selectFrom("inbox_activities").select("id").where("id", "=", id.href).executeTakeFirst()) ?? false, `${id.href} processed`);
    const counted = (m: TestMuster, u: Union) => m.muster.database.db.selectFrom("partner_counted_responses").selectAll().where("union_id", "=", u.id).execute();
    const check = (m: TestMuster, slug: string, actor: URL) => new URL(`/u/${slug}/membership-check?actor=${encodeURIComponent(actor.href)}`, m.origin);
    /** A GET signed by a union's own Group key. */
    async function signedAsUnion(m: TestMuster, slug: string, url: URL): Promise<Response> {
      const ctx = m.muster.federation.createContext(m.origin, undefined);
      const keys = await ctx.getActorKeyPairs(slug);
      const rsa = keys.find((k) => k.privateKey.algorithm.name === "RSASSA-PKCS1-v1_5")!;
      return fetch(await signRequest(new Request(url, { headers: { Accept: "application/activity+json" } }), rsa.privateKey, rsa.keyId));
    }
    async function join(m: TestMuster, slug: string, name: string): Promise<void> {
      const group = await peer.lookup(groupId(m, slug)) as Group;
      await peer.send(name, group, new Follow({ id: new URL(`/follows/${name}-${slug}`, peer.origin), actor: peer.actorId(name), object: group.id }));
      await eventually(async () => {
        for (const x of peer.received) if (x instanceof Accept && x.actorId?.href === group.id!.href && (await x.getObject({ crossOrigin: "trust" }))?.id?.href.endsWith(`/follows/${name}-${slug}`)) return true;
        return false;
      }, `${name} joined ${slug}`);
    }
    const reply = (name: string, id: string, text: string) => {
      const note = new Note({ id: new URL(`/notes/${id}`, peer.origin), attribution: peer.actorId(name), replyTarget: call, content: `<p>${text}</p>`, to: PUBLIC_COLLECTION, cc: groupId(ma, "a") });
      return new Create({ id: new URL(`/notes/${id}/activity`, peer.origin), actor: peer.actorId(name), object: note, to: PUBLIC_COLLECTION, cc: groupId(ma, "a") });
    };

    before(async () => {
      peer = await startPeer(["alice", "bob", "mallory", "erin"]);
      ma = await server();
      mb = await server();
      mc = await server();
      a = await makeUnion(ma, "a", { name: "Riders A", joinPolicy: "open" });
      b = await makeUnion(mb, "b", { name: "Couriers B", joinPolicy: "open" });
      await makeUnion(mc, "c", { name: "Cleaners C", joinPolicy: "open" });
      // Only public calls are relayed.
      a = await overrideBylaws(ma.muster.unions, "a", { actionsVisibility: "public" });
      await join(ma, "a", "alice");
      await join(mb, "b", "bob");
      await join(mb, "b", "erin");
      const offer = await proposeTo({ ...ma.muster.membership, federation: ma.muster.federation, origin: ma.origin }, a, OPERATOR, groupId(mb, "b").href, "ally", "both");
      const atB = await eventually(async () => (await listRelationships(mb.muster.database.db, b.id)).find((r) => r.followId === offer.followId), "B receives the offer");
      await answerOffer(mb.muster.membership, b.id, atB.id, OPERATOR, true);
      await eventually(async () => (await listRelationships(ma.muster.database.db, a.id)).find((r) => r.state === "active"), "A sees B's Accept");
    });
    after(async () => {
      fake?.close();
      for (const m of servers) await m.stop();
      await peer?.close();
      for (const t of dbs) await t.destroy();
    });

    it("B's member likes and replies to A's relayed call at A (as Mastodon does): A asks B and counts them for A, attributed to B", async () => {
      const action = await composeAction(ma.muster.membership, a.id, OPERATOR, { title: "Picket at noon", text: "Gate 2.", kind: "show-up" }, { publishNow: true });
      call = new URL(`/u/a/actions/${action.id}`, ma.origin);
      callId = action.id;
      await eventually(async () => peer.received.some((x) => x instanceof Announce && x.actorId?.href === groupId(mb, "b").href && x.objectId?.href === call.href), "bob gets B's Announce of A's call");
      const aGroup = await peer.lookup(groupId(ma, "a")) as Group;
      const like = new Like({ id: new URL("/likes/bob-1", peer.origin), actor: peer.actorId("bob"), object: call });
      await peer.send("bob", aGroup, like);
      // A stranger's reply to a relayed call passes the inbox guard (it may be a partner's member's)...
      const bobReply = reply("bob", "bob-in", "I'm in, see you there");
      const res = await fetch(await peer.signedPost(new URL("/u/a/inbox", ma.origin), JSON.stringify(await bobReply.toJsonLd()), { as: "bob" }));
      assert.equal(res.status, 202, await res.text());
      await seen(ma, like.id!);
      await seen(ma, bobReply.id!);
      // ...and the same like delivered again counts once.
      await peer.send("bob", aGroup, like);
      await new Promise((r) => setTimeout(r, 300));
      const rows = await counted(ma, a);
      assert.deepEqual(rows.map((r) => [r.kind, r.via_actor_id, r.actor_id]).sort(), [
        ["comment", groupId(mb, "b").href, peer.actorId("bob").href],
        ["commit", groupId(mb, "b").href, peer.actorId("bob").href],
        ["like", groupId(mb, "b").href, peer.actorId("bob").href],
      ]);
      const tallies = await talliesOf(ma.muster.database.db, a.id, callId);
      assert.equal(tallies.length, 1);
      assert.equal(tallies[0]!.reporterActorId, groupId(mb, "b").href);
      assert.deepEqual([tallies[0]!.commitments, tallies[0]!.replies, tallies[0]!.likes], [1, 1, 1]);
      const page = await (await fetch(call, { headers: { Accept: "text/html" } })).text();
      assert.match(page, new RegExp(`data-testid="relayed-tally" data-union="${groupId(mb, "b").href}"><strong>1</strong> from`));
      // Bob is not made A's member by any of this.
      assert.equal((await ma.muster.database.db.selectFrom("members").select("id").where("actor_id", "=", peer.actorId("bob").href).execute()).length, 0);
    });

    it("an Undo of the like withdraws it", async () => {
      const like = new Like({ id: new URL("/likes/erin-1", peer.origin), actor: peer.actorId("erin"), object: call });
      const aGroup = await peer.lookup(groupId(ma, "a")) as Group;
      await peer.send("erin", aGroup, like);
      await eventually(async () => (await counted(ma, a)).some((r) => r.actor_id === peer.actorId("erin").href), "erin's like counted");
      assert.equal((await talliesOf(ma.muster.database.db, a.id, callId))[0]!.likes, 2);
      const undo = new Undo({ id: new URL("/likes/erin-1/undo", peer.origin), actor: peer.actorId("erin"), object: like });
      await peer.send("erin", aGroup, undo);
      await seen(ma, undo.id!);
      assert.equal((await talliesOf(ma.muster.database.db, a.id, callId))[0]!.likes, 1);
    });

    it("hostile: a non-member of any ally likes and replies at A: asked, not counted", async () => {
      const aGroup = await peer.lookup(groupId(ma, "a")) as Group;
      const like = new Like({ id: new URL("/likes/mallory-1", peer.origin), actor: peer.actorId("mallory"), object: call });
      await peer.send("mallory", aGroup, like);
      const r = reply("mallory", "mallory-in", "I'm in");
      await peer.send("mallory", aGroup, r);
      await seen(ma, like.id!);
      await seen(ma, r.id!);
      assert.ok(!(await counted(ma, a)).some((x) => x.actor_id === peer.actorId("mallory").href));
    });

    it("hostile: B answers only an active partner, only about one actor; unsigned 401, a stranger or non-partner union 403", async () => {
      const yes = await signedAsUnion(ma, "a", check(mb, "b", peer.actorId("bob")));
      assert.equal(yes.status, 200);
      assert.deepEqual(await yes.json(), {
        "@context": { muster: "https://github.com/muster-union/muster/ns#" }, type: "muster:MembershipAnswer",
        "muster:union": groupId(mb, "b").href, "muster:actor": peer.actorId("bob").href, "muster:member": true,
      });
      const no = await signedAsUnion(ma, "a", check(mb, "b", peer.actorId("mallory")));
      assert.equal((await no.json())["muster:member"], false);
      assert.equal((await fetch(check(mb, "b", peer.actorId("bob")))).status, 401);
      assert.equal((await fetch(await peer.signedGet(check(mb, "b", peer.actorId("bob")), { as: "mallory" }))).status, 403);
      assert.equal((await signedAsUnion(mc, "c", check(mb, "b", peer.actorId("bob")))).status, 403);
    });

    it("hostile: a forged ally answer (about someone else, or in another union's name, or by redirect) counts nothing", async () => {
      // A 'partner' whose server answers yes to everything, but never properly.
      let mode: "other-actor" | "other-union" | "redirect" = "other-actor";
      let asked = 0;
      // A also fetches its new ally's actor on its own: the featured sync (every
      // 30 s, src/relationships/featured.ts) asks each new ally for consent to be
      // listed, and its delivery looks up this actor. Only membership questions are counted.
      const otherRequests: string[] = [];
      fake = createServer((req, res) => {
        const url = new URL(req.url!, "http://x");
        if (!url.pathname.endsWith(`/${MEMBERSHIP_CHECK_PATH}`)) {
          otherRequests.push(`${req.method} ${url.pathname}`);
          res.writeHead(404).end();
          return;
        }
        asked++;
        const actor = url.searchParams.get("actor")!;
        if (mode === "redirect") {
          res.writeHead(302, { Location: `${mb.origin.href}u/b/membership-check?actor=${encodeURIComponent(actor)}` }).end();
          return;
        }
        const doc = {
          "@context": { muster: "https://github.com/muster-union/muster/ns#" }, type: "muster:MembershipAnswer",
          "muster:union": mode === "other-union" ? groupId(mb, "b").href : fakeId, "muster:actor": mode === "other-actor" ? peer.actorId("bob").href : actor, "muster:member": true,
        };
        res.writeHead(200, { "Content-Type": "application/activity+json" }).end(JSON.stringify(doc));
      });
      await new Promise<void>((r) => fake!.listen(0, "127.0.0.1", r));
      const fakeId = `http://127.0.0.1:${(fake.address() as AddressInfo).port}/u/fake`;
      await ma.muster.database.db.insertInto("union_relationships").values({
        id: "00000000-0000-4000-8000-0000000000fa", union_id: a.id, peer_actor_id: fakeId, peer_handle: null, kind: "ally", direction: "outbound",
        state: "active", relay: "both", follow_id: `${ma.origin.href}u/a/relationships/00000000-0000-4000-8000-0000000000fa`, created_at: Date.now(), updated_at: Date.now(),
      }).execute();
      try {
        const aGroup = await peer.lookup(groupId(ma, "a")) as Group;
        for (const m of ["other-actor", "other-union", "redirect"] as const) {
          mode = m;
          forgetMembershipAnswers();
          const like = new Like({ id: new URL(`/likes/mallory-${m}`, peer.origin), actor: peer.actorId("mallory"), object: call });
          await peer.send("mallory", aGroup, like);
          await seen(ma, like.id!);
        }
        if (otherRequests.length > 0) console.log(`# besides the 3 questions, the forging partner got: ${otherRequests.join(", ")}`);
        assert.equal(asked, 3, "A asked the forging partner each time");
        assert.ok(!(await counted(ma, a)).some((x) => x.actor_id === peer.actorId("mallory").href), "no forged answer counted");
      } finally {
        // Also when an assertion failed: a partner left active would let strangers' replies in for the later tests.
        await ma.muster.database.db.deleteFrom("union_relationships").where("id", "=", "00000000-0000-4000-8000-0000000000fa").execute();
      }
    });

    it("hostile: a flood of likes from many non-member actors of one server asks partners at most the bounded number of times", async () => {
      // A second partner (a plain server answering "no" properly), so each like could cost two questions.
      let asked = 0;
      const partner = createServer((req, res) => {
        asked++;
        const actor = new URL(req.url!, "http://x").searchParams.get("actor")!;
        res.writeHead(200, { "Content-Type": "application/activity+json" }).end(JSON.stringify({
          "@context": { muster: "https://github.com/muster-union/muster/ns#" }, type: "muster:MembershipAnswer",
          "muster:union": partnerId, "muster:actor": actor, "muster:member": false,
        }));
      });
      await new Promise<void>((r) => partner.listen(0, "127.0.0.1", r));
      const partnerId = `http://127.0.0.1:${(partner.address() as AddressInfo).port}/u/quiet`;
      const db = ma.muster.database.db;
      try {
        await db.insertInto("union_relationships").values({
          id: "00000000-0000-4000-8000-0000000000fb", union_id: a.id, peer_actor_id: partnerId, peer_handle: null, kind: "ally", direction: "outbound",
          state: "active", relay: "both", follow_id: `${ma.origin.href}u/a/relationships/00000000-0000-4000-8000-0000000000fb`, created_at: Date.now(), updated_at: Date.now(),
        }).execute();
        // Start from an empty window: the earlier cases asked about bob, erin and mallory from the same server.
        await db.deleteFrom("rate_limit_hits").where("bucket", "like", "partner-check:%").execute();
        forgetMembershipAnswers();
        const aGroup = await peer.lookup(groupId(ma, "a")) as Group;
        const flood = CHECKS_PER_SERVER + 10;
        for (let i = 0; i < flood; i++) {
          const name = `flood${i}`;
          await peer.addActor(name);
          const like = new Like({ id: new URL(`/likes/${name}`, peer.origin), actor: peer.actorId(name), object: call });
          await peer.send(name, aGroup, like);
        }
        await seen(ma, new URL(`/likes/flood${flood - 1}`, peer.origin));
        await eventually(async () => {
          const n = await db.selectFrom("inbox_activities").select((eb) => eb.fn.countAll<number>().as("n")).where("id", "like", `${peer.origin.href}likes/flood%`).executeTakeFirstOrThrow();
          return Number(n.n) === flood;
        }, "every like of the flood processed");
        // Two partners, 2 × flood questions unbounded; the server's bucket allows CHECKS_PER_SERVER questions in all.
        assert.ok(asked > 0 && asked <= CHECKS_PER_SERVER, `the second partner was asked ${asked} times (flood of ${flood})`);
        const hits = await db.selectFrom("rate_limit_hits").select("bucket").where("bucket", "like", "partner-check:%").execute();
        const serverHits = hits.filter((h) => h.bucket.includes(":server:")).length;
        assert.equal(serverHits, CHECKS_PER_SERVER, "exactly the bound was asked of both partners together (one hit per question)");
        assert.ok(!(await counted(ma, a)).some((x) => x.actor_id.startsWith(`${peer.origin.href}users/flood`) || x.actor_id.includes("flood")), "nothing counted");
        // Repeats of the same flood ask nothing more.
        const before = asked;
        for (let i = 0; i < 5; i++) {
          const name = `flood${i}`;
          const like = new Like({ id: new URL(`/likes/${name}-again`, peer.origin), actor: peer.actorId(name), object: call });
          await peer.send(name, aGroup, like);
          await seen(ma, like.id!);
        }
        assert.equal(asked, before);
        assert.equal((await db.selectFrom("rate_limit_hits").select("id").where("bucket", "like", "partner-check:%:server:%").execute()).length, CHECKS_PER_SERVER);
      } finally {
        partner.close();
        await db.deleteFrom("union_relationships").where("id", "=", "00000000-0000-4000-8000-0000000000fb").execute();
        await db.deleteFrom("rate_limit_hits").where("bucket", "like", "partner-check:%").execute();
        forgetMembershipAnswers();
      }
    });

    it("hostile: once the alliance ends, A does not ask B and B would not answer; a new like from bob is not counted", async () => {
      const onA = (await listRelationships(ma.muster.database.db, a.id)).find((r) => r.peerActorId === groupId(mb, "b").href && r.state === "active")!;
      await endRelationship(ma.muster.membership, a.id, onA.id, OPERATOR);
      await eventually(async () => (await listRelationships(mb.muster.database.db, b.id)).find((r) => r.state === "ended"), "B sees the Undo");
      const before = (await counted(ma, a)).length;
      const like = new Like({ id: new URL("/likes/bob-2", peer.origin), actor: peer.actorId("bob"), object: call });
      await peer.send("bob", await peer.lookup(groupId(ma, "a")) as Group, like);
      await seen(ma, like.id!);
      assert.equal((await counted(ma, a)).length, before);
      assert.equal((await signedAsUnion(ma, "a", check(mb, "b", peer.actorId("bob")))).status, 403);
      // With no partner relaying A's calls, a stranger's reply is refused at the door again.
      const r = reply("mallory", "mallory-late", "I'm in");
      const res = await fetch(await peer.signedPost(new URL("/u/a/inbox", ma.origin), JSON.stringify(await r.toJsonLd()), { as: "mallory" }));
      assert.equal(res.status, 403);
    });
  });
}
