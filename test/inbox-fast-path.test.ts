import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createServer, type RequestListener, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { getRequestListener } from "@hono/node-server";
import { inboxPosts } from "../src/http/inbox-fast.ts";
import { blockServer } from "../src/servers/blocklist.ts";
import path from "node:path";
import { type HttpMessageSignaturesSpec, signRequest } from "@fedify/fedify";
import { composeAction } from "../src/actions/actions.ts";
import { OPERATOR } from "../src/members/members.ts";
import { createProposal } from "../src/bylaws/proposals.ts";
import type { Union } from "../src/unions/unions.ts";
import { actionNoteId } from "../federation/action-note.ts";
import { createFastInbox } from "../federation/inbox-fast-path.ts";
import { KyselyKvStore } from "../federation/kysely-kv-store.ts";
import { generateRsa2048 } from "../federation/keys.ts";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { type JsonObject, loadFixture, readdress } from "./helpers/fixtures.ts";
import { eventually, makeUnion, startMuster, type TestMuster } from "./helpers/muster.ts";
import { type Peer, startPeer } from "./helpers/peer.ts";
import { joinAsRemoteMember } from "./helpers/remote-member.ts";

/*
 * The inbox's fast path (federation/inbox-fast-path.ts): members' Likes,
 * their Undo and replies to a call, from real payloads of other servers, are
 * counted before the 202 (no queue); the same activity twice counts once; and
 * whatever is hostile or unusual is not taken by it (Fedify then does what it
 * always did, refusing or recording without counting).
 */

const FIXTURES = path.join(import.meta.dirname, "../../shared/fixtures/activitypub");
const CAVAGE: HttpMessageSignaturesSpec = "draft-cavage-http-signatures-12";
const RFC9421: HttpMessageSignaturesSpec = "rfc9421";
const NAMES = ["liker", "mkliker", "replier", "undoer", "mallory", "late", "stranger", "redefiner", "gts", "voter", "gtsvoter", "anyvoter", "outsider", "hostilevoter"];

