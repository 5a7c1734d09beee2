import { inboxUrl } from "../src/actors/remote-actors.ts";
import "../src/temporal.ts";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import path from "node:path";
import { type HttpMessageSignaturesSpec } from "@fedify/fedify";
import { Follow, type Group } from "@fedify/vocab";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { freshId, type Json, type JsonObject, LEMMY_CONTEXT, loadFixture, type Readdress, readdress } from "./helpers/fixtures.ts";
import { eventually, makeUnion, startMuster, type TestMuster } from "./helpers/muster.ts";
import { type CountingPeer, type InboxHit, startCountingPeer } from "./helpers/counting-peer.ts";
import { type Action, composeAction, editAction, getAction, hashesOf, listActions, retractAction } from "../src/actions/actions.ts";
import { GENESIS, verifyChain } from "../src/actions/chain.ts";
import { decideRelay, pendingRelays } from "../src/actions/relay.ts";
import { closeExpired, isCommitment, progressOf } from "../src/actions/responses.ts";
import { localSchedule, publishDue } from "../src/actions/scheduler.ts";
import { findMemberByActor, OPERATOR } from "../src/members/members.ts";
import { requestToJoin } from "../src/members/membership.ts";
import { type Union, updateUnion } from "../src/unions/unions.ts";
import { overrideBylaws } from "./helpers/bylaws.ts";

/*
 * Issue 4, daily calls-to-action, end to end on loopback: a real Muster
 * server, three real peer servers (three hosts: the port differs) whose
 * members joined with real Follows, real HTTP signatures both ways, and
 * responses shaped like the Mastodon, Misskey, Lemmy and Pleroma payloads in
 * shared/fixtures/activitypub. Every inbox POST a peer gets is counted at the
 * HTTP level (test/helpers/counting-peer.ts), before the peer's own
 * duplicate check, so "exactly one delivery per shared inbox" is measured.
 */

const FIXTURES = path.join(import.meta.dirname, "../../shared/fixtures/activitypub");
const fixture = (rel: string): JsonObject => loadFixture(FIXTURES, rel);

const CAVAGE: HttpMessageSignaturesSpec = "draft-cavage-http-signatures-12";
const RFC9421: HttpMessageSignaturesSpec = "rfc9421";
const PUBLIC = ["https://www.w3.org/ns/activitystreams#Public", "as:Public", "Public"];

// Original identities in the fixtures.
const MASTO_FELIX = "https://mastodon.madrid/users/felix";
const MASTO_ADMIN = "http://mastodon.example.org/users/admin";
const LEMMY_ALPHA = "http://ds9.lemmy.ml/u/lemmy_alpha";
const PLEROMA_LAIN = "http://localtesting.pleroma.lol/users/lain";

/** Members on every peer server; `outsider` is on the same servers but never joins. */
const MEMBERS = ["ana", "ben", "cy", "dee"];
const NAMES = [...MEMBERS, "outsider"];

