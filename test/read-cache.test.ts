import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Accept } from "@fedify/vocab";
import { get as httpGet } from "node:http";
import { dialects } from "./helpers/databases.ts";
import { makeUnion, type TestMuster } from "./helpers/muster.ts";
import type { Peer } from "./helpers/peer.ts";
import { unionWithPeer } from "./helpers/union-with-peer.ts";
import { overrideBylaws } from "./helpers/bylaws.ts";
import { OPERATOR } from "../src/members/members.ts";
import { unionKeyOwner, updateUnion } from "../src/unions/unions.ts";
import { generateActorKeys } from "../federation/keys.ts";

// The actor, WebFinger and NodeInfo documents are served from Fedify's last
// answer (src/http/read-cache.ts) until the database's document version
// moves (migration 0018's triggers). Real server, real peer signing its
// fetches, both dialects.

const AP = "application/activity+json";
const LD = 'application/ld+json; profile="https://www.w3.org/ns/activitystreams"';
const MASTODON = "application/activity+json, application/ld+json";
const BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

for (const d of dialects) {
  describe(`cached documents on ${d.name}`, { skip: d.skip }, () => {
    const fx = unionWithPeer(d, { actors: ["lead", "alice"], joinPolicy: "approval" });
    let m: TestMuster;
    let peer: Peer;
    let unionId: string;
    const url = (path: string) => new URL(path, m.origin);
    const get = (path: string, accept: string, extra: Record<string, string> = {}) => fetch(url(path), { headers: { Accept: accept, ...extra } });
    /** What the server answers with the cache bypassed: Fedify renders it (plus whatever the app adds after Fedify). */
    const fromFedify = async (path: string, accept: string) => {
      m.muster.readCache.bypass = true;
      try {
        const res = await get(path, accept);
        assert.equal(res.status, 200, `Fedify serves ${path}`);
        assert.equal(res.headers.get("etag"), null, "not from the cache");
        return await res.text();
      } finally {
        m.muster.readCache.bypass = false;
      }
    };
    const stats = () => ({ ...m.muster.readCache.stats });

    before(async () => {
      ({ m, peer, unionId } = await fx.start());
      await fx.answerTo(await fx.follow("lead"), Accept);
    });
    after(() => fx.stop());

    it("serves the actor from the cache, byte for byte what Fedify serves, on both ActivityPub media types", async () => {
      for (const accept of [AP, LD, MASTODON]) {
        const first = await get("/u/riders", accept);
        assert.equal(first.status, 200);
        const body = await first.text();
        const before = stats();
        const second = await get("/u/riders", accept);
        assert.equal(second.status, 200);
        assert.equal(await second.text(), body, `${accept}: the cached copy is the same bytes`);
        assert.equal(stats().hits, before.hits + 1, `${accept}: the second GET is a cache hit`);
        assert.equal(body, await fromFedify("/u/riders", accept), `${accept}: what Fedify renders`);
        assert.equal(second.headers.get("content-type"), first.headers.get("content-type"));
        assert.equal(second.headers.get("vary"), "Accept");
        assert.ok(first.headers.get("etag"), "an ETag on the miss");
        assert.equal(second.headers.get("etag"), first.headers.get("etag"));
      }
      const json = await (await get("/u/riders", AP)).json() as { type: string; name: string };
      assert.equal(json.type, "Group");
      assert.equal(json.name, "Riders United");
    });

    it("renders a document once for concurrent misses (a fan-out's receivers all fetch the union's key at once)", async () => {
      m.muster.readCache.clear();
      const before = stats();
      const answers = await Promise.all(Array.from({ length: 24 }, () => get("/u/riders", AP)));
      const bodies = await Promise.all(answers.map((r) => r.text()));
      assert.ok(answers.every((r) => r.status === 200), "all answered 200");
      assert.equal(new Set(bodies).size, 1, "the same document to all");
      assert.equal(new Set(answers.map((r) => r.headers.get("etag"))).size, 1, "one ETag");
      assert.equal(stats().renders - before.renders, 1, "Fedify rendered it once, not once per request");
      // A document that is not kept (a browser's page) is rendered for each request, never withheld.
      const pages = await Promise.all(Array.from({ length: 3 }, () => get("/u/riders", BROWSER)));
      assert.ok(pages.every((r) => r.status === 200 && (r.headers.get("content-type") ?? "").startsWith("text/html")));
      await Promise.all(pages.map((r) => r.text()));
    });

    it("answers a repeat before the app, with the headers the app sent, and stops once the document changes", async () => {
      const headers = (res: Response) => [...res.headers].filter(([name]) => name !== "date" && name !== "keep-alive" && name !== "connection");
      for (const [path, accept] of [["/u/riders", AP], [`/.well-known/webfinger?resource=acct:riders@${m.origin.host}`, "application/jrd+json"], ["/nodeinfo/2.1", "application/json"]] as const) {
        m.muster.readCache.clear();
        const viaApp = await get(path, accept);
        const body = await viaApp.text();
        const etag = viaApp.headers.get("etag")!;
        const appNotModified = await get(path, accept, { "If-None-Match": etag });
        assert.equal(appNotModified.status, 304);
        const fast = stats().fast;
        const again = await get(path, accept);
        assert.equal(stats().fast, fast + 1, `${path}: the repeat is answered by the fast path`);
        assert.equal(await again.text(), body);
        assert.deepEqual(headers(again), headers(viaApp), `${path}: the same headers as the app's answer`);
        assert.ok(again.headers.get("content-security-policy") && again.headers.get("x-frame-options"), "security headers included");
        const fastNotModified = await get(path, accept, { "If-None-Match": etag });
        assert.equal(fastNotModified.status, 304);
        assert.equal(stats().fast, fast + 2);
        assert.deepEqual(headers(fastNotModified), headers(appNotModified), `${path}: the same 304 headers as the app's`);
        // Another Accept or Host is not the same request: the app answers it.
        await get(path, MASTODON);
        // fetch() will not send another Host; node:http will.
        await new Promise<void>((resolve, reject) => httpGet(url(path), { headers: { Accept: accept, Host: `other.${m.origin.host}` } }, (r) => r.resume().on("end", resolve)).on("error", reject));
        assert.equal(stats().fast, fast + 2, "a different Accept or Host goes through the app");
      }
      await get("/u/riders", AP).then((r) => r.arrayBuffer());
      const before = stats().fast;
      const first = await (await get("/u/riders", AP)).json() as { name: string };
      await updateUnion(m.muster.unions, "riders", OPERATOR, { name: `${first.name}!` });
      const changed = await get("/u/riders", AP);
      assert.equal(((await changed.json()) as { name: string }).name, `${first.name}!`, "the edit shows at once");
      assert.equal(stats().fast, before + 1, "only the GET before the edit was a fast hit");
      await updateUnion(m.muster.unions, "riders", OPERATOR, { name: first.name });
    });

    it("gives browsers the union's page, never a cached document", async () => {
      await get("/u/riders", AP);
      for (let i = 0; i < 2; i++) {
        const res = await get("/u/riders", BROWSER);
        assert.equal(res.status, 200);
        assert.match(res.headers.get("content-type") ?? "", /text\/html/);
        assert.equal(res.headers.get("etag"), null);
        assert.match(await res.text(), /<html/i);
      }
    });

    it("answers 304 to If-None-Match with the current ETag, and 200 to a stale one", async () => {
      for (const path of ["/u/riders", `/.well-known/webfinger?resource=acct:riders@${m.origin.host}`, "/nodeinfo/2.1"]) {
        const accept = path.includes("webfinger") ? "application/jrd+json" : AP;
        const etag = (await get(path, accept)).headers.get("etag")!;
        assert.ok(etag, `${path} has an ETag`);
        const again = await get(path, accept, { "If-None-Match": etag });
        assert.equal(again.status, 304, path);
        assert.equal(await again.text(), "");
        assert.equal(again.headers.get("etag"), etag);
        assert.equal((await get(path, accept, { "If-None-Match": `W/${etag}, "other"` })).status, 304, `${path}: weak and listed tags match`);
        const stale = await get(path, accept, { "If-None-Match": '"not-it"' });
        assert.equal(stale.status, 200, path);
        assert.ok((await stale.text()).length > 0);
      }
    });

    it("changes after an officer's edit, a bylaws change, a key rotation and a new parent union", async () => {
      const doc = async () => {
        const res = await get("/u/riders", AP);
        return { etag: res.headers.get("etag")!, json: await res.json() as Record<string, unknown> & { publicKey: { publicKeyPem: string } } };
      };
      const webfinger = async () => (await get(`/.well-known/webfinger?resource=acct:riders@${m.origin.host}`, "application/jrd+json")).json() as Promise<{ links: { rel: string; href: string }[] }>;
      const a = await doc();
      await webfinger();
      await updateUnion(m.muster.unions, "riders", OPERATOR, { name: "Riders United Worldwide", iconUrl: "https://example.org/icon.png" });
      const b = await doc();
      assert.equal(b.json.name, "Riders United Worldwide");
      assert.notEqual(b.etag, a.etag);
      assert.equal((await get("/u/riders", AP, { "If-None-Match": a.etag })).status, 200, "the old ETag no longer matches");
      assert.ok((await webfinger()).links.some((l) => l.href === "https://example.org/icon.png"), "WebFinger shows the new icon");
      assert.equal(JSON.stringify(b.json), await fromFedify("/u/riders", AP));

      assert.equal(b.json.manuallyApprovesFollowers, true);
      await overrideBylaws(m.muster.unions, "riders", { joinPolicy: "open" });
      const c = await doc();
      assert.equal(c.json.manuallyApprovesFollowers, false, "bylaws' join policy shows at once");

      // Key rotation, as an operator would do it in SQL: the new key is served.
      const db = m.muster.database.db;
      const [rsa] = (await generateActorKeys()).filter((k) => k.algorithm === "RSASSA-PKCS1-v1_5");
      await db.transaction().execute(async (trx) => {
        await trx.deleteFrom("actor_keys").where("owner", "=", unionKeyOwner(unionId)).where("algorithm", "=", "RSASSA-PKCS1-v1_5").execute();
        await trx.insertInto("actor_keys").values({ owner: unionKeyOwner(unionId), algorithm: rsa!.algorithm, private_jwk: rsa!.privateJwk, public_jwk: rsa!.publicJwk, created_at: Date.now() }).execute();
      });
      const e = await doc();
      assert.notEqual(e.json.publicKey.publicKeyPem, c.json.publicKey.publicKeyPem, "the rotated key is served");

      // A parent union's Accept arrives in a worker: it changes only the relationships table.
      await db.insertInto("union_relationships").values({
        id: "rel-1", union_id: unionId, peer_actor_id: "https://parent.example/u/all", peer_handle: "@all@parent.example",
        kind: "parent", direction: "outbound", state: "offered", relay: "none", follow_id: "https://x.example/f/1", created_at: Date.now(), updated_at: Date.now(),
      }).execute();
      assert.ok(!JSON.stringify((await doc()).json).includes("Parent union"));
      await db.updateTable("union_relationships").set({ state: "active" }).where("id", "=", "rel-1").execute();
      const withParent = JSON.stringify((await doc()).json);
      assert.ok(withParent.includes('"name":"Parent union"') && withParent.includes("https://parent.example/u/all"), "the parent shows once it is active");
      assert.equal(JSON.stringify((await doc()).json), await fromFedify("/u/riders", AP));
    });

    it("NodeInfo counts a new union at once, and is otherwise served from the cache", async () => {
      const users = async () => ((await (await get("/nodeinfo/2.1", AP)).json()) as { usage: { users: { total: number } } }).usage.users.total;
      const n = await users();
      const before = stats();
      assert.equal(await users(), n);
      assert.equal(stats().hits, before.hits + 1);
      await makeUnion(m, "cooks");
      assert.equal(await users(), n + 1);
    });

    it("never serves the followers collection from a cache: a member's signed view and an unsigned refusal stay apart", async () => {
      const signed = async () => fetch(await peer.signedGet(url("/u/riders/followers?cursor="), { as: "lead" }));
      const before = stats();
      for (let i = 0; i < 2; i++) {
        const ok = await signed();
        assert.equal(ok.status, 200, "the leader's own account reads the followers");
        assert.ok((await ok.text()).includes(peer.actorId("lead").href));
        const refused = await get("/u/riders/followers?cursor=", AP);
        assert.equal(refused.status, 401, "an unsigned fetch after a signed one is still refused");
        assert.ok(!(await refused.text()).includes(peer.actorId("lead").href));
        assert.equal((await get("/u/riders/followers", AP)).status, 401);
      }
      assert.deepEqual(stats(), before, "the collection never went through the cache");
      // A signed fetch of the actor gets the same document as anyone.
      const signedActor = await fetch(await peer.signedGet(url("/u/riders"), { as: "alice" }));
      assert.equal(await signedActor.text(), await fromFedify("/u/riders", AP));
    });
  });
}
