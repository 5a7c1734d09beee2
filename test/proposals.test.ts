import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { dialects } from "./helpers/databases.ts";
import { followId, LEADER, person, sharedKeys, withCtx, type Ctx } from "./helpers/domain-context.ts";
import { changeBylaws, readBylaws } from "../src/bylaws/bylaws.ts";
import {
  ABSTAIN, approvedSpends, ballotOf, castVote, closeDue, closeProposal, createProposal, delegateVote, describeOutcome, getProposal, NO, type Proposal,
  ProposalError, tallyOf, votersOf, withdrawDelegation, YES,
} from "../src/bylaws/proposals.ts";
import { createUnion, getUnionById, type Union } from "../src/unions/unions.ts";
import { getMember, type Member, OPERATOR } from "../src/members/members.ts";
import { requestToJoin, setOfficer } from "../src/members/membership.ts";
import { createInvite, placesHeld, welcomePlaces } from "../src/members/invites.ts";
import { recordedIntents } from "./helpers/membership-worker.ts";
import { chainOf, verifyChain } from "../src/actions/chain.ts";
import { voterPseudonym } from "../src/bylaws/proposal-chain.ts";
import { readModerators } from "../src/members/roster.ts";

const override = { kind: "operator", reason: "test setup" } as const;
const SOON = () => new Date(Date.now() + 60_000);

interface World { union: Union; lead: Member; members: Member[] }

/** A union with the leader and `n` members, all joined a moment ago, and the given bylaws. */
async function world(c: Ctx, n: number, params: Record<string, unknown> = {}): Promise<World> {
  const union = await createUnion({ db: c.db, events: c.deps.events, generateKeys: sharedKeys }, { slug: "riders", name: "Riders", purpose: "Fair pay", leaderHandle: LEADER.handle, joinPolicy: "open" });
  if (Object.keys(params).length) await changeBylaws(c.deps, union.id, override, { params });
  const lead = (await requestToJoin(c.deps, union.id, LEADER, followId())).member;
  const members: Member[] = [];
  for (let i = 0; i < n; i++) members.push((await requestToJoin(c.deps, union.id, person(`m${i}`), followId())).member);
  await new Promise((r) => setTimeout(r, 5));
  return { union, lead, members };
}

const asMember = (m: Member) => ({ kind: "member", memberId: m.id }) as const;
const web = { kind: "web" } as const;
const note = (id: string) => ({ kind: "activity", id: `https://remote.example/votes/${id}` }) as const;

async function resolution(c: Ctx, w: World, closesAt = SOON()): Promise<Proposal> {
  return createProposal(c.deps, w.union.id, asMember(w.lead), { kind: "resolution", title: "Strike on Friday", closesAt });
}

async function closeNow(c: Ctx, p: Proposal): Promise<Proposal> {
  const closed = await closeProposal(c.deps, p.unionId, p.id, { force: true });
  assert.ok(closed);
  return closed;
}