for (const d of dialects) {
  describe(`the inbox's fast path, on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    let m: TestMuster;
    let peer: Peer;
    let riders: Union;
    let call: URL;
    let actionId: string;
    let seq = 0;

    const db = () => m.muster.database.db;
    const actor = (name: string) => peer.actorId(name).href;
    const unionInbox = () => new URL("/u/riders/inbox", m.origin);
    const sharedInbox = () => new URL("/inbox", m.origin);
    const fresh = (name: string, what: string) => `${actor(name)}#${what}/${++seq}`;
    const responses = (sourceId: string) => db().selectFrom("action_responses").select(["kind", "undone_at", "content"]).where("source_id", "=", sourceId).orderBy("kind").execute();
    const recorded = (id: string) => db().selectFrom("inbox_activities").selectAll().where("id", "=", id).execute();
    const committers = async () => Number((await db().selectFrom("actions").select("committers").where("id", "=", actionId).executeTakeFirstOrThrow()).committers);
    const queuedInbox = async (id: string) => Number((await db().selectFrom("fedify_mq").select((e) => e.fn.countAll<number>().as("n")).where("message", "like", `%${id}%`).executeTakeFirstOrThrow()).n);

    async function post(body: JsonObject | string, opts: { as: string; to?: URL; spec?: HttpMessageSignaturesSpec; keyOf?: string; date?: Date }) {
      const text = typeof body === "string" ? body : JSON.stringify(body);
      const to = opts.to ?? unionInbox();
      const signed = await peer.signedPost(to, text, { as: opts.as, keyOf: opts.keyOf, spec: opts.spec ?? CAVAGE, date: opts.date });
      const headers = new Headers(signed.headers);
      const send = (bytes = text) => fetch(to, { method: "POST", headers, body: bytes });
      return { res: await send(), again: () => send(), tampered: (bytes: string) => send(bytes) };
    }

    /** Fedify fetches and caches the actor's key the first time (through its own path): the fast path only uses cached keys. */
    async function warm(name: string): Promise<void> {
      const id = fresh(name, "warm");
      const r = await post({ "@context": "https://www.w3.org/ns/activitystreams", id, type: "Like", actor: actor(name), object: "https://elsewhere.example/notes/1" }, { as: name });
      assert.equal(r.res.status, 202);
      await eventually(async () => (await recorded(id)).length > 0, `${id} recorded`);
    }

    function fixture(rel: string, name: string, from: string, extra: Record<string, string> = {}): JsonObject {
      const original = loadFixture(FIXTURES, rel);
      const id = fresh(name, "fx");
      return readdress(original, { actors: { [from]: actor(name) }, exact: { [String(original.id)]: id, ...extra }, id });
    }

    before(async () => {
      tdb = await d.create();
      m = await startMuster(tdb);
      peer = await startPeer(NAMES);
      riders = await makeUnion(m, "riders", { joinPolicy: "open" });
      for (const n of NAMES.filter((n) => n !== "stranger" && n !== "outsider")) await joinAsRemoteMember(m.muster.membership, riders.id, peer.origin, n, new URL("/inbox", peer.origin));
      // A member of another union here: the guard lets its Creates in, castVote refuses its votes in riders.
      const walkers = await makeUnion(m, "walkers", { joinPolicy: "open" });
      await joinAsRemoteMember(m.muster.membership, walkers.id, peer.origin, "outsider", new URL("/inbox", peer.origin));
      const action = await composeAction(m.muster.membership, riders.id, OPERATOR, { title: "Sign the petition", text: "Reply *I'm in* or like this.", kind: "sign" }, { publishNow: true });
      actionId = action.id;
      call = actionNoteId(m.origin, riders, action.id);
      for (const n of NAMES) await warm(n);
    });
    after(async () => {
      await m?.stop();
      await peer?.close();
      await tdb?.destroy();
    });

    it("mastodon/like.json from a member: counted before the 202; the same request again, and re-signed to the shared inbox, count once", async () => {
      const body = fixture("mastodon/like.json", "liker", "https://mastodon.madrid/users/felix", { "https://ds9.lemmy.ml/post/147": call.href });
      const before = await committers();
      const first = await post(body, { as: "liker" });
      assert.equal(first.res.status, 202);
      // No eventually: the fast path answers once it has counted.
      assert.deepEqual((await responses(String(body.id))).map((r) => r.kind), ["commit"]);
      assert.equal((await recorded(String(body.id)))[0]?.union_id, riders.id);
      assert.equal(await queuedInbox(String(body.id)), 0, "nothing queued");
      assert.equal((await first.again()).status, 202);
      assert.equal((await post(body, { as: "liker", to: sharedInbox(), spec: RFC9421 })).res.status, 202);
      assert.equal((await responses(String(body.id))).length, 1);
      assert.equal((await recorded(String(body.id))).length, 1);
      assert.equal(await committers(), before + 1);
    });

    it("misskey/like-with-reaction.json (security context, inline terms) from a member, RFC 9421 to the shared inbox: counted", async () => {
      const body = fixture("misskey/like-with-reaction.json", "mkliker", "http://mastodon.example.org/users/admin", { "https://testing.pleroma.lol/objects/c331bbf7-2eb9-4801-a709-2a6103492a5a": call.href });
      // Misskey's ids are on its own host; the peer's actor sends it here.
      assert.equal((await post(body, { as: "mkliker", to: sharedInbox(), spec: RFC9421 })).res.status, 202);
      assert.deepEqual((await responses(String(body.id))).map((r) => r.kind), ["commit"]);
    });

    it("mastodon/create-note-public-reply.json saying \"I'm in\": a comment and a commitment at once; delivered twice, counted once", async () => {
      const body = fixture("mastodon/create-note-public-reply.json", "replier", "https://mastodon.madrid/users/felix", { "https://mamot.fr/users/retiolus/statuses/107224244380204526": call.href });
      const note = body.object as JsonObject;
      // Mastodon repeats the content under its language.
      note.content = "<p>I'm in, see you there</p>";
      note.contentMap = { en: note.content };
      const first = await post(body, { as: "replier", to: sharedInbox() });
      assert.equal(first.res.status, 202);
      const rows = await responses(String(note.id));
      assert.deepEqual(rows.map((r) => r.kind), ["comment", "commit"]);
      assert.equal(rows[0]!.content, "<p>I'm in, see you there</p>");
      assert.equal((await first.again()).status, 202);
      assert.equal((await responses(String(note.id))).length, 2);
    });

    it("mastodon/undo-like.json: withdraws the Like's commitment at once; twice changes nothing more", async () => {
      const likeId = fresh("undoer", "likes");
      assert.equal((await post({ "@context": "https://www.w3.org/ns/activitystreams", id: likeId, type: "Like", actor: actor("undoer"), object: call.href }, { as: "undoer" })).res.status, 202);
      const counted = await committers();
      const body = fixture("mastodon/undo-like.json", "undoer", "https://mastodon.madrid/users/felix", {
        "https://mastodon.madrid/users/felix#likes/212341": likeId,
        "https://ds9.lemmy.ml/post/147": call.href,
      });
      const first = await post(body, { as: "undoer" });
      assert.equal(first.res.status, 202);
      assert.notEqual((await responses(likeId))[0]!.undone_at, null);
      assert.equal(await committers(), counted - 1);
      assert.equal((await post(body, { as: "undoer", to: sharedInbox(), spec: RFC9421 })).res.status, 202);
      assert.equal(await committers(), counted - 1);
    });

    it("mastodon/create-poll-vote.json answering a proposal: the ballot is cast before the 202; delivered twice, one ballot", async () => {
      const p = await createProposal(m.muster.membership, riders.id, OPERATOR, { kind: "resolution", title: "Strike on Friday", closesAt: new Date(Date.now() + 120_000) });
      const question = new URL(`/u/riders/proposals/${p.id}`, m.origin).href;
      const body = fixture("mastodon/create-poll-vote.json", "voter", "https://mastodon.sdf.org/users/rinpatch", {
        "https://testing.uguu.ltd/objects/9d300947-2dcb-445d-8978-9a3b4b84fa14": question,
        "https://testing.uguu.ltd/users/rin": new URL("/u/riders", m.origin).href,
      });
      const note = body.object as JsonObject;
      note.id = fresh("voter", "votes");
      note.name = "Yes";
      const ballots = () => db().selectFrom("ballots").select(["option", "source_id"]).where("proposal_id", "=", p.id).execute();
      const first = await post(body, { as: "voter" });
      assert.equal(first.res.status, 202);
      assert.deepEqual(await ballots(), [{ option: 0, source_id: note.id }]);
      assert.equal(await queuedInbox(String(body.id)), 0, "nothing queued");
      assert.equal((await first.again()).status, 202);
      assert.equal((await post(body, { as: "voter", to: sharedInbox(), spec: RFC9421 })).res.status, 202);
      assert.equal((await ballots()).length, 1);
      assert.equal((await recorded(String(body.id))).length, 1);
    });

    describe("poll answers: every shape counted before the 202, once per voter, by castVote's rules", () => {
      let election: Awaited<ReturnType<typeof createProposal>>;
      let motion: Awaited<ReturnType<typeof createProposal>>;
      const questionOf = (p: { id: string }) => new URL(`/u/riders/proposals/${p.id}`, m.origin).href;
      const ballots = (proposalId: string, voter?: string) => {
        let q = db().selectFrom("ballots as b").innerJoin("members as mb", "mb.id", "b.member_id").select(["b.option", "b.source_id"]).where("b.proposal_id", "=", proposalId);
        if (voter) q = q.where("mb.actor_id", "=", actor(voter));
        return q.orderBy("b.option").execute();
      };
      /** GoToSocial's multiple-choice answer (gotosocial/create-poll-vote-multiple.json), from `name`, with these options, to this proposal. */
      const gtsVote = (name: string, p: { id: string }, options: string[]) => {
        const body = fixture("gotosocial/create-poll-vote-multiple.json", name, "https://sample.com/users/willy_nilly", {
          "https://example.org/users/bobby_tables/statuses/123456": questionOf(p),
          "https://example.org/users/bobby_tables": new URL("/u/riders", m.origin).href,
        });
        const template = (body.object as JsonObject[])[0]!;
        const ulid = `${++seq}`.padStart(26, "0");
        body.object = options.map((o, k) => ({ ...template, id: `${actor(name)}#${ulid}/votes/${k + 1}`, name: o }));
        return body;
      };
      /** Mastodon's answer to a multiple-choice poll: one Create per option (mastodon/docs-poll-vote-anyof-1.json). */
      const mastodonVote = (name: string, p: { id: string }, option: string) => {
        const body = fixture("mastodon/docs-poll-vote-anyof-1.json", name, "https://mastodon.example/users/bob", {
          "https://mastodon.example/users/alice/statuses/1009947848598745": questionOf(p),
          "https://mastodon.example/users/alice": new URL("/u/riders", m.origin).href,
        });
        const note = body.object as JsonObject;
        note.id = fresh(name, "votes");
        body.id = `${note.id}/activity`;
        note.name = option;
        return body;
      };

      before(async () => {
        const members = await db().selectFrom("members").select(["id", "actor_id"]).where("union_id", "=", riders.id).where("actor_id", "in", [actor("liker"), actor("replier"), actor("undoer")]).execute();
        election = await createProposal(m.muster.membership, riders.id, OPERATOR, { kind: "election", title: "Officers", role: "officer", candidates: members.map((x) => x.id), closesAt: new Date(Date.now() + 600_000) });
        motion = await createProposal(m.muster.membership, riders.id, OPERATOR, { kind: "resolution", title: "Strike on Monday", closesAt: new Date(Date.now() + 600_000) });
        await new Promise((r) => setTimeout(r, 5));
      });

      it("gotosocial/create-poll-vote-multiple.json (one Create, two Notes) to a multiple-choice proposal: both options counted before the 202, nothing queued; again, and re-signed to the shared inbox, counts nothing more", async () => {
        const body = gtsVote("gtsvoter", election, election.options.slice(0, 2));
        const first = await post(body, { as: "gtsvoter" });
        assert.equal(first.res.status, 202);
        // No eventually: counted before the answer (Fedify's path would still have it queued).
        assert.deepEqual((await ballots(election.id, "gtsvoter")).map((b) => Number(b.option)), [0, 1]);
        assert.equal(await queuedInbox(String(body.id)), 0, "nothing queued");
        assert.equal((await first.again()).status, 202);
        assert.equal((await post(body, { as: "gtsvoter", to: sharedInbox(), spec: RFC9421 })).res.status, 202);
        assert.equal((await ballots(election.id, "gtsvoter")).length, 2);
        assert.equal((await recorded(String(body.id))).length, 1);
      });

      it("Mastodon's anyOf answers (one Create per option): each counted before its 202; the same option again, in a new Create, is not a second ballot", async () => {
        for (const option of election.options.slice(1, 3)) assert.equal((await post(mastodonVote("anyvoter", election, option), { as: "anyvoter", to: sharedInbox() })).res.status, 202);
        assert.deepEqual((await ballots(election.id, "anyvoter")).map((b) => Number(b.option)), [1, 2]);
        const again = mastodonVote("anyvoter", election, election.options[1]!);
        assert.equal((await post(again, { as: "anyvoter" })).res.status, 202);
        assert.equal((await ballots(election.id, "anyvoter")).length, 2);
        assert.equal((await recorded(String(again.id))).length, 1, "recorded, as Fedify's path records it");
      });

      it("GoToSocial's two Notes to a one-choice proposal: the first option counts, the second is refused (one vote per voter)", async () => {
        const body = gtsVote("hostilevoter", motion, ["Yes", "No"]);
        assert.equal((await post(body, { as: "hostilevoter" })).res.status, 202);
        assert.deepEqual((await ballots(motion.id, "hostilevoter")).map((b) => Number(b.option)), [0]);
        assert.equal((await recorded(String(body.id))).length, 1);
      });

      describe("hostile poll answers: no ballot", () => {
        it("unsigned: 401, nothing recorded", async () => {
          const body = gtsVote("gtsvoter", motion, ["Yes"]);
          const res = await fetch(unionInbox(), { method: "POST", headers: { "Content-Type": "application/activity+json" }, body: JSON.stringify(body) });
          assert.equal(res.status, 401);
          assert.deepEqual(await recorded(String(body.id)), []);
          assert.deepEqual(await ballots(motion.id, "gtsvoter"), []);
        });

        it("a forged voter (signed with mallory's key, claiming gtsvoter): 401, no ballot", async () => {
          const body = gtsVote("gtsvoter", motion, ["No"]);
          assert.equal((await post(body, { as: "gtsvoter", keyOf: "mallory" })).res.status, 401);
          assert.deepEqual(await ballots(motion.id, "gtsvoter"), []);
          assert.deepEqual(await recorded(String(body.id)), []);
        });

        it("Notes in another's name (attributedTo someone else) in one's own signed Create: never that other's ballot", async () => {
          const body = gtsVote("mallory", motion, ["No"]);
          (body.object as JsonObject[])[0]!.attributedTo = actor("gtsvoter");
          assert.equal((await post(body, { as: "mallory" })).res.status, 202);
          await eventually(async () => (await recorded(String(body.id))).length > 0, "recorded by Fedify's path");
          assert.deepEqual(await ballots(motion.id, "gtsvoter"), []);
          assert.deepEqual(await ballots(motion.id, "mallory"), []);
        });

        it("a body changed after signing (wrong digest): 401, no ballot", async () => {
          const body = gtsVote("gtsvoter", motion, ["Yes"]);
          const r = await post(gtsVote("gtsvoter", motion, ["Abstain"]), { as: "gtsvoter" });
          assert.equal(r.res.status, 202);
          const had = await ballots(motion.id, "gtsvoter");
          assert.equal((await r.tampered(JSON.stringify(body))).status, 401);
          assert.deepEqual(await ballots(motion.id, "gtsvoter"), had);
          assert.deepEqual(await recorded(String(body.id)), []);
        });

        it("a replay of an old signed answer (outside the window): 401, no ballot", async () => {
          const body = gtsVote("voter", election, election.options.slice(0, 1));
          assert.equal((await post(body, { as: "voter", date: new Date(Date.now() - 3 * 3600_000) })).res.status, 401);
          assert.deepEqual(await ballots(election.id, "voter"), []);
        });

        it("oversized: 413 before it is read, no ballot", async () => {
          const body = { ...gtsVote("voter", election, election.options.slice(0, 1)), padding: "x".repeat(2_000_000) };
          assert.equal((await post(body, { as: "voter" })).res.status, 413);
          assert.deepEqual(await ballots(election.id, "voter"), []);
        });

        it("a member of another union voting in this one: recorded, no ballot", async () => {
          const body = gtsVote("outsider", election, election.options.slice(0, 2));
          assert.equal((await post(body, { as: "outsider" })).res.status, 202);
          assert.equal((await recorded(String(body.id))).length, 1);
          assert.deepEqual(await ballots(election.id, "outsider"), []);
        });

        it("a stranger (a member of no union here): 403 from the guard, no ballot", async () => {
          const body = gtsVote("stranger", election, election.options.slice(0, 1));
          assert.equal((await post(body, { as: "stranger" })).res.status, 403);
          assert.deepEqual(await recorded(String(body.id)), []);
        });

        it("a vote on a closed question: recorded, no ballot", async () => {
          const closed = await createProposal(m.muster.membership, riders.id, OPERATOR, { kind: "resolution", title: "Closed already", closesAt: new Date(Date.now() + 600_000) });
          await db().updateTable("proposals").set({ state: "passed" }).where("id", "=", closed.id).execute();
          for (const body of [gtsVote("liker", closed, ["Yes"]), mastodonVote("replier", closed, "Yes")]) {
            assert.equal((await post(body, { as: String(body.actor).split("/").pop()! })).res.status, 202);
            assert.equal((await recorded(String(body.id))).length, 1);
          }
          assert.deepEqual(await ballots(closed.id), []);
        });

        it("an option the question does not have: no ballot (and a known option beside it in the same Create still counts, as onVote counts Note by Note)", async () => {
          const body = gtsVote("undoer", election, ["nobody@nowhere", election.options[0]!]);
          assert.equal((await post(body, { as: "undoer" })).res.status, 202);
          assert.deepEqual((await ballots(election.id, "undoer")).map((b) => Number(b.option)), [0]);
          const only = mastodonVote("liker", motion, "Maybe");
          assert.equal((await post(only, { as: "liker" })).res.status, 202);
          assert.deepEqual(await ballots(motion.id, "liker"), []);
        });

        it("Notes to two different proposals in one Create: left to Fedify's path, which counts each once", async () => {
          const body = gtsVote("mkliker", election, [election.options[0]!]);
          const other = gtsVote("mkliker", motion, ["No"]);
          body.object = [...(body.object as JsonObject[]), ...(other.object as JsonObject[])];
          assert.equal((await post(body, { as: "mkliker" })).res.status, 202);
          await eventually(async () => (await ballots(motion.id, "mkliker")).length > 0 && (await ballots(election.id, "mkliker")).length > 0, "counted by Fedify's path");
          assert.equal((await ballots(election.id, "mkliker")).length, 1);
        });
      });
    });

    it("eight Likes offered at once (two of them forged, one a repeat): the six signed ones counted once each, the forged handed on, and on SQLite all in one transaction", async () => {
      let transactions = 0;
      const counting = new Proxy(db(), {
        get(target, prop) {
          if (prop === "transaction") return () => (transactions++, target.transaction());
          const v = Reflect.get(target, prop, target);
          return typeof v === "function" ? v.bind(target) : v;
        },
      });
      const fast = createFastInbox({ db: counting, events: m.muster.events, outbox: m.muster.membership.outbox, kv: new KyselyKvStore(db()), origin: m.origin });
      const offers: { id: string; forged: boolean; run: () => Promise<unknown> }[] = [];
      for (let i = 0; i < 7; i++) {
        const forged = i === 2 || i === 5;
        const body = JSON.stringify({ "@context": "https://www.w3.org/ns/activitystreams", id: fresh("liker", "burst"), type: "Like", actor: actor("liker"), object: call.href });
        const signed = await peer.signedPost(unionInbox(), body, { as: "liker", keyOf: forged ? "mallory" : undefined, spec: i % 2 ? RFC9421 : CAVAGE });
        offers.push({ id: JSON.parse(body).id, forged, run: () => fast(signed.clone(), new TextEncoder().encode(body), JSON.parse(body), "riders") });
      }
      offers.push({ ...offers[0]!, run: offers[0]!.run }); // the first again, at the same time
      const outcomes = await Promise.all(offers.map((o) => o.run()));
      assert.deepEqual(outcomes.slice(1, 7), ["counted", undefined, "counted", "counted", undefined, "counted"]);
      // The same activity twice at once: whichever is read first counts, the other is a repeat (on PostgreSQL either may be).
      assert.deepEqual([outcomes[0], outcomes[7]].sort(), ["counted", "repeat"]);
      for (const o of offers) {
        assert.deepEqual((await responses(o.id)).map((r) => r.kind), o.forged ? [] : ["commit"]);
        assert.equal((await recorded(o.id)).length, o.forged ? 0 : 1);
      }
      if (d.name === "sqlite") assert.equal(transactions, 1, "one shared transaction");
    });

    describe("hostile or unusual input: never counted by the fast path", () => {
      const like = (name: string, extra: Record<string, unknown> = {}) => ({ "@context": "https://www.w3.org/ns/activitystreams", id: fresh(name, "likes"), type: "Like", actor: actor(name), object: call.href, ...extra });

      it("unsigned: 401, nothing recorded", async () => {
        const body = like("liker");
        const res = await fetch(unionInbox(), { method: "POST", headers: { "Content-Type": "application/activity+json" }, body: JSON.stringify(body) });
        assert.equal(res.status, 401);
        assert.deepEqual(await responses(body.id), []);
      });

      it("a forged actor (signed with mallory's key, claiming liker): refused, not counted", async () => {
        const body = like("liker");
        const r = await post(body, { as: "liker", keyOf: "mallory" });
        assert.equal(r.res.status, 401);
        assert.deepEqual(await responses(body.id), []);
        assert.deepEqual(await recorded(body.id), []);
      });

      it("a body changed after signing (wrong digest): refused, not counted", async () => {
        const body = like("liker");
        const r = await post(body, { as: "liker" });
        assert.equal(r.res.status, 202);
        const forged = { ...body, id: fresh("liker", "likes") };
        assert.equal((await r.tampered(JSON.stringify(forged))).status, 401);
        assert.deepEqual(await responses(forged.id), []);
      });

      it("a signature dated outside the window (a replay of an old request): refused, not counted", async () => {
        const body = like("liker");
        const r = await post(body, { as: "liker", date: new Date(Date.now() - 3 * 3600_000) });
        assert.equal(r.res.status, 401);
        assert.deepEqual(await responses(body.id), []);
      });

      it("oversized and malformed bodies: refused by the guard before anything reads them", async () => {
        const big = await post(JSON.stringify({ ...like("liker"), padding: "x".repeat(2_000_000) }), { as: "liker" });
        assert.equal(big.res.status, 413);
        const bad = await post("{\"type\":\"Like\",", { as: "liker" });
        assert.equal(bad.res.status, 400);
      });

      it("a stranger's Like: not counted, recorded by Fedify's path", async () => {
        const body = like("stranger");
        assert.equal((await post(body, { as: "stranger" })).res.status, 202);
        await eventually(async () => (await recorded(body.id)).length > 0, "recorded");
        assert.deepEqual(await responses(body.id), []);
      });

      it("a context that makes \"Like\" mean Announce: Fedify's reading wins (a boost, not a commitment)", async () => {
        const body = { ...like("redefiner"), "@context": ["https://www.w3.org/ns/activitystreams", { Like: "as:Announce" }] };
        assert.equal((await post(body, { as: "redefiner" })).res.status, 202);
        await eventually(async () => (await responses(body.id)).length > 0, "handled by Fedify");
        assert.deepEqual((await responses(body.id)).map((r) => r.kind), ["boost"]);
      });

      it("a member whose actor has not been fetched for a day: goes through Fedify, which refreshes it, and counts once", async () => {
        await db().updateTable("remote_actors").set({ fetched_at: Date.now() - 2 * 86_400_000 }).where("id", "=", actor("late")).execute();
        const body = like("late");
        assert.equal((await post(body, { as: "late" })).res.status, 202);
        await eventually(async () => (await responses(body.id)).length > 0, "counted by Fedify's path");
        const cached = await db().selectFrom("remote_actors").select("fetched_at").where("id", "=", actor("late")).executeTakeFirstOrThrow();
        assert.ok(Date.now() - Number(cached.fetched_at) < 60_000, "refreshed");
      });

      it("a poll answer (a Note with a name) to a proposal that does not exist: never taken as a reply, recorded, no ballot", async () => {
        const proposal = new URL(`/u/riders/proposals/${crypto.randomUUID()}`, m.origin).href;
        const body = { "@context": "https://www.w3.org/ns/activitystreams", id: fresh("gts", "votes"), type: "Create", actor: actor("gts"), object: { id: fresh("gts", "votes"), type: "Note", name: "in", attributedTo: actor("gts"), inReplyTo: proposal } };
        assert.equal((await post(body, { as: "gts" })).res.status, 202);
        await eventually(async () => (await recorded(body.id)).length > 0, "recorded");
        assert.deepEqual(await responses(body.object.id), []);
      });

      it("a member's signed Like of the call named with user:pass@: the fast path declines it (Fedify's path decides) and counts nothing", async () => {
        // canonical-url.ts: a URL with credentials is never read from the plain JSON; the same Like without them is counted (the control).
        const fast = createFastInbox({ db: db(), events: m.muster.events, outbox: m.muster.membership.outbox, kv: new KyselyKvStore(db()), origin: m.origin });
        const offer = async (object: string) => {
          const body = JSON.stringify(like("liker", { object }));
          const signed = await peer.signedPost(unionInbox(), body, { as: "liker", spec: CAVAGE });
          return { id: JSON.parse(body).id as string, outcome: await fast(signed, new TextEncoder().encode(body), JSON.parse(body), "riders") };
        };
        const credentialed = await offer(call.href.replace("://", "://user:pass@"));
        assert.equal(credentialed.outcome, undefined);
        assert.deepEqual(await responses(credentialed.id), []);
        assert.deepEqual(await recorded(credentialed.id), []);
        const plain = await offer(call.href);
        assert.equal(plain.outcome, "counted");
        assert.deepEqual((await responses(plain.id)).map((r) => r.kind), ["commit"]);
      });

      it("a key URL on a private address that is not cached: the fast path fetches nothing and hands it on", async () => {
        let connections = 0;
        const trap = createServer((_req, res) => res.end("{}"));
        trap.on("connection", () => connections++);
        await new Promise<void>((r) => trap.listen(0, "127.0.0.1", () => r()));
        try {
          const port = (trap.address() as { port: number }).port;
          const keyId = new URL(`http://127.0.0.1:${port}/users/liker#main-key`);
          const body = JSON.stringify(like("liker"));
          const request = await signRequest(new Request(unionInbox(), { method: "POST", headers: { "Content-Type": "application/activity+json" }, body }), (await generateRsa2048()).privateKey, keyId, { spec: CAVAGE });
          const fast = createFastInbox({ db: db(), events: m.muster.events, outbox: m.muster.membership.outbox, kv: new KyselyKvStore(db()), origin: m.origin });
          assert.equal(await fast(request, new TextEncoder().encode(body), JSON.parse(body), "riders"), undefined);
          assert.equal(connections, 0);
          assert.deepEqual(await responses(JSON.parse(body).id), []);
        } finally {
          await new Promise<void>((r) => trap.close(() => r()));
        }
      });
    });

    describe("the node-level inbox (answered before Hono): the guard, the body limit and the blocked-server check apply as in the app", () => {
      let plain: Server;
      let front: Server;
      let appCalls = 0;
      const listen = async (l: RequestListener) => {
        const server = createServer(l);
        await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
        return server;
      };
      const urlOf = (server: Server, path = "/u/riders/inbox") => new URL(path, `http://127.0.0.1:${(server.address() as AddressInfo).port}`);
      before(async () => {
        const app = getRequestListener(m.muster.app.fetch);
        // The app alone (the code before this path) and the app behind the node-level inbox, which counts what reaches the app.
        plain = await listen(app);
        front = await listen(inboxPosts({ db: db(), maxBodyBytes: m.muster.config.maxBodyBytes, origin: m.origin, fast: m.muster.fastInbox! })((req, res) => {
          appCalls++;
          app(req, res);
        }));
      });
      after(async () => {
        for (const s of [plain, front]) await new Promise<void>((r) => s.close(() => r()));
      });
      const like = (name: string, extra: Record<string, unknown> = {}) => ({ "@context": "https://www.w3.org/ns/activitystreams", id: fresh(name, "likes"), type: "Like", actor: actor(name), object: call.href, ...extra });

      /** The same request, signed for each, to the app alone and to the node-level inbox: status and body, and whether the app was reached. */
      async function both(body: string, opts: { as: string; sign?: boolean; date?: Date; headers?: Record<string, string>; chunked?: boolean }) {
        const out: { status: number; body: string; headers: Headers; reachedApp: boolean }[] = [];
        for (const server of [plain, front]) {
          const to = urlOf(server);
          const headers = opts.sign === false ? new Headers({ "Content-Type": "application/activity+json" }) : new Headers((await peer.signedPost(to, body, { as: opts.as, spec: CAVAGE, date: opts.date })).headers);
          for (const [k, v] of Object.entries(opts.headers ?? {})) headers.set(k, v);
          const calls = appCalls;
          // A stream has no declared length: the limit is found while reading.
          const payload = opts.chunked ? new Blob([body]).stream() : body;
          const res = await fetch(to, { method: "POST", headers, body: payload, duplex: "half" } as RequestInit);
          out.push({ status: res.status, body: await res.text(), headers: res.headers, reachedApp: appCalls > calls });
        }
        const [app, node] = out as [typeof out[0], typeof out[0]];
        assert.equal(node.status, app.status, `the same status (app: ${app.body}; node-level: ${node.body})`);
        assert.equal(node.body, app.body);
        return { app, node };
      }

      it("a member's Like: counted and answered 202 before the app, with the app's security headers", async () => {
        const body = like("liker");
        const to = urlOf(front);
        const signed = await peer.signedPost(to, JSON.stringify(body), { as: "liker", spec: CAVAGE });
        const calls = appCalls;
        const res = await fetch(to, { method: "POST", headers: signed.headers, body: JSON.stringify(body) });
        assert.equal(res.status, 202);
        assert.equal(appCalls, calls, "the app was not reached");
        assert.deepEqual((await responses(body.id)).map((r) => r.kind), ["commit"]);
        const viaApp = await fetch(urlOf(plain), { method: "POST", headers: (await peer.signedPost(urlOf(plain), JSON.stringify(like("liker")), { as: "liker", spec: CAVAGE })).headers, body: JSON.stringify(like("liker")) });
        for (const h of ["content-security-policy", "x-frame-options", "x-content-type-options", "referrer-policy", "cross-origin-opener-policy"]) assert.equal(res.headers.get(h), viaApp.headers.get(h), h);
        assert.ok(res.headers.get("x-frame-options"));
      });

      it("a GoToSocial vote: counted before the app", async () => {
        const p = await createProposal(m.muster.membership, riders.id, OPERATOR, { kind: "resolution", title: "Node-level", closesAt: new Date(Date.now() + 600_000) });
        await new Promise((r) => setTimeout(r, 5));
        const question = new URL(`/u/riders/proposals/${p.id}`, m.origin).href;
        const id = fresh("gtsvoter", "votes");
        const body = JSON.stringify({ "@context": "https://www.w3.org/ns/activitystreams", id, type: "Create", actor: actor("gtsvoter"), object: [{ id: `${id}/1`, type: "Note", name: "No", attributedTo: actor("gtsvoter"), inReplyTo: question }] });
        const to = urlOf(front, "/inbox");
        const calls = appCalls;
        const res = await fetch(to, { method: "POST", headers: (await peer.signedPost(to, body, { as: "gtsvoter", spec: CAVAGE })).headers, body });
        assert.equal(res.status, 202);
        assert.equal(appCalls, calls);
        assert.equal((await db().selectFrom("ballots").select("option").where("proposal_id", "=", p.id).execute()).length, 1);
      });

      it("unsigned: the app refuses it (401), the body unread", async () => {
        const r = await both(JSON.stringify(like("liker")), { as: "liker", sign: false });
        assert.equal(r.node.status, 401);
        assert.match(r.node.body, /unsigned/);
        assert.ok(r.node.reachedApp);
      });

      it("a declared length over the limit: 413 from the app, unread", async () => {
        const r = await both(JSON.stringify(like("liker", { padding: "x".repeat(2_000_000) })), { as: "liker" });
        assert.equal(r.node.status, 413);
        assert.ok(r.node.reachedApp);
      });

      it("an undeclared length (chunked) over the limit: 413 once the limit is crossed while reading, the same answer as the app's", async () => {
        const r = await both(JSON.stringify(like("liker", { padding: "x".repeat(2_000_000) })), { as: "liker", chunked: true });
        assert.equal(r.node.status, 413);
        assert.match(r.node.body, /payload_too_large/);
      });

      it("nesting too deep, a remote context, a stale body signature, a stranger's Create: each refused as the app refuses it", async () => {
        const deep = JSON.stringify({ ...like("liker"), x: JSON.parse("[".repeat(40) + "]".repeat(40)) });
        assert.match((await both(deep, { as: "liker" })).node.body, /too_deep/);
        const remote = JSON.stringify({ ...like("liker"), "@context": ["https://www.w3.org/ns/activitystreams", "https://evil.example/context.json"] });
        assert.match((await both(remote, { as: "liker" })).node.body, /unsupported_context/);
        const stale = JSON.stringify({ ...like("liker"), proof: { type: "DataIntegrityProof", created: "2020-01-01T00:00:00Z" } });
        assert.match((await both(stale, { as: "liker" })).node.body, /stale_signature/);
        const stranger = JSON.stringify({ "@context": "https://www.w3.org/ns/activitystreams", id: fresh("stranger", "posts"), type: "Create", actor: actor("stranger"), object: { id: fresh("stranger", "notes"), type: "Note", content: "hi", attributedTo: actor("stranger") } });
        const r = await both(stranger, { as: "stranger" });
        assert.equal(r.node.status, 403);
        assert.ok(r.node.reachedApp);
      });

      it("a blocked server's member: dropped by the app's blocked-server check (202, not counted), never counted here", async () => {
        const other = await startPeer(["blockee"]);
        try {
          await joinAsRemoteMember(m.muster.membership, riders.id, other.origin, "blockee", new URL("/inbox", other.origin));
          // Fedify caches the key (the fast path needs it cached), then the server is blocked.
          const warmId = `${other.actorId("blockee").href}#warm`;
          const warmBody = JSON.stringify({ "@context": "https://www.w3.org/ns/activitystreams", id: warmId, type: "Like", actor: other.actorId("blockee").href, object: "https://elsewhere.example/notes/1" });
          assert.equal((await fetch(unionInbox(), { method: "POST", headers: (await other.signedPost(unionInbox(), warmBody, { as: "blockee" })).headers, body: warmBody })).status, 202);
          await eventually(async () => (await recorded(warmId)).length > 0, "warm");
          await blockServer(m.muster.membership, other.origin.host, null);
          const body = JSON.stringify({ "@context": "https://www.w3.org/ns/activitystreams", id: `${other.actorId("blockee").href}#likes/1`, type: "Like", actor: other.actorId("blockee").href, object: call.href });
          const to = urlOf(front);
          const calls = appCalls;
          const res = await fetch(to, { method: "POST", headers: (await other.signedPost(to, body, { as: "blockee" })).headers, body });
          assert.equal(res.status, 202);
          assert.ok(appCalls > calls, "handed to the app");
          assert.deepEqual(await responses(`${other.actorId("blockee").href}#likes/1`), []);
          assert.deepEqual(await recorded(`${other.actorId("blockee").href}#likes/1`), []);
        } finally {
          await other.close();
        }
      });
    });
  });
}
