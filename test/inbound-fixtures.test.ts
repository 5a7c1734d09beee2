import { after, before, describe, it } from "node:test";
import { startLitepubContext } from "./helpers/litepub-context.ts";
import assert from "node:assert/strict";
import path from "node:path";
import { type HttpMessageSignaturesSpec, signRequest } from "@fedify/fedify";
import { Accept, type Activity, Follow, Reject } from "@fedify/vocab";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { freshId, type Json, type JsonObject, LEMMY_CONTEXT, loadFixture, type Readdress, readdress } from "./helpers/fixtures.ts";
import { eventually, makeUnion, startMuster, type TestMuster } from "./helpers/muster.ts";
import { type Peer, startPeer } from "./helpers/peer.ts";
import { findMemberByActor, getLeader, type Member } from "../src/members/members.ts";
import { requestToJoin } from "../src/members/membership.ts";
import type { Union } from "../src/unions/unions.ts";

/*
 * Real payloads from other fediverse servers (shared/fixtures/activitypub, see
 * its SOURCES.md), delivered to a real Muster server: each is re-addressed to
 * come from a peer server's actor and to name a Muster union, keeps the rest
 * of its original shape, and is signed with the peer actor's key.
 */

const FIXTURES = path.join(import.meta.dirname, "../../shared/fixtures/activitypub");
const fixture = (rel: string): JsonObject => loadFixture(FIXTURES, rel);

const AS = "https://www.w3.org/ns/activitystreams";
const CAVAGE: HttpMessageSignaturesSpec = "draft-cavage-http-signatures-12";
const RFC9421: HttpMessageSignaturesSpec = "rfc9421";

// Original identities in the fixtures.
const MASTO_ASONIX = "https://masto.asonix.dog/users/asonix";
const LEMMY_TESTCOM = "https://ds9.lemmy.ml/c/testcom";
const LEMMY_ALPHA = "http://ds9.lemmy.ml/u/lemmy_alpha";
const LEMMY_BETA = "http://enterprise.lemmy.ml/u/lemmy_beta";
const LEMMY_MAIN = "http://enterprise.lemmy.ml/c/main";
const PLEROMA_KINETIX = "https://mycrowd.ca/users/kinetix";
const PLEROMA_TARGET = "https://lemmy.ca/u/kinetix";
const PLEROMA_LITEPUB = "https://mycrowd.ca/schemas/litepub-0.1.jsonld";
const MASTO_ADMIN = "http://mastodon.example.org/users/admin";
const PLEROMA_LAIN = "http://localtesting.pleroma.lol/users/lain";

/** Everyone the peer server hosts; each case uses its own accounts so cases do not interact. */
const NAMES = [
  "mfollow", "lfollow", "pfollow", "stranger",
  "mundo", "lundo", "lundo2", "lundo3", "mallory",
  "mdel", "mdelraw", "ldel", "victim",
  "gmove", "gmove-new", "dmove", "dmove-new", "fmove", "fmove-new",
  "mblock", "dblock", "lmod", "lbanned",
  "liker", "mkliker", "poster", "lposter", "booster",
];

/** The re-addressed payload keeps every field of the original but its signature; a missing @context may be added. */
function assertShapeKept(original: JsonObject, body: JsonObject): void {
  const keys = (o: JsonObject) => Object.keys(o).filter((k) => k !== "signature" && k !== "proof" && k !== "@context").sort();
  assert.deepEqual(keys(body), keys(original), "same fields as the original");
  assert.equal(body.type, original.type);
  assert.ok(!("signature" in body) && !("proof" in body), "linked-data signatures are stripped");
}

const str = (v: Json | undefined): string => {
  if (typeof v !== "string") throw new Error(`expected a string, got ${JSON.stringify(v)}`);
  return v;
};
const obj = (v: Json | undefined): JsonObject => {
  if (!v || typeof v !== "object" || Array.isArray(v)) throw new Error(`expected an object, got ${JSON.stringify(v)}`);
  return v;
};

