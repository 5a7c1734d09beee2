import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { type HttpMessageSignaturesSpec, signRequest } from "@fedify/fedify";
import { CryptographicKey } from "@fedify/vocab";
import { actionNoteId } from "../federation/action-note.ts";
import { generateRsa2048 } from "../federation/keys.ts";
import { KyselyKvStore } from "../federation/kysely-kv-store.ts";
import { createOfflineContextLoader, createOfflineDocumentLoader } from "../federation/remote-actor-parse.ts";
import { composeAction } from "../src/actions/actions.ts";
import { createProposal } from "../src/bylaws/proposals.ts";
import { OPERATOR } from "../src/members/members.ts";
import type { Union } from "../src/unions/unions.ts";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { type JsonObject, loadFixture, readdress } from "./helpers/fixtures.ts";
import { makeUnion, startMuster, type TestMuster } from "./helpers/muster.ts";
import { joinAsRemoteMember } from "./helpers/remote-member.ts";

/*
 * The inbox's fast path for a member whose key is not cached yet (its first
 * reply here) or whose cached actor is stale (a member who has not posted
 * for a day replies to the day's call): it fetches the member's actor as the
 * follow's fast path fetches a follower's (federation/signer-fetch.ts),
 * verifies the signature with the fetched key, caches key and actor, and
 * counts before the 202, instead of handing the reply to Fedify's queue.
 * Real HTTP on loopback, real RSA signatures. The Muster runs no queue
 * worker: a reply the fast path did not count stays queued (Fedify's path
 * has it) or was refused by Fedify's verifier, and is never counted.
 *
 * Hostile input must not make the fast path count, nor fetch for a
 * non-member: each case ends as Fedify's path decides it.
 */

const FIXTURES = path.join(import.meta.dirname, "../../shared/fixtures/activitypub");
const CAVAGE: HttpMessageSignaturesSpec = "draft-cavage-http-signatures-12";
const RFC9421: HttpMessageSignaturesSpec = "rfc9421";
const MEMBERS = ["first", "shared", "stale", "voter", "twice", "wrongowner", "forged", "moved", "huge", "keyhost", "rotated"];

interface Seen {
  readonly path: string;
  readonly userAgent: string;
}

/**
 * A Mastodon-shaped server of Person actors (/users/<name>, #main-key) with
 * RSA keys, that can also serve hostile documents: a key owned by someone
 * else, a redirect to another host, an oversized document. It records every
 * GET with its user agent: the fast path's plain fetch says "Muster/… (+…)",
 * Fedify's loader names Fedify.
 */
class ActorServer {
  readonly seen: Seen[] = [];
  readonly #keys: Map<string, Promise<CryptoKeyPair>>;
  readonly #pems: Map<string, string>;
  readonly #server: Server;
  /** Where /users/moved redirects to (another host: another port). */
  elsewhere?: ActorServer;
  /** Serves /users/<name> as its own actor even though the request came for the redirected one (the "moved" actor's copy). */
  servesFor?: URL;
  origin!: URL;

  /** `keysOf`: another server whose actors' keys this one serves (the redirect's target serves the moved actor's real key). */
  constructor(keysOf?: ActorServer) {
    this.#keys = keysOf ? keysOf.#keys : new Map();
    this.#pems = keysOf ? keysOf.#pems : new Map();
    this.#server = createServer((req, res) => void this.#answer(req, res));
  }

