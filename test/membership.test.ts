import { randomUUID } from "node:crypto";
import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import type { Kysely } from "kysely";
import type { DB } from "../src/db/schema.ts";
import { consumeInvite, createInvite, getInviteByCode, type Invite, inviteStatus, listInvites, placesHeld, revokeInvite } from "../src/members/invites.ts";
import { countMembers, findMemberByActor, getLeader, getMember, listMembers, type Member, MemberError, OPERATOR } from "../src/members/members.ts";
import {
  type Applicant,
  approveMember,
  claimInviteForApplicant,
  type JoinResult,
  leaveUnion,
  listOfficers,
  migrateMember,
  rejectMember,
  removeMember,
  requestToJoin,
  setOfficer,
  unsetOfficer,
} from "../src/members/membership.ts";
import { DETACH_CHUNK, depthOf, moveMember, movesOf, recruitsOf, sponsorChain } from "../src/members/tree.ts";
import type { OutboxIntent } from "../src/outbox.ts";
import { createUnion, type JoinPolicy, type Union } from "../src/unions/unions.ts";
import { dialects } from "./helpers/databases.ts";
import { seededRandom } from "./helpers/random.ts";
import { type Ctx, failingOn, followId, LEADER, person, sharedKeys, withCtx } from "./helpers/domain-context.ts";
import { closeContenders, contenders, type RaceResult, recordedIntents } from "./helpers/membership-worker.ts";
import { overrideBylaws } from "./helpers/bylaws.ts";

after(() => closeContenders());

async function makeUnion(c: Ctx, slug: string, joinPolicy: JoinPolicy, leaderHandle: string | null = LEADER.handle): Promise<Union> {
  return createUnion({ db: c.db, events: c.deps.events, generateKeys: sharedKeys }, { slug, name: slug, purpose: "testing", leaderHandle, joinPolicy });
}

async function activateLeader(c: Ctx, union: Union): Promise<Member> {
  const r = await requestToJoin(c.deps, union.id, LEADER, followId());
  assert.equal(r.outcome, "accepted");
  assert.equal(r.member.role, "leader");
  return r.member;
}

/** The newcomer opens the invite link, names their account, then their Follow arrives. */
async function inviteJoin(c: Ctx, unionId: string, code: string, p: Applicant): Promise<JoinResult> {
  const claimed = await claimInviteForApplicant(c.deps, unionId, code, p.handle!);
  assert.ok(claimed.claim, "the claim waits for the Follow");
  assert.equal(claimed.admitted, undefined);
  return requestToJoin(c.deps, unionId, p, followId());
}

async function intents(c: Ctx): Promise<OutboxIntent[]> {
  return recordedIntents(c.db);
}

async function intentsFor(c: Ctx, memberId: string): Promise<string[]> {
  return (await intents(c)).filter((i) => "memberId" in i && i.memberId === memberId).map((i) => i.kind);
}

/** The personal invite code a member was sent in their welcome. */
async function welcomeCode(c: Ctx, memberId: string): Promise<string> {
  const w = (await intents(c)).filter((i) => i.kind === "member.join" && i.memberId === memberId).at(-1);
  assert.ok(w && w.kind === "member.join" && w.inviteCode, `member ${memberId} got a welcome with an invite code`);
  return w.inviteCode;
}

async function fresh(c: Ctx, unionId: string, id: string): Promise<Member> {
  const m = await getMember(c.db, unionId, id);
  assert.ok(m, `member ${id} exists`);
  return m;
}

async function sizes(c: Ctx, unionId: string, ...ms: Member[]): Promise<number[]> {
  return Promise.all(ms.map(async (m) => (await fresh(c, unionId, m.id)).subtreeSize));
}

async function refuses(p: Promise<unknown>, code: MemberError["code"], pattern?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof MemberError, `expected a MemberError, got ${String(e)}`);
    assert.equal(e.code, code, e.message);
    if (pattern) assert.match(e.message, pattern);
    return true;
  });
}

/** Everything a refused operation must leave as it was. */
async function snapshot(c: Ctx) {
  const members = await c.db.selectFrom("members").select(["id", "state", "role", "portfolio", "sponsor_id", "subtree_size", "actor_id", "handle", "follow_id", "removed_by"])
    .orderBy("id").execute();
  const moves = await c.db.selectFrom("member_moves").select(["member_id", "from_sponsor_id", "to_sponsor_id", "reason"]).orderBy("id").execute();
  const invites = await c.db.selectFrom("invites").select(["id", "uses", "max_uses", "revoked_at"]).orderBy("id").execute();
  const claims = await c.db.selectFrom("join_claims").select(["id", "used_at"]).orderBy("id").execute();
  return { members, moves, invites, claims, intents: await intents(c) };
}

interface Tree {
  readonly union: Union;
  readonly leader: Member;
  readonly a: Member;
  readonly b: Member;
  readonly cc: Member;
}

/** leader → A (operator invite) → B (A's welcome invite) → C (B's welcome invite). */
async function threeLevels(c: Ctx, policy: JoinPolicy = "invite"): Promise<Tree> {
  const union = await makeUnion(c, "riders", policy);
  const leader = await activateLeader(c, union);
  const top = await createInvite(c.deps, union.id, { by: OPERATOR });
  const a = await inviteJoin(c, union.id, top.code, person("a"));
  const b = await inviteJoin(c, union.id, await welcomeCode(c, a.member.id), person("b"));
  const cc = await inviteJoin(c, union.id, await welcomeCode(c, b.member.id), person("c"));
  for (const r of [a, b, cc]) assert.equal(r.outcome, "accepted");
  return { union, leader, a: a.member, b: b.member, cc: cc.member };
}

