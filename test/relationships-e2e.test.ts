import "../src/temporal.ts";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Accept, Announce, Collection, Create, Follow, Group, Like, Note, PUBLIC_COLLECTION, type Recipient, Undo, Update } from "@fedify/vocab";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { eventually, makeUnion, startMuster, type TestMuster } from "./helpers/muster.ts";
import { type Peer, startPeer } from "./helpers/peer.ts";
import { composeAction } from "../src/actions/actions.ts";
import { type By, countMembers, findMemberByActor, OPERATOR } from "../src/members/members.ts";
import { setOfficer } from "../src/members/membership.ts";
import { castVote, closeProposal, createProposal, YES } from "../src/bylaws/proposals.ts";
import {
  answerOffer, endRelationship, listRelationships, type Relationship, relationshipHistory,
} from "../src/relationships/relationships.ts";
import type { Union } from "../src/unions/unions.ts";
import { overrideBylaws } from "./helpers/bylaws.ts";
import { proposeTo } from "../federation/relationships.ts";
import { signRequest } from "@fedify/fedify";
import { offerInstrument } from "../federation/relationship-vocab.ts";
import { followersPage } from "../federation/followers.ts";
import { relayedTotals, talliesOf } from "../src/relationships/tallies.ts";
import { chapterSnapshot, chapterTree, treeTotals } from "../src/relationships/chapters.ts";

// Two (and, for chapters, three) real Muster servers on loopback, each with
// its own database, and a Mastodon-like peer whose accounts are the members.
// Everything between them is signed HTTP, delivered by the real queue.