  async start(): Promise<this> {
    await new Promise<void>((r) => this.#server.listen(0, "127.0.0.1", r));
    this.origin = new URL(`http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`);
    return this;
  }

  close(): Promise<void> {
    return new Promise<void>((r) => {
      this.#server.closeAllConnections();
      this.#server.close(() => r());
    });
  }

  actorId(name: string): string {
    return new URL(`/users/${name}`, this.origin).href;
  }

  /** The actor's key pair, made once (requests signed at once by the same actor share it). */
  keys(name: string): Promise<CryptoKeyPair> {
    let pair = this.#keys.get(name);
    if (!pair) {
      pair = (async () => {
        const made = await generateRsa2048();
        const spki = Buffer.from(await crypto.subtle.exportKey("spki", made.publicKey)).toString("base64");
        this.#pems.set(name, `-----BEGIN PUBLIC KEY-----\n${spki.match(/.{1,64}/g)!.join("\n")}\n-----END PUBLIC KEY-----\n`);
        return made;
      })();
      this.#keys.set(name, pair);
    }
    return pair;
  }

  /** A new key for `name` (the old one is no longer in its document). */
  async rotate(name: string): Promise<void> {
    this.#keys.delete(name);
    await this.keys(name);
  }

  /** GETs of an actor's document: all of them, or only the fast path's plain ones. */
  gets(name: string, which: "all" | "plain" = "all"): number {
    return this.seen.filter((s) => s.path === `/users/${name}` && (which === "all" || !/Fedify/i.test(s.userAgent))).length;
  }

  document(name: string, base = this.origin): JsonObject {
    const id = new URL(`/users/${name}`, base).href;
    return {
      "@context": ["https://www.w3.org/ns/activitystreams", "https://w3id.org/security/v1"],
      id,
      type: "Person",
      preferredUsername: name,
      inbox: `${id}/inbox`,
      endpoints: { sharedInbox: new URL("/inbox", base).href },
      publicKey: {
        id: `${id}#main-key`,
        // Someone else's key in this actor's document.
        owner: name === "wrongowner" ? new URL("/users/first", base).href : id,
        publicKeyPem: this.#pems.get(name) ?? "",
      },
    };
  }

  async #answer(req: IncomingMessage, res: import("node:http").ServerResponse): Promise<void> {
    const p = new URL(req.url ?? "/", this.origin).pathname;
    if (req.method === "GET") this.seen.push({ path: p, userAgent: String(req.headers["user-agent"] ?? "") });
    for await (const _ of req) { /* drained */ }
    const m = /^\/users\/([a-z]+)$/.exec(p);
    if (!m) return void res.writeHead(404).end();
    const name = m[1]!;
    // Slow enough that two requests needing this actor overlap.
    if (name === "twice") await new Promise((r) => setTimeout(r, 300));
    if (name === "moved" && this.elsewhere) {
      return void res.writeHead(302, { location: new URL(p, this.elsewhere.origin).href }).end();
    }
    const type = "application/activity+json; charset=utf-8";
    if (name === "huge") {
      // Over the 2 MiB the client reads from anyone; a valid actor otherwise.
      res.writeHead(200, { "content-type": type });
      const doc = this.document(name);
      const pad = "x".repeat(64 * 1024);
      const text = JSON.stringify(doc);
      res.write(`${text.slice(0, -1)},"pad":[`);
      for (let i = 0; i < 48; i++) res.write(`${i ? "," : ""}"${pad}"`);
      return void res.end("]}");
    }
    await this.keys(name);
    res.writeHead(200, { "content-type": type }).end(JSON.stringify(this.document(name, this.servesFor)));
  }
}