for (const d of dialects) {
  describe(`membership on ${d.name}`, { skip: d.skip }, () => {
    it("the leader's place is reserved at creation and taken by the leader's Follow", () => withCtx(d, async (c) => {
      const union = await makeUnion(c, "riders", "invite", "@Lead@EXAMPLE.org");
      const reserved = await getLeader(c.db, union.id);
      assert.ok(reserved);
      assert.deepEqual(
        [reserved.state, reserved.role, reserved.actorId, reserved.handle, reserved.sponsorId, reserved.subtreeSize],
        ["reserved", "leader", null, "@lead@example.org", null, 0],
      );
      assert.equal((await listMembers(c.db, union.id)).find((m) => m.id === reserved.id)?.depth, 0);

      // Someone else with the same user name on another host does not get the place.
      const impostor = await requestToJoin(c.deps, union.id, { actorId: "https://evil.example/users/Lead", handle: "@Lead@evil.example" }, followId());
      assert.equal(impostor.outcome, "rejected");
      assert.equal((await getLeader(c.db, union.id))?.state, "reserved");

      const fid = followId();
      const r = await requestToJoin(c.deps, union.id, { actorId: "https://example.org/users/Lead", handle: "@Lead@Example.ORG" }, fid);
      assert.equal(r.outcome, "accepted");
      assert.equal(r.member.id, reserved.id, "the reserved row itself becomes the leader's membership");
      assert.deepEqual([r.member.state, r.member.actorId, r.member.followId, r.member.sponsorId], ["active", "https://example.org/users/Lead", fid, null]);
      assert.ok(r.member.joinedAt instanceof Date);
      assert.deepEqual(await intentsFor(c, reserved.id), ["member.join"]);
      // The leader's welcome carries an invite link, without limit like the leader's own invites.
      const leaderInvite = await getInviteByCode(c.db, union.id, await welcomeCode(c, reserved.id));
      assert.deepEqual([leaderInvite?.createdBy, leaderInvite?.maxUses, leaderInvite?.welcome], [reserved.id, null, true]);
      assert.deepEqual(c.log.filter((e) => e.type === "member.joined"), [{ type: "member.joined", unionId: union.id, memberId: reserved.id, sponsorId: null, via: "leader" }]);
      assert.equal(await countMembers(c.db, union.id), 1);
      assert.equal(await c.db.selectFrom("members").select("id").where("union_id", "=", union.id).where("role", "=", "leader").execute().then((x) => x.length), 1);
    }));

    it("a failing join leaves no intent behind: intents commit with the change", () => withCtx(d, async (c) => {
      const union = await makeUnion(c, "riders", "open");
      await activateLeader(c, union);
      const before = await snapshot(c);
      const joinedBefore = c.log.filter((e) => e.type === "member.joined").length;
      // An invalid handle fails the whole Follow before anything is written.
      await refuses(requestToJoin(c.deps, union.id, { actorId: "https://x.example/u/1", handle: "not a handle" }, followId()), "invalid");
      // Fail inside the transaction, after the intents were added: all of it rolls back.
      const failing = failingOn(c, "member.join");
      await assert.rejects(requestToJoin(failing, union.id, person("p"), followId()), /delivery store unavailable/);
      assert.deepEqual(await snapshot(c), before, "no member row, no subtree change, no Accept left behind");
      assert.equal(c.log.filter((e) => e.type === "member.joined").length, joinedBefore, "no event for a rolled-back join");
    }));

    it("builds a three-level tree from welcome invites", () => withCtx(d, async (c) => {
      const { union, leader, a, b, cc } = await threeLevels(c);
      assert.equal(a.sponsorId, leader.id);
      assert.equal(b.sponsorId, a.id);
      assert.equal(cc.sponsorId, b.id);
      assert.deepEqual((await sponsorChain(c.db, cc.id)).map((m) => m.id), [cc.id, b.id, a.id, leader.id]);
      assert.deepEqual(await Promise.all([leader, a, b, cc].map((m) => depthOf(c.db, m.id))), [0, 1, 2, 3]);
      const listed = new Map((await listMembers(c.db, union.id)).map((m) => [m.id, m]));
      assert.deepEqual([leader, a, b, cc].map((m) => listed.get(m.id)?.depth), [0, 1, 2, 3]);
      assert.equal(listed.get(cc.id)?.sponsorHandle, "@b@remote.example");
      assert.deepEqual(await sizes(c, union.id, leader, a, b, cc), [3, 2, 1, 0]);
      assert.deepEqual((await recruitsOf(c.db, union.id, leader.id)).map((m) => m.id), [a.id]);
      assert.deepEqual((await recruitsOf(c.db, union.id, a.id)).map((m) => m.id), [b.id]);
      assert.deepEqual(await recruitsOf(c.db, union.id, cc.id), []);

      // A's welcome invite is A's own, sized to the member invite limit, one use taken by B.
      const aInvite = await getInviteByCode(c.db, union.id, await welcomeCode(c, a.id));
      assert.deepEqual([aInvite?.createdBy, aInvite?.maxUses, aInvite?.uses], [a.id, 5, 1]);
      assert.equal((await fresh(c, union.id, b.id)).inviteId, aInvite?.id);
      assert.deepEqual(c.log.filter((e) => e.type === "member.joined").map((e) => e.type === "member.joined" && [e.memberId, e.sponsorId, e.via]), [
        [leader.id, null, "leader"], [a.id, leader.id, "invite"], [b.id, a.id, "invite"], [cc.id, b.id, "invite"],
      ]);

      // A second recruit of A: recruits are paged in id order.
      const dd = (await inviteJoin(c, union.id, aInvite!.code, person("d"))).member;
      assert.deepEqual(await sizes(c, union.id, leader, a), [4, 3]);
      const both = [b.id, dd.id].sort();
      assert.deepEqual((await recruitsOf(c.db, union.id, a.id)).map((m) => m.id), both);
      const page1 = await recruitsOf(c.db, union.id, a.id, { limit: 1 });
      assert.deepEqual(page1.map((m) => m.id), [both[0]]);
      assert.deepEqual((await recruitsOf(c.db, union.id, a.id, { limit: 1, after: page1[0]!.id })).map((m) => m.id), [both[1]]);
    }));

    it("leaving moves the leaver's recruits up, records the move; a stale Undo changes nothing", () => withCtx(d, async (c) => {
      const { union, leader, a, b, cc } = await threeLevels(c);
      const before = await snapshot(c);
      const eventsBefore = c.log.length;
      assert.equal(await leaveUnion(c.deps, union.id, b.actorId!, "left", "https://remote.example/follows/some-other-follow"), undefined);
      assert.deepEqual(await snapshot(c), before, "an Undo of another Follow does not end the membership");
      assert.equal(c.log.length, eventsBefore);

      const left = await leaveUnion(c.deps, union.id, b.actorId!, "left", b.followId!);
      assert.ok(left);
      assert.deepEqual([left.id, left.state, left.leftReason, left.subtreeSize], [b.id, "left", null, 0]);
      assert.ok(left.leftAt instanceof Date);
      assert.equal((await fresh(c, union.id, cc.id)).sponsorId, a.id);
      assert.deepEqual((await sponsorChain(c.db, cc.id)).map((m) => m.id), [cc.id, a.id, leader.id]);
      assert.deepEqual(await sizes(c, union.id, leader, a, cc), [2, 1, 0]);
      const moves = await movesOf(c.db, union.id, cc.id);
      assert.deepEqual(moves.map((m) => [m.fromSponsorId, m.toSponsorId, m.reason]), [[b.id, a.id, "sponsor_left"]]);
      assert.deepEqual((await recruitsOf(c.db, union.id, a.id)).map((m) => m.id), [cc.id]);
      assert.equal(await countMembers(c.db, union.id), 3);
      assert.deepEqual(c.log.at(-1), { type: "member.left", unionId: union.id, memberId: b.id, state: "left", reason: null, recruitsMoved: 1 });
      assert.deepEqual((await intents(c)).length, before.intents.length, "nothing is sent back to a member who left");

      // Leaving twice, or leaving as a non-member, is a no-op.
      const after = await snapshot(c);
      assert.equal(await leaveUnion(c.deps, union.id, b.actorId!, "left"), undefined);
      assert.equal(await leaveUnion(c.deps, union.id, "https://nobody.example/u/x", "left"), undefined);
      assert.deepEqual(await snapshot(c), after);

      // Account deletion (no follow id): recorded as such.
      const gone = await leaveUnion(c.deps, union.id, cc.actorId!, "deleted");
      assert.deepEqual([gone?.state, gone?.leftReason], ["deleted", "account deleted"]);
      assert.deepEqual(await sizes(c, union.id, leader, a), [1, 0]);
    }));

    it("a member with more recruits than one chunk leaves: every recruit moves up and is recorded, and no statement reads more than DETACH_CHUNK of them", () => withCtx(d, async (c) => {
      const { union, leader, a, b, cc } = await threeLevels(c);
      const extra = 2 * DETACH_CHUNK + 1;
      const now = Date.now();
      const rows = Array.from({ length: extra }, (_, i) => ({
        id: `r${String(i).padStart(6, "0")}`, union_id: union.id, actor_id: `https://many.example/users/r${i}`, handle: null, state: "active", role: "member",
        sponsor_id: b.id, subtree_size: 0, created_at: now + i,
      }));
      for (let i = 0; i < rows.length; i += 1000) await c.db.insertInto("members").values(rows.slice(i, i + 1000)).execute();
      await c.db.updateTable("members").set((eb) => ({ subtree_size: eb("subtree_size", "+", extra) })).where("id", "in", [leader.id, a.id, b.id]).execute();
      // Every statement's rows, as the database returned them (a real database, watched from outside).
      let largest = 0;
      const watched = c.db.withPlugin({
        transformQuery: (args) => args.node,
        transformResult: async (args) => {
          largest = Math.max(largest, args.result.rows.length);
          return args.result;
        },
      });
      const left = await leaveUnion({ ...c.deps, db: watched }, union.id, b.actorId!, "left", b.followId!);
      assert.equal(left?.state, "left");
      assert.ok(largest <= DETACH_CHUNK, `a statement returned ${largest} rows`);
      const moved = await c.db.selectFrom("members").select((eb) => eb.fn.countAll<number>().as("n"))
        .where("union_id", "=", union.id).where("sponsor_id", "=", a.id).where("state", "=", "active").executeTakeFirstOrThrow();
      assert.equal(Number(moved.n), extra + 1, "every recruit, c among them, now under a");
      const moves = await c.db.selectFrom("member_moves").select(["member_id", "from_sponsor_id", "to_sponsor_id", "reason"]).where("from_sponsor_id", "=", b.id).execute();
      assert.equal(new Set(moves.map((m) => m.member_id)).size, extra + 1);
      assert.ok(moves.every((m) => m.to_sponsor_id === a.id && m.reason === "sponsor_left"));
      assert.equal((await fresh(c, union.id, cc.id)).sponsorId, a.id);
      assert.deepEqual(await sizes(c, union.id, leader, a), [extra + 2, extra + 1]);
      assert.deepEqual(c.log.at(-1), { type: "member.left", unionId: union.id, memberId: b.id, state: "left", reason: null, recruitsMoved: extra + 1 });
    }));

    it("a member who leaves takes their open invites with them", () => withCtx(d, async (c) => {
      const { union, b } = await threeLevels(c);
      const bCode = await welcomeCode(c, b.id);
      await leaveUnion(c.deps, union.id, b.actorId!, "left");
      await refuses(claimInviteForApplicant(c.deps, union.id, bCode, person("e").handle!), "invalid", /withdrawn/);
      assert.equal(await findMemberByActor(c.db, union.id, person("e").actorId), undefined);
    }));

    it("officers remove and expel with a reason; the leader cannot be removed; members cannot remove", () => withCtx(d, async (c) => {
      const { union, leader, a, b, cc } = await threeLevels(c);
      const officer = await setOfficer(c.deps, union.id, a.id, OPERATOR, "Organiser");
      const before = await snapshot(c);
      await refuses(removeMember(c.deps, union.id, cc.id, { kind: "member", memberId: b.id }, { reason: "spam" }), "forbidden");
      await refuses(removeMember(c.deps, union.id, cc.id, { kind: "member", memberId: officer.id }, { reason: "   " }), "invalid", /reason/);
      await refuses(removeMember(c.deps, union.id, leader.id, OPERATOR, { reason: "coup" }), "forbidden", /leader/);
      await refuses(removeMember(c.deps, union.id, leader.id, { kind: "member", memberId: officer.id }, { reason: "coup" }), "forbidden", /leader/);
      await refuses(removeMember(c.deps, union.id, randomUUID(), OPERATOR, { reason: "x" }), "not_found");
      assert.deepEqual(await snapshot(c), before, "refused removals change nothing");

      // The officer expels B: B's recruit C moves up to A, B's server gets a Reject.
      const expelled = await removeMember(c.deps, union.id, b.id, { kind: "member", memberId: officer.id }, { reason: " harassment ", expel: true });
      assert.deepEqual([expelled.state, expelled.leftReason, expelled.subtreeSize], ["expelled", "harassment", 0]);
      const raw = await c.db.selectFrom("members").select("removed_by").where("id", "=", b.id).executeTakeFirstOrThrow();
      assert.equal(raw.removed_by, officer.id);
      assert.equal((await intents(c)).at(-1)?.kind, "follow.reject");
      assert.deepEqual(await intentsFor(c, b.id), ["member.join", "follow.reject"]);
      assert.equal((await fresh(c, union.id, cc.id)).sponsorId, a.id);
      assert.deepEqual((await movesOf(c.db, union.id, cc.id)).map((m) => m.reason), ["sponsor_expelled"]);
      assert.deepEqual(await sizes(c, union.id, leader, a), [2, 1]);
      assert.deepEqual(c.log.at(-1), { type: "member.left", unionId: union.id, memberId: b.id, state: "expelled", reason: "harassment", recruitsMoved: 1 });
      await refuses(removeMember(c.deps, union.id, b.id, OPERATOR, { reason: "again" }), "not_found");

      // The expelled account cannot come back by following, not even with a claimed invite.
      const top = await createInvite(c.deps, union.id, { by: OPERATOR, maxUses: 1 });
      await claimInviteForApplicant(c.deps, union.id, top.code, b.handle!);
      const again = await requestToJoin(c.deps, union.id, { actorId: b.actorId!, handle: b.handle }, followId());
      assert.equal(again.outcome, "rejected");
      assert.equal((await fresh(c, union.id, b.id)).state, "expelled");
      assert.equal((await getInviteByCode(c.db, union.id, top.code))?.uses, 0, "the invite was not spent on an expelled account");
      assert.equal((await intents(c)).at(-1)?.kind, "follow.reject");
      assert.equal(await c.db.selectFrom("members").select("id").where("actor_id", "=", b.actorId).execute().then((r) => r.length), 1);

      // A plain removal by the operator: recorded as the operator's; the member may come back by invite.
      const removed = await removeMember(c.deps, union.id, cc.id, OPERATOR, { reason: "inactive" });
      assert.equal(removed.state, "removed");
      assert.equal((await c.db.selectFrom("members").select("removed_by").where("id", "=", cc.id).executeTakeFirstOrThrow()).removed_by, "operator");
      const back = await inviteJoin(c, union.id, top.code, { actorId: cc.actorId!, handle: cc.handle });
      assert.deepEqual([back.outcome, back.member.id, back.member.sponsorId], ["accepted", cc.id, leader.id]);

      // Only the leader removes an officer.
      const o2 = await setOfficer(c.deps, union.id, cc.id, OPERATOR, "Press");
      await refuses(removeMember(c.deps, union.id, o2.id, { kind: "member", memberId: officer.id }, { reason: "rivalry" }), "forbidden", /officer/);
      const byLeader = await removeMember(c.deps, union.id, o2.id, { kind: "member", memberId: leader.id }, { reason: "rivalry" });
      assert.deepEqual([byLeader.state, byLeader.role, byLeader.portfolio], ["removed", "member", null]);
    }));

    it("approval policy: pending until an officer approves (and sponsors) or rejects", () => withCtx(d, async (c) => {
      const union = await makeUnion(c, "riders", "approval");
      const leader = await activateLeader(c, union);
      const top = await createInvite(c.deps, union.id, { by: OPERATOR });
      const o = (await inviteJoin(c, union.id, top.code, person("o"))).member;
      await setOfficer(c.deps, union.id, o.id, OPERATOR, "Membership");
      const plain = (await inviteJoin(c, union.id, top.code, person("plain"))).member;

      const p = await requestToJoin(c.deps, union.id, person("p"), followId());
      assert.deepEqual([p.outcome, p.member.state, p.member.sponsorId], ["pending", "pending", null]);
      assert.deepEqual(await intentsFor(c, p.member.id), [], "nothing is sent while the request waits");
      const again = await requestToJoin(c.deps, union.id, person("p"), followId());
      assert.deepEqual([again.outcome, again.member.id], ["pending", p.member.id]);
      assert.equal(c.log.filter((e) => e.type === "member.pending").length, 1, "a repeated Follow is not announced twice");
      assert.equal(await countMembers(c.db, union.id, ["pending"]), 1);

      await refuses(approveMember(c.deps, union.id, p.member.id, { kind: "member", memberId: plain.id }), "forbidden");
      const approved = await approveMember(c.deps, union.id, p.member.id, { kind: "member", memberId: o.id });
      assert.deepEqual([approved.state, approved.sponsorId], ["active", o.id]);
      assert.deepEqual(await intentsFor(c, p.member.id), ["member.join"]);
      assert.deepEqual(c.log.at(-1), { type: "member.joined", unionId: union.id, memberId: p.member.id, sponsorId: o.id, via: "approval" });
      assert.deepEqual(await sizes(c, union.id, leader, o), [3, 1]);
      assert.equal((await approveMember(c.deps, union.id, p.member.id, OPERATOR)).sponsorId, o.id, "approving twice changes nothing");
      assert.deepEqual(await sizes(c, union.id, leader, o), [3, 1]);

      const q = (await requestToJoin(c.deps, union.id, person("q"), followId())).member;
      const rejected = await rejectMember(c.deps, union.id, q.id, { kind: "member", memberId: o.id }, "not a rider");
      assert.deepEqual([rejected.state, rejected.leftReason, rejected.sponsorId], ["rejected", "not a rider", null]);
      assert.deepEqual(await intentsFor(c, q.id), ["follow.reject"]);
      assert.equal((await c.db.selectFrom("members").select("removed_by").where("id", "=", q.id).executeTakeFirstOrThrow()).removed_by, o.id);
      await refuses(approveMember(c.deps, union.id, q.id, OPERATOR), "invalid", /rejected/);
      await refuses(rejectMember(c.deps, union.id, q.id, OPERATOR), "invalid");
      assert.deepEqual(await sizes(c, union.id, leader), [3]);

      // The operator approves: the leader sponsors.
      const r = (await requestToJoin(c.deps, union.id, person("r"), followId())).member;
      assert.equal((await approveMember(c.deps, union.id, r.id, OPERATOR)).sponsorId, leader.id);

      // A pending applicant who then opens an invite link is admitted at once, under the inviter.
      const s = (await requestToJoin(c.deps, union.id, person("s"), followId())).member;
      const viaInvite = await claimInviteForApplicant(c.deps, union.id, await welcomeCode(c, plain.id), "@s@Remote.Example");
      assert.equal(viaInvite.claim, undefined);
      assert.deepEqual([viaInvite.admitted?.id, viaInvite.admitted?.state, viaInvite.admitted?.sponsorId], [s.id, "active", plain.id]);
      await refuses(claimInviteForApplicant(c.deps, union.id, top.code, "@s@remote.example"), "conflict", /already a member/);
      await refuses(claimInviteForApplicant(c.deps, union.id, top.code, LEADER.handle!), "conflict", /already a member/);
      assert.deepEqual(await sizes(c, union.id, leader, plain), [5, 1]);
    }));

    it("open and invite-only policies", () => withCtx(d, async (c) => {
      const open = await makeUnion(c, "open-one", "open");
      const leader = await activateLeader(c, open);
      const p = await requestToJoin(c.deps, open.id, person("p"), followId());
      assert.deepEqual([p.outcome, p.member.state, p.member.sponsorId], ["accepted", "active", leader.id]);
      assert.deepEqual(await intentsFor(c, p.member.id), ["member.join"]);
      assert.deepEqual(c.log.at(-1), { type: "member.joined", unionId: open.id, memberId: p.member.id, sponsorId: leader.id, via: "open" });

      const closed = await makeUnion(c, "closed-one", "invite");
      await activateLeader(c, closed);
      const q = await requestToJoin(c.deps, closed.id, person("q"), followId());
      assert.deepEqual([q.outcome, q.member.state, q.member.leftReason, q.member.sponsorId], ["rejected", "rejected", "invite only", null]);
      assert.deepEqual(await intentsFor(c, q.member.id), ["follow.reject"]);
      assert.deepEqual(c.log.at(-1), { type: "member.rejected", unionId: closed.id, memberId: q.member.id });
      // Rejected, then invited: the same row joins.
      const top = await createInvite(c.deps, closed.id, { by: OPERATOR });
      const back = await inviteJoin(c, closed.id, top.code, person("q"));
      assert.deepEqual([back.outcome, back.member.id, back.member.leftReason], ["accepted", q.member.id, null]);
      // The same person is a separate member in each union, with separate states.
      const inOpen = await requestToJoin(c.deps, open.id, person("q"), followId());
      assert.notEqual(inOpen.member.id, back.member.id);
      await leaveUnion(c.deps, open.id, person("q").actorId, "left");
      assert.equal((await fresh(c, closed.id, back.member.id)).state, "active");
      assert.equal(await countMembers(c.db, open.id), 2);
      assert.equal(await countMembers(c.db, closed.id), 2);
    }));

    it("invites: used up, expired, revoked and unknown codes are refused clearly", () => withCtx(d, async (c) => {
      const union = await makeUnion(c, "riders", "invite");
      const leader = await activateLeader(c, union);
      const once = await createInvite(c.deps, union.id, { by: OPERATOR, maxUses: 1 });
      assert.deepEqual([once.createdBy, once.maxUses, once.uses], [leader.id, 1, 0]);
      assert.equal((await inviteJoin(c, union.id, once.code, person("x"))).outcome, "accepted");
      assert.equal(inviteStatus((await getInviteByCode(c.db, union.id, once.code))!), "used_up");
      await refuses(claimInviteForApplicant(c.deps, union.id, once.code, "@y@remote.example"), "invalid", /used as many times as it allows/);

      // Two people claim the last use; the first to follow gets it, the other falls to the policy.
      const last = await createInvite(c.deps, union.id, { by: OPERATOR, maxUses: 1 });
      await claimInviteForApplicant(c.deps, union.id, last.code, "@y@remote.example");
      await claimInviteForApplicant(c.deps, union.id, last.code, "@z@remote.example");
      assert.equal((await requestToJoin(c.deps, union.id, person("y"), followId())).outcome, "accepted");
      assert.equal((await requestToJoin(c.deps, union.id, person("z"), followId())).outcome, "rejected");
      assert.equal((await getInviteByCode(c.db, union.id, last.code))?.uses, 1);

      const shortLived = await createInvite(c.deps, union.id, { by: OPERATOR, expiresInMs: 500 });
      await claimInviteForApplicant(c.deps, union.id, shortLived.code, "@late@remote.example");
      await new Promise((r) => setTimeout(r, 600));
      await refuses(claimInviteForApplicant(c.deps, union.id, shortLived.code, "@w@remote.example"), "invalid", /expired/);
      assert.equal((await requestToJoin(c.deps, union.id, person("late"), followId())).outcome, "rejected", "a claim does not outlive its invite");
      assert.equal((await getInviteByCode(c.db, union.id, shortLived.code))?.uses, 0);

      const withdrawn = await createInvite(c.deps, union.id, { by: OPERATOR });
      await claimInviteForApplicant(c.deps, union.id, withdrawn.code, "@early@remote.example");
      await revokeInvite(c.deps, union.id, withdrawn.code);
      await refuses(claimInviteForApplicant(c.deps, union.id, withdrawn.code, "@v@remote.example"), "invalid", /withdrawn/);
      assert.equal((await requestToJoin(c.deps, union.id, person("early"), followId())).outcome, "rejected");
      assert.equal((await getInviteByCode(c.db, union.id, withdrawn.code))?.uses, 0);

      await refuses(claimInviteForApplicant(c.deps, union.id, "no-such-code", "@u@remote.example"), "invalid", /no such invite/);
      await refuses(claimInviteForApplicant(c.deps, union.id, once.code, "nonsense"), "invalid", /handle/);
      // A code of another union is not valid here.
      const other = await makeUnion(c, "other", "invite");
      const foreign = await createInvite(c.deps, other.id, { by: OPERATOR });
      await refuses(claimInviteForApplicant(c.deps, union.id, foreign.code, "@u@remote.example"), "invalid", /no such invite/);
      await refuses(createInvite(c.deps, union.id, { by: OPERATOR, maxUses: 0 }), "invalid");
      await refuses(createInvite(c.deps, union.id, { by: OPERATOR, maxUses: 1.5 }), "invalid");
      await refuses(createInvite(c.deps, union.id, { by: OPERATOR, expiresInMs: -1 }), "invalid");
    }));

    it("invites: members are limited in places, officers are not", () => withCtx(d, async (c) => {
      const union = await makeUnion(c, "riders", "approval");
      await activateLeader(c, union);
      const top = await createInvite(c.deps, union.id, { by: OPERATOR });
      const a = (await inviteJoin(c, union.id, top.code, person("a"))).member;
      const byA = { kind: "member", memberId: a.id } as const;
      // The welcome invite holds all five places; a new invite takes its places from it instead of being refused.
      assert.equal(await placesHeld(c.db, union.id, a.id), 5);
      const welcome = await welcomeCode(c, a.id);
      const two = await createInvite(c.deps, union.id, { by: byA, maxUses: 2 });
      assert.equal(two.maxUses, 2);
      assert.equal((await getInviteByCode(c.db, union.id, welcome))?.maxUses, 3, "the welcome link keeps 3 places");
      assert.equal(await placesHeld(c.db, union.id, a.id), 5);
      await createInvite(c.deps, union.id, { by: byA, maxUses: 3 });
      const spent = await getInviteByCode(c.db, union.id, welcome);
      assert.notEqual(spent?.revokedAt, null, "a welcome link with no place left is revoked");
      await refuses(createInvite(c.deps, union.id, { by: byA }), "forbidden", /open for 5 people at a time.*has 5 open/);
      for (const i of await listInvites(c.db, union.id, { createdBy: a.id })) if (!i.revokedAt) await revokeInvite(c.deps, union.id, i.code);
      assert.equal(await placesHeld(c.db, union.id, a.id), 0);
      const three = await createInvite(c.deps, union.id, { by: byA, maxUses: 3 });
      const one = await createInvite(c.deps, union.id, { by: byA });
      assert.deepEqual([three.maxUses, one.maxUses, three.createdBy], [3, 1, a.id]);
      await refuses(createInvite(c.deps, union.id, { by: byA, maxUses: 2 }), "forbidden");
      await createInvite(c.deps, union.id, { by: byA, maxUses: 1 });
      await refuses(createInvite(c.deps, union.id, { by: byA }), "forbidden");
      assert.equal(await placesHeld(c.db, union.id, a.id), 5);
      assert.equal((await listInvites(c.db, union.id, { createdBy: a.id })).length, 6);

      // The limit follows the union's setting.
      await overrideBylaws(c.deps, union.slug, { memberInviteLimit: 6 });
      await createInvite(c.deps, union.id, { by: byA });
      await refuses(createInvite(c.deps, union.id, { by: byA }), "forbidden");

      // Pending applicants and strangers cannot invite.
      const p = (await requestToJoin(c.deps, union.id, person("p"), followId())).member;
      await refuses(createInvite(c.deps, union.id, { by: { kind: "member", memberId: p.id } }), "forbidden");
      await refuses(createInvite(c.deps, union.id, { by: { kind: "member", memberId: randomUUID() } }), "forbidden");

      // An officer is unlimited: no default cap and no sum check.
      await setOfficer(c.deps, union.id, a.id, OPERATOR, "Recruitment");
      const open = await createInvite(c.deps, union.id, { by: byA });
      assert.equal(open.maxUses, null);
      const big = await createInvite(c.deps, union.id, { by: byA, maxUses: 1_000_000 });
      assert.equal(big.maxUses, 1_000_000);
      for (let i = 0; i < 3; i++) assert.equal((await inviteJoin(c, union.id, open.code, person(`via-officer-${i}`))).member.sponsorId, a.id);
    }));

    it("two concurrent consumes of an invite's last use: exactly one wins", () => withCtx(d, async (c) => {
      const union = await makeUnion(c, "riders", "invite");
      await activateLeader(c, union);
      const [x, y] = await contenders(2);
      for (let round = 0; round < 5; round++) {
        const inv = await createInvite(c.deps, union.id, { by: OPERATOR, maxUses: 2 });
        await c.db.transaction().execute((trx) => consumeOnce(trx, inv));
        const op = { op: "consume", inviteId: inv.id } as const;
        const results = await Promise.all([x!.run(c.tdb.url, op), y!.run(c.tdb.url, op)]);
        assert.deepEqual(results.map((r) => r.ok ? r.value : r.error).sort(), [false, true], JSON.stringify(results));
        assert.equal((await getInviteByCode(c.db, union.id, inv.code))?.uses, 2);
      }

      // Deterministic overlap: the first consumer holds its transaction open while the second tries.
      const inv = await createInvite(c.deps, union.id, { by: OPERATOR, maxUses: 1 });
      let release!: () => void;
      const held = new Promise<void>((r) => (release = r));
      const box: { second?: Promise<RaceResult> } = {};
      const first = c.db.transaction().execute(async (trx) => {
        const won = await consumeOnce(trx, inv);
        box.second = x!.run(c.tdb.url, { op: "consume", inviteId: inv.id });
        await held;
        return won;
      });
      await new Promise((r) => setTimeout(r, 50));
      const second = box.second;
      assert.ok(second, "the first consumer is inside its transaction");
      const early = await Promise.race([second, new Promise((r) => setTimeout(() => r("waiting"), 400))]);
      assert.equal(early, "waiting", "the second consumer waits for the first to finish");
      release();
      assert.equal(await first, true);
      assert.deepEqual(await second, { ok: true, value: false });
      assert.equal((await getInviteByCode(c.db, union.id, inv.code))?.uses, 1);
    }));

    it("two newcomers holding claims on the last use follow at once: never two admissions", () => withCtx(d, async (c) => {
      const { outcomes, leader, union, code } = await raceForLastUse(c);
      assert.equal(outcomes.filter((o) => o === "accepted").length, 1, JSON.stringify(outcomes));
      assert.equal((await getInviteByCode(c.db, union.id, code))?.uses, 1);
      assert.equal(await countMembers(c.db, union.id), 2);
      assert.equal((await fresh(c, union.id, leader.id)).subtreeSize, 1);
      await checkTree(c.db, union.id);
    }));

    it("two newcomers racing for the last use: the loser is refused, not failed", d.name === "sqlite"
      ? {}
      : {}, () => withCtx(d, async (c) => {
      for (let round = 0; round < 3; round++) {
        const { outcomes } = await raceForLastUse(c, `r${round}`);
        assert.deepEqual(outcomes.sort(), ["accepted", "rejected"]);
      }
    }));

    it("moves: a cycle is refused and changes nothing; a valid move updates both chains", () => withCtx(d, async (c) => {
      const { union, leader, a, b, cc } = await threeLevels(c);
      const top = await createInvite(c.deps, union.id, { by: OPERATOR });
      const dd = (await inviteJoin(c, union.id, top.code, person("d"))).member;
      assert.deepEqual(await sizes(c, union.id, leader, a, b, cc, dd), [4, 2, 1, 0, 0]);
      const before = await snapshot(c);
      const eventsBefore = c.log.length;
      await refuses(moveMember(c.deps, union.id, a.id, cc.id, OPERATOR), "conflict", /cycle/);
      await refuses(moveMember(c.deps, union.id, a.id, b.id, OPERATOR), "conflict", /cycle/);
      await refuses(moveMember(c.deps, union.id, a.id, a.id, OPERATOR), "conflict");
      await refuses(moveMember(c.deps, union.id, leader.id, dd.id, OPERATOR), "invalid", /leader/);
      await refuses(moveMember(c.deps, union.id, cc.id, dd.id, { kind: "member", memberId: b.id }), "forbidden");
      await refuses(moveMember(c.deps, union.id, cc.id, randomUUID(), OPERATOR), "not_found");
      assert.deepEqual(await snapshot(c), before);
      assert.equal(c.log.length, eventsBefore);

      // B (with C) moves under D: A's chain loses two, D's gains two, the leader keeps four.
      const moved = await moveMember(c.deps, union.id, b.id, dd.id, OPERATOR);
      assert.equal(moved.sponsorId, dd.id);
      assert.deepEqual(await sizes(c, union.id, leader, a, b, cc, dd), [4, 0, 1, 0, 2]);
      assert.deepEqual((await sponsorChain(c.db, cc.id)).map((m) => m.id), [cc.id, b.id, dd.id, leader.id]);
      assert.deepEqual((await movesOf(c.db, union.id, b.id)).map((m) => [m.fromSponsorId, m.toSponsorId, m.reason]), [[a.id, dd.id, "moved_by_officer"]]);
      assert.deepEqual(c.log.at(-1), { type: "member.moved", unionId: union.id, memberId: b.id, sponsorId: dd.id });

      // D (with B and C) moves under A; then C moves up to the leader.
      await moveMember(c.deps, union.id, dd.id, a.id, OPERATOR);
      assert.deepEqual(await sizes(c, union.id, leader, a, b, cc, dd), [4, 3, 1, 0, 2]);
      await moveMember(c.deps, union.id, cc.id, leader.id, { kind: "member", memberId: leader.id });
      assert.deepEqual(await sizes(c, union.id, leader, a, b, cc, dd), [4, 2, 0, 0, 1]);
      assert.deepEqual(await Promise.all([a, b, cc, dd].map((m) => depthOf(c.db, m.id))), [1, 3, 1, 2]);
      // Moving to the current sponsor is a no-op.
      const same = await snapshot(c);
      await moveMember(c.deps, union.id, cc.id, leader.id, OPERATOR);
      assert.deepEqual(await snapshot(c), same);
    }));

    it("migration keeps the member's place under a new actor id", () => withCtx(d, async (c) => {
      const { union, leader, a, b, cc } = await threeLevels(c);
      await setOfficer(c.deps, union.id, b.id, OPERATOR, "Treasurer");
      const to = person("b2", "new.example");
      const fid = followId();
      const m = await migrateMember(c.deps, union.id, b.actorId!, to, fid);
      assert.ok(m);
      assert.deepEqual(
        [m.id, m.actorId, m.handle, m.followId, m.sponsorId, m.role, m.portfolio, m.state, m.subtreeSize],
        [b.id, to.actorId, to.handle, fid, a.id, "officer", "Treasurer", "active", 1],
      );
      assert.deepEqual((await recruitsOf(c.db, union.id, b.id)).map((x) => x.id), [cc.id]);
      assert.equal(await findMemberByActor(c.db, union.id, b.actorId!), undefined);
      assert.deepEqual(await sizes(c, union.id, leader, a), [3, 2]);
      assert.equal((await intents(c)).at(-1)?.kind, "follow.accept");
      assert.deepEqual(c.log.at(-1), { type: "member.migrated", unionId: union.id, memberId: b.id, from: b.actorId, to: to.actorId });
      const follow = await requestToJoin(c.deps, union.id, to, followId());
      assert.deepEqual([follow.outcome, follow.member.id], ["already_member", b.id]);

      // Onto an account that is already a member: refused, nothing changes.
      const before = await snapshot(c);
      await refuses(migrateMember(c.deps, union.id, cc.actorId!, to, followId()), "conflict", /already a member/);
      await refuses(migrateMember(c.deps, union.id, cc.actorId!, { actorId: a.actorId!, handle: a.handle }, null), "conflict");
      assert.deepEqual(await snapshot(c), before);
      assert.equal(await migrateMember(c.deps, union.id, "https://nobody.example/u/1", person("n"), null), undefined);

      // Onto an account that once was a member and left: the old row gives way.
      const old = person("old");
      const top = await createInvite(c.deps, union.id, { by: OPERATOR });
      await inviteJoin(c, union.id, top.code, old);
      await leaveUnion(c.deps, union.id, old.actorId, "left");
      const m2 = await migrateMember(c.deps, union.id, cc.actorId!, old, null);
      assert.deepEqual([m2?.id, m2?.actorId, m2?.sponsorId, m2?.followId], [cc.id, old.actorId, b.id, cc.followId]);
      assert.equal(await c.db.selectFrom("members").select("id").where("union_id", "=", union.id).where("actor_id", "=", old.actorId).execute().then((r) => r.length), 1);
    }));

    it("the same Follow twice makes one member; rejoining after leaving reuses the row", () => withCtx(d, async (c) => {
      const union = await makeUnion(c, "riders", "open");
      const leader = await activateLeader(c, union);
      const p = person("p");
      const f1 = followId();
      const first = await requestToJoin(c.deps, union.id, p, f1);
      const f2 = followId();
      const second = await requestToJoin(c.deps, union.id, p, f2);
      assert.deepEqual([first.outcome, second.outcome], ["accepted", "already_member"]);
      assert.equal(second.member.id, first.member.id);
      assert.equal(second.member.followId, f2);
      assert.equal((await fresh(c, union.id, first.member.id)).followId, f2, "the Accept answers the newest Follow");
      assert.deepEqual(await intentsFor(c, first.member.id), ["member.join", "follow.accept"]);
      assert.equal(await c.db.selectFrom("members").select("id").where("actor_id", "=", p.actorId).execute().then((r) => r.length), 1);
      assert.deepEqual(await sizes(c, union.id, leader), [1]);
      assert.equal(c.log.filter((e) => e.type === "member.joined" && e.memberId === first.member.id).length, 1);
      // The leader's Follow repeated.
      assert.equal((await requestToJoin(c.deps, union.id, LEADER, followId())).outcome, "already_member");

      const code = await welcomeCode(c, first.member.id);
      await leaveUnion(c.deps, union.id, p.actorId, "left", f2);
      assert.deepEqual(await sizes(c, union.id, leader), [0]);
      const back = await requestToJoin(c.deps, union.id, p, followId());
      assert.deepEqual([back.outcome, back.member.id, back.member.state, back.member.sponsorId, back.member.leftAt], ["accepted", first.member.id, "active", leader.id, null]);
      assert.equal(await c.db.selectFrom("members").select("id").where("actor_id", "=", p.actorId).execute().then((r) => r.length), 1);
      assert.deepEqual(await sizes(c, union.id, leader), [1]);
      const fresh2 = await welcomeCode(c, first.member.id);
      assert.notEqual(fresh2, code, "leaving revoked the old invite; a returning member gets a new one");
      assert.equal((await getInviteByCode(c.db, union.id, code))?.revokedAt instanceof Date, true);
      assert.equal((await listInvites(c.db, union.id, { createdBy: first.member.id })).filter((i) => i.revokedAt === null).length, 1);
    }));

    it("officers: appointed by the leader or operator only, listed leader first, office ends on leaving", () => withCtx(d, async (c) => {
      const { union, leader, a, b, cc } = await threeLevels(c, "open");
      const asLeader = { kind: "member", memberId: leader.id } as const;
      const o = await setOfficer(c.deps, union.id, a.id, asLeader, "  Treasurer ");
      assert.deepEqual([o.role, o.portfolio], ["officer", "Treasurer"]);
      assert.deepEqual(c.log.at(-1), { type: "officer.changed", unionId: union.id, memberId: a.id, role: "officer", portfolio: "Treasurer" });
      await setOfficer(c.deps, union.id, cc.id, OPERATOR, null);
      await setOfficer(c.deps, union.id, leader.id, OPERATOR, "Founder");
      const listed = await listOfficers(c.db, union.id);
      assert.deepEqual(listed.map((m) => [m.id, m.role, m.portfolio]), [[leader.id, "leader", "Founder"], [a.id, "officer", "Treasurer"], [cc.id, "officer", null]]);

      const before = await snapshot(c);
      await refuses(setOfficer(c.deps, union.id, b.id, { kind: "member", memberId: a.id }, "Press"), "forbidden", /only the leader/);
      await refuses(setOfficer(c.deps, union.id, b.id, { kind: "member", memberId: b.id }, "Press"), "forbidden");
      await refuses(unsetOfficer(c.deps, union.id, cc.id, { kind: "member", memberId: a.id }), "forbidden");
      await refuses(setOfficer(c.deps, union.id, b.id, OPERATOR, "   "), "invalid");
      await refuses(setOfficer(c.deps, union.id, b.id, OPERATOR, "x".repeat(121)), "invalid");
      await refuses(unsetOfficer(c.deps, union.id, leader.id, OPERATOR), "invalid", /leader/);
      await refuses(setOfficer(c.deps, union.id, randomUUID(), OPERATOR, "Ghost"), "not_found");
      assert.deepEqual(await snapshot(c), before);

      const demoted = await unsetOfficer(c.deps, union.id, cc.id, asLeader);
      assert.deepEqual([demoted.role, demoted.portfolio], ["member", null]);
      assert.equal((await fresh(c, union.id, leader.id)).role, "leader");

      const left = await leaveUnion(c.deps, union.id, a.actorId!, "left");
      assert.deepEqual([left?.role, left?.portfolio], ["member", null]);
      assert.deepEqual((await listOfficers(c.db, union.id)).map((m) => m.id), [leader.id]);
      const back = await requestToJoin(c.deps, union.id, { actorId: a.actorId!, handle: a.handle }, followId());
      assert.deepEqual([back.outcome, back.member.role, back.member.portfolio], ["accepted", "member", null]);
      await refuses(approveMember(c.deps, union.id, b.id, { kind: "member", memberId: a.id }), "forbidden", /officers/);
    }));

    it("a random history of joins, leaves, removals and moves keeps the tree consistent", { timeout: 600_000 }, (t) => withCtx(d, async (c) => {
      const seed = Number(process.env.MEMBERSHIP_SEED ?? 20240611);
      const { steps, stats } = await randomHistory(c, seed, 200);
      t.diagnostic(`seed ${seed} (set MEMBERSHIP_SEED to vary): ${steps} steps ${JSON.stringify(stats)}`);
    }));

    // --- Found defects: these state the expected behaviour and are marked todo until fixed. ---

    it("an approval racing an invite claim admits the applicant once", () => withCtx(d, async (c) => {
      const union = await makeUnion(c, "riders", "approval");
      const leader = await activateLeader(c, union);
      const top = await createInvite(c.deps, union.id, { by: OPERATOR });
      const a = (await inviteJoin(c, union.id, top.code, person("a"))).member;
      const p = (await requestToJoin(c.deps, union.id, person("p"), followId())).member;
      // The officer's approval commits between the claim's state check and its transaction.
      let hooked = false;
      const racingDb = new Proxy(c.db, {
        get(target, prop, receiver) {
          if (prop === "transaction" && !hooked) {
            hooked = true;
            return () => ({
              execute: async <T>(fn: (trx: Kysely<DB>) => Promise<T>) => {
                await approveMember(c.deps, union.id, p.id, OPERATOR);
                return target.transaction().execute(fn);
              },
            });
          }
          const v = Reflect.get(target, prop, receiver);
          return typeof v === "function" ? v.bind(target) : v;
        },
      });
      const code = await welcomeCode(c, a.id);
      const usesBefore = (await getInviteByCode(c.db, union.id, code))!.uses;
      try {
        await claimInviteForApplicant({ ...c.deps, db: racingDb }, union.id, code, p.handle!);
      } catch {
        // Refusing the claim ("already a member") is a fine outcome too.
      }
      assert.ok(hooked);
      await checkTree(c.db, union.id);
      assert.deepEqual(await sizes(c, union.id, leader), [2], "the applicant is counted once");
      assert.equal((await getInviteByCode(c.db, union.id, code))!.uses, usesBefore + ((await fresh(c, union.id, p.id)).sponsorId === a.id ? 1 : 0));
      assert.equal((await intentsFor(c, p.id)).filter((k) => k === "member.join").length, 1, "one welcome");
    }));

    it("when the leader leaves, the tree keeps one root and the leader can take the place back", () => withCtx(d, async (c) => {
      const { union, leader, a } = await threeLevels(c);
      const top = await createInvite(c.deps, union.id, { by: OPERATOR });
      await inviteJoin(c, union.id, top.code, person("d"));
      await leaveUnion(c.deps, union.id, LEADER.actorId, "left");
      await checkTree(c.db, union.id);
      const roots = await c.db.selectFrom("members").select("id").where("union_id", "=", union.id).where("state", "in", ["active", "reserved"]).where("sponsor_id", "is", null).execute();
      assert.equal(roots.length, 1, `one root, got ${roots.length}`);
      const back = await requestToJoin(c.deps, union.id, LEADER, followId());
      assert.equal(back.outcome, "accepted");
      assert.equal(back.member.id, leader.id);
      assert.equal((await fresh(c, union.id, a.id)).sponsorId, leader.id);
      assert.deepEqual(await sizes(c, union.id, leader), [4]);
    }));

    it("a claim matches the Follow whatever the case of the user name typed on the invite page", () => withCtx(d, async (c) => {
      const union = await makeUnion(c, "riders", "invite", "@Lead@example.org");
      // Mastodon and most servers resolve user names case-insensitively; the Follow carries the canonical case.
      const r = await requestToJoin(c.deps, union.id, LEADER, followId());
      assert.equal(r.outcome, "accepted", "the leader typed with a capital still gets the place");
      const top = await createInvite(c.deps, union.id, { by: OPERATOR });
      await claimInviteForApplicant(c.deps, union.id, top.code, "@Alice@remote.example");
      const joined = await requestToJoin(c.deps, union.id, person("alice"), followId());
      assert.equal(joined.outcome, "accepted");
    }));

    if (d.name === "postgres") {
      it("two officers approving one applicant at once admit them once", () => withCtx(d, async (c) => {
        const union = await makeUnion(c, "riders", "approval");
        const leader = await activateLeader(c, union);
        const top = await createInvite(c.deps, union.id, { by: OPERATOR });
        const o1 = (await inviteJoin(c, union.id, top.code, person("o1"))).member;
        const o2 = (await inviteJoin(c, union.id, top.code, person("o2"))).member;
        await setOfficer(c.deps, union.id, o1.id, OPERATOR, "One");
        await setOfficer(c.deps, union.id, o2.id, OPERATOR, "Two");
        const p = (await requestToJoin(c.deps, union.id, person("p"), followId())).member;
        // A third session holds the applicant's row, so both approvals read "pending" and then queue
        // on the row: what a slow transaction or two web requests at once would do.
        const holder = c.tdb.open();
        const conn1 = c.tdb.open();
        const conn2 = c.tdb.open();
        try {
          let release!: () => void;
          const held = new Promise<void>((r) => (release = r));
          let locked!: () => void;
          const isLocked = new Promise<void>((r) => (locked = r));
          const hold = holder.db.transaction().execute(async (trx) => {
            await trx.selectFrom("members").select("id").where("id", "=", p.id).forUpdate().execute();
            locked();
            await held;
          });
          await isLocked;
          const approvals = Promise.allSettled([
            approveMember({ ...c.deps, db: conn1.db }, union.id, p.id, { kind: "member", memberId: o1.id }),
            approveMember({ ...c.deps, db: conn2.db }, union.id, p.id, { kind: "member", memberId: o2.id }),
          ]);
          await new Promise((r) => setTimeout(r, 300));
          release();
          await hold;
          await approvals;
        } finally {
          await Promise.all([holder.close(), conn1.close(), conn2.close()]);
        }
        await checkTree(c.db, union.id);
        assert.deepEqual(await sizes(c, union.id, leader), [3]);
        assert.equal((await intentsFor(c, p.id)).filter((k) => k === "member.join").length, 1);
      }));
    }
  });
}

