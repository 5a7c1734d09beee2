import "../src/temporal.ts";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { type Collection, Create, Follow, type Group, Note, Question, Update } from "@fedify/vocab";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { freshId, type JsonObject, loadFixture, readdress } from "./helpers/fixtures.ts";
import { eventually, makeUnion, startMuster, type TestMuster } from "./helpers/muster.ts";
import { type CountingPeer, startCountingPeer } from "./helpers/counting-peer.ts";
import { castVote, closeProposal, createProposal, delegateVote, getProposal, type Proposal, tallyOf } from "../src/bylaws/proposals.ts";
import { overrideBylaws } from "./helpers/bylaws.ts";
import { startLitepubContext } from "./helpers/litepub-context.ts";
import { findMemberByActor, OPERATOR } from "../src/members/members.ts";
import type { Union } from "../src/unions/unions.ts";
import { chainOf, verifyChain } from "../src/actions/chain.ts";

/*
 * Issue 14 over loopback: a real Muster and a real peer server whose members
 * joined with real Follows. Votes are the real Mastodon and GoToSocial poll
 * answers from shared/fixtures, re-addressed and signed by the peer.
 */

const FIXTURES = path.join(import.meta.dirname, "../../shared/fixtures/activitypub");
const fixture = (rel: string): JsonObject => loadFixture(FIXTURES, rel);
const AP = "application/activity+json";
const TALLY_BATCH_MS = 1000;
const CROWD = Array.from({ length: 20 }, (_, i) => `crowd${i}`);

/** The per-option counts of a Question as received. */
async function totalsOf(q: Question): Promise<(number | null | undefined)[]> {
  const totals: (number | null | undefined)[] = [];
  for await (const o of q.getExclusiveOptions()) totals.push((await (o as Note).getReplies() as Collection | null)?.totalItems);
  if (totals.length === 0) for await (const o of q.getInclusiveOptions()) totals.push((await (o as Note).getReplies() as Collection | null)?.totalItems);
  return totals;
}