for (const d of dialects) {
  describe(`proposals on ${d.name}`, { skip: d.skip }, () => {
    it("quorum met exactly passes; missed by one fails", () => withCtx(d, async (c) => {
      // 10 eligible (leader + 9), quorum 30 %: 3 voters meet it, 2 do not.
      const w = await world(c, 9, { quorumPercent: 30 });
      const met = await resolution(c, w);
      assert.equal(met.eligibleCount, 10);
      for (const m of w.members.slice(0, 2)) assert.deepEqual(await castVote(c.deps, w.union.id, met.id, { memberId: m.id }, [YES], web), { counted: true });
      await castVote(c.deps, w.union.id, met.id, { memberId: w.members[2]!.id }, [ABSTAIN], web);
      const closed = await closeNow(c, met);
      assert.equal(closed.state, "passed", closed.outcome?.reason);
      const missed = await resolution(c, w);
      for (const m of w.members.slice(0, 2)) await castVote(c.deps, w.union.id, missed.id, { memberId: m.id }, [YES], web);
      const failed = await closeNow(c, missed);
      assert.equal(failed.state, "failed");
      assert.match(failed.outcome!.reason, /quorum missed: 2 of 10/);
    }));

    it("a tie fails; two-thirds for amendments is enforced", () => withCtx(d, async (c) => {
      const w = await world(c, 6, { quorumPercent: 0 });
      const tie = await resolution(c, w);
      await castVote(c.deps, w.union.id, tie.id, { memberId: w.members[0]!.id }, [YES], web);
      await castVote(c.deps, w.union.id, tie.id, { memberId: w.members[1]!.id }, [NO], web);
      assert.match((await closeNow(c, tie)).outcome!.reason, /^tie/);
      const amend = await createProposal(c.deps, w.union.id, asMember(w.members[0]!), { kind: "amendment", title: "Fewer invites", params: { memberInviteLimit: 2 }, closesAt: SOON() });
      // 3 yes, 2 no = 60 %: a majority but not two thirds.
      for (const [i, v] of [[0, YES], [1, YES], [2, YES], [3, NO], [4, NO]] as const) await castVote(c.deps, w.union.id, amend.id, { memberId: w.members[i]!.id }, [v], web);
      const r = await closeNow(c, amend);
      assert.equal(r.state, "failed");
      assert.match(r.outcome!.reason, /two thirds needed/);
      assert.equal((await readBylaws(c.db, w.union.id)).params.memberInviteLimit, 5);
    }));

    it("hostile and mistaken votes change nothing and say why", () => withCtx(d, async (c) => {
      const w = await world(c, 2, { quorumPercent: 0 });
      const p = await resolution(c, w);
      const late = (await requestToJoin(c.deps, w.union.id, person("late"), followId())).member;
      const cases: [Parameters<typeof castVote>[3], string[], Parameters<typeof castVote>[5], RegExp][] = [
        [{ actorId: "https://evil.example/users/mallory" }, [YES], note("x1"), /not a member/],
        [{ memberId: late.id }, [YES], web, /joined after the vote opened/],
        [{ memberId: w.members[0]!.id }, ["Maybe"], note("x2"), /unknown option "Maybe"/],
        [{ memberId: w.members[0]!.id }, [YES, NO], web, /takes one option/],
        [{ memberId: w.members[0]!.id }, [], web, /no option/],
      ];
      for (const [voter, choices, source, why] of cases) {
        const r = await castVote(c.deps, w.union.id, p.id, voter, choices, source);
        assert.ok(!r.counted && why.test(r.reason), `${JSON.stringify(voter)} ${choices}: ${JSON.stringify(r)}`);
      }
      // A poll answer, its repeated delivery, and a second answer that tries to change it.
      const actor = person("m0").actorId;
      assert.deepEqual(await castVote(c.deps, w.union.id, p.id, { actorId: actor }, [YES], note("v1")), { counted: true });
      assert.match((await castVote(c.deps, w.union.id, p.id, { actorId: actor }, [YES], note("v1")) as { reason: string }).reason, /repeated delivery/);
      assert.match((await castVote(c.deps, w.union.id, p.id, { actorId: actor }, [NO], note("v2")) as { reason: string }).reason, /cannot be changed/);
      // On the web the member may change it.
      assert.deepEqual(await castVote(c.deps, w.union.id, p.id, { memberId: w.members[0]!.id }, [NO], web), { counted: true });
      assert.deepEqual(await ballotOf(c.db, p.id, w.members[0]!.id), [NO]);
      // After the end time nothing counts.
      const r = await castVote(c.deps, w.union.id, p.id, { memberId: w.members[1]!.id }, [YES], web, p.closesAt.getTime());
      assert.ok(!r.counted && /closed/.test(r.reason));
      const t = await tallyOf(c.db, p);
      assert.deepEqual(t.options.map((o) => o.direct), [0, 1, 0]);
      assert.deepEqual(await votersOf(c.db, p.id), [w.members[0]!.id]);
    }));

    it("delegation: chains resolve, a cycle is refused, a delegator who votes overrides, withdrawal works", () => withCtx(d, async (c) => {
      const w = await world(c, 5, { quorumPercent: 0, delegation: "opt_in" });
      const [a, b, cc, dd, e] = w.members as [Member, Member, Member, Member, Member];
      await delegateVote(c.deps, w.union.id, asMember(a), b.id);
      await delegateVote(c.deps, w.union.id, asMember(b), cc.id);
      await delegateVote(c.deps, w.union.id, asMember(dd), a.id, "resolution");
      await assert.rejects(delegateVote(c.deps, w.union.id, asMember(cc), dd.id), (err: unknown) => err instanceof ProposalError && /cycle/.test(err.message));
      await assert.rejects(delegateVote(c.deps, w.union.id, asMember(e), e.id), /themselves/);
      await assert.rejects(delegateVote(c.deps, w.union.id, OPERATOR, e.id), /only a member/);
      const p = await resolution(c, w);
      await castVote(c.deps, w.union.id, p.id, { memberId: cc.id }, [YES], web);
      let t = await tallyOf(c.db, p);
      // cc votes yes for themselves, and for b, a and dd (dd -> a -> b -> cc).
      assert.deepEqual(t.options[0], { text: YES, direct: 1, delegated: 3 });
      assert.equal(t.delegatedVoters, 3);
      await castVote(c.deps, w.union.id, p.id, { memberId: a.id }, [NO], web);
      t = await tallyOf(c.db, p);
      // a now votes no for themselves and for dd; b still follows cc.
      assert.deepEqual(t.options.slice(0, 2).map((o) => [o.direct, o.delegated]), [[1, 1], [1, 1]]);
      assert.equal(await withdrawDelegation(c.deps, w.union.id, asMember(b)), true);
      t = await tallyOf(c.db, p);
      assert.deepEqual(t.options[0], { text: YES, direct: 1, delegated: 0 });
      // Off in the bylaws: no delegating.
      await changeBylaws(c.deps, w.union.id, override, { params: { delegation: "off" } });
      await assert.rejects(delegateVote(c.deps, w.union.id, asMember(e), a.id), /do not allow/);
    }));

    it("a passed amendment is in force at once: the next invite obeys the new limit", () => withCtx(d, async (c) => {
      const w = await world(c, 3, { quorumPercent: 50 });
      const p = await createProposal(c.deps, w.union.id, asMember(w.members[0]!), { kind: "amendment", title: "Bigger welcomes", params: { memberInviteLimit: 8 }, closesAt: SOON() });
      assert.deepEqual(p.change, { kind: "amendment", params: { memberInviteLimit: 8 } });
      for (const m of w.members) await castVote(c.deps, w.union.id, p.id, { memberId: m.id }, [YES], web);
      assert.equal(await closeProposal(c.deps, w.union.id, p.id), undefined, "not due yet");
      const [closed] = await closeDue(c.deps, p.closesAt.getTime());
      assert.equal(closed?.state, "passed");
      const b = await readBylaws(c.db, w.union.id);
      assert.deepEqual([b.params.memberInviteLimit, b.source, closed!.outcome!.bylawsVersion], [8, { kind: "proposal", proposalId: p.id }, b.version]);
      assert.equal((await getUnionById(c.db, w.union.id))!.memberInviteLimit, 8);
      // Up to 8 places of one's own invites fit; one more does not. Welcome places are not counted
      // against the limit (main's rule in createInviteWith), so they are left out here too.
      const held = await placesHeld(c.db, w.union.id, w.members[0]!.id) - await welcomePlaces(c.db, w.union.id, w.members[0]!.id);
      assert.ok(held < 3, "with the old limit of 5 the invite below would have been refused");
      await createInvite(c.deps, w.union.id, { by: asMember(w.members[0]!), maxUses: 8 - held });
      await assert.rejects(createInvite(c.deps, w.union.id, { by: asMember(w.members[0]!) }), /open for 8 people/);
      assert.deepEqual(await closeDue(c.deps, Date.now() + 3600_000), [], "closing again does nothing");
    }));

    it("a recall removes an officer; an election makes one; a spend is recorded as approved", () => withCtx(d, async (c) => {
      const w = await world(c, 3, { quorumPercent: 0 });
      const [a, b] = w.members as [Member, Member];
      await setOfficer(c.deps, w.union.id, a.id, OPERATOR, "Treasurer");
      const moderators = async () => {
        const r = await readModerators(c.db, (await getUnionById(c.db, w.union.id))!, { via: "web", member: b });
        assert.ok(r.ok);
        return r.actorIds;
      };
      assert.ok((await moderators()).includes(person("m0").actorId), "the officer moderates before the recall");
      const recall = await createProposal(c.deps, w.union.id, asMember(b), { kind: "recall", title: "Recall the treasurer", memberId: a.id, closesAt: SOON() });
      await castVote(c.deps, w.union.id, recall.id, { memberId: b.id }, [YES], web);
      const recalled = await closeNow(c, recall);
      assert.equal(recalled.state, "passed");
      assert.deepEqual([(await getMember(c.db, w.union.id, a.id))!.role, (await getMember(c.db, w.union.id, a.id))!.portfolio], ["member", null]);
      assert.ok(!(await moderators()).includes(person("m0").actorId), "the recalled officer leaves the moderators collection");
      assert.deepEqual(await describeOutcome(c.db, recalled), [
        `Proposal #1 "Recall the treasurer" passed: 1 yes, 0 no (two thirds needed).`,
        "Votes: Yes 1, No 0, Abstain 0. 1 of 4 eligible members voted; quorum 0% met.",
        `${person("m0").handle} is no longer an officer.`,
      ]);

      const election = await createProposal(c.deps, w.union.id, asMember(b), { kind: "election", title: "New treasurer", role: "officer", portfolio: "Treasurer", candidates: [a.id, b.id], closesAt: SOON() });
      assert.deepEqual([election.multiple, election.options], [true, [person("m0").handle, person("m1").handle]]);
      await castVote(c.deps, w.union.id, election.id, { memberId: a.id }, [person("m0").handle!, person("m1").handle!], web);
      await castVote(c.deps, w.union.id, election.id, { actorId: person("m1").actorId }, [person("m1").handle!], note("e1"));
      const won = await closeNow(c, election);
      assert.equal(won.state, "passed", won.outcome?.reason);
      assert.equal(won.outcome!.winner, b.id);
      assert.deepEqual([(await getMember(c.db, w.union.id, b.id))!.role, (await getMember(c.db, w.union.id, b.id))!.portfolio], ["officer", "Treasurer"]);
      assert.equal((await describeOutcome(c.db, won))!.at(-1), `${person("m1").handle} is elected officer (Treasurer).`);

      const spend = await createProposal(c.deps, w.union.id, asMember(b), { kind: "spend", title: "Legal fund", amount: "2500000", recipient: "Lawyers Co-op", closesAt: SOON() });
      await castVote(c.deps, w.union.id, spend.id, { memberId: a.id }, [YES], web);
      assert.equal((await describeOutcome(c.db, await closeNow(c, spend)))!.at(-1), "A spend of 2500000 base units to Lawyers Co-op is approved; the treasury cannot send it: the recipient is not a Solana address.");
      const failed = await closeNow(c, await createProposal(c.deps, w.union.id, asMember(b), { kind: "spend", title: "Nothing", amount: "1", recipient: "x", closesAt: SOON() }));
      assert.deepEqual((await describeOutcome(c.db, failed))!.slice(-1), ["Nothing changes."]);
      assert.equal(await describeOutcome(c.db, election), undefined, "an open proposal has no outcome to describe");
      assert.deepEqual((await approvedSpends(c.db, w.union.id)).map((s) => [s.amount, s.recipient]), [[2_500_000n, "Lawyers Co-op"]]);
    }));

    it("who may propose follows the bylaws; bad proposals are refused", () => withCtx(d, async (c) => {
      const w = await world(c, 2, { proposers: "officers" });
      await assert.rejects(resolutionBy(c, w, w.members[0]!), /only the leader and officers/);
      await resolutionBy(c, w, w.lead);
      await assert.rejects(createProposal(c.deps, w.union.id, OPERATOR, { kind: "amendment", title: "x", params: { joinPolicy: "open" } }), /must change/);
      await assert.rejects(createProposal(c.deps, w.union.id, OPERATOR, { kind: "amendment", title: "x", params: { quorumPercent: 500 } }), /quorumPercent/);
      await assert.rejects(createProposal(c.deps, w.union.id, OPERATOR, { kind: "recall", title: "x", memberId: w.members[0]!.id }), /holds no office/);
      await assert.rejects(createProposal(c.deps, w.union.id, OPERATOR, { kind: "resolution", title: "x", closesAt: new Date(Date.now() + 1000) }), /10 seconds/);
      await assert.rejects(createProposal(c.deps, w.union.id, OPERATOR, { kind: "spend", title: "x", amount: "0", recipient: "y" }), /positive/);
      assert.equal((await getProposal(c.db, w.union.id, "#1"))?.title, "Strike on Friday");
    }));

    it("votes in one batch window queue one running-tally intent; a later window queues another; a refused vote none", () => withCtx(d, async (c) => {
      const w = await world(c, 3);
      const p = await resolution(c, w);
      const deps = { ...c.deps, tallyBatchMs: 1000 };
      const base = Math.ceil(Date.now() / 1000) * 1000 + 1000;
      const tallies = async () => (await recordedIntents(c.db)).filter((i) => i.kind === "proposal.tally");
      assert.deepEqual(await castVote(deps, w.union.id, p.id, { memberId: w.members[0]!.id }, [YES], web, base + 10), { counted: true });
      assert.deepEqual(await castVote(deps, w.union.id, p.id, { memberId: w.members[1]!.id }, [NO], web, base + 900), { counted: true });
      assert.deepEqual(await castVote(deps, w.union.id, p.id, { memberId: w.members[1]!.id }, [YES], web, base + 950), { counted: true });
      assert.deepEqual(await tallies(), [{ kind: "proposal.tally", unionId: w.union.id, proposalId: p.id, dueAt: base + 1000 }]);
      assert.equal((await castVote(deps, w.union.id, p.id, { memberId: w.members[2]!.id }, ["Maybe"], web, base + 1500)).counted, false);
      assert.equal((await tallies()).length, 1, "a refused vote changes no tally");
      await castVote(deps, w.union.id, p.id, { memberId: w.members[2]!.id }, [YES], web, base + 1500);
      assert.deepEqual((await tallies()).map((i) => (i as { dueAt: number }).dueAt), [base + 1000, base + 2000]);
    }));

    it("the proposal, each ballot and the outcome join the union's hash chain; tampering with any row breaks verification", () => withCtx(d, async (c) => {
      const w = await world(c, 3, { quorumPercent: 0 });
      const [a, b, cc] = w.members as [Member, Member, Member];
      const p = await resolution(c, w);
      assert.equal((await castVote(c.deps, w.union.id, p.id, { memberId: a.id }, [YES], web)).counted, true);
      assert.equal((await castVote(c.deps, w.union.id, p.id, { actorId: person("m1").actorId }, [NO], note("b1"))).counted, true);
      assert.equal((await castVote(c.deps, w.union.id, p.id, { memberId: a.id }, [NO], web)).counted, true, "a changed web vote is a new entry");
      assert.equal((await castVote(c.deps, w.union.id, p.id, { memberId: cc.id }, ["Maybe"], web)).counted, false);
      await closeNow(c, p);
      const entries = await chainOf(c.db, w.union.id);
      assert.deepEqual(entries.map((e) => e.event), ["proposal", "ballot", "ballot", "ballot", "outcome"]);
      const ballotEntry = JSON.parse(entries[2]!.payload) as Record<string, unknown>;
      assert.equal(ballotEntry.voter, voterPseudonym(p.id, b.id));
      assert.equal(ballotEntry.weight, 1);
      assert.doesNotMatch(entries.map((e) => e.payload).join(""), new RegExp(`${b.id}|remote\\.example/votes`), "the chain names no voter and no voter's activity in clear");
      assert.deepEqual(JSON.parse(entries[4]!.payload).direct, [0, 2, 0]);
      const report = await verifyChain(c.db, w.union.id);
      assert.ok(report.ok, JSON.stringify(report.breaks));
      assert.equal(report.entries, 5);

      const broken = async (what: RegExp) => {
        const r = await verifyChain(c.db, w.union.id);
        assert.equal(r.ok, false, "tampering goes unnoticed");
        assert.ok(r.breaks.some((x) => what.test(x.problem)), JSON.stringify(r.breaks));
      };
      // b's NO turned into YES straight in the database.
      await c.db.updateTable("ballots").set({ option: 0 }).where("proposal_id", "=", p.id).where("member_id", "=", b.id).execute();
      await broken(/a ballot \(voter [0-9a-f]{12}\) differs from what entry 3 recorded/);
      await c.db.updateTable("ballots").set({ option: 1 }).where("proposal_id", "=", p.id).where("member_id", "=", b.id).execute();
      assert.ok((await verifyChain(c.db, w.union.id)).ok, "restored, it verifies again");
      // A ballot's time or carrying activity rewritten.
      await c.db.updateTable("ballots").set({ source_id: "https://remote.example/votes/forged" }).where("member_id", "=", b.id).execute();
      await broken(/differs from what entry 3 recorded/);
      await c.db.updateTable("ballots").set({ source_id: note("b1").id }).where("member_id", "=", b.id).execute();
      // A ballot stuffed in, and one deleted.
      await c.db.insertInto("ballots").values({ proposal_id: p.id, member_id: cc.id, option: 0, source: "web", source_id: "web:x", cast_at: Date.now() }).execute();
      await broken(/a ballot \(voter [0-9a-f]{12}\) is absent from the chain/);
      await c.db.deleteFrom("ballots").where("member_id", "=", cc.id).execute();
      await c.db.deleteFrom("ballots").where("member_id", "=", a.id).execute();
      await broken(/the ballot entry 4 recorded .* is no longer stored/);
      await c.db.insertInto("ballots").values({ proposal_id: p.id, member_id: a.id, option: 1, source: "web", source_id: `web:${a.id}:0`, cast_at: 0 }).execute();
      await broken(/differs from what entry 4 recorded/);
      await c.db.deleteFrom("ballots").where("member_id", "=", a.id).execute();
      // The outcome or the proposal rewritten.
      await c.db.updateTable("proposals").set({ state: "passed" }).where("id", "=", p.id).execute();
      await broken(/outcome's state(, ballots)? differ from what entry 5 recorded/);
      await c.db.updateTable("proposals").set({ state: "failed", title: "Strike on Saturday" }).where("id", "=", p.id).execute();
      await broken(/the stored title differ from what entry 1 recorded/);
      // The chain itself rewritten.
      await c.db.updateTable("action_log").set({ payload: entries[2]!.payload.replace(/"weight":1/, '"weight":5') }).where("union_id", "=", w.union.id).where("n", "=", 3).execute();
      await broken(/no longer matches its hash/);
    }));

    it("a tally resolves long and branching delegation chains once each; a cycle with no voter on it counts for no one", () => withCtx(d, async (c) => {
      const w = await world(c, 11, { delegation: "opt_in", quorumPercent: 0 });
      const m = w.members.map((x) => x.id);
      // m0→m1→m2→m3 (votes yes); m8→m2 joins midway; m4→m5→m6→m4 is a cycle (written directly: delegateVote
      // refuses cycles, but the rows may still form one across scopes); m7→m5 runs into it; m10→m9 (votes no).
      const edges = [[0, 1], [1, 2], [2, 3], [8, 2], [4, 5], [5, 6], [6, 4], [7, 5], [10, 9]];
      await c.db.insertInto("delegations").values(edges.map(([a, b]) => ({ union_id: w.union.id, delegator_id: m[a!]!, scope: "all", delegate_id: m[b!]!, created_at: Date.now() }))).execute();
      const p = await resolution(c, w);
      await castVote(c.deps, w.union.id, p.id, { memberId: m[3]! }, [YES], web);
      await castVote(c.deps, w.union.id, p.id, { memberId: m[9]! }, [NO], web);
      const t = await tallyOf(c.db, p);
      assert.deepEqual(t.options.map((o) => [o.direct, o.delegated]), [[1, 4], [1, 1], [0, 0]]);
      assert.deepEqual([t.voters, t.delegatedVoters, t.eligible], [2, 5, 12]);
    }));

    it("two closers at once close a proposal once", () => withCtx(d, async (c) => {
      const w = await world(c, 2, { quorumPercent: 0 });
      const p = await createProposal(c.deps, w.union.id, asMember(w.members[0]!), { kind: "amendment", title: "Open up", params: { joinPolicy: "invite" }, closesAt: SOON() });
      await castVote(c.deps, w.union.id, p.id, { memberId: w.members[0]!.id }, [YES], web);
      const other = c.tdb.open();
      try {
        const at = p.closesAt.getTime();
        // better-sqlite3 is synchronous: two connections in one thread cannot
        // interleave writes, so on SQLite the second closer comes after.
        const second = () => closeDue({ ...c.deps, db: other.db }, at);
        const [x, y] = d.name === "postgres" ? await Promise.all([closeDue(c.deps, at), second()]) : [await closeDue(c.deps, at), await second()];
        assert.equal(x.length + y.length, 1);
        assert.deepEqual((await readBylaws(c.db, w.union.id)).version, 3, "one new version (2 was the test's setup)");
        assert.equal(c.log.filter((e) => e.type === "proposal.closed").length, 1);
      } finally {
        await other.close();
      }
    }));
  });
}

function resolutionBy(c: Ctx, w: World, m: Member): Promise<Proposal> {
  return createProposal(c.deps, w.union.id, asMember(m), { kind: "resolution", title: "Strike on Friday", closesAt: SOON() });
}