function consumeOnce(trx: Kysely<DB>, inv: Invite): Promise<boolean> {
  return consumeInvite(trx, inv.id, Date.now());
}

/** Two claimants of a one-use invite follow at the same moment, each from its own thread and connection. */
async function raceForLastUse(c: Ctx, slug = "riders") {
  const union = await makeUnion(c, slug, "invite");
  const leader = await activateLeader(c, union);
  const inv = await createInvite(c.deps, union.id, { by: OPERATOR, maxUses: 1 });
  const people = [person(`y-${slug}`), person(`z-${slug}`)];
  for (const p of people) await claimInviteForApplicant(c.deps, union.id, inv.code, p.handle!);
  const racers = await contenders(2);
  const results = await Promise.all(people.map((p, i) => racers[i]!.run(c.tdb.url, { op: "join", unionId: union.id, applicant: p, followId: followId() })));
  const outcomes = results.map((r) => r.ok ? String(r.value) : `error: ${r.error}`);
  return { union, leader, code: inv.code, outcomes };
}

// ---------------------------------------------------------------------------
// Invariants, recomputed from scratch.

interface Row {
  id: string;
  union_id: string;
  state: string;
  role: string;
  sponsor_id: string | null;
  subtree_size: number;
}

const inTree = (s: string) => s === "active" || s === "reserved";