for (const d of dialects) {
  describe(`real inbound payloads from other servers, on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    let m: TestMuster;
    let peer: Peer;
    let litepub: Awaited<ReturnType<typeof startLitepubContext>>;
    let riders: Union;
    let cooks: Union;
    let leaderId: string;

    before(async () => {
      tdb = await d.create();
      m = await startMuster(tdb);
      peer = await startPeer(NAMES);
      litepub = await startLitepubContext();
      riders = await makeUnion(m, "riders", { joinPolicy: "open" });
      cooks = await makeUnion(m, "cooks", { name: "Cooks Together", joinPolicy: "open" });
      leaderId = (await getLeader(db(), riders.id))!.id;
    });
    after(async () => {
      await m?.stop();
      await peer?.close();
      await litepub?.close();
      await tdb?.destroy();
    });

    const db = () => m.muster.database.db;
    const actor = (name: string) => peer.actorId(name).href;
    const handle = (name: string) => `@${name}@${peer.origin.host}`;
    const unionActor = (slug = "riders") => new URL(`/u/${slug}`, m.origin).href;
    const unionInbox = (slug = "riders") => new URL(`/u/${slug}/inbox`, m.origin);
    const sharedInbox = () => new URL("/inbox", m.origin);
    const member = (name: string, union: Union = riders) => findMemberByActor(db(), union.id, actor(name));
    const allMembers = () => db().selectFrom("members").selectAll().orderBy("id").execute();
    const recorded = (id: string) => db().selectFrom("inbox_activities").selectAll().where("id", "=", id).execute();
    const memberRowsOf = (name: string) => db().selectFrom("members").selectAll().where("actor_id", "=", actor(name)).execute();

    /** Until the activity has been recorded (processOnce records it after acting on it). */
    const processed = (id: string) => eventually(async () => {
      const rows = await recorded(id);
      return rows.length > 0 && rows;
    }, `${id} recorded`);

    /** Until no queued message (inbound or outbound) mentions any of these strings. */
    async function settled(...needles: string[]): Promise<void> {
      await eventually(async () => {
        for (const n of needles) {
          const r = await db().selectFrom("fedify_mq").select((e) => e.fn.countAll<number>().as("n"))
            .where("message", "like", `%${n}%`).executeTakeFirstOrThrow();
          if (Number(r.n) > 0) return false;
        }
        return true;
      }, `queue settled for ${needles.join(", ")}`);
    }

    /** Signs the exact bytes with the peer actor's key and POSTs them; `replay` re-sends the same signed request. */
    async function deliver(body: JsonObject, opts: { as: string; to: URL; spec: HttpMessageSignaturesSpec }) {
      const text = JSON.stringify(body);
      const signed = await peer.signedPost(opts.to, text, { as: opts.as, spec: opts.spec });
      const headers = new Headers(signed.headers);
      const post = () => fetch(opts.to, { method: "POST", headers, body: text });
      return { res: await post(), replay: post };
    }

    /** Makes an account a member through the domain API (the union is open: admitted at once, under the leader). */
    async function join(name: string, followId: string, union: Union = riders): Promise<Member> {
      const r = await requestToJoin(m.muster.membership, union.id, { actorId: actor(name), handle: handle(name) }, followId);
      assert.equal(r.outcome, "accepted");
      return r.member;
    }

    /** The Accepts (or Rejects) the peer received that embed the Follow with this id. */
    async function answersTo(followId: string, Kind: typeof Accept | typeof Reject): Promise<Activity[]> {
      const out: Activity[] = [];
      for (const a of [...peer.received]) {
        if (!(a instanceof Kind)) continue;
        const o = await a.getObject({ crossOrigin: "trust" });
        if (o instanceof Follow && o.id?.href === followId) out.push(a);
      }
      return out;
    }

    function adapt(file: string, how: Omit<Readdress, "id">): { original: JsonObject; body: JsonObject } {
      const original = fixture(file);
      const body = readdress(original, { ...how, id: freshId(str(original.id), how, peer.origin) });
      assertShapeKept(original, body);
      return { original, body };
    }

    describe("Follow: a request to join", () => {
      const cases = [
        { file: "mastodon/follow.json", name: "mfollow", from: MASTO_ASONIX, group: LEMMY_TESTCOM, to: "union", spec: CAVAGE },
        { file: "lemmy/follow-group.json", name: "lfollow", from: LEMMY_ALPHA, group: LEMMY_MAIN, to: "shared", spec: RFC9421, context: LEMMY_CONTEXT },
        { file: "pleroma/follow.json", name: "pfollow", from: PLEROMA_KINETIX, group: PLEROMA_TARGET, to: "union", spec: RFC9421 },
      ] as const;
      for (const c of cases) {
        it(`${c.file} (${c.spec}, ${c.to} inbox): joins the open union under the leader; the Accept embeds the Follow; a replay changes nothing`, async () => {
          const { body } = adapt(c.file, {
            actors: { [c.from]: actor(c.name) },
            exact: { [c.group]: unionActor(), [PLEROMA_LITEPUB]: litepub.url.href },
            defaultContext: "context" in c ? c.context : undefined,
          });
          const followId = str(body.id);
          const { res, replay } = await deliver(body, { as: c.name, to: c.to === "union" ? unionInbox() : sharedInbox(), spec: c.spec });
          assert.equal(res.status, 202, await res.text());

          const joined = await eventually(async () => {
            const x = await member(c.name);
            return x?.state === "active" && x;
          }, `${c.name} active`);
          assert.equal(joined.role, "member");
          assert.equal(joined.sponsorId, leaderId, "an open union admits under the leader");
          assert.equal(joined.followId, followId, "the Follow to answer is the one received");
          assert.equal(joined.handle, handle(c.name));

          const accept = await eventually(async () => (await answersTo(followId, Accept))[0], `Accept of ${followId}`);
          assert.equal(accept.actorId?.href, unionActor());
          const embedded = await accept.getObject({ crossOrigin: "trust" });
          assert.ok(embedded instanceof Follow);
          assert.equal(embedded.actorId?.href, actor(c.name));
          assert.equal(embedded.objectId?.href, unionActor());

          const rows = await processed(followId);
          assert.equal(rows.length, 1);
          assert.equal(rows[0]!.type, "Follow");
          assert.equal(rows[0]!.actor, actor(c.name));
          assert.equal(rows[0]!.union_id, riders.id);

          // The same signed request again, as a retrying server sends it...
          const again = await replay();
          assert.ok(again.status === 202 || again.status === 200, `replay answered ${again.status}`);
          // ...and the same payload, signed afresh, at the other inbox (Fedify's own
          // duplicate check is per inbox, so this one reaches Muster's).
          const elsewhere = await deliver(body, { as: c.name, to: c.to === "union" ? sharedInbox() : unionInbox(), spec: c.spec === CAVAGE ? RFC9421 : CAVAGE });
          assert.equal(elsewhere.res.status, 202);
          await settled(followId, joined.id);
          assert.equal((await recorded(followId)).length, 1, "processed once");
          assert.equal((await memberRowsOf(c.name)).length, 1, "one member row");
          assert.equal((await member(c.name))?.state, "active");
          assert.equal((await answersTo(followId, Accept)).length, 1, "answered once");
          assert.equal((await answersTo(followId, Reject)).length, 0);
          if (c.file.startsWith("pleroma/")) assert.ok(litepub.hits() >= 1, "the sender's litepub context was fetched");
        });
      }

      it("mastodon/follow.json for a union that does not exist, at the shared inbox: recorded, no member row anywhere", async () => {
        const { body } = adapt("mastodon/follow.json", {
          actors: { [MASTO_ASONIX]: actor("stranger") },
          exact: { [LEMMY_TESTCOM]: new URL("/u/nobody", m.origin).href },
        });
        const { res } = await deliver(body, { as: "stranger", to: sharedInbox(), spec: CAVAGE });
        assert.equal(res.status, 202);
        const rows = await processed(str(body.id));
        assert.equal(rows.length, 1);
        assert.equal(rows[0]!.union_id, null);
        assert.deepEqual(await memberRowsOf("stranger"), []);
        assert.equal((await answersTo(str(body.id), Accept)).length, 0);
      });

      it("mastodon/follow.json to /u/nobody/inbox: 404, nothing recorded", async () => {
        const { body } = adapt("mastodon/follow.json", {
          actors: { [MASTO_ASONIX]: actor("stranger") },
          exact: { [LEMMY_TESTCOM]: new URL("/u/nobody", m.origin).href },
        });
        const { res } = await deliver(body, { as: "stranger", to: unionInbox("nobody"), spec: RFC9421 });
        assert.equal(res.status, 404);
        await settled(str(body.id));
        assert.deepEqual(await recorded(str(body.id)), []);
        assert.deepEqual(await memberRowsOf("stranger"), []);
      });
    });

    describe("Undo(Follow): leaving", () => {
      it("mastodon/undo-follow.json (embeds the Follow it sent, same id): the member leaves", async () => {
        const follow = fixture("mastodon/follow.json");
        const undo = fixture("mastodon/undo-follow.json");
        assert.equal(obj(undo.object).id, follow.id, "Mastodon's Undo carries the original Follow");
        const how = { actors: { [MASTO_ASONIX]: actor("mundo") }, exact: { [LEMMY_TESTCOM]: unionActor() } };
        const followId = freshId(str(follow.id), how, peer.origin);
        await join("mundo", followId);
        const { body } = adapt("mastodon/undo-follow.json", { ...how, exact: { ...how.exact, [str(follow.id)]: followId } });
        assert.equal(obj(body.object).id, followId);

        const { res } = await deliver(body, { as: "mundo", to: unionInbox(), spec: CAVAGE });
        assert.equal(res.status, 202);
        const rows = await processed(str(body.id));
        assert.equal(rows.length, 1);
        assert.equal(rows[0]!.type, "Undo");
        assert.equal(rows[0]!.union_id, riders.id);
        const left = (await member("mundo"))!;
        assert.equal(left.state, "left");
        assert.equal(left.leftReason, null);
        assert.equal((await answersTo(followId, Reject)).length, 0, "nothing is sent back to someone who left");
      });

      it("lemmy/undo-follow-group.json as Lemmy sends it (a newly minted Follow id inside): the member leaves", async () => {
        const follow = fixture("lemmy/follow-group.json");
        const undo = fixture("lemmy/undo-follow-group.json");
        // Lemmy's UndoFollow::send builds its object with Follow::new, which mints a new id:
        // the embedded Follow never has the id of the Follow that was accepted.
        assert.notEqual(obj(undo.object).id, follow.id);
        const how = { actors: { [LEMMY_ALPHA]: actor("lundo") }, exact: { [LEMMY_MAIN]: unionActor() } };
        const followId = freshId(str(follow.id), how, peer.origin);
        await join("lundo", followId);
        const innerId = freshId(str(obj(undo.object).id), how, peer.origin);
        const { body } = adapt("lemmy/undo-follow-group.json", { ...how, exact: { ...how.exact, [str(obj(undo.object).id)]: innerId }, defaultContext: LEMMY_CONTEXT });

        const { res } = await deliver(body, { as: "lundo", to: sharedInbox(), spec: RFC9421 });
        assert.equal(res.status, 202);
        const rows = await processed(str(body.id));
        assert.equal(rows[0]!.type, "Undo");
        assert.equal((await member("lundo"))!.state, "left", "a Lemmy member who unfollows must leave");
      });

      it("lemmy/undo-follow-group.json embedding the accepted Follow's id: the member leaves", async () => {
        const follow = fixture("lemmy/follow-group.json");
        const undo = fixture("lemmy/undo-follow-group.json");
        const how = { actors: { [LEMMY_ALPHA]: actor("lundo2") }, exact: { [LEMMY_MAIN]: unionActor() } };
        const followId = freshId(str(follow.id), how, peer.origin);
        await join("lundo2", followId);
        const { body } = adapt("lemmy/undo-follow-group.json", { ...how, exact: { ...how.exact, [str(obj(undo.object).id)]: followId }, defaultContext: LEMMY_CONTEXT });

        const { res } = await deliver(body, { as: "lundo2", to: unionInbox(), spec: CAVAGE });
        assert.equal(res.status, 202);
        await processed(str(body.id));
        assert.equal((await member("lundo2"))!.state, "left");
      });

      it("lemmy/undo-follow-group.json sent by someone else than the follower: refused, nothing recorded or changed", async () => {
        const follow = fixture("lemmy/follow-group.json");
        const undo = fixture("lemmy/undo-follow-group.json");
        const how = { actors: { [LEMMY_ALPHA]: actor("lundo3") }, exact: { [LEMMY_MAIN]: unionActor() } };
        const followId = freshId(str(follow.id), how, peer.origin);
        await join("lundo3", followId);
        const { body } = adapt("lemmy/undo-follow-group.json", { ...how, exact: { ...how.exact, [str(obj(undo.object).id)]: followId }, defaultContext: LEMMY_CONTEXT });
        body.actor = actor("mallory"); // validly signed by mallory, undoing lundo3's Follow
        const before = await allMembers();

        const { res } = await deliver(body, { as: "mallory", to: unionInbox(), spec: RFC9421 });
        assert.equal(res.status, 202);
        await settled(str(body.id));
        assert.deepEqual(await recorded(str(body.id)), []);
        assert.equal((await member("lundo3"))!.state, "active");
        assert.deepEqual(await allMembers(), before);
      });
    });

    describe("Delete of an actor: the account is gone", () => {
      it("mastodon/delete-actor.json (with Mastodon's AS context), at the shared inbox: leaves every union", async () => {
        const { body } = adapt("mastodon/delete-actor.json", { actors: { [MASTO_ADMIN]: actor("mdel") } });
        // Mastodon always puts the AS context first; this copy (from Pleroma's
        // test suite) lost it, and without it nothing in the document is AS vocabulary.
        body["@context"] = [AS, ...(body["@context"] as Json[])];
        assert.equal(obj(body.object).id, actor("mdel"), "the embedded Person is the actor itself");
        const memberships = [await join("mdel", `${actor("mdel")}#follows/1`), await join("mdel", `${actor("mdel")}#follows/2`, cooks)];
        // An account is deleted long after its Accept and welcome went out. Still
        // queued, they would run after the Delete and fetch the account again (this
        // peer keeps serving it), caching it anew.
        await settled(...memberships.map((x) => x.id));

        const { res } = await deliver(body, { as: "mdel", to: sharedInbox(), spec: CAVAGE });
        assert.equal(res.status, 202);
        const rows = await processed(str(body.id));
        assert.equal(rows.length, 1);
        assert.equal(rows[0]!.type, "Delete");
        assert.equal(rows[0]!.union_id, null);
        for (const u of [riders, cooks]) {
          const gone = (await member("mdel", u))!;
          assert.equal(gone.state, "deleted", `${u.slug}`);
          assert.equal(gone.leftReason, "account deleted");
        }
        const cached = await db().selectFrom("remote_actors").select("id").where("id", "=", actor("mdel")).executeTakeFirst();
        assert.equal(cached, undefined, "the cached actor is forgotten");
      });

      it("mastodon/delete-actor.json verbatim (no AS context): not understood, changes nothing", async () => {
        const { body } = adapt("mastodon/delete-actor.json", { actors: { [MASTO_ADMIN]: actor("mdelraw") } });
        await join("mdelraw", `${actor("mdelraw")}#follows/1`);
        const before = await allMembers();
        const { res } = await deliver(body, { as: "mdelraw", to: sharedInbox(), spec: CAVAGE });
        // Without the AS context "actor" is not a term: Fedify sees no actor and refuses.
        assert.equal(res.status, 400, await res.text());
        await settled(str(body.id));
        assert.deepEqual(await recorded(str(body.id)), []);
        assert.deepEqual(await allMembers(), before);
      });

      it("lemmy/delete-user-actor.json (RFC 9421, shared inbox): the member is deleted", async () => {
        const { body } = adapt("lemmy/delete-user-actor.json", { actors: { [LEMMY_ALPHA]: actor("ldel") }, defaultContext: LEMMY_CONTEXT });
        assert.equal(body.removeData, true, "Lemmy's extra field kept");
        await join("ldel", `${actor("ldel")}/follow/1`);
        const { res } = await deliver(body, { as: "ldel", to: sharedInbox(), spec: RFC9421 });
        assert.equal(res.status, 202);
        const rows = await processed(str(body.id));
        assert.equal(rows[0]!.type, "Delete");
        assert.equal((await member("ldel"))!.state, "deleted");
      });

      it("lemmy/delete-user-actor.json signed by another actor: 401, nothing changes", async () => {
        const { body } = adapt("lemmy/delete-user-actor.json", { actors: { [LEMMY_ALPHA]: actor("victim") }, defaultContext: LEMMY_CONTEXT });
        await join("victim", `${actor("victim")}/follow/1`);
        const before = await allMembers();
        const { res } = await deliver(body, { as: "mallory", to: sharedInbox(), spec: CAVAGE });
        assert.equal(res.status, 401);
        await settled(str(body.id));
        assert.deepEqual(await recorded(str(body.id)), []);
        assert.equal((await member("victim"))!.state, "active");
        assert.deepEqual(await allMembers(), before);
      });

      it("mastodon/delete-actor.json signed with the key of an account already gone (404): acted on, as Mastodon sends it", async () => {
        // Mastodon signs an account's Delete with that account's key, which is gone by
        // the time the receiver fetches it: the signature cannot be checked, so Muster
        // checks for itself that the account is gone.
        const ghost = new URL("/users/ghost", peer.origin).href;
        const { body } = adapt("mastodon/delete-actor.json", { actors: { [MASTO_ADMIN]: ghost } });
        body["@context"] = [AS, ...(body["@context"] as Json[])];
        await requestToJoin(m.muster.membership, riders.id, { actorId: ghost, handle: `@ghost@${peer.origin.host}` }, `${ghost}#follows/1`);
        const keys = await crypto.subtle.generateKey(
          { name: "RSASSA-PKCS1-v1_5", modulusLength: 2048, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" },
          true,
          ["sign", "verify"],
        ) as CryptoKeyPair;
        const text = JSON.stringify(body);
        const req = await signRequest(
          new Request(sharedInbox(), { method: "POST", headers: { "Content-Type": "application/activity+json" }, body: text }),
          keys.privateKey,
          new URL(`${ghost}#main-key`),
          { spec: CAVAGE },
        );
        const res = await fetch(sharedInbox(), { method: "POST", headers: req.headers, body: text });
        assert.equal(res.status, 202);
        const gone = await eventually(async () => {
          const x = await findMemberByActor(db(), riders.id, ghost);
          return x?.state === "deleted" && x;
        }, "ghost deleted");
        assert.equal(gone.leftReason, "account deleted");
      });
    });

    describe("Move: the member's account migrated", () => {
      const cases = [
        { file: "gotosocial/move.json", name: "gmove", from: "https://example.org/users/1happyturtle", target: "https://another-server.com/users/my_new_account_hurray", to: "union", spec: RFC9421 },
        { file: "mastodon/docs-move.json", name: "dmove", from: "https://mastodon.example/users/alice", target: "https://alice.com/users/109835986274379", to: "shared", spec: CAVAGE },
      ] as const;
      for (const c of cases) {
        it(`${c.file} (${c.spec}, ${c.to} inbox), target lists the old account in alsoKnownAs: same place under the new account`, async () => {
          const moved = `${c.name}-new`;
          peer.setMigration(moved, { alsoKnownAs: [c.name] });
          peer.setMigration(c.name, { movedTo: moved });
          const before = await join(c.name, `${actor(c.name)}#follows/1`);
          const { body } = adapt(c.file, { actors: { [c.from]: actor(c.name), [c.target]: actor(moved) } });
          assert.equal(body.object, actor(c.name));
          assert.equal(body.to, `${actor(c.name)}/followers`, "the followers collection moves with the actor");

          const { res } = await deliver(body, { as: c.name, to: c.to === "union" ? unionInbox() : sharedInbox(), spec: c.spec });
          assert.equal(res.status, 202);
          const rows = await processed(str(body.id));
          assert.equal(rows[0]!.type, "Move");
          assert.equal(rows[0]!.union_id, c.to === "union" ? riders.id : null);
          const after = (await member(moved))!;
          assert.equal(after.id, before.id, "same place in the tree");
          assert.equal(after.state, "active");
          assert.equal(after.sponsorId, before.sponsorId);
          assert.equal(after.handle, handle(moved));
          assert.equal(await member(c.name), undefined, "no row left for the old account");
        });
      }

      it("gotosocial/move.json whose target does not list the old account in alsoKnownAs: refused, nothing changes", async () => {
        await join("fmove", `${actor("fmove")}#follows/1`);
        const { body } = adapt("gotosocial/move.json", {
          actors: { "https://example.org/users/1happyturtle": actor("fmove"), "https://another-server.com/users/my_new_account_hurray": actor("fmove-new") },
        });
        const before = await allMembers();
        const { res } = await deliver(body, { as: "fmove", to: unionInbox(), spec: CAVAGE });
        assert.equal(res.status, 202);
        await processed(str(body.id));
        assert.deepEqual(await allMembers(), before);
        assert.equal((await member("fmove"))!.state, "active");
        assert.equal(await member("fmove-new"), undefined);
      });
    });

    describe("Block", () => {
      it("mastodon/block.json of the union by a member (union inbox, draft-cavage): the member leaves", async () => {
        await join("mblock", `${actor("mblock")}#follows/1`);
        const { body } = adapt("mastodon/block.json", { actors: { [MASTO_ADMIN]: actor("mblock") }, exact: { [PLEROMA_LAIN]: unionActor() } });
        assert.equal(body.nickname, "lain", "Pleroma's extra field kept");
        const { res } = await deliver(body, { as: "mblock", to: unionInbox(), spec: CAVAGE });
        assert.equal(res.status, 202);
        const rows = await processed(str(body.id));
        assert.equal(rows[0]!.type, "Block");
        assert.equal(rows[0]!.union_id, riders.id);
        assert.equal((await member("mblock"))!.state, "left");
        assert.equal((await answersTo(`${actor("mblock")}#follows/1`, Reject)).length, 0, "nothing is sent to a blocker");
      });

      it("mastodon/undo-block.json afterwards: recorded; unblocking is not rejoining", async () => {
        const { body } = adapt("mastodon/undo-block.json", { actors: { [MASTO_ADMIN]: actor("mblock") }, exact: { [PLEROMA_LAIN]: unionActor() } });
        assert.equal(obj(body.object).object, unionActor());
        const before = await allMembers();
        const { res } = await deliver(body, { as: "mblock", to: unionInbox(), spec: RFC9421 });
        assert.equal(res.status, 202);
        const rows = await processed(str(body.id));
        assert.equal(rows[0]!.type, "Undo");
        assert.equal((await member("mblock"))!.state, "left");
        assert.deepEqual(await allMembers(), before);
      });

      it("mastodon/docs-block.json of the union (shared inbox, RFC 9421): the member leaves", async () => {
        await join("dblock", `${actor("dblock")}#follows/1`);
        const { body } = adapt("mastodon/docs-block.json", {
          actors: { "https://mastodon.example/users/alice": actor("dblock") },
          exact: { "https://example.com/~mallory": unionActor() },
        });
        assert.equal(body.to, unionActor());
        const { res } = await deliver(body, { as: "dblock", to: sharedInbox(), spec: RFC9421 });
        assert.equal(res.status, 202);
        const rows = await processed(str(body.id));
        assert.equal(rows[0]!.union_id, riders.id, "tied to the union it blocks");
        assert.equal((await member("dblock"))!.state, "left");
      });

      it("lemmy/block-user-from-group.json (a remote moderator bans a user from the group): ignored, recorded", async () => {
        // Lemmy's ban names the user as object and the group as target. Muster's
        // moderation is its own; a remote account cannot ban anyone from a union.
        await join("lmod", `${actor("lmod")}/follow/1`);
        await join("lbanned", `${actor("lbanned")}/follow/1`);
        const { body } = adapt("lemmy/block-user-from-group.json", {
          actors: { [LEMMY_BETA]: actor("lmod"), [LEMMY_ALPHA]: actor("lbanned") },
          exact: { [LEMMY_MAIN]: unionActor() },
          defaultContext: LEMMY_CONTEXT,
        });
        assert.equal(body.target, unionActor());
        assert.equal(body.object, actor("lbanned"));
        const before = await allMembers();
        const { res } = await deliver(body, { as: "lmod", to: sharedInbox(), spec: RFC9421 });
        assert.equal(res.status, 202);
        const rows = await processed(str(body.id));
        assert.equal(rows[0]!.type, "Block");
        assert.equal(rows[0]!.union_id, null, "it blocks no union");
        assert.deepEqual(await allMembers(), before);
        assert.equal((await member("lbanned"))!.state, "active");
        assert.equal((await member("lmod"))!.state, "active");
      });

      it("lemmy/undo-block-user.json (the remote moderator lifts the ban): recorded, nothing changes", async () => {
        const { body } = adapt("lemmy/undo-block-user.json", {
          actors: { [LEMMY_BETA]: actor("lmod"), [LEMMY_ALPHA]: actor("lbanned") },
          exact: { [LEMMY_MAIN]: unionActor() },
          defaultContext: LEMMY_CONTEXT,
        });
        const before = await allMembers();
        const { res } = await deliver(body, { as: "lmod", to: unionInbox(), spec: CAVAGE });
        assert.equal(res.status, 202);
        const rows = await processed(str(body.id));
        assert.equal(rows[0]!.type, "Undo");
        assert.deepEqual(await allMembers(), before);
      });
    });

    describe("activities that are not about membership: recorded once, membership untouched", () => {
      const cases = [
        { file: "mastodon/like.json", type: "Like", name: "liker", from: "https://mastodon.madrid/users/felix", to: "union", member: true },
        { file: "misskey/like-with-reaction.json", type: "Like", name: "mkliker", from: MASTO_ADMIN, to: "shared", member: false },
        { file: "mastodon/create-note-public.json", type: "Create", name: "poster", from: MASTO_ADMIN, to: "shared", member: true, exact: { [PLEROMA_LAIN]: "riders" } },
        // The comment lives on the poster's server, as on Lemmy: it moves with the poster.
        { file: "lemmy/create-comment-note-reply.json", type: "Create", name: "lposter", from: LEMMY_ALPHA, to: "union", member: true, exact: { [LEMMY_MAIN]: "riders", "https://enterprise.lemmy.ml/c/main": "riders" }, context: LEMMY_CONTEXT, onPoster: ["http://ds9.lemmy.ml/comment/1"] },
        { file: "mastodon/announce-public.json", type: "Announce", name: "booster", from: MASTO_ADMIN, to: "union", member: false },
      ] as const;
      for (const c of cases) {
        it(`${c.file} from a ${c.member ? "member" : "non-member"} (${c.to} inbox), delivered twice`, async () => {
          if (c.member) await join(c.name, `${actor(c.name)}#follows/1`);
          const exact: Record<string, string> = {};
          for (const [k, v] of Object.entries("exact" in c ? c.exact : {})) exact[k] = unionActor(v);
          for (const u of "onPoster" in c ? c.onPoster : []) exact[u] = new URL(new URL(u).pathname, peer.origin).href;
          const { body } = adapt(c.file, { actors: { [c.from]: actor(c.name) }, exact, defaultContext: "context" in c ? c.context : undefined });
          const before = await allMembers();
          const inbox = c.to === "union" ? unionInbox() : sharedInbox();
          const other = c.to === "union" ? sharedInbox() : unionInbox();
          const first = await deliver(body, { as: c.name, to: inbox, spec: CAVAGE });
          assert.equal(first.res.status, 202);
          await processed(str(body.id));
          // The identical signed request again (Fedify's per-inbox duplicate check), then
          // re-signed the other way to the other inbox (which only Muster's check catches).
          const replayed = await first.replay();
          assert.ok(replayed.status === 202 || replayed.status === 200, `replay answered ${replayed.status}`);
          const second = await deliver(body, { as: c.name, to: other, spec: RFC9421 });
          assert.equal(second.res.status, 202);
          await settled(str(body.id));
          const rows = await recorded(str(body.id));
          assert.equal(rows.length, 1);
          assert.equal(rows[0]!.type, c.type);
          assert.equal(rows[0]!.actor, actor(c.name));
          assert.equal(rows[0]!.union_id, c.to === "union" ? riders.id : null);
          assert.deepEqual(await allMembers(), before);
          assert.equal((await memberRowsOf(c.name)).length, c.member ? 1 : 0);
        });
      }
    });
  });
}
