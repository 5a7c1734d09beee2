import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Keypair } from "@solana/web3.js";
import { dialects } from "./helpers/databases.ts";
import { followId, LEADER, person, sharedKeys, withCtx, type Ctx } from "./helpers/domain-context.ts";
import { changeBylaws, readBylaws } from "../src/bylaws/bylaws.ts";
import { castVote, closeProposal, createProposal, type Proposal, YES } from "../src/bylaws/proposals.ts";
import { approveCrowdfund, CrowdfundError, namesCrowdfund, proposeCrowdfund, rejectCrowdfund } from "../src/crowdfunds/crowdfunds.ts";
import { createUnion } from "../src/unions/unions.ts";
import { requestToJoin, setOfficer } from "../src/members/membership.ts";
import { type Member, OPERATOR } from "../src/members/members.ts";
import { saveTreasury } from "../src/treasury/treasury.ts";
import { duesParamsFromBylaws } from "../src/treasury/dues-params.ts";

const override = { kind: "operator", reason: "test setup" } as const;
const MINT = "So11111111111111111111111111111111111111112";
const SOON = () => new Date(Date.now() + 60_000);
const refused = (code: CrowdfundError["code"], pattern: RegExp) => (e: unknown) => e instanceof CrowdfundError && e.code === code && pattern.test(e.message);