for (const d of dialects) {
  describe(`unions federate with unions, on ${d.name}`, { skip: d.skip }, () => {
    const dbs: TestDatabase[] = [];
    const servers: TestMuster[] = [];
    let peer: Peer;
    let ma: TestMuster, mb: TestMuster, mc: TestMuster;
    let a: Union, b: Union, c: Union;
    let callNote: URL;
    let callId: string;
    let treeCall: URL;

    async function server(): Promise<TestMuster> {
      const tdb = await d.create();
      dbs.push(tdb);
      const m = await startMuster(tdb);
      servers.push(m);
      return m;
    }
    const groupId = (m: TestMuster, slug: string) => new URL(`/u/${slug}`, m.origin);
    const recipient = (m: TestMuster, slug: string): Recipient => ({ id: groupId(m, slug), inboxId: new URL(`/u/${slug}/inbox`, m.origin), endpoints: null });
    /** Sends an activity signed by a union's own Group key, through its server's queue. */
    async function sendAs(m: TestMuster, slug: string, to: Recipient, activity: Follow | Accept | Undo | Announce | Update): Promise<void> {
      const ctx = m.muster.federation.createContext(m.origin, undefined);
      await ctx.sendActivity({ identifier: slug }, to, activity);
    }
    const seen = (m: TestMuster, id: URL) => eventually(async () =>
      (await m.muster.database.db.selectFrom("inbox_activities").select("id").where("id", "=", id.href).executeTakeFirst()) ?? false, `${id.href} processed`);
    const rels = (m: TestMuster, u: Union) => listRelationships(m.muster.database.db, u.id);
    const relWith = async (m: TestMuster, u: Union, peerId: URL): Promise<Relationship | undefined> => (await rels(m, u)).filter((r) => r.peerActorId === peerId.href).at(-1);
    const propose = (m: TestMuster, u: Union, target: string, kind: "ally" | "parent", relay: "both" | "none" = "both") =>
      proposeTo({ ...m.muster.membership, federation: m.muster.federation, origin: m.origin }, u, OPERATOR, target, kind, relay);

    async function join(m: TestMuster, slug: string, name: string): Promise<void> {
      const group = await peer.lookup(groupId(m, slug)) as Group;
      await peer.send(name, group, new Follow({ id: new URL(`/follows/${name}-${slug}`, peer.origin), actor: peer.actorId(name), object: group.id }));
      await eventually(async () => {
        for (const x of peer.received) if (x instanceof Accept && x.actorId?.href === group.id!.href && (await x.getObject({ crossOrigin: "trust" }))?.id?.href.endsWith(`/follows/${name}-${slug}`)) return true;
        return false;
      }, `${name} joined ${slug}`);
    }
    /** How many Announces of this note the peer received from this Group. */
    async function announcesOf(from: URL, noteId: URL): Promise<number> {
      return peer.received.filter((x) => x instanceof Announce && x.actorId?.href === from.href && x.objectId?.href === noteId.href).length;
    }

    before(async () => {
      peer = await startPeer(["alice", "bob", "carol", "gina", "mallory"]);
      ma = await server();
      mb = await server();
      mc = await server();
      a = await makeUnion(ma, "a", { name: "Riders A", joinPolicy: "open" });
      b = await makeUnion(mb, "b", { name: "Couriers B", joinPolicy: "open" });
      c = await makeUnion(mc, "c", { name: "Chapter C", joinPolicy: "open", leaderHandle: `@carol@${peer.origin.host}` });
      a = await overrideBylaws(ma.muster.unions, "a", { actionsVisibility: "public" });
      await join(ma, "a", "alice");
      await join(mb, "b", "bob");
      await join(mc, "c", "carol");
    });
    after(async () => {
      for (const m of servers) await m.stop();
      await peer?.close();
      for (const t of dbs) await t.destroy();
    });

    it("a Follow from another union's Group never becomes a membership", async () => {
      const before = await countMembers(mb.muster.database.db, b.id);
      const follow = new Follow({ id: new URL("/u/a/plain-follow", ma.origin), actor: groupId(ma, "a"), object: groupId(mb, "b") });
      await sendAs(ma, "a", recipient(mb, "b"), follow);
      await seen(mb, follow.id!);
      assert.equal(await findMemberByActor(mb.muster.database.db, b.id, groupId(ma, "a").href), undefined, "the Group is not a member");
      assert.equal(await countMembers(mb.muster.database.db, b.id), before, "counts unchanged");
      const followers = await followersPage(mb.muster.database.db, b.id, null);
      assert.ok(!followers.items.some((f) => f.id?.href === groupId(ma, "a").href), "the Group is not among the followers");
      assert.deepEqual(await rels(mb, b), [], "a Follow carrying no offer is no relationship either");
    });

    /** Makes the member an officer and passes a resolution they vote for; returns its number. */
    async function passedResolution(m: TestMuster, u: Union, name: string, title: string): Promise<{ by: By; number: string }> {
      const member = (await findMemberByActor(m.muster.database.db, u.id, peer.actorId(name).href))!;
      await setOfficer(m.muster.membership, u.id, member.id, OPERATOR, null);
      const p = await createProposal(m.muster.membership, u.id, OPERATOR, { kind: "resolution", title, closesAt: new Date(Date.now() + 600_000) });
      await castVote(m.muster.membership, u.id, p.id, { memberId: member.id }, [YES], { kind: "web" });
      const closed = await closeProposal(m.muster.membership, u.id, p.id, { force: true });
      assert.equal(closed?.state, "passed", closed?.outcome?.reason);
      return { by: { kind: "member", memberId: member.id }, number: String(closed!.number) };
    }

    it("an alliance ratified by member vote on both sides: proposed by A's officer, received by B, accepted, both told, listed in A's following", async () => {
      a = await overrideBylaws(ma.muster.unions, "a", { allianceRatification: "member_vote" });
      b = await overrideBylaws(mb.muster.unions, "b", { allianceRatification: "member_vote" });
      const atA = await passedResolution(ma, a, "alice", `Ally with ${groupId(mb, "b").href}`);
      const deps = { ...ma.muster.membership, federation: ma.muster.federation, origin: ma.origin };
      // Without the vote, or with a vote about someone else, A's officer cannot commit A.
      await assert.rejects(proposeTo(deps, a, atA.by, groupId(mb, "b").href, "ally", "both"), /ratified by member vote/);
      const offered = await proposeTo(deps, a, atA.by, groupId(mb, "b").href, "ally", "both", { proposalId: atA.number });
      assert.equal(offered.state, "offered");
      const received = await eventually(async () => (await relWith(mb, b, groupId(ma, "a"))), "B receives the offer");
      assert.equal(received.state, "received");
      assert.equal(received.kind, "ally");
      assert.equal(received.relay, "both");
      assert.equal(received.followId, offered.followId);
      assert.equal(await findMemberByActor(mb.muster.database.db, b.id, groupId(ma, "a").href), undefined);

      const atB = await passedResolution(mb, b, "bob", `Accept the alliance offered by ${groupId(ma, "a").href}`);
      await assert.rejects(answerOffer(mb.muster.membership, b.id, received.id, atB.by, true), /ratified by member vote/);
      await answerOffer(mb.muster.membership, b.id, received.id, atB.by, true, atB.number);
      const active = await eventually(async () => (await relWith(ma, a, groupId(mb, "b")))?.state === "active" && true, "A sees the Accept");
      assert.ok(active);
      assert.deepEqual((await relationshipHistory(ma.muster.database.db, a.id, offered.id)).map((e) => e.event), ["proposed", "accepted"]);
      assert.ok((await relationshipHistory(ma.muster.database.db, a.id, offered.id))[0]!.proposalId, "A's step names its vote");
      assert.ok((await relationshipHistory(mb.muster.database.db, b.id, received.id)).find((e) => e.event === "accepted")!.proposalId, "B's step names its vote");
      a = await overrideBylaws(ma.muster.unions, "a", { allianceRatification: "officers" });
      b = await overrideBylaws(mb.muster.unions, "b", { allianceRatification: "officers" });
      // Each side's members are told.
      for (const [name, from] of [["alice", groupId(ma, "a")], ["bob", groupId(mb, "b")]] as const) {
        await eventually(async () => {
          for (const x of peer.received) {
            if (!(x instanceof Create) || x.actorId?.href !== from.href) continue;
            const note = await x.getObject({ crossOrigin: "trust" });
            if (note instanceof Note && /now united/.test(String(note.content))) return true;
          }
          return false;
        }, `${name} is told of the alliance`);
      }
      const following = await (await fetch(new URL("/u/a/following", ma.origin), { headers: { Accept: "application/activity+json" } })).json() as { orderedItems?: string[]; items?: string[] };
      assert.deepEqual(following.orderedItems ?? following.items, [groupId(mb, "b").href]);
      // Each lists the other: in its allies collection (named in the actor's streams) and on its public page.
      const actor = await (await fetch(groupId(mb, "b"), { headers: { Accept: "application/activity+json" } })).json() as { streams: string[] };
      const allies = await (await fetch(actor.streams.find((u) => u.endsWith("/allies"))!)).json() as { orderedItems: string[] };
      assert.deepEqual(allies.orderedItems, [groupId(ma, "a").href]);
      const page = await (await fetch(groupId(ma, "a"), { headers: { Accept: "text/html" } })).text();
      assert.match(page, new RegExp(`data-testid="allies"><li><a href="${groupId(mb, "b").href}"`));
    });

    it("A's public call-to-action is relayed by B to B's members as an Announce by B", async () => {
      const action = await composeAction(ma.muster.membership, a.id, OPERATOR, { title: "Picket at noon", text: "Gate 2.", kind: "show-up" }, { publishNow: true });
      const noteId = new URL(`/u/a/actions/${action.id}`, ma.origin);
      await eventually(async () => (await announcesOf(groupId(mb, "b"), noteId)) > 0, "bob gets B's Announce of A's call");
      const relayed = await mb.muster.database.db.selectFrom("relay_requests").selectAll().where("union_id", "=", b.id).where("note_id", "=", noteId.href).execute();
      assert.equal(relayed.length, 1);
      assert.equal(relayed[0]!.state, "relayed");
    });

    it("commitments counted back: B's members' like and \"I'm in\" reply to A's relayed call are reported to A, attributed to B, as totals", async () => {
      const action = await composeAction(ma.muster.membership, a.id, OPERATOR, { title: "Sign the letter", text: "Today.", kind: "show-up" }, { publishNow: true });
      callNote = new URL(`/u/a/actions/${action.id}`, ma.origin);
      callId = action.id;
      await eventually(async () => (await announcesOf(groupId(mb, "b"), callNote)) > 0, "bob gets B's Announce of A's call");
      const bGroup = await peer.lookup(groupId(mb, "b")) as Group;
      const like = new Like({ id: new URL("/likes/bob-1", peer.origin), actor: peer.actorId("bob"), object: callNote });
      await peer.send("bob", bGroup, like);
      const reply = new Note({ id: new URL("/notes/bob-in", peer.origin), attribution: peer.actorId("bob"), replyTarget: callNote, content: "<p>I'm in, see you there</p>", to: PUBLIC_COLLECTION, cc: groupId(mb, "b") });
      await peer.send("bob", bGroup, new Create({ id: new URL("/notes/bob-in/activity", peer.origin), actor: peer.actorId("bob"), object: reply, to: PUBLIC_COLLECTION, cc: groupId(mb, "b") }));
      // A stranger's like of the call at B counts for nobody.
      await peer.send("mallory", bGroup, new Like({ id: new URL("/likes/mallory-1", peer.origin), actor: peer.actorId("mallory"), object: callNote }));
      const tally = await eventually(async () => {
        const t = await talliesOf(ma.muster.database.db, a.id, callId);
        return t.length === 1 && t[0]!.replies === 1 && t[0]!.likes === 1 ? t[0] : undefined;
      }, "A receives B's totals");
      assert.equal(tally.reporterActorId, groupId(mb, "b").href);
      assert.equal(tally.commitments, 1, "one member committed (a like and a pledge by the same member)");
      // The same like delivered again changes nothing at B.
      await peer.send("bob", bGroup, like);
      await seen(mb, like.id!);
      assert.deepEqual(await relayedTotals(mb.muster.database.db, b.id, callNote.href), { commitments: 1, replies: 1, likes: 1 });
      const page = await (await fetch(callNote, { headers: { Accept: "text/html" } })).text();
      assert.match(page, new RegExp(`data-testid="relayed-tally" data-union="${groupId(mb, "b").href}"><strong>1</strong> from <a [^>]*>Couriers B</a>`));
    });

    it("hostile: a report from a non-ally, a forged one, and a replayed older one change nothing", async () => {
      const before = await talliesOf(ma.muster.database.db, a.id, callId);
      const report = (from: URL, id: string, n: number, at: number) => new Update({
        id: new URL(`${from.href}/${id}`), actor: from, to: groupId(ma, "a"),
        object: new Collection({
          id: new URL(`${from.href}/relays/x/tally`), attribution: from, contexts: [callNote], name: "Someone", updated: Temporal.Instant.fromEpochMilliseconds(at),
          items: [new Collection({ name: "commitments", totalItems: n }), new Collection({ name: "replies", totalItems: n }), new Collection({ name: "likes", totalItems: n })],
        }),
      });
      // C is no ally of A: its own, properly signed report is refused.
      const fromC = report(groupId(mc, "c"), "t1", 500, Date.now());
      await sendAs(mc, "c", recipient(ma, "a"), fromC);
      await seen(ma, fromC.id!);
      // Mallory signs a report that claims to be B's: the signature is not B's.
      const forged = report(groupId(mb, "b"), "forged", 900, Date.now());
      const res = await fetch(await peer.signedPost(new URL("/u/a/inbox", ma.origin), JSON.stringify(await forged.toJsonLd()), { as: "mallory" }));
      assert.ok(res.status >= 400, `forged report answered ${res.status}`);
      // B's own report, replayed with an older time, loses to the newer one.
      const stale = report(groupId(mb, "b"), "stale", 700, Date.now() - 3600_000);
      await sendAs(mb, "b", recipient(ma, "a"), stale);
      await seen(ma, stale.id!);
      assert.deepEqual(await talliesOf(ma.muster.database.db, a.id, callId), before);
      assert.equal(await ma.muster.database.db.selectFrom("relay_tallies").select("reporter_actor_id").where("reporter_actor_id", "=", groupId(mc, "c").href).executeTakeFirst(), undefined);
    });

    it("hostile: an Accept of a Follow never sent changes nothing", async () => {
      const never = new URL(`/u/a/relationships/00000000-0000-4000-8000-000000000000`, ma.origin);
      const accept = new Accept({ id: new URL("/u/c/forged-accept", mc.origin), actor: groupId(mc, "c"), object: new Follow({ id: never, actor: groupId(ma, "a"), object: groupId(mc, "c") }) });
      await sendAs(mc, "c", recipient(ma, "a"), accept);
      await seen(ma, accept.id!);
      assert.equal(await relWith(ma, a, groupId(mc, "c")), undefined);
    });

    it("hostile: a stranger's Undo of the alliance's Follow, or of B's Accept, changes nothing", async () => {
      const onB = (await relWith(mb, b, groupId(ma, "a")))!;
      // Mallory (a person elsewhere) and union C both try; neither is the other party.
      const undo1 = new Undo({ id: new URL("/undo-by-mallory", peer.origin), actor: peer.actorId("mallory"), object: new Follow({ id: new URL(onB.followId), actor: peer.actorId("mallory"), object: groupId(mb, "b") }) });
      await peer.send("mallory", await peer.lookup(groupId(mb, "b")) as Group, undo1);
      await seen(mb, undo1.id!);
      const undo2 = new Undo({ id: new URL("/u/c/forged-undo", mc.origin), actor: groupId(mc, "c"), object: new Accept({ id: new URL(`${onB.followId}/accept`), actor: groupId(mc, "c"), object: new URL(onB.followId) }) });
      await sendAs(mc, "c", recipient(ma, "a"), undo2);
      await seen(ma, undo2.id!);
      assert.equal((await relWith(mb, b, groupId(ma, "a")))?.state, "active");
      assert.equal((await relWith(ma, a, groupId(mb, "b")))?.state, "active");
    });

    it("hostile: an Announce from a union that is no ally is not relayed", async () => {
      const announce = new Announce({ id: new URL("/u/c/stray-announce", mc.origin), actor: groupId(mc, "c"), object: new URL("/u/c/actions/stray", mc.origin) });
      await sendAs(mc, "c", recipient(mb, "b"), announce);
      await seen(mb, announce.id!);
      const relayed = await mb.muster.database.db.selectFrom("relay_requests").select("id").where("note_id", "=", "/u/c/actions/stray").execute();
      assert.equal(relayed.length, 0);
      assert.equal(await announcesOf(groupId(mb, "b"), new URL("/u/c/actions/stray", mc.origin)), 0);
    });

    it("hostile: a chapter claim stays an offer until the parent's officers accept it", async () => {
      const claim = new Follow({
        id: new URL("/u/c/relationships/claim", mc.origin), actor: groupId(mc, "c"), object: groupId(ma, "a"),
        instrument: offerInstrument(groupId(mc, "c"), groupId(ma, "a"), "parent", "theirs"),
      });
      await sendAs(mc, "c", recipient(ma, "a"), claim);
      const rel = await eventually(async () => relWith(ma, a, groupId(mc, "c")), "A records C's claim");
      assert.equal(rel.kind, "chapter");
      assert.equal(rel.state, "received", "not a chapter until A says so");
      // An offer naming someone else as its subject is no offer at all.
      const forged = new Follow({
        id: new URL("/u/c/relationships/forged", mc.origin), actor: groupId(mc, "c"), object: groupId(mb, "b"),
        instrument: offerInstrument(groupId(ma, "a"), groupId(mb, "b"), "parent", "theirs"),
      });
      await sendAs(mc, "c", recipient(mb, "b"), forged);
      await seen(mb, forged.id!);
      assert.equal(await relWith(mb, b, groupId(mc, "c")), undefined);
      await endRelationship(ma.muster.membership, a.id, rel.id, OPERATOR);
    });

    it("either side ends the alliance with Undo; relaying stops", async () => {
      const onB = (await relWith(mb, b, groupId(ma, "a")))!;
      await endRelationship(mb.muster.membership, b.id, onB.id, OPERATOR);
      await eventually(async () => (await relWith(ma, a, groupId(mb, "b")))?.state === "ended", "A sees B's Undo");
      const action = await composeAction(ma.muster.membership, a.id, OPERATOR, { title: "Second call", text: "Again.", kind: "show-up" }, { publishNow: true });
      const noteId = new URL(`/u/a/actions/${action.id}`, ma.origin);
      // Alice (A's member) receiving it shows the fan-out ran; B was no longer sent it.
      await eventually(async () => peer.received.some((x) => x instanceof Create && x.objectId?.href === noteId.href), "alice gets the call");
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(await announcesOf(groupId(mb, "b"), noteId), 0);
      const following = await (await fetch(new URL("/u/a/following", ma.origin), { headers: { Accept: "application/activity+json" } })).json() as { orderedItems?: string[]; items?: string[] };
      assert.deepEqual(following.orderedItems ?? following.items ?? [], []);
    });

    it("chapters: A's call cascades to chapter C and grand-chapter B, each relaying it exactly once", async () => {
      // C (server 3) becomes a chapter of A (server 1); B (server 2) a chapter of C.
      const cOffer = await propose(mc, c, groupId(ma, "a").href, "parent");
      const atA = await eventually(async () => (await rels(ma, a)).find((r) => r.followId === cOffer.followId), "A receives C's request");
      assert.equal(atA.kind, "chapter");
      await answerOffer(ma.muster.membership, a.id, atA.id, OPERATOR, true);
      await eventually(async () => (await relWith(mc, c, groupId(ma, "a")))?.state === "active", "C is A's chapter");
      const bOffer = await propose(mb, b, groupId(mc, "c").href, "parent");
      const atC = await eventually(async () => (await rels(mc, c)).find((r) => r.followId === bOffer.followId), "C receives B's request");
      await answerOffer(mc.muster.membership, c.id, atC.id, OPERATOR, true);
      await eventually(async () => (await relWith(mb, b, groupId(mc, "c")))?.state === "active", "B is C's chapter");
      // The parent's chapters collection confirms the chapter's backlink.
      const chapters = await (await fetch(new URL("/u/a/chapters", ma.origin))).json() as { orderedItems: string[] };
      assert.deepEqual(chapters.orderedItems, [groupId(mc, "c").href]);
      const cActor = await (await fetch(groupId(mc, "c"), { headers: { Accept: "application/activity+json" } })).json() as { attachment?: { name: string; value: string } | { name: string; value: string }[] };
      const fields = [cActor.attachment ?? []].flat();
      assert.ok(fields.some((f) => f.name === "Parent union" && f.value.includes(groupId(ma, "a").href)), JSON.stringify(cActor.attachment));
      const cPage = await (await fetch(groupId(mc, "c"), { headers: { Accept: "text/html" } })).text();
      assert.match(cPage, new RegExp(`data-testid="parent"><li><a href="${groupId(ma, "a").href}"`));
      assert.match(cPage, new RegExp(`data-testid="chapters"><li><a href="${groupId(mb, "b").href}"`));

      const action = await composeAction(ma.muster.membership, a.id, OPERATOR, { title: "Strike vote", text: "Friday.", kind: "show-up" }, { publishNow: true });
      const noteId = new URL(`/u/a/actions/${action.id}`, ma.origin);
      treeCall = noteId;
      await eventually(async () => (await announcesOf(groupId(mc, "c"), noteId)) > 0, "carol (C) gets C's relay");
      await eventually(async () => (await announcesOf(groupId(mb, "b"), noteId)) > 0, "bob (B, a grand-chapter) gets B's relay");
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(await announcesOf(groupId(mc, "c"), noteId), 1);
      assert.equal(await announcesOf(groupId(mb, "b"), noteId), 1);
    });

    it("chapter totals roll up: A sees C and grand-chapter B with their members and commitments, and C's lead in its cabinet", async () => {
      // B (1 member, bob, who committed to A's earlier call while an ally) reports to C; C (carol) reports itself and B to A.
      const tree = await eventually(async () => {
        const t = await chapterTree(ma.muster.database.db, a.id);
        return t[0]?.chapters[0]?.members === 1 && t[0].members === 1 ? t : undefined;
      }, "A holds C's report with B inside it");
      assert.equal(tree.length, 1);
      assert.equal(tree[0]!.actorId, groupId(mc, "c").href);
      assert.equal(tree[0]!.name, "Chapter C");
      assert.deepEqual(tree[0]!.leads.map((l) => l.handle), [`@carol@${peer.origin.host}`]);
      assert.deepEqual(tree[0]!.chapters.map((n) => [n.actorId, n.name, n.members, n.commitments, n.chapters.length]), [[groupId(mb, "b").href, "Couriers B", 1, 1, 0]]);
      const whole = treeTotals(await chapterSnapshot(ma.muster.database.db, a.id, groupId(ma, "a").href));
      assert.deepEqual(whole, { members: 3, commitments: 1, chapters: 2 });
      // The public page shows the tree, grand-chapter nested under its chapter, with totals when the roster is public.
      await overrideBylaws(ma.muster.unions, "a", { membersVisibility: "public" });
      const page = await (await fetch(groupId(ma, "a"), { headers: { Accept: "text/html" } })).text();
      assert.match(page, new RegExp(`data-testid="chapters"><li><a href="${groupId(mc, "c").href}" [^>]*>Chapter C</a>[\\s\\S]*?1 member, 0 commitments[\\s\\S]*?<ul class="chapter-tree"><li><a href="${groupId(mb, "b").href}" [^>]*>Couriers B</a>[\\s\\S]*?1 member, 1 commitment<`));
      assert.match(page, /data-testid="tree-totals">The whole union: 3 members and 1 commitment across 2 chapters\./);
      await overrideBylaws(ma.muster.unions, "a", { membersVisibility: "signed-in" });
      const hidden = await (await fetch(groupId(ma, "a"), { headers: { Accept: "text/html" } })).text();
      assert.doesNotMatch(hidden, /data-testid="chapter-totals"|tree-totals/, "no counts for a visitor who may not see the roster");
    });

    it("counting back through the tree: grand-chapter B's member likes A's call at A (as Mastodon does); A asks C, C asks B, and A counts it via C; a stranger is not counted; the hop bound holds", async () => {
      const counted = () => ma.muster.database.db.selectFrom("partner_counted_responses").selectAll().where("union_id", "=", a.id).execute();
      const aGroup = await peer.lookup(groupId(ma, "a")) as Group;
      const like = new Like({ id: new URL("/likes/bob-tree", peer.origin), actor: peer.actorId("bob"), object: treeCall });
      await peer.send("bob", aGroup, like);
      await seen(ma, like.id!);
      const rows = await eventually(async () => {
        const r = (await counted()).filter((x) => x.actor_id === peer.actorId("bob").href);
        return r.length ? r : undefined;
      }, "bob's like counted at A");
      assert.deepEqual(rows.map((r) => [r.kind, r.via_actor_id]), [["like", groupId(mc, "c").href]], "attributed to C, the chapter in between");
      const stranger = new Like({ id: new URL("/likes/mallory-tree", peer.origin), actor: peer.actorId("mallory"), object: treeCall });
      await peer.send("mallory", aGroup, stranger);
      await seen(ma, stranger.id!);
      assert.ok(!(await counted()).some((x) => x.actor_id === peer.actorId("mallory").href), "a member of nobody's is not counted");
      // C answers A about bob (B's member) yes; at the hop bound it does not ask B, so no.
      const ctx = ma.muster.federation.createContext(ma.origin, undefined);
      const rsa = (await ctx.getActorKeyPairs("a")).find((k) => k.privateKey.algorithm.name === "RSASSA-PKCS1-v1_5")!;
      const askC = async (hops: number) => {
        const url = new URL(`/u/c/membership-check?actor=${encodeURIComponent(peer.actorId("bob").href)}&hops=${hops}`, mc.origin);
        const res = await fetch(await signRequest(new Request(url, { headers: { Accept: "application/activity+json" } }), rsa.privateKey, rsa.keyId));
        assert.equal(res.status, 200);
        return (await res.json() as Record<string, unknown>)["muster:member"];
      };
      assert.equal(await askC(0), true);
      assert.equal(await askC(4), false);
      // B is C's chapter, not its parent: asked by B, C does not ask its chapters on B's behalf (B's own member is still not C's).
      const bCtx = mb.muster.federation.createContext(mb.origin, undefined);
      const bRsa = (await bCtx.getActorKeyPairs("b")).find((k) => k.privateKey.algorithm.name === "RSASSA-PKCS1-v1_5")!;
      const fromB = await fetch(await signRequest(new Request(new URL(`/u/c/membership-check?actor=${encodeURIComponent(peer.actorId("bob").href)}`, mc.origin), { headers: { Accept: "application/activity+json" } }), bRsa.privateKey, bRsa.keyId));
      assert.equal((await fromB.json() as Record<string, unknown>)["muster:member"], false);
    });
  });
}