for (const d of dialects) {
  describe(`proposals as polls, end to end on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    let m: TestMuster;
    let peer: CountingPeer;
    let union: Union;
    let litepub: Awaited<ReturnType<typeof startLitepubContext>>;
    const db = () => m.muster.database.db;
    const deps = () => m.muster.membership;
    const groupId = () => new URL("/u/riders", m.origin).href;
    const questionId = (p: Proposal) => new URL(`/u/riders/proposals/${p.id}`, m.origin).href;
    const inbox = () => new URL("/u/riders/inbox", m.origin);

    async function deliver(as: string, body: JsonObject) {
      const text = JSON.stringify(body);
      const signed = await peer.signedPost(inbox(), text, { as });
      const headers = new Headers(signed.headers);
      const post = () => fetch(inbox(), { method: "POST", headers, body: text });
      const res = await post();
      if (as === "outsider") {
        // A stranger's Create is refused at the door (not a member, not an applicant): nothing to process.
        assert.equal(res.status, 403);
        return post;
      }
      assert.equal(res.status, 202);
      await eventually(async () => (await db().selectFrom("inbox_activities").select("id").where("id", "=", String(body.id)).executeTakeFirst()) !== undefined, `${String(body.id)} processed (${as}: ${text.slice(0, 200)})`);
      return post;
    }

    /** mastodon/create-poll-vote.json, as `name` answering `p` with `option`. */
    function mastodonVote(name: string, p: Proposal, option: string, attributedTo?: string): JsonObject {
      const original = fixture("mastodon/create-poll-vote.json");
      const actors = { "https://mastodon.sdf.org/users/rinpatch": peer.actorId(name).href };
      const body = readdress(original, {
        actors,
        exact: { "https://testing.uguu.ltd/objects/9d300947-2dcb-445d-8978-9a3b4b84fa14": questionId(p), "https://testing.uguu.ltd/users/rin": groupId() },
        id: freshId(String(original.id), { actors }, peer.origin),
      });
      const note = body.object as JsonObject;
      note.id = freshId(String(note.id), { actors }, peer.origin);
      note.name = option;
      if (attributedTo) note.attributedTo = attributedTo;
      return body;
    }

    /** Ids in the Group's featured collection, or of the objects of the Creates in its outbox, as `as` (or unsigned) sees them. */
    async function collectionIds(name: "featured" | "outbox", as?: string): Promise<string[]> {
      const url = new URL(`/u/riders/${name}`, m.origin);
      const res = await fetch(as ? await peer.signedGet(url, { as }) : new Request(url, { headers: { Accept: AP } }));
      assert.equal(res.status, 200, `${name} answers`);
      const c = await res.json() as JsonObject;
      let items = c.orderedItems as (JsonObject | string)[] | undefined;
      if (!items && c.first) {
        const first = typeof c.first === "string"
          ? await (await fetch(as ? await peer.signedGet(new URL(c.first), { as }) : new Request(c.first, { headers: { Accept: AP } }))).json() as JsonObject
          : c.first as JsonObject;
        items = first.orderedItems as (JsonObject | string)[] | undefined;
      }
      const idOf = (i: JsonObject | string | undefined): string => typeof i === "string" ? i : String(i?.id);
      return (items ?? []).map((i) => name === "outbox" && typeof i === "object" ? idOf(i.object as JsonObject | string) : idOf(i));
    }

    const ballots = (p: Proposal) => db().selectFrom("ballots").selectAll().where("proposal_id", "=", p.id).orderBy("member_id").orderBy("option").execute();

    before(async () => {
      tdb = await d.create();
      // Running tallies go out at most once a second per proposal here (5 s by default).
      m = await startMuster(tdb, { env: { MUSTER_TALLY_BATCH_MS: String(TALLY_BATCH_MS), LOG_LEVEL: process.env.VC_LOG ?? "error" } });
      peer = await startCountingPeer(["ana", "ben", "cy", "outsider", ...CROWD]);
      litepub = await startLitepubContext();
      union = await makeUnion(m, "riders", { joinPolicy: "open" });
      const group = await peer.lookup(new URL(groupId())) as Group;
      for (const name of ["ana", "ben", "cy"]) {
        await peer.send(name, group, new Follow({ id: new URL(`/follows/${name}`, peer.origin), actor: peer.actorId(name), object: group.id }));
      }
      await eventually(async () => {
        for (const name of ["ana", "ben", "cy"]) if ((await findMemberByActor(db(), union.id, peer.actorId(name).href))?.state !== "active") return false;
        return true;
      }, "members joined", 30_000);
      await new Promise((r) => setTimeout(r, 5));
    });

    after(async () => {
      await m?.stop();
      await peer?.close();
      await litepub?.close();
      await tdb?.destroy();
    });

    it("a resolution is a fetchable Question for members, counts a Mastodon poll answer once, and refuses hostile answers", async () => {
      const p = await createProposal(deps(), union.id, OPERATOR, { kind: "resolution", title: "Strike on Friday", closesAt: new Date(Date.now() + 120_000) });
      // Members get the poll in their timelines: Create(Question) by the Group.
      const created = await eventually(async () => peer.received.find((a) => a instanceof Create && a.objectId?.href === questionId(p)), "Create(Question) delivered");
      assert.ok((await (created as Create).getObject()) instanceof Question);
      const unsigned = await fetch(questionId(p), { headers: { Accept: AP } });
      assert.notEqual(unsigned.status, 200, "members-only: an unsigned fetch is not served");
      const res = await fetch(await peer.signedGet(new URL(questionId(p)), { as: "ana" }));
      assert.equal(res.status, 200);
      const q = await res.json() as JsonObject;
      assert.equal(q.type, "Question");
      assert.equal(q.attributedTo, groupId());
      assert.deepEqual((q.oneOf as JsonObject[]).map((o) => o.name), ["Yes", "No", "Abstain"]);
      assert.equal(typeof q.endTime, "string");
      // While open, pinned on the Group's profile and in its outbox, for members only like the Question itself.
      assert.ok((await collectionIds("featured", "ana")).includes(questionId(p)), "open proposal pinned");
      assert.ok((await collectionIds("outbox", "ana")).includes(questionId(p)), "open proposal in the outbox");
      assert.ok(!(await collectionIds("featured")).includes(questionId(p)), "not pinned for an unsigned reader");
      assert.ok(!(await collectionIds("outbox")).includes(questionId(p)), "not in the outbox for an unsigned reader");

      const replay = await deliver("ana", mastodonVote("ana", p, "Yes"));
      await replay();
      await deliver("ben", mastodonVote("ben", p, "Maybe"));
      await deliver("outsider", mastodonVote("outsider", p, "No"));
      // ben's server sends an answer attributed to cy: not ben's own, not counted for anyone.
      await deliver("ben", mastodonVote("ben", p, "No", peer.actorId("cy").href));
      await new Promise((r) => setTimeout(r, 300));
      const rows = await ballots(p);
      assert.deepEqual(rows.map((b) => [b.member_id, b.option]), [[(await findMemberByActor(db(), union.id, peer.actorId("ana").href))!.id, 0]]);
      assert.equal(await db().selectFrom("action_responses").select("id").executeTakeFirst(), undefined, "a vote is never a reply to a call-to-action");

      const after = await (await fetch(await peer.signedGet(new URL(questionId(p)), { as: "ana" }))).json() as JsonObject;
      assert.deepEqual((after.oneOf as JsonObject[]).map((o) => (o.replies as JsonObject).totalItems), [1, 0, 0]);
      assert.equal(after.votersCount, 1);
      // While the poll is open, members' servers get the running tally as an Update(Question), no `closed` yet.
      const running = await eventually(async () => peer.received.find((a) => a instanceof Update && a.objectId?.href === questionId(p) && a.id?.href.includes("/tally/")), "a running tally Update delivered");
      const runningQ = await (running as Update).getObject() as Question;
      assert.equal(runningQ.closed, null);
      assert.equal(runningQ.voters, 1);
      assert.deepEqual(await totalsOf(runningQ), [1, 0, 0]);

      // 1 of 3 eligible (the leader never joined here) meets the default 20 % quorum.
      const closed = await closeProposal(deps(), union.id, p.id, { force: true });
      assert.equal(closed?.state, "passed", closed?.outcome?.reason);
      const update = await eventually(async () => peer.received.find((a) => a instanceof Update && a.objectId?.href === questionId(p) && a.id?.href.endsWith("/closed")), "Update(Question) with the result delivered");
      const finalQ = await (update as Update).getObject() as Question;
      assert.ok(finalQ.closed);
      assert.deepEqual(await totalsOf(finalQ), [1, 0, 0]);
      // The result in plain words, as the union's reply in the poll's thread, addressed as the poll was.
      const result = await eventually(async () => {
        for (const a of peer.received) {
          if (!(a instanceof Create) || a.actorId?.href !== groupId()) continue;
          const o = await a.getObject();
          if (o instanceof Note && o.replyTargetId?.href === questionId(p)) return o;
        }
        return undefined;
      }, "the result posted in the thread");
      const said = String(result.content);
      assert.match(said, /Proposal #\d+ &#34;Strike on Friday&#34; passed: 1 yes, 0 no/);
      assert.match(said, /Votes: Yes 1, No 0, Abstain 0\. 1 of 3 eligible members voted; quorum 20% met\./);
      assert.match(said, /The resolution is adopted\./);
      assert.equal(result.attributionId?.href, groupId());
      assert.deepEqual(result.toIds.map(String), finalQ.toIds.map(String));
      // The result can be fetched by its id, under the poll's own rule: members-only here.
      const resultId = result.id!;
      assert.equal(resultId.href, `${questionId(p)}/result`);
      const fetched = await fetch(await peer.signedGet(resultId, { as: "ana" }));
      assert.equal(fetched.status, 200);
      assert.match(fetched.headers.get("content-type") ?? "", /application\/activity\+json/);
      const fetchedNote = await fetched.json() as JsonObject;
      assert.equal(fetchedNote.type, "Note");
      assert.equal(fetchedNote.id, resultId.href);
      assert.equal(fetchedNote.inReplyTo, questionId(p));
      assert.equal(fetchedNote.attributedTo, groupId());
      assert.equal(fetchedNote.content, said, "the same Note as delivered");
      assert.deepEqual([fetchedNote.to].flat(), result.toIds.map(String));
      assert.equal((await fetch(resultId, { headers: { Accept: AP } })).status, 401, "unsigned: not served for a members-only union");
      // Members' servers are told apart, not members (visibility.ts): a fetch from another server is refused.
      const stranger = await startCountingPeer(["eve"]);
      try {
        assert.equal((await fetch(await stranger.signedGet(resultId, { as: "eve" }))).status, 403, "a server with no members is refused");
      } finally {
        await stranger.close();
      }
      const unknown = new URL(`/u/riders/proposals/${randomUUID()}/result`, m.origin);
      assert.equal((await fetch(await peer.signedGet(unknown, { as: "ana" }))).status, 404, "unknown id");
      const browser = await fetch(resultId, { headers: { Accept: "text/html" }, redirect: "manual" });
      assert.equal(browser.status, 303);
      assert.equal(browser.headers.get("location"), `/u/riders/proposals/${p.number}`);
      // A union whose calls-to-action are public shows its results to anyone (its own union: the bylaws'
      // versions of riders are counted by the next test).
      const open = await makeUnion(m, "open-votes", { joinPolicy: "open" });
      await overrideBylaws(m.muster.unions, "open-votes", { actionsVisibility: "public" });
      const openP = await createProposal(deps(), open.id, OPERATOR, { kind: "resolution", title: "Publish the minutes", closesAt: new Date(Date.now() + 120_000) });
      assert.ok(await closeProposal(deps(), open.id, openP.id, { force: true }));
      const openResult = new URL(`/u/open-votes/proposals/${openP.id}/result`, m.origin);
      const anyone = await fetch(openResult, { headers: { Accept: AP } });
      assert.equal(anyone.status, 200, "public calls-to-action: the result is public too");
      assert.equal((await anyone.json() as JsonObject).id, openResult.href);
      const final = await (await fetch(await peer.signedGet(new URL(questionId(p)), { as: "ana" }))).json() as JsonObject;
      assert.equal(typeof final.closed, "string");
      assert.ok(!(await collectionIds("featured", "ana")).includes(questionId(p)), "unpinned once closed");
      assert.ok(!(await collectionIds("outbox", "ana")).includes(questionId(p)), "out of the outbox once closed");
      await deliver("cy", mastodonVote("cy", p, "No"));
      assert.equal((await ballots(p)).length, 1, "after close nothing counts");
    });

    it("the bylaws page shows the text, the enforced rules and the history with what each version changed", async () => {
      const p = await createProposal(deps(), union.id, OPERATOR, { kind: "amendment", title: "Fewer invites", params: { memberInviteLimit: 3 }, closesAt: new Date(Date.now() + 120_000) });
      await deliver("ana", mastodonVote("ana", p, "Yes"));
      const closed = await closeProposal(deps(), union.id, p.id, { force: true });
      assert.equal(closed?.state, "passed", closed?.outcome?.reason);
      await eventually(async () => {
        for (const a of peer.received) {
          const o = a instanceof Create ? await a.getObject() : null;
          if (o instanceof Note && o.replyTargetId?.href === questionId(p)) return /Bylaws version 2 is in force from now: Invite limit is now 3\./.test(String(o.content));
        }
        return false;
      }, "the amendment's result, naming the new version and what changed, in the thread");
      const page = await (await fetch(new URL("/u/riders/bylaws", m.origin))).text();
      assert.match(page, /Version 2, in force since .* \(passed proposal /);
      assert.match(page, /<tr data-key="memberInviteLimit"><td>Invite limit<\/td><td>3<\/td>/);
      assert.match(page, /<code>memberInviteLimit<\/code>: <del>5<\/del> → <ins>3<\/ins>/);
      assert.match(page, /<h1>Bylaws of Riders United<\/h1>/);
      assert.equal((await fetch(new URL("/u/nobody/bylaws", m.origin))).status, 404);
    });

    it("a member votes on the web and changes the vote; a visitor cannot vote", async () => {
      const p = await createProposal(deps(), union.id, OPERATOR, { kind: "resolution", title: "Picnic", closesAt: new Date(Date.now() + 120_000) });
      const ben = (await findMemberByActor(db(), union.id, peer.actorId("ben").href))!;
      // A session as signing in by DM makes one (sign-in itself is tested in test/privacy.test.ts).
      const token = randomBytes(32).toString("base64url");
      await db().insertInto("sessions").values({ id: randomUUID(), token_hash: createHash("sha256").update(token).digest("hex"), union_id: union.id, member_id: ben.id, created_at: Date.now(), expires_at: Date.now() + 3600_000, revoked_at: null }).execute();
      const page = new URL(`/u/riders/proposals/${p.number}`, m.origin);
      const headers = { Cookie: `muster_session=${token}`, Origin: m.origin.origin, "Content-Type": "application/x-www-form-urlencoded" };
      assert.match(await (await fetch(page, { headers: { Cookie: headers.Cookie } })).text(), /data-testid="vote-form"/);
      const vote = (option: string, h: Record<string, string> = headers) => fetch(new URL(`${page.pathname}/vote`, m.origin), { method: "POST", headers: h, body: new URLSearchParams({ option }), redirect: "manual" });
      assert.equal((await vote("No")).status, 303);
      assert.equal((await vote("Yes")).status, 303);
      assert.equal((await vote("Maybe")).status, 400);
      assert.equal((await vote("No", { Origin: m.origin.origin, "Content-Type": "application/x-www-form-urlencoded" })).status, 403);
      assert.equal((await vote("No", { ...headers, Origin: "https://elsewhere.example" })).status, 403, "a vote sent from another site with the member's cookie is refused");
      const rows = await ballots(p);
      assert.deepEqual(rows.map((b) => [b.member_id, b.option, b.source]), [[ben.id, 0, "web"]], "the web vote replaced the earlier one");
      const shown = await (await fetch(page)).text();
      assert.match(shown, /<tr><td>Yes<\/td><td>1<\/td><td>0<\/td><\/tr>/);
      assert.doesNotMatch(shown, /vote-form/, "a visitor sees no form");

      // Delegation from the web: refused while the bylaws keep it off, then ben's vote counts for cy.
      const delegate = (to: string) => fetch(new URL("/u/riders/delegation", m.origin), { method: "POST", headers, body: new URLSearchParams({ delegate: to, scope: "all", back: page.pathname }), redirect: "manual" });
      assert.equal((await delegate(`@ben@${peer.host}`)).status, 403);
      await overrideBylaws(m.muster.unions, "riders", { delegation: "opt_in" });
      const cy = (await findMemberByActor(db(), union.id, peer.actorId("cy").href))!;
      await delegateVote(deps(), union.id, { kind: "member", memberId: cy.id }, ben.id);
      assert.equal((await delegate(`@cy@${peer.host}`)).status, 400, "ben -> cy -> ben would be a cycle");
      // The rules at opening govern a vote: this one opened with delegation off; the next counts cy through ben.
      assert.deepEqual((await tallyOf(db(), p)).options[0], { text: "Yes", direct: 1, delegated: 0 });
      const p2 = await createProposal(deps(), union.id, OPERATOR, { kind: "resolution", title: "Picnic, again", closesAt: new Date(Date.now() + 120_000) });
      assert.equal((await fetch(new URL(`/u/riders/proposals/${p2.number}/vote`, m.origin), { method: "POST", headers, body: new URLSearchParams({ option: "Yes" }), redirect: "manual" })).status, 303);
      assert.deepEqual((await tallyOf(db(), p2)).options[0], { text: "Yes", direct: 1, delegated: 1 });
    });

    it("an election is an anyOf Question; GoToSocial's several Notes in one Create, and Mastodon's one Create per option, each count as one ballot of approvals", async () => {
      const ids = await Promise.all(["ana", "ben"].map(async (n) => (await findMemberByActor(db(), union.id, peer.actorId(n).href))!.id));
      const p = await createProposal(deps(), union.id, OPERATOR, { kind: "election", title: "Treasurer", role: "officer", portfolio: "Treasurer", candidates: ids, closesAt: new Date(Date.now() + 120_000) });
      const q = await (await fetch(await peer.signedGet(new URL(questionId(p)), { as: "cy" }))).json() as JsonObject;
      const names = (q.anyOf as JsonObject[]).map((o) => String(o.name));
      assert.equal(names.length, 2);
      const original = fixture("gotosocial/create-poll-vote-multiple.json");
      const actors = { "https://sample.com/users/willy_nilly": peer.actorId("cy").href };
      const body = readdress(original, {
        actors,
        exact: { "https://example.org/users/bobby_tables/statuses/123456": questionId(p), "https://example.org/users/bobby_tables": groupId() },
        id: freshId(String(original.id), { actors }, peer.origin),
      });
      (body.object as JsonObject[]).forEach((n, i) => {
        n.id = freshId(String(n.id), { actors }, peer.origin);
        n.name = names[i]!;
      });
      await deliver("cy", body);
      const t = await tallyOf(db(), p);
      assert.deepEqual(t.options.map((o) => o.direct), [1, 1]);
      assert.equal(t.voters, 1);
      // Mastodon answers an anyOf poll with one Create per chosen option (mastodon/docs-poll-vote-anyof-1 and -2).
      const anyOf = (file: string, option: string): JsonObject => {
        const original = fixture(file);
        const actors = { "https://mastodon.example/users/bob": peer.actorId("ana").href };
        const body = readdress(original, {
          actors,
          exact: { "https://mastodon.example/users/alice/statuses/1009947848598745": questionId(p), "https://mastodon.example/users/alice": groupId() },
          id: freshId(String(original.id), { actors }, peer.origin),
        });
        (body.object as JsonObject).id = freshId(String((body.object as JsonObject).id), { actors }, peer.origin);
        (body.object as JsonObject).name = option;
        return body;
      };
      const first = await deliver("ana", anyOf("mastodon/docs-poll-vote-anyof-1.json", names[0]!));
      await deliver("ana", anyOf("mastodon/docs-poll-vote-anyof-2.json", names[1]!));
      await first();
      await new Promise((r) => setTimeout(r, 300));
      const t2 = await tallyOf(db(), p);
      assert.deepEqual(t2.options.map((o) => o.direct), [2, 2], "both of ana's approvals count, the repeated delivery does not");
      assert.equal(t2.voters, 2, "two Creates from one voter are one ballot");
    });
    it("twenty poll answers in a burst send a bounded number of running-tally Updates, the last with all twenty", async () => {
      const crowd = await makeUnion(m, "crowd", { joinPolicy: "open" });
      const group = await peer.lookup(new URL("/u/crowd", m.origin)) as Group;
      for (const name of CROWD) {
        await peer.send(name, group, new Follow({ id: new URL(`/follows/crowd/${name}`, peer.origin), actor: peer.actorId(name), object: group.id }));
      }
      await eventually(async () => {
        const n = await db().selectFrom("members").select((eb) => eb.fn.countAll<number>().as("n")).where("union_id", "=", crowd.id).where("state", "=", "active").executeTakeFirstOrThrow();
        return Number(n.n) === CROWD.length;
      }, "the crowd joined", 60_000);
      await new Promise((r) => setTimeout(r, 5));
      const p = await createProposal(deps(), crowd.id, OPERATOR, { kind: "resolution", title: "Walk out at noon", closesAt: new Date(Date.now() + 120_000) });
      const qid = new URL(`/u/crowd/proposals/${p.id}`, m.origin).href;
      await eventually(async () => peer.received.find((a) => a instanceof Create && a.objectId?.href === qid), "Create(Question) delivered");
      const original = fixture("mastodon/create-poll-vote.json");
      const inboxUrl = new URL("/u/crowd/inbox", m.origin);
      const bodies = CROWD.map((name, i) => {
        const actors = { "https://mastodon.sdf.org/users/rinpatch": peer.actorId(name).href };
        const body = readdress(original, { actors, exact: { "https://testing.uguu.ltd/objects/9d300947-2dcb-445d-8978-9a3b4b84fa14": qid, "https://testing.uguu.ltd/users/rin": new URL("/u/crowd", m.origin).href }, id: freshId(String(original.id), { actors }, peer.origin) });
        (body.object as JsonObject).id = freshId(String((body.object as JsonObject).id), { actors }, peer.origin);
        (body.object as JsonObject).name = i % 4 === 3 ? "No" : "Yes";
        return { name, text: JSON.stringify(body) };
      });
      // All at once, as a popular poll's answers arrive.
      const statuses = await Promise.all(bodies.map(async ({ name, text }) => {
        const signed = await peer.signedPost(inboxUrl, text, { as: name });
        return (await fetch(inboxUrl, { method: "POST", headers: new Headers(signed.headers), body: text })).status;
      }));
      assert.deepEqual(new Set(statuses), new Set([202]));
      const isTally = (a: unknown) => a instanceof Update && a.objectId?.href === qid && a.id!.href.includes("/tally/");
      const last = await eventually(async () => {
        for (const a of peer.received.filter(isTally).reverse()) {
          const q = await (a as Update).getObject() as Question;
          if (q.voters === 20) return q;
        }
        return undefined;
      }, "an Update counting all twenty", 90_000);
      assert.deepEqual(await totalsOf(last), [15, 5, 0]);
      // Every vote landed in some window; one Update per window at most, however many votes it held.
      const span = await db().selectFrom("ballots").select((eb) => [eb.fn.min("cast_at").as("first"), eb.fn.max("cast_at").as("last")]).where("proposal_id", "=", p.id).executeTakeFirstOrThrow();
      const windows = Math.floor(Number(span.last) / TALLY_BATCH_MS) - Math.floor(Number(span.first) / TALLY_BATCH_MS) + 1;
      await new Promise((r) => setTimeout(r, 2 * TALLY_BATCH_MS));
      const updates = peer.received.filter(isTally);
      // A vote is timed when it arrives; one that waited its turn past its window's count queues the next window's
      // Update (proposals.ts scheduleTally), so the answers may reach one window further than their arrival times.
      assert.ok(updates.length >= 1 && updates.length <= windows + 1, `${updates.length} tally Updates for votes arriving over ${windows} window(s)`);
      assert.ok(updates.length < 20, "not one Update per vote");
      assert.equal(new Set(updates.map((u) => u.id!.href)).size, updates.length, "no Update delivered twice");
      // Twenty ballots handled at once took the chain's positions one after another.
      const report = await verifyChain(db(), crowd.id);
      assert.ok(report.ok, JSON.stringify(report.breaks));
      assert.equal((await chainOf(db(), crowd.id)).filter((e) => e.event === "ballot").length, 20);
    });

    it("Misskey's and Pleroma's poll answers count; their hostile variants and their Questions change nothing", async () => {
      const p = await createProposal(deps(), union.id, OPERATOR, { kind: "resolution", title: "Join the regional federation", closesAt: new Date(Date.now() + 120_000) });
      // misskey/question-no-endtime.json is a Misskey poll: its @context is what Misskey sends, and its
      // options show that Misskey reads a remote poll's counts from replies.totalItems.
      const misskeyQ = fixture("misskey/question-no-endtime.json");
      assert.deepEqual((misskeyQ.oneOf as JsonObject[]).map((o) => typeof (o.replies as JsonObject).totalItems), ["number", "number"]);
      /** A Misskey answer, as Misskey's renderVote builds it: one Create per choice, ids under the voter's actor, `to` the poll's author. */
      const misskeyVote = (name: string, option: string, extra: JsonObject = {}): JsonObject => {
        const actor = peer.actorId(name).href;
        const vid = randomUUID();
        return {
          "@context": misskeyQ["@context"]!,
          id: `${actor}#votes/${vid}/activity`,
          actor,
          type: "Create",
          to: [groupId()],
          published: new Date().toISOString(),
          object: { id: `${actor}#votes/${vid}`, type: "Note", attributedTo: actor, to: [groupId()], inReplyTo: questionId(p), name: option, ...extra },
        };
      };
      // pleroma/question-closed-final-tallies.json gives Pleroma's @context (its litepub schema, served by
      // the sender's host) and thread context; its answers are its internal Answer sent as a Note, with
      // their own object id, the poll's author in cc.
      const pleromaQ = readdress(fixture("pleroma/question-closed-final-tallies.json"), {
        actors: { "https://patch.cx/users/rin": peer.actorId("ben").href },
        exact: { "https://patch.cx/schemas/litepub-0.1.jsonld": litepub.url.href, "https://patch.cx/contexts/626ecafd-3377-46c4-b908-3721a4d4373c": new URL("/contexts/626ecafd", peer.origin).href },
        id: questionId(p),
      });
      const pleromaVote = (name: string, option: string, noteId = new URL(`/objects/${randomUUID()}`, peer.origin).href): JsonObject => {
        const actor = peer.actorId(name).href;
        const published = new Date().toISOString();
        return {
          "@context": pleromaQ["@context"]!,
          id: new URL(`/activities/${randomUUID()}`, peer.origin).href,
          type: "Create",
          actor,
          to: [],
          cc: [groupId()],
          context: pleromaQ.context!,
          published,
          object: { id: noteId, type: "Note", actor, attributedTo: actor, name: option, inReplyTo: questionId(p), to: [], cc: [groupId()], context: pleromaQ.context!, published },
        };
      };
      /** Posts without waiting for a record: activities nobody handles leave none. */
      const post = async (as: string, body: JsonObject) => {
        const text = JSON.stringify(body);
        const signed = await peer.signedPost(inbox(), text, { as });
        assert.equal((await fetch(inbox(), { method: "POST", headers: new Headers(signed.headers), body: text })).status, 202);
      };
      const memberId = async (name: string) => (await findMemberByActor(db(), union.id, peer.actorId(name).href))!.id;

      // Misskey's answer, claiming 1000 votes in a Misskey extension: it is one ballot.
      await deliver("ana", misskeyVote("ana", "Yes", { _misskey_votes: 1000 }));
      await deliver("ben", pleromaVote("ben", "No"));
      assert.ok(litepub.hits() >= 1, "Pleroma's context was read from the sender's host");
      // Hostile: a second Misskey answer on a one-choice poll, an answer from a non-member, an answer
      // whose Note sits on another server, an unknown option.
      await deliver("ana", misskeyVote("ana", "No"));
      await deliver("outsider", pleromaVote("outsider", "Yes"));
      // (Fedify drops an embedded object from another origin; what is left is not a vote, and is handled as a post would be.)
      await post("cy", pleromaVote("cy", "Yes", "https://patch.cx/objects/9a172665-forged"));
      await deliver("cy", misskeyVote("cy", "Working"));
      // The fixtures' own polls: a member's Misskey poll (not an answer), and Pleroma's closed poll
      // re-sent as an Update that claims to be ours with 8 yes and 3 no.
      const misskeyPoll = readdress(misskeyQ, { actors: { "https://skippers-bin.com/users/7v1w1r8ce6": peer.actorId("cy").href }, id: new URL(`/notes/${randomUUID()}`, peer.origin).href });
      await post("cy", { "@context": misskeyQ["@context"]!, id: `${misskeyPoll.id}/activity`, type: "Create", actor: peer.actorId("cy").href, to: misskeyPoll.to!, cc: [groupId()], object: misskeyPoll });
      await post("ben", { "@context": pleromaQ["@context"]!, id: new URL(`/activities/${randomUUID()}`, peer.origin).href, type: "Update", actor: peer.actorId("ben").href, to: pleromaQ.to!, cc: [groupId()], object: pleromaQ });
      await new Promise((r) => setTimeout(r, 500));

      const rows = await ballots(p);
      assert.deepEqual(rows.map((b) => [b.member_id, b.option]).sort(), [[await memberId("ana"), 0], [await memberId("ben"), 1]].sort());
      const pr = await getProposal(db(), union.id, p.id);
      assert.equal(pr?.state, "open", "a Question sent to us never closes our poll");
      assert.deepEqual((await tallyOf(db(), pr!)).options.map((o) => o.direct), [1, 1, 0]);
      // cy answers properly from Misskey: counted.
      await deliver("cy", misskeyVote("cy", "Abstain"));
      assert.deepEqual((await tallyOf(db(), pr!)).options.map((o) => o.direct), [1, 1, 1]);
      // The running tally reaches the members' servers.
      await eventually(async () => {
        for (const a of peer.received) {
          if (!(a instanceof Update) || a.objectId?.href !== questionId(p)) continue;
          const q = await a.getObject() as Question;
          if (q.voters === 3) return true;
        }
        return false;
      }, "an Update with all three answers");
    });
  });
}
