import "../src/temporal.ts";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Accept, Add, Follow, type Group, Remove } from "@fedify/vocab";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { eventually, makeUnion, startMuster, type TestMuster } from "./helpers/muster.ts";
import { type Peer, startPeer } from "./helpers/peer.ts";
import { OPERATOR } from "../src/members/members.ts";
import { answerOffer, endRelationship, listRelationships } from "../src/relationships/relationships.ts";
import { listFeaturedItems, listStamps, syncFeatured, withdrawStamp, syncAllFeatured, unionsOutOfLine } from "../src/relationships/featured.ts";
import type { Union } from "../src/unions/unions.ts";
import { proposeTo } from "../federation/relationships.ts";

// FEP-7aa9 between two real Muster servers on loopback: each union lists its
// ally only with the ally's consent, a stamp its server issued and that
// anyone can fetch; a withdrawn stamp removes the item; forged consent is
// refused. Everything between them is signed HTTP through the real queue.

type Json = Record<string, unknown>;
const AP = { Accept: "application/activity+json" };

for (const d of dialects) {
  describe(`featured collections (FEP-7aa9: allies and cabinet), on ${d.name}`, { skip: d.skip }, () => {
    const dbs: TestDatabase[] = [];
    let ma: TestMuster, mb: TestMuster;
    let a: Union, b: Union;
    let peer: Peer;
    const groupId = (m: TestMuster, slug: string) => new URL(`/u/${slug}`, m.origin);
    const get = async (url: string | URL) => (await fetch(url, { headers: AP }));
    const itemsOf = (m: TestMuster, u: Union) => listFeaturedItems(m.muster.database.db, u.id);

    before(async () => {
      peer = await startPeer(["mallory", "fiona"]);
      for (let i = 0; i < 2; i++) dbs.push(await d.create());
      ma = await startMuster(dbs[0]!);
      mb = await startMuster(dbs[1]!);
      a = await makeUnion(ma, "a", { name: "Riders A", joinPolicy: "open" });
      b = await makeUnion(mb, "b", { name: "Couriers B" });
      // Fiona follows A (a member): she is told of changes to A's collections.
      const aGroup = await peer.lookup(groupId(ma, "a")) as Group;
      await peer.send("fiona", aGroup, new Follow({ id: new URL("/follows/fiona-a", peer.origin), actor: peer.actorId("fiona"), object: aGroup.id }));
      await eventually(async () => peer.received.some((x) => x instanceof Accept && x.actorId?.href === aGroup.id!.href), "fiona joins A");
      await proposeTo({ ...ma.muster.membership, federation: ma.muster.federation, origin: ma.origin }, a, OPERATOR, groupId(mb, "b").href, "ally", "both");
      const received = await eventually(async () => (await listRelationships(mb.muster.database.db, b.id)).find((r) => r.state === "received"), "B receives the offer");
      await answerOffer(mb.muster.membership, b.id, received.id, OPERATOR, true);
      await eventually(async () => (await listRelationships(ma.muster.database.db, a.id)).some((r) => r.state === "active"), "the alliance is active on A");
    });
    after(async () => {
      await ma?.stop();
      await mb?.stop();
      await peer?.close();
      for (const t of dbs) await t.destroy();
    });

    it("A asks B for consent; B, an ally, stamps it at once; A lists B with that stamp, which anyone can fetch and check", async () => {
      const r = await syncFeatured(ma.muster.membership, a.id);
      assert.equal(r.requested, 1, "one new ally to ask (the leader has no Fediverse actor yet)");
      assert.equal((await syncFeatured(ma.muster.membership, a.id)).requested, 0, "asking is done once");
      // The worker's pass finds nothing to do, so it opens no transaction at all.
      assert.deepEqual(await unionsOutOfLine(ma.muster.database.db), []);
      assert.equal(await syncAllFeatured(ma.muster.membership), 0);
      const item = await eventually(async () => (await itemsOf(ma, a)).find((i) => i.state === "accepted"), "B's consent reaches A");
      assert.equal(item.actorId, groupId(mb, "b").href);
      // A's followers are sent an Add of the item to the allies collection (as Mastodon 4.6 sends), pointing at its document.
      const add = await eventually(async () => peer.received.find((x) => x instanceof Add && x.actorId?.href === groupId(ma, "a").href) as Add | undefined, "fiona receives A's Add");
      const itemUrl = new URL(`/u/a/collections/allies/items/${item.id}`, ma.origin);
      assert.equal(add.targetId?.href, new URL("/u/a/collections/allies", ma.origin).href);
      assert.equal(add.objectId?.href, itemUrl.href);
      const doc = await (await get(itemUrl)).json() as Json;
      assert.equal(doc.type, "FeaturedItem");
      assert.equal(doc.featuredObject, groupId(mb, "b").href);
      assert.equal(doc.featureAuthorization, item.stamp);
      const stamps = await listStamps(mb.muster.database.db, b.id);
      assert.equal(stamps.length, 1);
      assert.equal(stamps[0]!.state, "accepted");
      assert.equal(stamps[0]!.requester, groupId(ma, "a").href);

      const coll = await (await get(new URL("/u/a/collections/allies", ma.origin))).json() as Json;
      assert.equal(coll.type, "FeaturedCollection");
      // The FEP's terms travel inline, so nobody has to fetch w3id.org to read the collection.
      const terms = (coll["@context"] as unknown[]).find((c) => typeof c === "object" && c !== null && "FeaturedCollection" in c) as Json;
      assert.equal(terms.fep7aa9, "https://w3id.org/fep/7aa9#");
      assert.equal(terms.FeaturedCollection, "fep7aa9:FeaturedCollection");
      assert.ok(!(coll["@context"] as unknown[]).includes("https://w3id.org/fep/7aa9"));
      assert.equal(coll.attributedTo, groupId(ma, "a").href);
      assert.equal(coll.totalItems, 1);
      const [entry] = coll.orderedItems as Json[];
      assert.equal(entry!.type, "FeaturedItem");
      assert.equal(entry!.featuredObject, groupId(mb, "b").href);
      // Every item's stamp resolves, on the featured actor's own server, and says what it must.
      const stampUrl = String(entry!.featureAuthorization);
      assert.equal(new URL(stampUrl).origin, mb.origin.origin);
      const stamp = await (await get(stampUrl)).json() as Json;
      assert.equal(stamp.type, "FeatureAuthorization");
      assert.equal(stamp.id, stampUrl);
      assert.equal(stamp.interactingObject, coll.id);
      assert.equal(stamp.interactionTarget, groupId(mb, "b").href);

      const actor = await (await get(groupId(ma, "a"))).json() as Json;
      assert.equal(actor.featuredCollections, new URL("/u/a/collections", ma.origin).href);
      const policy = (actor.interactionPolicy as Json).canFeature as Json;
      assert.deepEqual(policy.automaticApproval, [new URL("/u/a/following", ma.origin).href]);
      const list = await (await get(String(actor.featuredCollections))).json() as Json;
      assert.ok((list.items as string[]).includes(String(coll.id)));
    });

    it("the cabinet collection is shown only to those who may see who holds office", async () => {
      const cab = await get(new URL("/u/a/collections/cabinet", ma.origin));
      assert.equal(cab.status, 401, "unsigned: the default visibility keeps officers to signed-in viewers");
      await cab.body?.cancel();
    });

    it("hostile: unsigned, forged-actor and cross-server FeatureRequests are refused; a stranger's request waits for an officer", async () => {
      const inbox = new URL("/u/b/inbox", mb.origin);
      const body = (actor: string, id: string) => JSON.stringify({
        "@context": ["https://www.w3.org/ns/activitystreams", "https://w3id.org/fep/7aa9"],
        id, type: "FeatureRequest", actor, object: groupId(mb, "b").href, instrument: new URL("/users/mallory/collections/1", peer.origin).href,
      });
      const unsigned = await fetch(inbox, { method: "POST", headers: { "Content-Type": "application/activity+json" }, body: body(peer.actorId("mallory").href, new URL("/r/1", peer.origin).href) });
      assert.equal(unsigned.status, 401);
      await unsigned.body?.cancel();
      // Signed by mallory but claiming to be union A.
      const forgedText = body(groupId(ma, "a").href, new URL("/u/a/feature-requests/forged", ma.origin).href);
      const forged = await fetch(await peer.signedPost(inbox, forgedText, { as: "mallory" }));
      assert.equal(forged.status, 401);
      await forged.body?.cancel();
      const before = (await listStamps(mb.muster.database.db, b.id)).length;
      // A stranger (not an ally): recorded, pending; no stamp is served until an officer accepts.
      const text = body(peer.actorId("mallory").href, new URL("/r/2", peer.origin).href);
      const res = await fetch(await peer.signedPost(inbox, text, { as: "mallory" }));
      assert.equal(res.status, 202);
      await res.body?.cancel();
      const again = await fetch(await peer.signedPost(inbox, text, { as: "mallory" }));
      assert.equal(again.status, 202, "a repeat is accepted");
      await again.body?.cancel();
      const stamps = await listStamps(mb.muster.database.db, b.id);
      assert.equal(stamps.length, before + 1, "and recorded once");
      const pending = stamps.find((s) => s.requester === peer.actorId("mallory").href)!;
      assert.equal(pending.state, "pending");
      const notYet = await get(new URL(`/u/b/stamps/${pending.id}`, mb.origin));
      assert.equal(notYet.status, 410);
      await notYet.body?.cancel();
    });

    it("hostile: B's genuine stamp for another collection does not count as consent to this one", async () => {
      const db = ma.muster.database.db;
      const now = Date.now();
      await db.insertInto("featured_items").values({ id: "x-cabinet-b", union_id: a.id, collection: "cabinet", actor_id: groupId(mb, "b").href, state: "requested", stamp: null, created_at: now, updated_at: now }).execute();
      const alliesStamp = (await itemsOf(ma, a)).find((i) => i.collection === "allies")!.stamp!;
      const forged = new Accept({
        id: new URL("/u/b/forged-accept", mb.origin), actor: groupId(mb, "b"),
        object: new URL("/u/a/feature-requests/x-cabinet-b", ma.origin), result: new URL(alliesStamp),
      });
      const ctx = mb.muster.federation.createContext(mb.origin, undefined);
      await ctx.sendActivity({ identifier: "b" }, { id: groupId(ma, "a"), inboxId: new URL("/u/a/inbox", ma.origin), endpoints: null }, forged);
      await eventually(async () => (await db.selectFrom("inbox_activities").select("id").where("id", "=", forged.id!.href).executeTakeFirst()) ?? (await new Promise((r) => setTimeout(r, 1500)), true), "the Accept is handled");
      const item = (await itemsOf(ma, a)).find((i) => i.id === "x-cabinet-b")!;
      assert.equal(item.state, "requested", "the stamp names the allies collection, not the cabinet");
      assert.equal(item.stamp, null);
    });

    it("a withdrawn stamp removes the item: B's officer withdraws consent, A drops B from its list", async () => {
      const stamp = (await listStamps(mb.muster.database.db, b.id)).find((s) => s.requester === groupId(ma, "a").href)!;
      await withdrawStamp(mb.muster.membership, b.id, stamp.id, OPERATOR);
      const gone = await get(new URL(`/u/b/stamps/${stamp.id}`, mb.origin));
      assert.equal(gone.status, 410, "the stamp no longer verifies");
      await gone.body?.cancel();
      await eventually(async () => (await itemsOf(ma, a)).find((i) => i.collection === "allies")?.state === "withdrawn", "A receives the Delete of the stamp");
      const item = (await itemsOf(ma, a)).find((i) => i.collection === "allies")!;
      const itemUrl = new URL(`/u/a/collections/allies/items/${item.id}`, ma.origin);
      const remove = await eventually(async () => peer.received.find((x) => x instanceof Remove && x.actorId?.href === groupId(ma, "a").href) as Remove | undefined, "fiona receives A's Remove");
      assert.equal(remove.objectId?.href, itemUrl.href);
      assert.equal(remove.targetId?.href, new URL("/u/a/collections/allies", ma.origin).href);
      const goneItem = await get(itemUrl);
      assert.equal(goneItem.status, 410, "the removed item's document is gone");
      await goneItem.body?.cancel();
      const coll = await (await get(new URL("/u/a/collections/allies", ma.origin))).json() as Json;
      assert.equal(coll.totalItems, 0);
      assert.deepEqual(coll.orderedItems, []);
    });

    it("when the alliance ends, B's automatic consent to A's list is withdrawn and A leaves B's list", async () => {
      await syncFeatured(mb.muster.membership, b.id);
      await eventually(async () => (await itemsOf(mb, b)).find((i) => i.actorId === groupId(ma, "a").href)?.state === "accepted", "B lists A with A's consent");
      const rel = (await listRelationships(mb.muster.database.db, b.id)).find((r) => r.state === "active")!;
      await endRelationship(mb.muster.membership, b.id, rel.id, OPERATOR);
      await eventually(async () => (await listRelationships(ma.muster.database.db, a.id)).every((r) => r.state !== "active"), "A sees the end");
      // A change the cheap check must see: B lists a former ally; A stamped one automatically.
      assert.deepEqual(await unionsOutOfLine(mb.muster.database.db), [b.id]);
      assert.deepEqual(await unionsOutOfLine(ma.muster.database.db), [a.id]);
      await syncFeatured(mb.muster.membership, b.id);
      assert.equal((await itemsOf(mb, b)).find((i) => i.actorId === groupId(ma, "a").href)!.state, "withdrawn", "B drops its former ally");
      const r = await syncFeatured(ma.muster.membership, a.id);
      assert.deepEqual(await unionsOutOfLine(ma.muster.database.db), []);
      assert.equal(r.withdrawn, 1, "A withdraws the consent it gave B automatically as an ally");
      const aStamp = (await listStamps(ma.muster.database.db, a.id)).find((s) => s.requester === groupId(mb, "b").href)!;
      assert.equal(aStamp.state, "withdrawn");
      const res = await get(new URL(`/u/a/stamps/${aStamp.id}`, ma.origin));
      assert.equal(res.status, 410);
      await res.body?.cancel();
    });
  });
}