/** Checks the stored tree of a union against a recomputation; returns depth by member id. */
async function checkTree(db: Kysely<DB>, unionId: string, context = ""): Promise<Map<string, number>> {
  const rows: Row[] = (await db.selectFrom("members").select(["id", "union_id", "state", "role", "sponsor_id", "subtree_size"]).where("union_id", "=", unionId).execute())
    .map((r) => ({ ...r, subtree_size: Number(r.subtree_size) }));
  const byId = new Map(rows.map((r) => [r.id, r]));
  const tree = rows.filter((r) => inTree(r.state));
  const actual = new Map(tree.map((r) => [r.id, 0]));
  const depth = new Map<string, number>();
  for (const r of tree) {
    const seen = new Set<string>([r.id]);
    let cur = r;
    let n = 0;
    while (cur.sponsor_id !== null) {
      const s = byId.get(cur.sponsor_id);
      assert.ok(s, `${context}: ${cur.id}'s sponsor ${cur.sponsor_id} is a member of this union`);
      assert.ok(inTree(s.state), `${context}: ${cur.id}'s sponsor ${s.id} is in the tree (it is ${s.state})`);
      assert.ok(!seen.has(s.id), `${context}: cycle through ${s.id}`);
      seen.add(s.id);
      if (r.state === "active") actual.set(s.id, actual.get(s.id)! + 1);
      cur = s;
      n++;
    }
    depth.set(r.id, n);
  }
  for (const r of tree) assert.equal(r.subtree_size, actual.get(r.id), `${context}: subtree_size of ${r.id} (${r.role})`);
  for (const r of rows.filter((x) => !inTree(x.state))) assert.equal(r.subtree_size, 0, `${context}: ${r.id} is out of the tree (${r.state}) and counts nobody`);
  const leaders = tree.filter((r) => r.role === "leader");
  assert.ok(leaders.length <= 1, `${context}: at most one leader in the tree`);
  if (leaders.length === 1) {
    const roots = tree.filter((r) => r.sponsor_id === null);
    assert.deepEqual(roots.map((r) => r.id), [leaders[0]!.id], `${context}: the leader is the only root`);
  }
  const invites = await db.selectFrom("invites").select(["code", "uses", "max_uses"]).where("union_id", "=", unionId).execute();
  for (const i of invites) assert.ok(i.max_uses === null || Number(i.uses) <= Number(i.max_uses), `${context}: invite ${i.code} over-used`);
  return depth;
}