const arr = (v: unknown): unknown[] => (v === undefined || v === null ? [] : Array.isArray(v) ? v : [v]);
const str = (v: Json | undefined): string => {
  if (typeof v !== "string") throw new Error(`expected a string, got ${JSON.stringify(v)}`);
  return v;
};
const obj = (v: unknown): JsonObject => {
  if (!v || typeof v !== "object" || Array.isArray(v)) throw new Error(`expected an object, got ${JSON.stringify(v)}`);
  return v as JsonObject;
};
/** The Note's place in the union's hash chain: the name of its Link tag with rel "prev". */
const chainLink = (note: JsonObject): string | undefined => {
  const link = arr(note.tag).map(obj).find((t) => t.type === "Link" && arr(t.rel).includes("prev"));
  return link && str(link.name);
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

for (const d of dialects) {
  describe(`calls-to-action end to end over three peer servers, on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    let m: TestMuster;
    let peers: CountingPeer[];
    /** A server none of whose accounts is a member. */
    let stranger: CountingPeer;
    let riders: Union;
    let cooks: Union;

    const db = () => m.muster.database.db;
    const deps = () => m.muster.membership;
    const groupId = (slug = "riders") => new URL(`/u/${slug}`, m.origin).href;
    const followersOf = (slug = "riders") => `${groupId(slug)}/followers`;
    const unionInbox = (slug = "riders") => new URL(`/u/${slug}/inbox`, m.origin);
    const sharedInbox = () => new URL("/inbox", m.origin);
    const noteIdOf = (a: Action, slug = "riders") => new URL(`/u/${slug}/actions/${a.id}`, m.origin).href;
    const unionOf = async (slug: string) => (await db().selectFrom("unions").select("id").where("slug", "=", slug).executeTakeFirstOrThrow()).id;

    /** Until no queued message (any queue) mentions the needle: the work it caused is done. */
    async function settled(needle: string, timeoutMs = 15_000): Promise<void> {
      await eventually(async () => {
        const r = await db().selectFrom("fedify_mq").select((e) => e.fn.countAll<number>().as("n"))
          .where("message", "like", `%${needle}%`).executeTakeFirstOrThrow();
        return Number(r.n) === 0;
      }, `queue settled for ${needle}`, timeoutMs);
    }

    async function queueEmpty(timeoutMs = 30_000): Promise<void> {
      await eventually(async () => {
        const r = await db().selectFrom("fedify_mq").select((e) => e.fn.countAll<number>().as("n")).where("queue", "in", ["inbox", "outbox", "fanout", "delivery", "domain"]).executeTakeFirstOrThrow();
        return Number(r.n) === 0;
      }, "queues empty", timeoutMs);
    }

    /** Every peer's inboxes got this activity and answered 202; then the queue settles. */
    async function deliveredEverywhere(activityId: string, to: CountingPeer[] = peers): Promise<Map<CountingPeer, InboxHit[]>> {
      await eventually(async () => to.every((p) => p.hitsOf(activityId).some((h) => h.status === 202)), `${activityId} delivered to every peer`, 20_000);
      await settled(activityId);
      // A duplicate would be sent right after the first: give it time to show.
      await sleep(300);
      return new Map(to.map((p) => [p, p.hitsOf(activityId)]));
    }

    function hitsWhere(pred: (h: InboxHit) => boolean): Map<CountingPeer, InboxHit[]> {
      return new Map(peers.map((p) => [p, p.hits.filter(pred)]));
    }

    function assertOncePerSharedInbox(hits: Map<CountingPeer, InboxHit[]>, what: string): void {
      for (const [p, hs] of hits) {
        assert.equal(hs.length, 1, `${what}: ${p.host} got ${hs.length} POSTs (${hs.map((h) => h.path).join(", ")})`);
        assert.equal(hs[0]!.shared, true, `${what}: ${p.host} got it at ${hs[0]!.path}, not its shared inbox`);
        assert.equal(hs[0]!.status, 202);
      }
    }

    /** Signs the exact bytes as the peer's actor and POSTs them; `replay` re-sends the identical signed request. */
    async function deliver(peer: CountingPeer, as: string, body: JsonObject, to: URL, spec: HttpMessageSignaturesSpec = CAVAGE) {
      const text = JSON.stringify(body);
      const signed = await peer.signedPost(to, text, { as, spec });
      const headers = new Headers(signed.headers);
      const post = () => fetch(to, { method: "POST", headers, body: text });
      return { res: await post(), replay: post };
    }

    /** Until the activity is recorded as processed (after its effects). */
    const processed = (id: string) => eventually(async () => {
      const r = await db().selectFrom("inbox_activities").selectAll().where("id", "=", id).execute();
      return r.length > 0 && r;
    }, `${id} processed`);

    function adapt(peer: CountingPeer, file: string, how: Omit<Readdress, "id">): JsonObject {
      const original = fixture(file);
      return readdress(original, { ...how, id: freshId(str(original.id), how, peer.origin) });
    }

    /** A fresh id for an object the peer's actor made (a note), unique per call. */
    const freshNote = (peer: CountingPeer, name: string, original: string, from: string) => freshId(original, { actors: { [from]: peer.actorId(name).href } }, peer.origin);
    /** The inReplyTo of a delivered Create's embedded object, if any. */
    const inReplyToOf = (h: InboxHit): unknown => {
      const o = h.body?.object;
      return o && typeof o === "object" && !Array.isArray(o) ? (o as JsonObject).inReplyTo : undefined;
    };

    const responsesOf = (a: Action) => db().selectFrom("action_responses").selectAll().where("action_id", "=", a.id).orderBy("created_at").execute();

    before(async () => {
      tdb = await d.create();
      m = await startMuster(tdb);
      peers = await Promise.all([0, 1, 2].map(() => startCountingPeer(NAMES)));
      stranger = await startCountingPeer(["nobody"]);
      riders = await makeUnion(m, "riders", { joinPolicy: "open" });
      cooks = await makeUnion(m, "cooks", { name: "Cooks Together", joinPolicy: "open" });
      cooks = await overrideBylaws(m.muster.unions, "cooks", { actionsVisibility: "public" });
      const riderGroup = await peers[0]!.lookup(new URL(groupId("riders"))) as Group;
      const cookGroup = await peers[0]!.lookup(new URL(groupId("cooks"))) as Group;
      // Real Follows: Muster fetches each actor and caches its inbox and shared inbox.
      let n = 0;
      for (const p of peers) {
        for (const name of MEMBERS) {
          await p.send(name, riderGroup, new Follow({ id: new URL(`/follows/${name}-${++n}`, p.origin), actor: p.actorId(name), object: riderGroup.id }));
        }
        await p.send("ana", cookGroup, new Follow({ id: new URL(`/follows/ana-cooks-${++n}`, p.origin), actor: p.actorId("ana"), object: cookGroup.id }));
      }
      await eventually(async () => {
        for (const p of peers) {
          for (const name of MEMBERS) if ((await findMemberByActor(db(), riders.id, p.actorId(name).href))?.state !== "active") return false;
          if ((await findMemberByActor(db(), cooks.id, p.actorId("ana").href))?.state !== "active") return false;
        }
        return true;
      }, "every member joined", 30_000);
      // Accepts and welcome messages delivered: the fan-outs below start on an idle queue.
      await queueEmpty();
    });

    after(async () => {
      await m?.stop();
      await Promise.all([...(peers ?? []), stranger].map((p) => p?.close()));
      await tdb?.destroy();
    });

    it("the members' cached actors carry their servers' shared inboxes", async () => {
      const rows = await db().selectFrom("remote_actors").select(["id", "inbox", "shared_inbox"]).execute();
      for (const p of peers) {
        for (const name of MEMBERS) {
          const r = rows.find((x) => x.id === p.actorId(name).href);
          assert.equal(inboxUrl(r!.id, r!.shared_inbox), p.sharedInbox().href, `${name}@${p.host}`);
        }
      }
    });

    describe("publishing", () => {
      let action: Action;
      let noteId: string;
      let delivered: InboxHit[];

      it("a members-only call-to-action reaches each server's shared inbox exactly once, as Create(Note) by the Group", async () => {
        const t0 = Date.now();
        action = await composeAction(deps(), riders.id, OPERATOR, {
          title: "Call your councillor <today>",
          text: "Ask them to back the **fair pay** motion.\n\nNumbers are on the union page.",
          kind: "contact",
          link: "https://example.org/motion",
        }, { publishNow: true });
        assert.equal(action.state, "published");
        assert.equal(action.seq, 1);
        noteId = noteIdOf(action);
        const createId = `${noteId}/activity`;
        const hits = await deliveredEverywhere(createId);
        const ms = Math.max(...[...hits.values()].flat().map((h) => h.receivedAt)) - t0;
        console.log(`# [${d.name}] publish → last of ${peers.length} shared-inbox deliveries: ${ms} ms`);
        assertOncePerSharedInbox(hits, "Create");
        delivered = [...hits.values()].map((h) => h[0]!);
        // No member's personal inbox got a copy either.
        for (const p of peers) assert.equal(p.hits.filter((h) => h.objectId === noteId).length, 1);
        assert.equal(stranger.hits.length, 0, "a server with no members gets nothing");

        for (const h of delivered) {
          const create = h.body!;
          assert.equal(create.type, "Create");
          assert.equal(create.actor, groupId());
          const note = obj(create.object);
          assert.equal(note.type, "Note");
          assert.equal(note.id, noteId);
          assert.equal(note.attributedTo, groupId());
          assert.deepEqual(arr(note.to), [followersOf()], "members only: addressed to the followers");
          assert.ok(arr(note.cc).every((c) => !PUBLIC.includes(c as string)), "never Public");
          assert.ok(arr(create.to).every((c) => !PUBLIC.includes(c as string)));
          const mentions = arr(note.tag).map(obj).filter((t) => t.type === "Mention");
          assert.deepEqual(mentions.map((t) => t.href), [groupId()], "the Group mentions itself so replies come back to it");
          const content = str(note.content);
          assert.match(content, /Call your councillor &lt;today&gt;/, "the title, escaped");
          assert.match(content, /<strong>fair pay<\/strong>/, "the Markdown rendered");
          assert.ok(!content.includes("<today>"));
          assert.equal(chainLink(note), `sha256:${GENESIS}`, "the first in the chain links to the genesis hash, as data");
          assert.doesNotMatch(content, /previous|call-to-action #|Kind:|[0-9a-f]{16}/, "no chain jargon in the text members read");
          assert.match(content, /Reply “in” to .* or like this post to commit/, "how to respond, in plain words");
          assert.match(content, /<a href="https:\/\/example\.org\/motion">/, "the link");
          const tags = [...content.matchAll(/<\/?([a-z0-9]+)/g)].map((m) => m[1]!);
          const kept = new Set(["p", "br", "span", "a", "del", "pre", "code", "em", "strong", "b", "i", "u", "ul", "ol", "li", "blockquote"]);
          assert.deepEqual(tags.filter((t) => !kept.has(t)), [], "only tags Mastodon's sanitizer keeps");
        }
      });

      it("a second one links to the first one's hash; the featured collection pins the newest", async () => {
        const second = await composeAction(deps(), riders.id, OPERATOR, { title: "Wear the badge", text: "All day.", kind: "show-up" }, { publishNow: true });
        const hits = await deliveredEverywhere(`${noteIdOf(second)}/activity`);
        assertOncePerSharedInbox(hits, "Create #2");
        const first = (await hashesOf(db(), action.id))!;
        const mine = (await hashesOf(db(), second.id))!;
        assert.equal(mine.prevHash, first.hash);
        for (const [, [h]] of hits) assert.equal(chainLink(obj(h!.body!.object)), `sha256:${first.hash}`);

        const peer = peers[1]!;
        const featured = await (await fetch(await peer.signedGet(new URL(`${groupId()}/featured`), { as: "ben" }))).json() as JsonObject;
        assert.deepEqual(arr(featured.orderedItems ?? featured.items).map((x) => obj(x).id), [noteIdOf(second)], "pinned until the next one");
        const anon = await (await fetch(new URL(`${groupId()}/featured`), { headers: { Accept: "application/activity+json" } })).json() as JsonObject;
        assert.deepEqual(arr(anon.orderedItems ?? anon.items), [], "members only: nothing pinned for an anonymous reader");
        // Back to the first as the thing under test: retract the second (its Delete is counted later).
        await retractAction(deps(), riders.id, second.id, OPERATOR);
        await deliveredEverywhere(`${noteIdOf(second)}/delete`);
        const again = await (await fetch(await peer.signedGet(new URL(`${groupId()}/featured`), { as: "ben" }))).json() as JsonObject;
        assert.deepEqual(arr(again.orderedItems ?? again.items).map((x) => obj(x).id), [noteId], "a retracted one is unpinned; the previous one is current again");
      });

      it("the outbox lists it for a member's server (signed fetch) and hides it from anonymous readers", async () => {
        const outbox = new URL(`${groupId()}/outbox`);
        const signed = await fetch(await peers[2]!.signedGet(outbox, { as: "cy" }));
        assert.equal(signed.status, 200);
        const json = await signed.json() as JsonObject;
        const items = arr(json.orderedItems ?? json.items).map(obj);
        const mine = items.find((i) => obj(i.object).id === noteId);
        assert.ok(mine, `outbox lists ${noteId}`);
        assert.equal(mine.type, "Create");
        assert.equal(mine.id, `${noteId}/activity`);
        const anon = await (await fetch(outbox, { headers: { Accept: "application/activity+json" } })).json() as JsonObject;
        assert.deepEqual(arr(anon.orderedItems ?? anon.items), []);
        assert.equal(anon.totalItems ?? 0, 0);
      });

      it("its id dereferences to the same Note for a member's server; anonymous and non-member servers are refused", async () => {
        const url = new URL(noteId);
        const res = await fetch(await peers[0]!.signedGet(url, { as: "outsider" }));
        assert.equal(res.status, 200, "any account on a server that hosts members may read it");
        const note = await res.json() as JsonObject;
        assert.equal(note.id, noteId);
        assert.equal(note.content, obj(delivered[0]!.body!.object).content, "the same content as delivered");
        assert.equal(note.attributedTo, groupId());
        const anon = await fetch(url, { headers: { Accept: "application/activity+json" } });
        assert.ok([401, 403, 404].includes(anon.status), `anonymous fetch answered ${anon.status}`);
        assert.ok(!(await anon.text()).includes("councillor"));
        const foreign = await fetch(await stranger.signedGet(url, { as: "nobody" }));
        assert.ok([401, 403, 404].includes(foreign.status), `a server with no members answered ${foreign.status}`);
      });

      it("a public union's call-to-action is addressed to Public (followers in cc) and readable by anyone", async () => {
        const a = await composeAction(deps(), cooks.id, OPERATOR, { title: "Bring a dish", text: "Potluck at six.", kind: "show-up" }, { publishNow: true });
        const id = noteIdOf(a, "cooks");
        const hits = await deliveredEverywhere(`${id}/activity`);
        assertOncePerSharedInbox(hits, "public Create");
        for (const [, [h]] of hits) {
          const note = obj(h!.body!.object);
          assert.ok(arr(note.to).some((t) => PUBLIC.includes(t as string)), `to Public: ${JSON.stringify(note.to)}`);
          assert.deepEqual(arr(note.cc), [followersOf("cooks")]);
          assert.equal(note.attributedTo, groupId("cooks"));
        }
        const res = await fetch(id, { headers: { Accept: "application/activity+json" } });
        assert.equal(res.status, 200);
        assert.match(str((await res.json() as JsonObject).content), /Bring a dish/);
        // Only the cooks' followers got it: the riders' Create count is unchanged.
        for (const p of peers) assert.equal(p.hits.filter((h) => h.type === "Create" && h.objectId === noteId).length, 1);
      });
    });

    describe("answers from Mastodon, Misskey, Lemmy and Pleroma", () => {
      let action: Action;
      let noteId: string;
      let anaLike: string;
      let cyReply: string;

      before(async () => {
        action = await composeAction(deps(), riders.id, OPERATOR, { title: "Sign the petition", text: "Link below.", kind: "sign" }, { publishNow: true });
        noteId = noteIdOf(action);
        await deliveredEverywhere(`${noteId}/activity`);
      });

      const progress = async () => progressOf(db(), (await getAction(db(), riders.id, action.id))!);

      it("mastodon/like.json by a member: a commitment; the same Like again, and at the other inbox, counts once", async () => {
        const [p] = peers;
        const body = adapt(p!, "mastodon/like.json", { actors: { [MASTO_FELIX]: p!.actorId("ana").href }, exact: { "https://ds9.lemmy.ml/post/147": noteId } });
        anaLike = str(body.id);
        const first = await deliver(p!, "ana", body, unionInbox());
        assert.equal(first.res.status, 202);
        await processed(anaLike);
        assert.equal((await progress()).commitments, 1);
        const replay = await first.replay();
        assert.ok([200, 202].includes(replay.status), `replay answered ${replay.status}`);
        const other = await deliver(p!, "ana", body, sharedInbox(), RFC9421);
        assert.equal(other.res.status, 202);
        await settled(anaLike);
        const rows = (await responsesOf(action)).filter((r) => r.source_id === anaLike);
        assert.equal(rows.length, 1);
        assert.equal(rows[0]!.kind, "commit");
        assert.equal(rows[0]!.source, "like");
        assert.equal((await progress()).commitments, 1);
      });

      it("misskey/like-with-reaction.json (a reaction is a Like with _misskey_reaction) by a member on another server: a commitment", async () => {
        const p = peers[1]!;
        const body = adapt(p, "misskey/like-with-reaction.json", {
          actors: { [MASTO_ADMIN]: p.actorId("ben").href },
          exact: { "https://testing.pleroma.lol/objects/c331bbf7-2eb9-4801-a709-2a6103492a5a": noteId, "https://testing.pleroma.lol/users/lain": groupId() },
        });
        assert.equal(body._misskey_reaction, "pudding");
        assert.equal((await deliver(p, "ben", body, sharedInbox(), RFC9421)).res.status, 202);
        await processed(str(body.id));
        const pr = await progress();
        assert.equal(pr.commitments, 2);
      });

      it("a Like by an account that is not a member is recorded but not counted", async () => {
        const p = peers[0]!;
        const body = adapt(p, "mastodon/like.json", { actors: { [MASTO_FELIX]: p.actorId("outsider").href }, exact: { "https://ds9.lemmy.ml/post/147": noteId } });
        assert.equal((await deliver(p, "outsider", body, unionInbox())).res.status, 202);
        await processed(str(body.id));
        assert.equal((await progress()).commitments, 2);
        assert.equal((await responsesOf(action)).filter((r) => r.source_id === str(body.id)).length, 0);
      });

      it("mastodon/undo-like.json for the member's Like: the commitment is withdrawn (once, however often it arrives)", async () => {
        const p = peers[0]!;
        const body = adapt(p, "mastodon/undo-like.json", {
          actors: { [MASTO_FELIX]: p.actorId("ana").href },
          exact: { "https://mastodon.madrid/users/felix#likes/212341": anaLike, "https://ds9.lemmy.ml/post/147": noteId },
        });
        assert.equal(obj(body.object).id, anaLike);
        const first = await deliver(p, "ana", body, unionInbox());
        assert.equal(first.res.status, 202);
        await processed(str(body.id));
        assert.equal((await progress()).commitments, 1);
        await deliver(p, "ana", body, sharedInbox(), RFC9421);
        await settled(str(body.id));
        const row = (await responsesOf(action)).find((r) => r.source_id === anaLike)!;
        assert.notEqual(row.undone_at, null);
        assert.equal((await progress()).commitments, 1);
      });

      it("an Undo of someone else's Like withdraws nothing", async () => {
        const p = peers[1]!;
        const benLike = (await responsesOf(action)).find((r) => r.source === "like" && r.undone_at === null)!.source_id;
        const body = adapt(p, "mastodon/undo-like.json", {
          actors: { [MASTO_FELIX]: p.actorId("cy").href },
          exact: { "https://mastodon.madrid/users/felix#likes/212341": benLike, "https://ds9.lemmy.ml/post/147": noteId },
        });
        (obj(body.object) as JsonObject).actor = p.actorId("ben").href;
        assert.equal((await deliver(p, "cy", body, unionInbox())).res.status, 202);
        await processed(str(body.id));
        assert.equal((await progress()).commitments, 1);
      });

      it("mastodon/create-note-public-reply.json saying “I'm in!”: a comment and a commitment; delivered twice, counted once", async () => {
        const p = peers[2]!;
        const original = fixture("mastodon/create-note-public-reply.json");
        const note = obj(original.object);
        cyReply = freshNote(p, "cy", str(note.id), MASTO_FELIX);
        const body = adapt(p, "mastodon/create-note-public-reply.json", {
          actors: { [MASTO_FELIX]: p.actorId("cy").href },
          exact: {
            [str(note.id)]: cyReply,
            "https://mamot.fr/users/retiolus/statuses/107224244380204526": noteId,
            "https://mamot.fr/users/retiolus": groupId(),
            "https://mamot.fr/@retiolus": groupId(),
          },
        });
        const html = `<p><span class="h-card" translate="no"><a href="${groupId()}" class="u-url mention">@<span>riders</span></a></span> I'm in!</p>`;
        Object.assign(obj(body.object), { content: html, contentMap: { en: html } });
        assert.equal(obj(body.object).inReplyTo, noteId);
        const first = await deliver(p, "cy", body, sharedInbox());
        assert.equal(first.res.status, 202);
        await processed(str(body.id));
        await deliver(p, "cy", body, unionInbox(), RFC9421);
        await settled(str(body.id));
        const rows = (await responsesOf(action)).filter((r) => r.source_id === cyReply);
        assert.deepEqual(rows.map((r) => r.kind).sort(), ["comment", "commit"]);
        assert.match(rows.find((r) => r.kind === "comment")!.content!, /I'm in!/);
        const pr = await progress();
        assert.equal(pr.commitments, 2);
        assert.equal(pr.comments, 1);
      });

      it("lemmy/create-comment-note-reply.json saying “great idea”: a comment only", async () => {
        const p = peers[0]!;
        const reply = freshId("http://ds9.lemmy.ml/comment/1", {}, p.origin);
        const body = adapt(p, "lemmy/create-comment-note-reply.json", {
          actors: { [LEMMY_ALPHA]: p.actorId("dee").href },
          exact: {
            "http://ds9.lemmy.ml/comment/1": reply,
            "http://ds9.lemmy.ml/post/1": noteId,
            "http://enterprise.lemmy.ml/c/main": groupId(),
            "https://enterprise.lemmy.ml/c/main": groupId(),
          },
          defaultContext: LEMMY_CONTEXT,
        });
        Object.assign(obj(body.object), { content: "great idea", source: { content: "great idea", mediaType: "text/markdown" } });
        assert.equal((await deliver(p, "dee", body, unionInbox(), RFC9421)).res.status, 202);
        await processed(str(body.id));
        const rows = (await responsesOf(action)).filter((r) => r.source_id === reply);
        assert.deepEqual(rows.map((r) => r.kind), ["comment"]);
        const pr = await progress();
        assert.equal(pr.commitments, 2);
        assert.equal(pr.comments, 2);
      });

      it("mastodon/announce-public.json of the call-to-action by a member: amplification, not a commitment; replayed, counted once", async () => {
        const p = peers[1]!;
        const body = adapt(p, "mastodon/announce-public.json", {
          actors: { [MASTO_ADMIN]: p.actorId("cy").href },
          exact: { "http://mastodon.example.org/@admin/99541947525187367": noteId },
        });
        const first = await deliver(p, "cy", body, sharedInbox());
        assert.equal(first.res.status, 202);
        await processed(str(body.id));
        await deliver(p, "cy", body, unionInbox(), RFC9421);
        await settled(str(body.id));
        const pr = await progress();
        assert.equal(pr.boosts, 1);
        assert.equal(pr.commitments, 2);
      });

      it("pleroma/emoji-react.json by a member: recorded once (a Pleroma reaction is neither a Like nor counted)", async () => {
        const p = peers[2]!;
        const body = adapt(p, "pleroma/emoji-react.json", {
          actors: { [MASTO_ADMIN]: p.actorId("dee").href },
          exact: { "http://localtesting.pleroma.lol/objects/eb92579d-3417-42a8-8652-2492c2d4f454": noteId },
        });
        assert.equal((await deliver(p, "dee", body, unionInbox())).res.status, 202);
        const rows = await processed(str(body.id));
        // Fedify has no EmojiReact class: it is parsed (and recorded) as a plain Activity.
        assert.ok(["EmojiReact", "Activity"].includes(rows[0]!.type), rows[0]!.type);
        assert.equal((await responsesOf(action)).filter((r) => r.source_id === str(body.id)).length, 0);
        assert.equal((await progress()).commitments, 2);
      });

      it("progressOf: commitments, comments, boosts and participation match what was received", async () => {
        const pr = await progress();
        const active = peers.length * MEMBERS.length;
        assert.deepEqual(pr, { commitments: 2, done: 0, comments: 2, boosts: 1, goal: null, activeMembers: active, participation: 2 / active });
      });

      it("mastodon/delete-note.json of the “I'm in” reply: its comment and commitment are withdrawn", async () => {
        const p = peers[2]!;
        const body = adapt(p, "mastodon/delete-note.json", {
          actors: { [MASTO_FELIX]: p.actorId("cy").href },
          exact: { "https://mastodon.madrid/users/felix/statuses/107773559874184870": cyReply },
        });
        assert.equal(obj(body.object).id, cyReply);
        assert.equal((await deliver(p, "cy", body, sharedInbox())).res.status, 202);
        await processed(str(body.id));
        const pr = await progress();
        assert.equal(pr.commitments, 1);
        assert.equal(pr.comments, 1);
      });

      it("mastodon/undo-announce.json of the boost: amplification withdrawn", async () => {
        const p = peers[1]!;
        const boost = (await responsesOf(action)).find((r) => r.kind === "boost")!.source_id;
        const body = adapt(p, "mastodon/undo-announce.json", {
          actors: { [MASTO_ADMIN]: p.actorId("cy").href },
          exact: { "http://mastodon.example.org/users/admin/statuses/99542391527669785/activity": boost, "http://mastodon.example.org/@admin/99541947525187367": noteId },
        });
        // This copy (from Pleroma's test suite) names the AS and security contexts
        // with http://; Mastodon sends https://, which Fedify has preloaded. The
        // http:// ones would be fetched, and this machine has no network.
        body["@context"] = arr(body["@context"]).map((c) => (typeof c === "string" ? c.replace(/^http:\/\//, "https://") : c)) as Json[];
        const { res } = await deliver(p, "cy", body, unionInbox());
        assert.equal(res.status, 202, `answered ${res.status}: ${await res.text()}`);
        await processed(str(body.id));
        assert.equal((await progress()).boosts, 0);
      });
    });

    describe("goal and deadline progress: quiet by design", () => {
      it("goal 2: every server gets the call edited in place once; only the two who committed get the reply, at their own inbox, addressed to nobody else", async () => {
        const a = await composeAction(deps(), riders.id, OPERATOR, { title: "Join the picket", text: "Gate 3, 7am.", kind: "show-up", goal: 2 }, { publishNow: true });
        const noteId = noteIdOf(a);
        await deliveredEverywhere(`${noteId}/activity`);
        const like = async (p: CountingPeer, name: string) => {
          const body = adapt(p, "mastodon/like.json", { actors: { [MASTO_FELIX]: p.actorId(name).href }, exact: { "https://ds9.lemmy.ml/post/147": noteId } });
          assert.equal((await deliver(p, name, body, unionInbox())).res.status, 202);
          await processed(str(body.id));
        };
        await like(peers[0]!, "ben");
        await sleep(300);
        assert.equal(hitsWhere((h) => inReplyToOf(h) === noteId).get(peers[0]!)!.length, 0, "no reply before the goal");
        await like(peers[1]!, "ben");

        // Everyone: the post they already have now says the goal is reached (an edit, not a new post).
        const updates = await deliveredEverywhere(`${noteId}/update/progress-goal`);
        assertOncePerSharedInbox(updates, "progress edit");
        for (const [, [h]] of updates) {
          assert.equal(h!.type, "Update");
          const note = obj(h!.body!.object);
          assert.equal(note.id, noteId);
          assert.match(str(note.content), /Goal reached:<\/strong> 2 of 2 members in/);
          assert.ok(note.updated, "an edit Mastodon accepts carries `updated`");
        }

        // The two who committed: the reply, each at their personal inbox, and nobody else.
        const replyCreate = `${noteId}/progress/goal/activity`;
        const committers = [peers[0]!, peers[1]!];
        const replies = await deliveredEverywhere(replyCreate, committers);
        for (const [p, hs] of replies) {
          assert.equal(hs.length, 1, `${p.host}: one reply`);
          assert.equal(hs[0]!.path, "/users/ben/inbox", `${p.host}: at ben's own inbox, not the shared one`);
          const note = obj(hs[0]!.body!.object);
          assert.equal(note.inReplyTo, noteId);
          assert.equal(note.attributedTo, groupId());
          assert.match(str(note.content), /Goal reached: 2 of 2 members committed to “Join the picket”/);
          const audience = [...arr(note.to), ...arr(note.cc), ...arr(hs[0]!.body!.to), ...arr(hs[0]!.body!.cc)].map(String);
          assert.ok(!audience.includes(followersOf()), "not addressed to the followers (that would reach every member on the server)");
          assert.ok(!audience.some((x) => x.includes("#Public") || x === "as:Public"), "not public");
          assert.ok(!audience.some((x) => x.includes("/users/")), "names no other member");
        }
        assert.equal(peers[2]!.hitsOf(replyCreate).length, 0, "a server with no committed member gets no reply");
        assert.equal(stranger.hitsOf(replyCreate).length, 0);
        assert.notEqual((await getAction(db(), riders.id, a.id))!.goalReachedAt, null);

        await like(peers[2]!, "ben");
        await sleep(500);
        await settled(noteId);
        for (const p of peers) {
          assert.ok(p.hits.filter((h) => inReplyToOf(h) === noteId).length <= 1, `${p.host}: at most one progress reply in all`);
        }
        assert.equal(peers[2]!.hitsOf(replyCreate).length, 0, "committing after the goal brings no reply");
      });

      it("a passed deadline closes the call once, however often the closer runs: the edit says so everywhere, and with nobody committed there is no reply", async () => {
        const a = await composeAction(deps(), riders.id, OPERATOR, { title: "Send the letter", text: "Template attached.", kind: "contact", deadline: new Date(Date.now() + 1500) }, { publishNow: true });
        const noteId = noteIdOf(a);
        await deliveredEverywhere(`${noteId}/activity`);
        await sleep(Math.max(0, a.deadline!.getTime() - Date.now() + 50));
        // The server's own scheduler may get there first (it runs every 30 s); either way, one close.
        const closed = [await closeExpired(deps()), await closeExpired(deps())];
        assert.ok(closed[0]! + closed[1]! <= 1, `closed ${closed}`);
        assert.equal(closed[1], 0);
        const hits = await deliveredEverywhere(`${noteId}/update/progress-deadline`);
        assertOncePerSharedInbox(hits, "closing edit");
        for (const [, [h]] of hits) assert.match(str(obj(h!.body!.object).content), /Closed:<\/strong> 0 committed, 0 done/);
        await settled(noteId);
        for (const p of peers) assert.equal(p.hitsOf(`${noteId}/progress/deadline/activity`).length, 0, `${p.host}: no reply when nobody committed`);
        assert.notEqual((await getAction(db(), riders.id, a.id))!.closedAt, null);
      });
    });

    describe("editing and retracting", () => {
      it("an edit reaches each server once as Update with the new content; the fetched Note says the same", async () => {
        const a = await composeAction(deps(), riders.id, OPERATOR, { title: "Boycott brand X", text: "Until they sign.", kind: "boycott" }, { publishNow: true });
        const noteId = noteIdOf(a);
        await deliveredEverywhere(`${noteId}/activity`);
        await editAction(deps(), riders.id, a.id, OPERATOR, { title: "Boycott brand X and Y", text: "Until **both** sign." });
        await eventually(async () => peers.every((p) => p.hits.some((h) => h.type === "Update" && h.objectId === noteId && h.status === 202)), "Update delivered", 20_000);
        await settled(noteId);
        await sleep(300);
        const updates = hitsWhere((h) => h.type === "Update" && h.objectId === noteId);
        assertOncePerSharedInbox(updates, "Update");
        for (const [, [h]] of updates) {
          const note = obj(h!.body!.object);
          assert.match(str(note.content), /Boycott brand X and Y/);
          assert.match(str(note.content), /<strong>both<\/strong>/);
          assert.ok(note.updated, "the Note says when it was edited");
          assert.equal(h!.body!.actor, groupId());
        }
        const fetched = await (await fetch(await peers[1]!.signedGet(new URL(noteId), { as: "dee" }))).json() as JsonObject;
        assert.equal(fetched.content, obj([...updates.values()][0]![0]!.body!.object).content);

        await retractAction(deps(), riders.id, a.id, OPERATOR);
        const dels = await deliveredEverywhere(`${noteId}/delete`);
        assertOncePerSharedInbox(dels, "Delete");
        for (const [, [h]] of dels) {
          assert.equal(h!.type, "Delete");
          const tomb = obj(h!.body!.object);
          assert.equal(tomb.type, "Tombstone");
          assert.equal(tomb.id, noteId);
        }
        const gone = await fetch(await peers[1]!.signedGet(new URL(noteId), { as: "dee" }));
        assert.ok([404, 410].includes(gone.status), `a retracted note answered ${gone.status}`);
        const ours = (await listActions(db(), riders.id)).find((x) => x.id === a.id)!;
        assert.equal(ours.state, "retracted");
      });
    });

    describe("relaying members' posts (FEP-1b12)", () => {
      /** A member's public post mentioning the union, shaped like mastodon/create-note-public.json. */
      function post(p: CountingPeer, name: string, opts: { followersOnly?: boolean; inReplyTo?: string } = {}): { body: JsonObject; noteId: string; createId: string } {
        const original = fixture("mastodon/create-note-public.json");
        const noteId = freshNote(p, name, str(obj(original.object).id), MASTO_ADMIN);
        const body = adapt(p, "mastodon/create-note-public.json", {
          actors: { [MASTO_ADMIN]: p.actorId(name).href },
          exact: { [str(obj(original.object).id)]: noteId, [PLEROMA_LAIN]: groupId(), "http://mastodon.example.org/@admin/99512778738411822": noteId },
        });
        const note = obj(body.object);
        const html = `<p><span class="h-card"><a href="${groupId()}" class="u-url mention">@<span>riders</span></a></span> the depot cut our rates again</p>`;
        Object.assign(note, { content: html, summary: null, sensitive: false });
        if (opts.followersOnly) {
          const followers = `${p.actorId(name).href}/followers`;
          for (const x of [body, note]) Object.assign(x, { to: [followers], cc: [groupId()] });
        }
        if (opts.inReplyTo) note.inReplyTo = opts.inReplyTo;
        return { body, noteId, createId: str(body.id) };
      }
      const relayId = (noteId: string) => new URL(`/u/riders/relays/${createHash("sha256").update(noteId).digest("hex").slice(0, 32)}`, m.origin).href;

      it("auto: a member's public post mentioning the union reaches every server as Announce(Note) and Announce(Create), once each", async () => {
        await updateUnion(m.muster.unions, "riders", OPERATOR, { relayPolicy: "auto" });
        const p = peers[0]!;
        const { body, noteId, createId } = post(p, "ana");
        assert.equal((await deliver(p, "ana", body, unionInbox())).res.status, 202);
        await processed(createId);
        const announceNote = await deliveredEverywhere(relayId(noteId));
        assertOncePerSharedInbox(announceNote, "Announce(Note)");
        const announceCreate = await deliveredEverywhere(`${relayId(noteId)}/create`);
        assertOncePerSharedInbox(announceCreate, "Announce(Create)");
        for (const [, [h]] of announceNote) {
          assert.equal(h!.type, "Announce");
          assert.equal(h!.body!.actor, groupId());
          assert.equal(h!.objectId, noteId);
        }
        for (const [, [h]] of announceCreate) assert.equal(h!.objectId, createId);
        // The same post again (the author's server retrying) is not relayed again.
        assert.equal((await deliver(p, "ana", body, sharedInbox(), RFC9421)).res.status, 202);
        await settled(createId);
        await sleep(500);
        for (const q of peers) assert.equal(q.hits.filter((h) => h.type === "Announce" && h.objectId === noteId).length, 1);
      });

      it("auto: a followers-only post, a non-member's post and a reply to a call-to-action are not relayed", async () => {
        const action = await composeAction(deps(), riders.id, OPERATOR, { title: "Rate check", text: "Post your rate.", kind: "other" }, { publishNow: true });
        await deliveredEverywhere(`${noteIdOf(action)}/activity`);
        const p = peers[1]!;
        const cases = [
          { what: "followers-only", as: "ana", ...post(p, "ana", { followersOnly: true }) },
          { what: "non-member", as: "outsider", ...post(p, "outsider") },
          { what: "reply to the call-to-action", as: "ben", ...post(p, "ben", { inReplyTo: noteIdOf(action) }) },
        ];
        for (const c of cases) {
          // A stranger's Create is refused at the door (test/inbox-guard.test.ts).
          const stranger = c.what === "non-member";
          assert.equal((await deliver(p, c.as, c.body, unionInbox())).res.status, stranger ? 403 : 202, c.what);
          if (!stranger) await processed(c.createId);
        }
        await sleep(1000);
        for (const c of cases) {
          for (const q of peers) assert.equal(q.hits.filter((h) => h.type === "Announce" && (h.objectId === c.noteId || h.objectId === c.createId)).length, 0, `${c.what} relayed to ${q.host}`);
          const req = await db().selectFrom("relay_requests").selectAll().where("note_id", "=", c.noteId).execute();
          assert.deepEqual(req, [], `${c.what}: no relay request`);
        }
        const reply = (await responsesOf(action)).filter((r) => r.source_id === cases[2]!.noteId);
        assert.deepEqual(reply.map((r) => r.kind), ["comment"], "the reply is a comment on the call-to-action");
      });

      it("approval: held until an officer decides; relayed once when approved, never when declined", async () => {
        await updateUnion(m.muster.unions, "riders", OPERATOR, { relayPolicy: "approval" });
        const p = peers[2]!;
        const yes = post(p, "dee");
        const no = post(p, "cy");
        for (const [who, x] of [["dee", yes], ["cy", no]] as const) {
          assert.equal((await deliver(p, who, x.body, unionInbox())).res.status, 202);
          await processed(x.createId);
        }
        const pending = await pendingRelays(db(), riders.id);
        const yesReq = pending.find((r) => r.note_id === yes.noteId)!;
        const noReq = pending.find((r) => r.note_id === no.noteId)!;
        assert.ok(yesReq && noReq, "both held");
        await sleep(500);
        for (const q of peers) assert.equal(q.hits.filter((h) => h.type === "Announce" && h.objectId === yes.noteId).length, 0, "nothing relayed before the decision");

        await decideRelay(deps(), riders.id, Number(yesReq.id), OPERATOR, true);
        await decideRelay(deps(), riders.id, Number(noReq.id), OPERATOR, false);
        await assert.rejects(decideRelay(deps(), riders.id, Number(yesReq.id), OPERATOR, true), /already relayed/);
        assertOncePerSharedInbox(await deliveredEverywhere(relayId(yes.noteId)), "approved Announce(Note)");
        assertOncePerSharedInbox(await deliveredEverywhere(`${relayId(yes.noteId)}/create`), "approved Announce(Create)");
        await sleep(300);
        for (const q of peers) assert.equal(q.hits.filter((h) => h.type === "Announce" && (h.objectId === no.noteId || h.objectId === no.createId)).length, 0, "declined: never relayed");
        await updateUnion(m.muster.unions, "riders", OPERATOR, { relayPolicy: "off" });
      });
    });

    it("the union's hash chain verifies after everything above", async () => {
      const report = await verifyChain(db(), riders.id);
      assert.deepEqual(report.breaks, []);
      assert.ok(report.ok);
    });
  });

  describe(`the daily scheduler and the hash chain, on ${d.name}`, { skip: d.skip }, () => {
    // No queue worker here: the server's own scheduler (real time, every 30 s)
    // must not race the publishDue calls below, which use chosen times.
    let tdb: TestDatabase;
    let m: TestMuster;
    let tokyo: Union;
    let other: Union;
    const db = () => m.muster.database.db;
    const deps = () => m.muster.membership;
    const at = (iso: string) => Temporal.ZonedDateTime.from(iso).epochMilliseconds;

    before(async () => {
      tdb = await d.create();
      m = await startMuster(tdb, { worker: false });
      tokyo = await makeUnion(m, "tokyo", { joinPolicy: "open" });
      tokyo = await overrideBylaws(m.muster.unions, "tokyo", { timeZone: "Asia/Tokyo", publishTime: "08:30" });
      other = await makeUnion(m, "other", { joinPolicy: "open" });
    });
    after(async () => {
      await m?.stop();
      await tdb?.destroy();
    });

    const state = async (id: string) => (await getAction(db(), tokyo.id, id))!.state;

    it("localSchedule follows the union's time zone, not UTC", () => {
      // 23:31 UTC on the 14th is 08:31 on the 15th in Tokyo.
      assert.deepEqual(localSchedule(at("2030-01-14T23:31:00+00:00[UTC]"), "Asia/Tokyo", "08:30"), { today: "2030-01-15", due: true });
      assert.deepEqual(localSchedule(at("2030-01-14T23:29:00+00:00[UTC]"), "Asia/Tokyo", "08:30"), { today: "2030-01-15", due: false });
    });

    it("publishes one queued call-to-action a day at the union's local time, once even when run twice at once", async () => {
      const queued: Action[] = [];
      for (const title of ["First", "Second", "Third"]) {
        queued.push(await composeAction(deps(), tokyo.id, OPERATOR, { title, text: `${title} ask.` }));
        await sleep(5); // created_at orders the queue
      }
      assert.deepEqual(await Promise.all(queued.map((a) => state(a.id))), ["queued", "queued", "queued"]);

      // 08:29 in Tokyo (23:29 UTC the day before): not yet.
      assert.deepEqual(await publishDue(deps(), at("2030-01-15T08:29:00+09:00[Asia/Tokyo]")), []);
      assert.equal(await state(queued[0]!.id), "queued");

      // 08:31 in Tokyo, which is still the 14th in UTC: two schedulers at once publish one.
      const now = at("2030-01-15T08:31:00+09:00[Asia/Tokyo]");
      const second = tdb.open();
      try {
        const runs = await Promise.allSettled([
          publishDue(deps(), now),
          publishDue(deps(), now),
          // On PostgreSQL a second pool is a second worker process's connection.
          d.name === "postgres" ? publishDue({ ...deps(), db: second.db }, now) : Promise.resolve([]),
        ]);
        const published = runs.flatMap((r) => (r.status === "fulfilled" ? r.value : []));
        assert.deepEqual(published, [queued[0]!.id], `runs: ${JSON.stringify(runs.map((r) => r.status === "fulfilled" ? r.value : String(r.reason)))}`);
      } finally {
        await second.close();
      }
      assert.equal(await state(queued[0]!.id), "published");
      assert.equal(await state(queued[1]!.id), "queued");
      const intents = await db().selectFrom("fedify_mq").select("message").where("queue", "=", "domain").execute();
      assert.equal(intents.filter((r) => r.message.includes(queued[0]!.id)).length, 1, "one delivery intent");

      // Later the same local day: nothing more.
      assert.deepEqual(await publishDue(deps(), at("2030-01-15T20:00:00+09:00[Asia/Tokyo]")), []);
      // The next day before 08:30: nothing; after: the next one in the queue.
      assert.deepEqual(await publishDue(deps(), at("2030-01-16T08:00:00+09:00[Asia/Tokyo]")), []);
      assert.deepEqual(await publishDue(deps(), at("2030-01-16T08:30:00+09:00[Asia/Tokyo]")), [queued[1]!.id]);
      assert.deepEqual(await publishDue(deps(), at("2030-01-16T08:45:00+09:00[Asia/Tokyo]")), []);
      assert.equal(await state(queued[2]!.id), "queued");
      const a1 = (await getAction(db(), tokyo.id, queued[1]!.id))!;
      assert.equal(a1.seq, 2);
      assert.equal(a1.publishedAt!.getTime(), at("2030-01-16T08:30:00+09:00[Asia/Tokyo]"));
    });

    it("verifyChain: intact after publish, edit and retract", async () => {
      const a = await composeAction(deps(), other.id, OPERATOR, { title: "One", text: "First ask." }, { publishNow: true });
      const b = await composeAction(deps(), other.id, OPERATOR, { title: "Two", text: "Second ask.", goal: 3 }, { publishNow: true });
      await editAction(deps(), other.id, a.id, OPERATOR, { title: "One (fixed)" });
      await retractAction(deps(), other.id, b.id, OPERATOR);
      const r = await verifyChain(db(), other.id);
      assert.deepEqual(r.breaks, []);
      assert.equal(r.entries, 4);
      assert.ok(r.ok);
      assert.equal((await verifyChain(db(), tokyo.id)).ok, true);
    });

    it("verifyChain: a title rewritten straight in the database is a break at that action", async () => {
      const a = (await listActions(db(), other.id)).find((x) => x.title === "One (fixed)")!;
      await db().updateTable("actions").set({ title: "One (quietly rewritten)" }).where("id", "=", a.id).execute();
      const r = await verifyChain(db(), other.id);
      assert.equal(r.ok, false);
      assert.equal(r.breaks.length, 1);
      assert.equal(r.breaks[0]!.actionId, a.id);
      assert.match(r.breaks[0]!.problem, /title/);
      assert.equal(r.breaks[0]!.n, 3, "the entry of its last edit");
      await db().updateTable("actions").set({ title: "One (fixed)" }).where("id", "=", a.id).execute();
      assert.equal((await verifyChain(db(), other.id)).ok, true);
    });

    it("verifyChain: a rewritten log entry fails its hash (and the stored action no longer matches it)", async () => {
      const entry = await db().selectFrom("action_log").selectAll().where("union_id", "=", other.id).where("n", "=", 1).executeTakeFirstOrThrow();
      const payload = JSON.parse(entry.payload) as Record<string, unknown>;
      await db().updateTable("action_log").set({ payload: JSON.stringify({ ...payload, title: "Something else" }) })
        .where("union_id", "=", other.id).where("n", "=", 1).execute();
      const r = await verifyChain(db(), other.id);
      assert.equal(r.ok, false);
      const at1 = r.breaks.filter((b) => b.n === 1);
      assert.equal(at1.length, 1, JSON.stringify(r.breaks));
      assert.match(at1[0]!.problem, /no longer matches its hash/);
      // Re-hashing the rewritten entry to hide it breaks the next entry's link instead.
      const { entryHash } = await import("../src/actions/chain.ts");
      const forged = entryHash(entry.prev_hash, "publish", (await db().selectFrom("action_log").select("payload").where("union_id", "=", other.id).where("n", "=", 1).executeTakeFirstOrThrow()).payload);
      await db().updateTable("action_log").set({ hash: forged }).where("union_id", "=", other.id).where("n", "=", 1).execute();
      const r2 = await verifyChain(db(), other.id);
      assert.equal(r2.ok, false);
      assert.ok(r2.breaks.some((b) => b.n === 2 && /links to/.test(b.problem)), JSON.stringify(r2.breaks));
    });
  });
}

describe("commitment words in replies", () => {
  const words = ["in", "done", "committed"];
  const mention = (slug: string, text: string) => `<p><span class="h-card" translate="no"><a href="https://u.example/u/${slug}" class="u-url mention">@<span>${slug}</span></a></span> ${text}</p>`;

  it("counts “I'm in”, “done!” and “Count me in”; not “great idea”", () => {
    assert.equal(isCommitment(mention("riders", "I'm in"), words), true);
    assert.equal(isCommitment(mention("riders", "Done!"), words), true);
    assert.equal(isCommitment("<p>Count me in</p>", words), true);
    assert.equal(isCommitment(mention("riders", "great idea"), words), false);
  });

  it("a Mastodon mention of a union whose name is a commitment word is not a commitment", () => {
    assert.equal(isCommitment(mention("done", "great idea"), words), false);
  });

  it("“not in” and “in reference to” are not commitments", () => {
    assert.equal(isCommitment(mention("riders", "I'm not in this time, sorry"), words), false);
    assert.equal(isCommitment(mention("riders", "what is this in reference to?"), words), false);
  });

  it("a pledge in its own clause counts; a question or a word in passing does not", () => {
    for (const yes of ["I'm in, see you there", "Done. It took five minutes and the form was easy", "I'm in!<br>Bringing two friends along tomorrow", "Great idea; count me in"]) {
      assert.equal(isCommitment(mention("riders", yes), words), true, `${JSON.stringify(yes)} commits`);
    }
    for (const no of ["are you in?", "is this done already?", "I was in the area yesterday, saw the posters", "who else is in? asking for a friend", "great idea, I'll think about it"]) {
      assert.equal(isCommitment(mention("riders", no), words), false, `${JSON.stringify(no)} does not commit`);
    }
  });
});
