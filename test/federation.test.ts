import { getRemoteActor } from "../src/actors/remote-actors.ts";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Create, Follow, Group, Note, Undo } from "@fedify/vocab";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { eventually, makeUnion, startMuster, type TestMuster } from "./helpers/muster.ts";
import { type Peer, startPeer } from "./helpers/peer.ts";
import { unionsOfActor } from "../src/members/membership.ts";

const AP = "application/activity+json";

for (const d of dialects) {
  describe(`federation core on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    let m: TestMuster;
    let peer: Peer;
    let actorId: URL;
    let seq = 0;
    const activityId = () => new URL(`/activities/${Date.now()}-${++seq}`, peer.origin);

    before(async () => {
      tdb = await d.create();
      m = await startMuster(tdb);
      peer = await startPeer();
      await makeUnion(m, "riders");
      actorId = new URL("/u/riders", m.origin);
    });
    after(async () => {
      await m?.stop();
      await peer?.close();
      await tdb?.destroy();
    });

    const db = () => m.muster.database.db;
    const inboxRows = () => db().selectFrom("inbox_activities").selectAll().execute();
    const queued = async () => Number((await db().selectFrom("fedify_mq").select((e) => e.fn.countAll<number>().as("n")).executeTakeFirstOrThrow()).n);

    it("answers WebFinger for acct:slug@host with the actor id", async () => {
      const res = await fetch(new URL(`/.well-known/webfinger?resource=acct:riders@${m.origin.host}`, m.origin));
      assert.equal(res.status, 200);
      const jrd = await res.json() as { subject: string; links: { rel: string; type?: string; href: string }[] };
      assert.equal(jrd.subject, `acct:riders@${m.origin.host}`);
      const self = jrd.links.find((l) => l.rel === "self");
      assert.equal(self?.href, actorId.href);
      assert.equal(self?.type, AP);
      const missing = await fetch(new URL(`/.well-known/webfinger?resource=acct:nobody@${m.origin.host}`, m.origin));
      assert.equal(missing.status, 404);
    });

    it("serves a Group the peer can resolve and verify, with keys and collections", async () => {
      const group = await peer.lookup(actorId);
      assert.ok(group instanceof Group, "the actor is a Group");
      assert.equal(group.id?.href, actorId.href);
      assert.equal(group.preferredUsername?.toString(), "riders");
      assert.equal(group.name?.toString(), "Riders United");
      assert.equal(group.summary?.toString(), "Fair pay for delivery riders");
      assert.equal(group.inboxId?.href, new URL("/u/riders/inbox", m.origin).href);
      assert.equal(group.endpoints?.sharedInbox?.href, new URL("/inbox", m.origin).href);
      assert.equal(group.followersId?.href, new URL("/u/riders/followers", m.origin).href);
      assert.equal(group.outboxId?.href, new URL("/u/riders/outbox", m.origin).href);
      assert.equal(group.featuredId?.href, new URL("/u/riders/featured", m.origin).href);
      assert.equal(group.manuallyApprovesFollowers, true);
      const key = await group.getPublicKey();
      assert.equal(key?.ownerId?.href, actorId.href);
      const pub = await key?.publicKey;
      assert.equal(pub?.algorithm.name, "RSASSA-PKCS1-v1_5");
      assert.equal((pub?.algorithm as RsaHashedKeyAlgorithm).modulusLength, 2048);
      const multikeys = [];
      for await (const k of group.getAssertionMethods()) multikeys.push(k);
      assert.ok(multikeys.some((k) => k.publicKey?.algorithm.name === "Ed25519"), "an Ed25519 multikey for FEP-8b32");
      // The followers are the union's members: a new union shows them to no unsigned fetch.
      assert.equal((await fetch(new URL("/u/riders/followers", m.origin), { headers: { Accept: AP } })).status, 401);
      for (const path of ["outbox", "featured"]) {
        const res = await fetch(new URL(`/u/riders/${path}`, m.origin), { headers: { Accept: AP } });
        assert.equal(res.status, 200, path);
        const json = await res.json() as { type: string; totalItems?: number };
        assert.match(json.type, /Collection/);
      }
    });

    it("never serves private keys", async () => {
      const res = await fetch(actorId, { headers: { Accept: AP } });
      const text = await res.text();
      assert.ok(!/"d"\s*:|privateKey|PRIVATE KEY/.test(text), "no private key material in the actor document");
    });

    it("content-negotiates: browsers get the union page at the same URL", async () => {
      const res = await fetch(actorId, { headers: { Accept: "text/html,application/xhtml+xml" } });
      assert.equal(res.status, 200);
      assert.match(res.headers.get("content-type") ?? "", /text\/html/);
      const html = await res.text();
      assert.match(html, /Riders United/);
      assert.match(html, new RegExp(`@riders@${m.origin.host.replace(".", "\\.")}`));
      const missing = await fetch(new URL("/u/nope", m.origin), { headers: { Accept: AP } });
      assert.equal(missing.status, 404);
    });

    it("serves an instance actor (Application) with a key for signed fetches", async () => {
      const res = await fetch(new URL("/u/instance", m.origin), { headers: { Accept: AP } });
      assert.equal(res.status, 200);
      const json = await res.json() as { type: string; publicKey?: { id: string } };
      assert.equal(json.type, "Application");
      assert.ok(json.publicKey?.id);
    });

    it("publishes NodeInfo 2.1", async () => {
      const wk = await (await fetch(new URL("/.well-known/nodeinfo", m.origin))).json() as { links: { rel: string; href: string }[] };
      const link = wk.links.find((l) => l.rel === "http://nodeinfo.diaspora.software/ns/schema/2.1");
      assert.ok(link);
      const info = await (await fetch(link.href)).json() as { software: { name: string; version: string }; protocols: string[]; usage: { users: { total: number } } };
      assert.equal(info.software.name, "muster");
      assert.match(info.software.version, /^\d+\.\d+\.\d+/);
      assert.deepEqual(info.protocols, ["activitypub"]);
      assert.equal(info.usage.users.total, 1);
    });

    it("accepts signed activities at the union inbox and the shared inbox, and caches the sender", async () => {
      const group = await peer.lookup(actorId) as Group;
      const follow = new Follow({ id: activityId(), actor: peer.actorId("alice"), object: actorId });
      await peer.send("alice", group, follow);
      // Posts are taken only from members and applicants (a stranger's is refused 403: test/inbox-guard.test.ts).
      await eventually(async () => (await unionsOfActor(db(), peer.actorId("alice").href)).length > 0, "alice applied");
      const note = new Create({
        id: activityId(),
        actor: peer.actorId("alice"),
        to: actorId,
        object: new Note({ id: activityId(), attribution: peer.actorId("alice"), content: "hello union", to: actorId }),
      });
      // Deliver the second one to the shared inbox, the way Mastodon batches.
      await peer.send("alice", { id: actorId, inboxId: new URL("/inbox", m.origin) }, note);
      const rows = await eventually(async () => {
        const r = await inboxRows();
        return r.length >= 2 && r;
      }, "both activities recorded");
      const byId = new Map(rows.map((r) => [r.id, r]));
      const f = byId.get(follow.id!.href);
      assert.equal(f?.type, "Follow");
      assert.equal(f?.actor, peer.actorId("alice").href);
      assert.ok(f?.union_id, "a union-inbox delivery is tied to its union");
      const c = byId.get(note.id!.href);
      assert.equal(c?.type, "Create");
      assert.equal(c?.union_id, null, "a shared-inbox delivery has no single union");
      const alice = await eventually(() => getRemoteActor(db(), peer.actorId("alice").href), "alice cached");
      assert.equal(alice.inbox, new URL("/users/alice/inbox", peer.origin).href);
      assert.equal(alice.sharedInbox, new URL("/inbox", peer.origin).href);
      assert.equal(alice.handle, `@alice@${new URL(peer.origin).host}`);
    });

    it("processes an activity delivered twice only once", async () => {
      const seen: string[] = [];
      const onReceived = (e: { activityId: string }) => seen.push(e.activityId);
      m.muster.events.on("activity.received", onReceived);
      try {
        const undo = new Undo({ id: activityId(), actor: peer.actorId("carol"), object: new Follow({ id: activityId(), actor: peer.actorId("carol"), object: actorId }) });
        const body = JSON.stringify(await undo.toJsonLd({ format: "compact" }));
        const inbox = new URL("/u/riders/inbox", m.origin);
        for (let i = 0; i < 3; i++) {
          // Each a freshly signed request, as a retrying server would send.
          const res = await fetch(await peer.signedPost(inbox, body, { as: "carol", spec: i % 2 ? "rfc9421" : "draft-cavage-http-signatures-12" }));
          assert.ok(res.status === 202 || res.status === 200, `delivery ${i} accepted, got ${res.status}`);
        }
        await eventually(async () => (await queued()) === 0, "queue drained");
        const rows = (await inboxRows()).filter((r) => r.id === undo.id!.href);
        assert.equal(rows.length, 1);
        assert.deepEqual(seen.filter((id) => id === undo.id!.href), [undo.id!.href]);
      } finally {
        m.muster.events.off("activity.received", onReceived);
      }
    });

    describe("refuses bad signatures with 401 and leaves no trace", () => {
      const inbox = () => new URL("/u/riders/inbox", m.origin);
      const freshBody = async (actor: string) => JSON.stringify(await new Follow({ id: activityId(), actor: peer.actorId(actor), object: actorId }).toJsonLd({ format: "compact" }));

      async function assertRefused(req: Request, why: string) {
        const before = { inbox: (await inboxRows()).length, queued: await queued() };
        const res = await fetch(req);
        assert.equal(res.status, 401, `${why}: expected 401, got ${res.status}`);
        // Give a (wrongly) queued message time to be processed before checking.
        await new Promise((r) => setTimeout(r, 300));
        assert.equal((await inboxRows()).length, before.inbox, `${why}: nothing recorded`);
        assert.equal(await queued(), before.queued, `${why}: nothing queued`);
      }

      it("unsigned", async () => {
        const body = await freshBody("alice");
        await assertRefused(new Request(inbox(), { method: "POST", headers: { "Content-Type": AP }, body }), "unsigned");
      });
      it("signed with another key than the one named", async () => {
        const body = await freshBody("alice");
        const req = await peer.signedPost(inbox(), body, { as: "alice" });
        // Same request, signature made by bob's key but still claiming alice's keyId.
        const forged = await peer.signedPost(inbox(), body, { as: "bob" });
        const headers = new Headers(req.headers);
        headers.set("Signature", forged.headers.get("Signature")!.replace(/keyId="[^"]+"/, `keyId="${peer.keyId("alice").href}"`));
        await assertRefused(new Request(inbox(), { method: "POST", headers, body }), "wrong key");
      });
      it("tampered body", async () => {
        const body = await freshBody("alice");
        const req = await peer.signedPost(inbox(), body, { as: "alice" });
        const tampered = body.replace("Follow", "Block");
        await assertRefused(new Request(inbox(), { method: "POST", headers: req.headers, body: tampered }), "tampered body");
      });
      it("tampered body under RFC 9421", async () => {
        const body = await freshBody("alice");
        const req = await peer.signedPost(inbox(), body, { as: "alice", spec: "rfc9421" });
        await assertRefused(new Request(inbox(), { method: "POST", headers: req.headers, body: body.replace("Follow", "Block") }), "tampered 9421 body");
      });
      it("stale date", async () => {
        const body = await freshBody("alice");
        await assertRefused(await peer.signedPost(inbox(), body, { as: "alice", date: new Date(Date.now() - 3 * 3600_000) }), "stale date");
      });
      it("signed by one actor, claiming to be another", async () => {
        const body = await freshBody("alice");
        await assertRefused(await peer.signedPost(inbox(), body, { as: "bob" }), "actor/key mismatch");
      });
    });

    it("refuses oversized bodies with 413", async () => {
      const big = JSON.stringify({ "@context": "https://www.w3.org/ns/activitystreams", type: "Create", content: "x".repeat(m.muster.config.maxBodyBytes + 1) });
      const res = await fetch(new URL("/u/riders/inbox", m.origin), { method: "POST", headers: { "Content-Type": AP }, body: big });
      assert.equal(res.status, 413);
      const json = await res.json() as { error: { code: string } };
      assert.equal(json.error.code, "payload_too_large");
    });

    it("reports health", async () => {
      const res = await fetch(new URL("/healthz", m.origin));
      assert.equal(res.status, 200);
      assert.deepEqual(await res.json(), { status: "ok" });
    });

    it("answers unknown API routes with the JSON error shape", async () => {
      const res = await fetch(new URL("/api/unions/nope", m.origin));
      assert.equal(res.status, 404);
      const json = await res.json() as { error: { code: string; message: string } };
      assert.equal(json.error.code, "not_found");
      assert.ok(json.error.message.length > 0);
    });
  });
}
