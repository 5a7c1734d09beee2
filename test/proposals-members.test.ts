import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { dialects } from "./helpers/databases.ts";
import { followId, LEADER, person, sharedKeys, withCtx, type Ctx } from "./helpers/domain-context.ts";
import { changeBylaws } from "../src/bylaws/bylaws.ts";
import {
  castVote, closeProposal, createProposal, delegateVote, delegationsOf, NO, type Proposal, ProposalError, tallyOf, withdrawDelegation, YES,
} from "../src/bylaws/proposals.ts";
import { delegationState } from "../src/bylaws/proposing.ts";
import { readVoters } from "../src/bylaws/turnout.ts";
import { createUnion, getUnionById, type Union } from "../src/unions/unions.ts";
import { getMember, type Member, OPERATOR } from "../src/members/members.ts";
import { requestToJoin, setOfficer } from "../src/members/membership.ts";
import { moveMember, movesOf, sponsorChain } from "../src/members/tree.ts";
import { readModerators } from "../src/members/roster.ts";

// Issue 14, the members' side in the domain: what an election for leader and
// a recall do to the sponsor tree, the roles and the moderators.

const override = { kind: "operator", reason: "test setup" } as const;
const SOON = () => new Date(Date.now() + 60_000);
const web = { kind: "web" } as const;
const asMember = (m: Member) => ({ kind: "member", memberId: m.id }) as const;

interface World { union: Union; lead: Member; members: Member[] }

async function world(c: Ctx, n: number, params: Record<string, unknown> = {}): Promise<World> {
  const union = await createUnion({ db: c.db, events: c.deps.events, generateKeys: sharedKeys }, { slug: "riders", name: "Riders", purpose: "Fair pay", leaderHandle: LEADER.handle, joinPolicy: "open" });
  await changeBylaws(c.deps, union.id, override, { params: { quorumPercent: 0, membersVisibility: "public", ...params } });
  const lead = (await requestToJoin(c.deps, union.id, LEADER, followId())).member;
  const members: Member[] = [];
  for (let i = 0; i < n; i++) members.push((await requestToJoin(c.deps, union.id, person(`m${i}`), followId())).member);
  await new Promise((r) => setTimeout(r, 5));
  return { union, lead, members };
}

async function closeNow(c: Ctx, p: Proposal): Promise<Proposal> {
  const closed = await closeProposal(c.deps, p.unionId, p.id, { force: true });
  assert.ok(closed);
  return closed;
}

/** The tree as stored: every member in it reaches one root without a cycle, and each subtree_size is its real count of descendants. */
async function checkTree(c: Ctx, unionId: string): Promise<{ root: string; sponsorOf: Map<string, string | null> }> {
  const rows = await c.db.selectFrom("members").select(["id", "sponsor_id", "subtree_size"]).where("union_id", "=", unionId).where("state", "in", ["active", "reserved"]).execute();
  const sponsorOf = new Map(rows.map((r) => [r.id, r.sponsor_id]));
  const below = new Map(rows.map((r) => [r.id, 0]));
  const roots = new Set<string>();
  for (const r of rows) {
    const seen = new Set([r.id]);
    for (let at = sponsorOf.get(r.id) ?? null; at !== null; at = sponsorOf.get(at) ?? null) {
      assert.ok(!seen.has(at), `a cycle through ${at}`);
      seen.add(at);
      below.set(at, below.get(at)! + 1);
    }
    roots.add([...seen].at(-1)!);
  }
  assert.equal(roots.size, 1, `one root, not ${roots.size}`);
  for (const r of rows) assert.equal(Number(r.subtree_size), below.get(r.id), `subtree_size of ${r.id}`);
  return { root: [...roots][0]!, sponsorOf };
}

async function elect(c: Ctx, w: World, role: "leader" | "officer", candidate: Member, voters: readonly Member[]): Promise<Proposal> {
  const p = await createProposal(c.deps, w.union.id, asMember(voters[0]!), { kind: "election", title: `Elect a ${role}`, role, portfolio: role === "officer" ? "Treasurer" : null, candidates: [candidate.id], closesAt: SOON() });
  for (const v of voters) assert.deepEqual(await castVote(c.deps, w.union.id, p.id, { memberId: v.id }, [candidate.handle!], web), { counted: true });
  return closeNow(c, p);
}