for (const d of dialects) {
  describe(`crowdfund approval by member vote on ${d.name}`, { skip: d.skip }, () => {
    it("under crowdfundApproval member_vote an officer approves only with a passed resolution naming that crowdfund, used once; the operator may override; officers (the default) need none", () => withCtx(d, async (c: Ctx) => {
      const union = await createUnion({ db: c.db, events: c.deps.events, generateKeys: sharedKeys }, { slug: "riders", name: "Riders", purpose: "Fair pay", leaderHandle: LEADER.handle, joinPolicy: "open" });
      await requestToJoin(c.deps, union.id, LEADER, followId());
      const officer = (await requestToJoin(c.deps, union.id, person("ana"), followId())).member;
      await setOfficer(c.deps, union.id, officer.id, OPERATOR, "treasurer");
      const member = (await requestToJoin(c.deps, union.id, person("m0"), followId())).member;
      await saveTreasury(c.db, { unionId: union.id, mint: MINT, tokenProgram: "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA", decimals: 6, authority: MINT, tokenAccount: MINT, threshold: 1, signers: [] });
      assert.equal((await readBylaws(c.db, union.id)).params.crowdfundApproval, "officers", "the default");
      await changeBylaws(c.deps, union.id, override, { params: { crowdfundApproval: "member_vote", crowdfundEligibility: "members", quorumPercent: 0 } });
      await new Promise((r) => setTimeout(r, 5));
      const deps = { ...c.deps, duesParams: duesParamsFromBylaws };
      const draft = (title: string) => ({ title, text: "Food.", goal: 5n, deadline: new Date(Date.now() + 3_600_000), beneficiary: Keypair.generate().publicKey.toBase58() });
      const cf1 = await proposeCrowdfund(deps, union.id, member.id, draft("Strike kitchen"));
      const cf2 = await proposeCrowdfund(deps, union.id, member.id, draft("Legal fund"));
      const asOfficer = { kind: "member", memberId: officer.id } as const;
      const resolution = (title: string) => createProposal(c.deps, union.id, OPERATOR, { kind: "resolution", title, closesAt: SOON() });
      const pass = async (p: Proposal, voter: Member = member) => {
        await castVote(c.deps, union.id, p.id, { memberId: voter.id }, [YES], { kind: "web" });
        const closed = await closeProposal(c.deps, union.id, p.id, { force: true });
        assert.equal(closed?.state, "passed");
        return closed!;
      };

      await assert.rejects(approveCrowdfund(deps, union.id, "#1", asOfficer), refused("forbidden", /approved by member vote: pass the number of the resolution/));
      const open = await resolution(`Approve crowdfund #${cf1.seq}`);
      await assert.rejects(approveCrowdfund(deps, union.id, "#1", asOfficer, undefined, `#${open.number}`), refused("forbidden", /is open, not passed/));
      const other = await pass(await resolution("Buy a van"));
      await assert.rejects(approveCrowdfund(deps, union.id, "#1", asOfficer, undefined, `#${other.number}`), refused("forbidden", /does not name crowdfund #1/));
      const spend = await pass(await createProposal(c.deps, union.id, OPERATOR, { kind: "spend", title: `crowdfund #${cf1.seq}`, amount: "5", recipient: Keypair.generate().publicKey.toBase58(), closesAt: SOON() }));
      await assert.rejects(approveCrowdfund(deps, union.id, "#1", asOfficer, undefined, `#${spend.number}`), refused("forbidden", /not a resolution/));
      await assert.rejects(approveCrowdfund(deps, union.id, "#1", asOfficer, undefined, "#99"), refused("not_found", /no proposal #99/));
      // A member (not an officer) cannot carry out the vote.
      const voted = await pass(open);
      await assert.rejects(approveCrowdfund(deps, union.id, "#1", { kind: "member", memberId: member.id }, undefined, `#${voted.number}`), /only the leader and officers/);

      const approved = await approveCrowdfund(deps, union.id, "#1", asOfficer, undefined, `#${voted.number}`);
      assert.deepEqual([approved.state, approved.approvedByProposal], ["approved", voted.id]);
      // One vote approves one crowdfund, even when its words name two.
      await assert.rejects(approveCrowdfund(deps, union.id, "#2", asOfficer, undefined, `#${voted.number}`), refused("forbidden", /does not name crowdfund #2/));
      const cf3 = await proposeCrowdfund(deps, union.id, member.id, draft("Van"));
      const both = await pass(await resolution(`Approve crowdfund #${cf2.seq} and crowdfund #${cf3.seq}`));
      assert.equal((await approveCrowdfund(deps, union.id, "#2", asOfficer, undefined, String(both.number))).approvedByProposal, both.id);
      await assert.rejects(approveCrowdfund(deps, union.id, "#3", asOfficer, undefined, `#${both.number}`), refused("conflict", /proposal \d+ already approved crowdfund #2; each vote approves one/));
      // The operator: a proposal named is checked; none is an override, recorded as such. Rejecting needs no vote.
      await assert.rejects(approveCrowdfund(deps, union.id, "#3", OPERATOR, undefined, `#${other.number}`), refused("forbidden", /does not name crowdfund #3/));
      const overridden = await approveCrowdfund(deps, union.id, "#3", OPERATOR);
      assert.deepEqual([overridden.state, overridden.approvedByProposal], ["approved", null]);
      const cf4 = await proposeCrowdfund(deps, union.id, member.id, draft("Bikes"));
      await rejectCrowdfund(deps, union.id, `#${cf4.seq}`, asOfficer);

      // Back to the default: officers approve without a vote.
      await changeBylaws(c.deps, union.id, override, { params: { crowdfundApproval: "officers" } });
      const cf5 = await proposeCrowdfund(deps, union.id, member.id, draft("Tools"));
      assert.equal((await approveCrowdfund(deps, union.id, `#${cf5.seq}`, asOfficer)).state, "approved");
    }));
  });
}

describe("namesCrowdfund", () => {
  it("matches crowdfund #N, not #N0, any case, or the id", () => {
    const cf = { seq: 1, id: "0b5c1f0e-1111-4222-8333-444455556666" };
    assert.ok(namesCrowdfund("Approve Crowdfund #1.", cf));
    assert.ok(!namesCrowdfund("Approve crowdfund #10", cf));
    assert.ok(!namesCrowdfund("Approve crowdfund 1", cf));
    assert.ok(namesCrowdfund(`fund ${cf.id.toUpperCase()}`, cf));
  });
});