for (const d of dialects) {
  describe(`the inbox's fast path for a member's first reply (key not cached) or a stale actor, on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    let m: TestMuster;
    let peer: ActorServer;
    let other: ActorServer;
    let riders: Union;
    let call: URL;
    let seq = 0;

    const db = () => m.muster.database.db;
    const actor = (name: string) => peer.actorId(name);
    const unionInbox = () => new URL("/u/riders/inbox", m.origin);
    const sharedInbox = () => new URL("/inbox", m.origin);
    const responses = (sourceId: string) => db().selectFrom("action_responses").select(["kind", "content"]).where("source_id", "=", sourceId).orderBy("kind").execute();
    const recorded = (id: string) => db().selectFrom("inbox_activities").selectAll().where("id", "=", id).execute();
    const queued = async (id: string) => Number((await db().selectFrom("fedify_mq").select((e) => e.fn.countAll<number>().as("n")).where("queue", "=", "inbox").where("message", "like", `%${id}%`).executeTakeFirstOrThrow()).n);
    const fetchedAt = async (name: string) => Number((await db().selectFrom("remote_actors").select("fetched_at").where("id", "=", actor(name)).executeTakeFirstOrThrow()).fetched_at);
    const cachedKey = async (name: string) => {
      const stored = await new KyselyKvStore(db()).get(["_fedify", "publicKey", `${actor(name)}#main-key`]);
      if (stored === undefined || stored === null) return undefined;
      return CryptographicKey.fromJsonLd(stored, { documentLoader: createOfflineDocumentLoader(), contextLoader: createOfflineContextLoader() });
    };

    /** mastodon/create-note-public-reply.json from `name`, replying to the call. */
    /** Runs `work` with the clock 31 s ahead: past the fast path's reuse window of a signer's fetch (30 s). */
    async function pastReuseWindow(work: () => Promise<void>): Promise<void> {
      const held = Date.now;
      Date.now = () => held() + 31_000;
      try {
        await work();
      } finally {
        Date.now = held;
      }
    }

    function reply(name: string, content = "<p>I'm in</p>", from = actor(name)): JsonObject {
      const original = loadFixture(FIXTURES, "mastodon/create-note-public-reply.json");
      const id = `${from}/statuses/${Date.now()}${++seq}/activity`;
      const body = readdress(original, { actors: { "https://mastodon.madrid/users/felix": from }, exact: { [String(original.id)]: id, "https://mamot.fr/users/retiolus/statuses/107224244380204526": call.href }, id });
      const note = body.object as JsonObject;
      note.id = `${from}/statuses/${Date.now()}${seq}`;
      note.content = content;
      note.contentMap = { en: content };
      return body;
    }
    const noteOf = (body: JsonObject) => String((body.object as JsonObject).id);

    /** Signs `body` as `as` (its key id on `keyHost`, signed with `keyOf`'s private key) and posts it. */
    async function post(body: JsonObject, opts: { as: string; to?: URL; spec?: HttpMessageSignaturesSpec; keyOf?: string; keyHost?: ActorServer }) {
      const text = JSON.stringify(body);
      const to = opts.to ?? unionInbox();
      const keyId = new URL(`${(opts.keyHost ?? peer).actorId(opts.as)}#main-key`);
      const signer = opts.keyOf ? await peer.keys(opts.keyOf) : await (opts.keyHost ?? peer).keys(opts.as);
      const signed = await signRequest(new Request(to, { method: "POST", headers: { "Content-Type": "application/activity+json", Accept: "application/activity+json" }, body: text }), signer.privateKey, keyId, { spec: opts.spec ?? CAVAGE });
      return fetch(to, { method: "POST", headers: new Headers(signed.headers), body: text });
    }

    /** Not counted by the fast path, and what Fedify's path decided stands: refused by its verifier, or queued for its listeners. */
    async function handedToFedify(res: Response, body: JsonObject, expected: number): Promise<void> {
      assert.equal(res.status, expected, "Fedify's answer");
      assert.deepEqual(await responses(noteOf(body)), [], "not counted");
      assert.equal(await queued(String(body.id)), expected === 202 ? 1 : 0, expected === 202 ? "queued for Fedify's listeners" : "nothing queued");
    }

    before(async () => {
      tdb = await d.create();
      // No queue worker: whatever Fedify's path takes stays queued, so a count at the 202 is the fast path's.
      m = await startMuster(tdb, { worker: false });
      peer = await new ActorServer().start();
      other = await new ActorServer(peer).start();
      peer.elsewhere = other;
      other.servesFor = peer.origin;
      riders = await makeUnion(m, "riders", { joinPolicy: "open" });
      // Members cached as if fetched now (a join), without their keys: nothing of theirs has been verified here yet.
      for (const n of MEMBERS) await joinAsRemoteMember(m.muster.membership, riders.id, peer.origin, n, new URL("/inbox", peer.origin));
      // A member of another union here: the guard lets its Creates in; it is no member of riders.
      const walkers = await makeUnion(m, "walkers", { joinPolicy: "open" });
      await joinAsRemoteMember(m.muster.membership, walkers.id, peer.origin, "outsider", new URL("/inbox", peer.origin));
      const action = await composeAction(m.muster.membership, riders.id, OPERATOR, { title: "Sign the petition", text: "Reply *I'm in*.", kind: "sign" }, { publishNow: true });
      call = actionNoteId(m.origin, riders, action.id);
    });
    after(async () => {
      await m?.stop();
      await peer?.close();
      await other?.close();
      await tdb?.destroy();
    });

    it("a member's first reply, its key not cached: fetched once, counted before the 202 (nothing queued), key and actor cached", async () => {
      assert.equal(await cachedKey("first"), undefined, "no key cached before");
      const before = await fetchedAt("first");
      const body = reply("first");
      const res = await post(body, { as: "first" });
      assert.equal(res.status, 202);
      // No eventually: no worker runs, so only the fast path counts before the answer.
      assert.deepEqual((await responses(noteOf(body))).map((r) => r.kind), ["comment", "commit"]);
      assert.equal((await recorded(String(body.id)))[0]?.union_id, riders.id);
      assert.equal(await queued(String(body.id)), 0, "nothing queued");
      assert.equal(peer.gets("first"), 1, "one fetch of the actor, none by Fedify's verifier");
      assert.equal(peer.gets("first", "plain"), 1);
      const key = await cachedKey("first");
      assert.equal(key?.ownerId?.href, actor("first"), "the key cached as Fedify caches it");
      assert.ok(await fetchedAt("first") >= before, "the actor's row refreshed");
      // The member's next reply is verified from the cache: no second fetch.
      const next = reply("first", "<p>see you there</p>");
      assert.equal((await post(next, { as: "first" })).status, 202);
      assert.deepEqual((await responses(noteOf(next))).map((r) => r.kind), ["comment"]);
      assert.equal(peer.gets("first"), 1);
    });

    it("RFC 9421 to the shared inbox (the fetch signed by the instance actor): counted before the 202", async () => {
      const body = reply("shared");
      assert.equal((await post(body, { as: "shared", to: sharedInbox(), spec: RFC9421 })).status, 202);
      assert.deepEqual((await responses(noteOf(body))).map((r) => r.kind), ["comment", "commit"]);
      assert.equal(await queued(String(body.id)), 0);
      assert.equal(peer.gets("shared", "plain"), 1);
    });

    it("a member whose cached actor is older than a day: refreshed (fetched_at now) and counted before the 202", async () => {
      const warm = reply("stale", "<p>hello</p>");
      assert.equal((await post(warm, { as: "stale" })).status, 202);
      assert.equal((await responses(noteOf(warm))).length, 1);
      const old = Date.now() - 2 * 86_400_000;
      await db().updateTable("remote_actors").set({ fetched_at: old }).where("id", "=", actor("stale")).execute();
      const gets = peer.gets("stale");
      // Past the reuse window of the first fetch (30 s), as a day later.
      await pastReuseWindow(async () => {
        const body = reply("stale");
        assert.equal((await post(body, { as: "stale" })).status, 202);
        assert.deepEqual((await responses(noteOf(body))).map((r) => r.kind), ["comment", "commit"]);
        assert.equal(await queued(String(body.id)), 0, "nothing queued");
        assert.equal(peer.gets("stale"), gets + 1, "fetched once more");
        assert.ok(Math.abs(Date.now() - await fetchedAt("stale")) < 60_000, "refreshed");
      });
    });

    it("a member whose key was rotated: the new key fetched, verified, cached; counted before the 202", async () => {
      const warm = reply("rotated", "<p>hello</p>");
      assert.equal((await post(warm, { as: "rotated" })).status, 202);
      assert.equal((await responses(noteOf(warm))).length, 1);
      await peer.rotate("rotated");
      // Past the reuse window of the first fetch (30 s): that answer held the old key.
      await pastReuseWindow(async () => {
        const body = reply("rotated");
        assert.equal((await post(body, { as: "rotated" })).status, 202);
        assert.deepEqual((await responses(noteOf(body))).map((r) => r.kind), ["comment", "commit"]);
        assert.equal(await queued(String(body.id)), 0);
      });
    });

    it("a member's first poll answer (mastodon/create-poll-vote.json): fetched, the ballot cast before the 202", async () => {
      const p = await createProposal(m.muster.membership, riders.id, OPERATOR, { kind: "resolution", title: "Strike on Friday", closesAt: new Date(Date.now() + 120_000) });
      const question = new URL(`/u/riders/proposals/${p.id}`, m.origin).href;
      const original = loadFixture(FIXTURES, "mastodon/create-poll-vote.json");
      const id = `${actor("voter")}#votes/${++seq}/activity`;
      const body = readdress(original, {
        actors: { "https://mastodon.sdf.org/users/rinpatch": actor("voter") },
        exact: { [String(original.id)]: id, "https://testing.uguu.ltd/objects/9d300947-2dcb-445d-8978-9a3b4b84fa14": question, "https://testing.uguu.ltd/users/rin": new URL("/u/riders", m.origin).href },
        id,
      });
      const note = body.object as JsonObject;
      note.id = `${actor("voter")}#votes/${seq}`;
      note.name = "Yes";
      assert.equal((await post(body, { as: "voter" })).status, 202);
      const ballots = await db().selectFrom("ballots").select(["option", "source_id"]).where("proposal_id", "=", p.id).execute();
      assert.deepEqual(ballots, [{ option: 0, source_id: note.id }]);
      assert.equal(await queued(String(body.id)), 0, "nothing queued");
      assert.equal(peer.gets("voter", "plain"), 1);
    });

    it("two first replies by the same member at once: one fetch, both counted before their 202s", async () => {
      const a = reply("twice", "<p>I'm in</p>");
      const b = reply("twice", "<p>me too, I'm in</p>");
      const [ra, rb] = await Promise.all([post(a, { as: "twice" }), post(b, { as: "twice", to: sharedInbox() })]);
      assert.equal(ra.status, 202);
      assert.equal(rb.status, 202);
      assert.deepEqual((await responses(noteOf(a))).map((r) => r.kind), ["comment", "commit"]);
      assert.deepEqual((await responses(noteOf(b))).map((r) => r.kind), ["comment", "commit"]);
      assert.equal(peer.gets("twice"), 1, "one fetch for both");
    });

    describe("hostile: never counted by the fast path; Fedify's path decides as before", () => {
      it("a non-member's signed reply and a stranger's Like: no fetch by the fast path", async () => {
        const body = reply("outsider");
        const res = await post(body, { as: "outsider" });
        await handedToFedify(res, body, 202);
        assert.equal(peer.gets("outsider", "plain"), 0, "the fast path fetched nothing");
        const like = { "@context": "https://www.w3.org/ns/activitystreams", id: `${actor("stranger")}#likes/${++seq}`, type: "Like", actor: actor("stranger"), object: call.href };
        const liked = await post(like, { as: "stranger" });
        assert.equal(liked.status, 202);
        assert.equal(await queued(like.id), 1, "queued for Fedify's listeners");
        assert.equal((await db().selectFrom("action_responses").select("id").where("source_id", "=", like.id).execute()).length, 0);
        assert.equal(peer.gets("stranger", "plain"), 0, "the fast path fetched nothing");
      });

      it("a key id on another host than the actor: nothing fetched by the fast path", async () => {
        const body = reply("keyhost");
        const res = await post(body, { as: "keyhost", keyHost: other });
        // Fedify fetches that key; its owner is not the actor: refused.
        await handedToFedify(res, body, 401);
        assert.equal(peer.gets("keyhost", "plain") + other.gets("keyhost", "plain"), 0, "the fast path fetched nothing");
      });

      it("an actor document whose key names someone else as owner", async () => {
        const body = reply("wrongowner");
        await handedToFedify(await post(body, { as: "wrongowner" }), body, 401);
        assert.equal(peer.gets("wrongowner", "plain"), 1, "fetched by the fast path, and not taken");
      });

      it("a signature that does not verify with the fetched key (signed with another's key)", async () => {
        const body = reply("forged");
        await handedToFedify(await post(body, { as: "forged", keyOf: "mallory" }), body, 401);
        assert.equal(peer.gets("forged", "plain"), 1, "fetched once by the fast path");
        // Another forgery in its name within the reuse window costs the fast path no second fetch.
        const again = reply("forged");
        await handedToFedify(await post(again, { as: "forged", keyOf: "mallory" }), again, 401);
        assert.equal(peer.gets("forged", "plain"), 1);
      });

      it("an actor document redirected to another host", async () => {
        const body = reply("moved");
        const res = await post(body, { as: "moved" });
        assert.deepEqual(await responses(noteOf(body)), [], "not counted");
        // Fedify's verifier follows the redirect and decides; either way nothing is counted before a worker runs.
        if (res.status === 202) assert.equal(await queued(String(body.id)), 1, "queued for Fedify's listeners");
        else assert.equal(res.status, 401);
        assert.equal(other.gets("moved", "plain"), 0, "the fast path's plain fetch did not follow the redirect");
      });

      it("an oversized actor document", async () => {
        const body = reply("huge");
        await handedToFedify(await post(body, { as: "huge" }), body, 401);
        assert.equal(peer.gets("huge", "plain"), 1, "fetched by the fast path, and not taken");
      });
    });
  });

  describe(`the inbox's fast path for a first reply with private addresses refused, on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    let m: TestMuster;
    let peer: ActorServer;

    before(async () => {
      tdb = await d.create();
      m = await startMuster(tdb, { worker: false, env: { MUSTER_ALLOW_PRIVATE_ADDRESS: "0" } });
      peer = await new ActorServer().start();
    });
    after(async () => {
      await m?.stop();
      await peer?.close();
      await tdb?.destroy();
    });

    it("a member whose actor is on a private address: never fetched, not counted, refused as Fedify refuses it", async () => {
      const riders = await makeUnion(m, "riders", { joinPolicy: "open" });
      await joinAsRemoteMember(m.muster.membership, riders.id, peer.origin, "first", new URL("/inbox", peer.origin));
      const action = await composeAction(m.muster.membership, riders.id, OPERATOR, { title: "Sign", text: "Reply *I'm in*.", kind: "sign" }, { publishNow: true });
      const call = actionNoteId(m.origin, riders, action.id);
      const from = peer.actorId("first");
      const body = { "@context": "https://www.w3.org/ns/activitystreams", id: `${from}/statuses/1/activity`, type: "Create", actor: from, to: ["https://www.w3.org/ns/activitystreams#Public"], object: { id: `${from}/statuses/1`, type: "Note", attributedTo: from, inReplyTo: call.href, content: "<p>I'm in</p>", to: ["https://www.w3.org/ns/activitystreams#Public"] } };
      const to = new URL("/u/riders/inbox", m.origin);
      const text = JSON.stringify(body);
      const signed = await signRequest(new Request(to, { method: "POST", headers: { "Content-Type": "application/activity+json" }, body: text }), (await peer.keys("first")).privateKey, new URL(`${from}#main-key`), { spec: CAVAGE });
      const res = await fetch(to, { method: "POST", headers: new Headers(signed.headers), body: text });
      assert.equal(res.status, 401);
      assert.equal(peer.seen.length, 0, "no request reached the private address");
      const rows = await m.muster.database.db.selectFrom("action_responses").select("id").where("source_id", "=", body.object.id).execute();
      assert.equal(rows.length, 0);
    });
  });
}