// ---------------------------------------------------------------------------
// The random history.

interface ModelMember {
  id: string;
  actor: Applicant;
  state: string;
  sponsor: string | null;
  role: string;
}

async function randomHistory(c: Ctx, seed: number, target: number): Promise<{ steps: number; stats: Record<string, number> }> {
  const rnd = seededRandom(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)]!;
  const at = (step: number, what: string) => `seed ${seed}, step ${step} (${what})`;

  const union = await makeUnion(c, "big", "approval");
  const leader = await activateLeader(c, union);
  // A second union sharing some of the same people must not be disturbed.
  const side = await makeUnion(c, "side", "open");
  const sideLeader = await activateLeader(c, side);
  const sideModel = new Map<string, string>(); // actor → member id in the side union

  const model = new Map<string, ModelMember>([[leader.id, { id: leader.id, actor: LEADER, state: "active", sponsor: null, role: "leader" }]]);
  let people = 0;
  let joined = 0;
  const stats: Record<string, number> = {};
  const count = (k: string) => (stats[k] = (stats[k] ?? 0) + 1);

  const active = () => [...model.values()].filter((m) => m.state === "active");
  const activeNonLeader = () => active().filter((m) => m.role !== "leader");
  const descendantsOrSelf = (id: string): Set<string> => {
    const out = new Set<string>([id]);
    let grew = true;
    while (grew) {
      grew = false;
      for (const m of model.values()) {
        if (m.state === "active" && m.sponsor && out.has(m.sponsor) && !out.has(m.id)) {
          out.add(m.id);
          grew = true;
        }
      }
    }
    return out;
  };
  const detachModel = (m: ModelMember) => {
    for (const r of model.values()) if (r.state === "active" && r.sponsor === m.id) r.sponsor = m.sponsor;
  };
  /** A usable invite from `inviter`, making one if they may; undefined if they cannot invite now. */
  const inviteOf = async (inviter: ModelMember): Promise<string | undefined> => {
    const mine = (await listInvites(c.db, union.id, { createdBy: inviter.id })).filter((i) => inviteStatus(i) === "valid");
    if (mine.length > 0) return pick(mine).code;
    try {
      return (await createInvite(c.deps, union.id, { by: { kind: "member", memberId: inviter.id } })).code;
    } catch (e) {
      assert.ok(e instanceof MemberError && e.code === "forbidden" && inviter.role === "member", String(e));
      return undefined;
    }
  };

  let step = 0;
  for (; joined < target && step < target * 4; step++) {
    const r = rnd();
    if (r < 0.45 || activeNonLeader().length < 3) {
      // A newcomer, by invite (sponsor: the inviter) or by approval (sponsor: the approver).
      const p = person(`p${people++}`, pick(["a.example", "b.example", "c.example"]));
      const inviter = pick(active());
      const code = rnd() < 0.7 ? await inviteOf(inviter) : undefined;
      if (code) {
        const res = await inviteJoin(c, union.id, code, p);
        assert.equal(res.outcome, "accepted", at(step, "invite join"));
        assert.equal(res.member.sponsorId, inviter.id, at(step, "invite join sponsor"));
        model.set(res.member.id, { id: res.member.id, actor: p, state: "active", sponsor: inviter.id, role: "member" });
        count("join-invite");
      } else {
        const res = await requestToJoin(c.deps, union.id, p, followId());
        assert.equal(res.outcome, "pending", at(step, "approval join"));
        if (rnd() < 0.15) {
          await rejectMember(c.deps, union.id, res.member.id, OPERATOR, "no");
          model.set(res.member.id, { id: res.member.id, actor: p, state: "rejected", sponsor: null, role: "member" });
          count("rejected");
        } else {
          const officers = active().filter((m) => m.role === "officer");
          const approver = officers.length > 0 && rnd() < 0.6 ? pick(officers) : undefined;
          const m = await approveMember(c.deps, union.id, res.member.id, approver ? { kind: "member", memberId: approver.id } : OPERATOR);
          const expected = approver?.id ?? leader.id;
          assert.equal(m.sponsorId, expected, at(step, "approval sponsor"));
          model.set(m.id, { id: m.id, actor: p, state: "active", sponsor: expected, role: "member" });
          count("join-approval");
        }
      }
      if ([...model.values()].at(-1)!.state === "active") joined++;
      if (rnd() < 0.15) {
        const s = await requestToJoin(c.deps, side.id, p, followId());
        assert.equal(s.outcome, "accepted");
        sideModel.set(p.actorId, s.member.id);
      }
    } else if (r < 0.55) {
      // Someone who left (or was removed, or rejected) comes back with an invite.
      const gone = [...model.values()].filter((m) => m.state === "left" || m.state === "removed" || m.state === "rejected");
      if (gone.length === 0) continue;
      const m = pick(gone);
      const inviter = pick(active());
      const code = await inviteOf(inviter);
      if (!code) continue;
      const res = await inviteJoin(c, union.id, code, m.actor);
      assert.deepEqual([res.outcome, res.member.id, res.member.sponsorId], ["accepted", m.id, inviter.id], at(step, "rejoin"));
      Object.assign(m, { state: "active", sponsor: inviter.id, role: "member" });
      joined++;
      count("rejoin");
    } else if (r < 0.67) {
      const m = pick(activeNonLeader());
      const left = await leaveUnion(c.deps, union.id, m.actor.actorId, "left");
      assert.equal(left?.state, "left", at(step, "leave"));
      detachModel(m);
      Object.assign(m, { state: "left", role: "member" });
      count("leave");
    } else if (r < 0.75) {
      const m = pick(activeNonLeader());
      const expel = rnd() < 0.3;
      const removed = await removeMember(c.deps, union.id, m.id, OPERATOR, { reason: "random", expel });
      assert.equal(removed.state, expel ? "expelled" : "removed", at(step, "remove"));
      detachModel(m);
      Object.assign(m, { state: removed.state, role: "member" });
      count(expel ? "expel" : "remove");
    } else if (r < 0.92) {
      const m = pick(activeNonLeader());
      const to = pick(active());
      const cyclic = descendantsOrSelf(m.id).has(to.id);
      if (cyclic) {
        await refuses(moveMember(c.deps, union.id, m.id, to.id, OPERATOR), "conflict");
        count("move-refused");
      } else {
        const moved = await moveMember(c.deps, union.id, m.id, to.id, OPERATOR);
        assert.equal(moved.sponsorId, to.id, at(step, "move"));
        m.sponsor = to.id;
        count("move");
      }
    } else if (r < 0.96) {
      const m = pick(activeNonLeader());
      if (m.role === "officer") {
        await unsetOfficer(c.deps, union.id, m.id, OPERATOR);
        m.role = "member";
      } else {
        await setOfficer(c.deps, union.id, m.id, OPERATOR, `Portfolio ${step}`);
        m.role = "officer";
      }
      count("office");
    } else {
      const m = pick(activeNonLeader());
      const to = person(`moved${step}`, "moved.example");
      const migrated = await migrateMember(c.deps, union.id, m.actor.actorId, to, followId());
      assert.deepEqual([migrated?.id, migrated?.sponsorId], [m.id, m.sponsor], at(step, "migrate"));
      m.actor = to;
      count("migrate");
    }

    if (step % 25 === 0) await compareWithModel(c, union.id, model, at(step, "periodic check"));
  }
  assert.ok(joined >= target, `seed ${seed}: only ${joined} joins in ${step} steps`);
  const depth = await compareWithModel(c, union.id, model, `seed ${seed}, final`);
  // The recursive queries agree with the recomputation.
  const listed = await listMembers(c.db, union.id, { states: ["active", "reserved"] });
  for (const m of listed) assert.equal(m.depth, depth.get(m.id), `seed ${seed}: listMembers depth of ${m.id}`);
  for (const m of active().slice(0, 20)) {
    assert.equal(await depthOf(c.db, m.id), depth.get(m.id), `seed ${seed}: depthOf ${m.id}`);
    assert.equal((await sponsorChain(c.db, m.id)).at(-1)?.id, leader.id, `seed ${seed}: ${m.id}'s chain ends at the leader`);
  }
  assert.ok((stats["move"] ?? 0) > 5 && (stats["move-refused"] ?? 0) > 0 && (stats["leave"] ?? 0) > 5 && (stats["rejoin"] ?? 0) > 0, `seed ${seed}: the history covered every operation: ${JSON.stringify(stats)}`);

  // The side union is untouched by all of it.
  await checkTree(c.db, side.id, `seed ${seed}, side union`);
  assert.equal((await fresh(c, side.id, sideLeader.id)).subtreeSize, sideModel.size);
  assert.equal(await countMembers(c.db, side.id), sideModel.size + 1);
  return { steps: step, stats };
}

async function compareWithModel(c: Ctx, unionId: string, model: Map<string, ModelMember>, context: string): Promise<Map<string, number>> {
  const depth = await checkTree(c.db, unionId, context);
  const rows = await c.db.selectFrom("members").select(["id", "state", "sponsor_id", "role", "actor_id"]).where("union_id", "=", unionId).execute();
  assert.equal(rows.length, model.size, `${context}: member rows`);
  for (const r of rows) {
    const m = model.get(r.id);
    assert.ok(m, `${context}: unexpected member ${r.id}`);
    assert.deepEqual(
      { state: r.state, role: r.role, actor: r.actor_id, sponsor: inTree(r.state) ? r.sponsor_id : "(out)" },
      { state: m.state, role: m.role, actor: m.actor.actorId, sponsor: inTree(m.state) ? m.sponsor : "(out)" },
      `${context}: member ${r.id}`,
    );
  }
  return depth;
}