for (const d of dialects) {
  describe(`leadership by vote on ${d.name}`, { skip: d.skip }, () => {
    it("an elected leader becomes the root of the tree; the old root goes under them; everyone else keeps their sponsor", () => withCtx(d, async (c) => {
      // lead -> a -> b -> e, and lead -> dd (open joins go under the leader; moves build the rest).
      const w = await world(c, 4);
      const [a, b, dd, e] = w.members as [Member, Member, Member, Member];
      await moveMember(c.deps, w.union.id, b.id, a.id, OPERATOR);
      await moveMember(c.deps, w.union.id, e.id, b.id, OPERATOR);
      await checkTree(c, w.union.id);
      const before = new Map((await c.db.selectFrom("members").select(["id", "sponsor_id"]).where("union_id", "=", w.union.id).execute()).map((r) => [r.id, r.sponsor_id]));

      const closed = await elect(c, w, "leader", b, [a, dd, e]);
      assert.equal(closed.state, "passed", closed.outcome?.reason);
      assert.equal(closed.outcome?.winner, b.id);

      const { root, sponsorOf } = await checkTree(c, w.union.id);
      assert.equal(root, b.id, "the new leader is the root");
      assert.equal(sponsorOf.get(w.lead.id), b.id, "the old root is under the new leader");
      for (const [id, s] of before) if (id !== b.id && id !== w.lead.id) assert.equal(sponsorOf.get(id), s, `${id} keeps their sponsor`);
      assert.deepEqual((await sponsorChain(c.db, a.id)).map((m) => m.id), [a.id, w.lead.id, b.id]);
      assert.equal((await getMember(c.db, w.union.id, b.id))!.subtreeSize, 4);
      assert.equal((await getMember(c.db, w.union.id, a.id))!.subtreeSize, 0, "b's branch left a with b");
      // The two links that changed are recorded, so who recruited whom stays readable.
      assert.deepEqual((await movesOf(c.db, w.union.id, b.id)).at(-1), { memberId: b.id, fromSponsorId: a.id, toSponsorId: null, reason: "elected_leader", at: (await movesOf(c.db, w.union.id, b.id)).at(-1)!.at });
      assert.deepEqual((await movesOf(c.db, w.union.id, w.lead.id)).map((m) => [m.fromSponsorId, m.toSponsorId, m.reason]), [[null, b.id, "leader_succeeded"]]);

      // Roles, the union's face and the moderators follow, in the same transaction as the result.
      assert.deepEqual([(await getMember(c.db, w.union.id, b.id))!.role, (await getMember(c.db, w.union.id, w.lead.id))!.role], ["leader", "officer"]);
      assert.equal((await getUnionById(c.db, w.union.id))!.leaderHandle, b.handle);
      const union = (await getUnionById(c.db, w.union.id))!;
      assert.deepEqual(await readModerators(c.db, union, { via: "web" }), { ok: true, actorIds: [person("m1").actorId, LEADER.actorId] });

      // The leader cannot be moved under anyone now; a newcomer joins under the new leader.
      await assert.rejects(moveMember(c.deps, w.union.id, b.id, a.id, OPERATOR), /root/);
      const late = (await requestToJoin(c.deps, w.union.id, person("late"), followId())).member;
      assert.equal(late.sponsorId, b.id);
      await checkTree(c, w.union.id);
    }));

    it("electing the sitting root again changes nothing in the tree; a recall removes the leader from office and the moderators, the tree keeps its root", () => withCtx(d, async (c) => {
      const w = await world(c, 3);
      const [a, b, cc] = w.members as [Member, Member, Member];
      await setOfficer(c.deps, w.union.id, a.id, OPERATOR, "Treasurer");
      const again = await elect(c, w, "leader", w.lead, [a, b]);
      assert.equal(again.state, "passed", again.outcome?.reason);
      assert.deepEqual(await movesOf(c.db, w.union.id, w.lead.id), [], "already the root: nothing moved");

      const recall = await createProposal(c.deps, w.union.id, asMember(b), { kind: "recall", title: "Recall the leader", memberId: w.lead.id, closesAt: SOON() });
      for (const v of [a, b, cc]) await castVote(c.deps, w.union.id, recall.id, { memberId: v.id }, ["Yes"], web);
      const r = await closeNow(c, recall);
      assert.equal(r.state, "passed", r.outcome?.reason);
      const lead = (await getMember(c.db, w.union.id, w.lead.id))!;
      assert.deepEqual([lead.role, lead.portfolio, lead.state], ["member", null, "active"]);
      assert.equal((await getUnionById(c.db, w.union.id))!.leaderHandle, null);
      const union = (await getUnionById(c.db, w.union.id))!;
      assert.deepEqual(await readModerators(c.db, union, { via: "web" }), { ok: true, actorIds: [person("m0").actorId] }, "only the officer moderates now");
      // No leader: the tree keeps its root (the recalled leader, without power), and newcomers still join inside it.
      const { root } = await checkTree(c, w.union.id);
      assert.equal(root, w.lead.id);
      const late = (await requestToJoin(c.deps, w.union.id, person("late"), followId())).member;
      assert.equal(late.sponsorId, w.lead.id, "a join with no leader goes under the tree's root, not beside it");
      await checkTree(c, w.union.id);
      // A recall of someone with no office is refused up front.
      await assert.rejects(createProposal(c.deps, w.union.id, asMember(b), { kind: "recall", title: "x", memberId: cc.id }), /holds no office/);
      // The next elected leader takes the root, with the recalled one under them.
      const next = await elect(c, w, "leader", cc, [a, b, cc]);
      assert.equal(next.state, "passed", next.outcome?.reason);
      const after = await checkTree(c, w.union.id);
      assert.deepEqual([after.root, after.sponsorOf.get(w.lead.id)], [cc.id, cc.id]);
      assert.equal((await getMember(c.db, w.union.id, w.lead.id))!.role, "member", "a plain member stays a plain member");
    }));
  });

  describe(`delegation per kind on ${d.name}`, { skip: d.skip }, () => {
    const resolution = (c: Ctx, w: World, by: Member) => createProposal(c.deps, w.union.id, asMember(by), { kind: "resolution", title: "Strike", closesAt: SOON() });
    const spend = (c: Ctx, w: World, by: Member) => createProposal(c.deps, w.union.id, asMember(by), { kind: "spend", title: "Fund", amount: "5", recipient: "Co-op", closesAt: SOON() });
    const yesNo = async (c: Ctx, p: Proposal) => (await tallyOf(c.db, p)).options.slice(0, 2).map((o) => [o.direct, o.delegated]);

    it("a delegation for one kind wins over one for all; withdrawing it falls back to the one for all; changing one replaces it", () => withCtx(d, async (c) => {
      const w = await world(c, 4, { delegation: "opt_in" });
      const [a, b, cc, dd] = w.members as [Member, Member, Member, Member];
      await delegateVote(c.deps, w.union.id, asMember(a), b.id);
      await delegateVote(c.deps, w.union.id, asMember(a), cc.id, "resolution");
      const res = await resolution(c, w, dd);
      const sp = await spend(c, w, dd);
      for (const p of [res, sp]) {
        await castVote(c.deps, w.union.id, p.id, { memberId: b.id }, [YES], web);
        await castVote(c.deps, w.union.id, p.id, { memberId: cc.id }, [NO], web);
      }
      assert.deepEqual(await yesNo(c, res), [[1, 0], [1, 1]], "on a resolution a follows cc (No)");
      assert.deepEqual(await yesNo(c, sp), [[1, 1], [1, 0]], "on a spend a follows b (Yes), the delegation for all");
      assert.equal(await withdrawDelegation(c.deps, w.union.id, asMember(a), "resolution"), true);
      assert.deepEqual(await yesNo(c, res), [[1, 1], [1, 0]], "without the resolution delegation, the one for all applies");
      assert.equal(await withdrawDelegation(c.deps, w.union.id, asMember(a), "resolution"), false, "nothing left to withdraw");
      // Changing the delegation for all replaces it: one delegation per scope.
      await delegateVote(c.deps, w.union.id, asMember(a), cc.id);
      assert.deepEqual(await delegationsOf(c.db, w.union.id, a.id), [{ scope: "all", delegateId: cc.id }]);
      assert.deepEqual(await yesNo(c, sp), [[1, 0], [1, 1]]);
      // The form's state: the sponsor (the leader, for an open join) is suggested; the delegation shown.
      const state = await delegationState(c.db, w.union.id, (await getMember(c.db, w.union.id, a.id))!);
      assert.deepEqual([state.allowed, state.suggested?.id, state.current.map((x) => [x.scope, x.delegate.id])], [true, w.lead.id, [["all", cc.id]]]);
    }));

    it("cycles are refused, per kind and through delegations for all, and nothing is stored", () => withCtx(d, async (c) => {
      const w = await world(c, 4, { delegation: "opt_in" });
      const [a, b, cc] = w.members as [Member, Member, Member, Member];
      const cycle = (e: unknown) => e instanceof ProposalError && e.code === "conflict" && /would make a cycle/.test(e.message);
      await delegateVote(c.deps, w.union.id, asMember(a), b.id);
      // b -> a for resolutions: a's delegation for all covers resolutions, so a -> b -> a.
      await assert.rejects(delegateVote(c.deps, w.union.id, asMember(b), a.id, "resolution"), cycle);
      // a delegates spends to cc instead: then b -> a for spends is no cycle (a -> cc on spends)...
      await delegateVote(c.deps, w.union.id, asMember(a), cc.id, "spend");
      await delegateVote(c.deps, w.union.id, asMember(b), a.id, "spend");
      // ...but cc -> b for spends closes b -> a -> cc -> b.
      await assert.rejects(delegateVote(c.deps, w.union.id, asMember(cc), b.id, "spend"), cycle);
      // And cc -> b for all would close it on spends too, even though no kind-specific edge of cc's is involved.
      await assert.rejects(delegateVote(c.deps, w.union.id, asMember(cc), b.id), cycle);
      // cc -> b for resolutions is fine: a -> b on resolutions, b has no delegation for them.
      await delegateVote(c.deps, w.union.id, asMember(cc), b.id, "resolution");
      assert.deepEqual(await delegationsOf(c.db, w.union.id, cc.id), [{ scope: "resolution", delegateId: b.id }], "the refused ones left nothing");
      await assert.rejects(delegateVote(c.deps, w.union.id, asMember(a), b.id, "nonsense" as never), /for all proposals or one kind/);
      // Counting follows the kind's delegations: on a resolution a (for all) and cc (for resolutions) count through b.
      const p = await resolution(c, w, w.lead);
      await castVote(c.deps, w.union.id, p.id, { memberId: b.id }, [YES], web);
      const t = await tallyOf(c.db, p);
      assert.deepEqual([t.options[0]!.direct, t.options[0]!.delegated, t.delegatedVoters], [1, 2, 2], "a and cc through b");
    }));

    it("withdrawing before close changes the result; after close nothing changes it", () => withCtx(d, async (c) => {
      const w = await world(c, 4, { delegation: "opt_in" });
      const [a, b, cc, dd] = w.members as [Member, Member, Member, Member];
      for (const m of [a, b]) await delegateVote(c.deps, w.union.id, asMember(m), cc.id);
      const p1 = await resolution(c, w, dd);
      await castVote(c.deps, w.union.id, p1.id, { memberId: cc.id }, [YES], web);
      await castVote(c.deps, w.union.id, p1.id, { memberId: dd.id }, [NO], web);
      await castVote(c.deps, w.union.id, p1.id, { memberId: w.lead.id }, [NO], web);
      // 3 yes (cc + a, b delegated) to 2 no; withdrawing a and b's delegations before close: 1 to 2.
      assert.deepEqual(await yesNo(c, p1), [[1, 2], [2, 0]]);
      for (const m of [a, b]) await withdrawDelegation(c.deps, w.union.id, asMember(m));
      const closed = await closeNow(c, p1);
      assert.equal(closed.state, "failed");
      assert.match(closed.outcome!.reason, /1 yes, 2 no/);
      // Delegating again after close does not reopen or recount it.
      for (const m of [a, b]) await delegateVote(c.deps, w.union.id, asMember(m), cc.id);
      assert.equal(await closeProposal(c.deps, w.union.id, p1.id, { force: true }), undefined);
      const p = (await c.db.selectFrom("proposals").select(["state", "outcome"]).where("id", "=", p1.id).executeTakeFirstOrThrow());
      assert.equal(p.state, "failed");
      assert.match(JSON.parse(p.outcome!).reason, /1 yes, 2 no/);
    }));
  });

  describe(`who voted, not how, on ${d.name}`, { skip: d.skip }, () => {
    it("members who may see the roster see who voted; ballots only when votes were public at opening; others are refused", () => withCtx(d, async (c) => {
      const w = await world(c, 3, { membersVisibility: "signed-in" });
      const [a, b, cc] = w.members as [Member, Member, Member];
      await setOfficer(c.deps, w.union.id, cc.id, OPERATOR, "Secretary");
      const secret = await createProposal(c.deps, w.union.id, asMember(a), { kind: "resolution", title: "Secret", closesAt: SOON() });
      await castVote(c.deps, w.union.id, secret.id, { memberId: b.id }, [NO], web);
      await castVote(c.deps, w.union.id, secret.id, { memberId: a.id }, [YES], web);
      const union = async () => (await getUnionById(c.db, w.union.id))!;
      const member = async (m: Member) => ({ via: "web", member: (await getMember(c.db, w.union.id, m.id))! }) as const;

      const seen = await readVoters(c.db, await union(), secret, await member(cc));
      assert.ok(seen.ok);
      assert.equal(seen.public, false);
      assert.deepEqual(seen.voters.map((v) => [v.handle, v.choices]), [[person("m1").handle, undefined], [person("m0").handle, undefined]], "who, in order of voting; not how");
      assert.deepEqual(await readVoters(c.db, await union(), secret, { via: "web" }), { ok: false, refused: "not_member" });
      assert.deepEqual(await readVoters(c.db, await union(), secret, { via: "federation", actorId: "https://evil.example/users/x" }), { ok: false, refused: "roster_hidden" });
      assert.ok((await readVoters(c.db, await union(), secret, "operator")).ok);

      // The roster shown to officers only: a member no longer sees the names; the officer does.
      await changeBylaws(c.deps, w.union.id, override, { params: { membersVisibility: "officers" } });
      assert.deepEqual(await readVoters(c.db, await union(), secret, await member(b)), { ok: false, refused: "roster_hidden" });
      assert.equal((await readVoters(c.db, await union(), secret, await member(cc))).ok, true);

      // Votes made public: a proposal opened from now shows each ballot; the earlier one stays secret.
      await changeBylaws(c.deps, w.union.id, override, { params: { voteVisibility: "public", membersVisibility: "signed-in" } });
      const open = await createProposal(c.deps, w.union.id, asMember(a), { kind: "election", title: "Two officers", role: "officer", portfolio: "Comms", candidates: [a.id, b.id], closesAt: SOON() });
      await castVote(c.deps, w.union.id, open.id, { memberId: cc.id }, [person("m1").handle!, person("m0").handle!], web);
      const shown = await readVoters(c.db, await union(), open, await member(b));
      assert.ok(shown.ok && shown.public);
      assert.deepEqual(shown.voters.map((v) => [v.handle, v.choices]), [[person("m2").handle, [person("m0").handle, person("m1").handle]]]);
      const still = await readVoters(c.db, await union(), secret, await member(b));
      assert.ok(still.ok && !still.public && still.voters.every((v) => v.choices === undefined), "ballots cast under turnout-only stay secret");
    }));
  });
}
