import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { OPERATOR } from "../src/members/members.ts";
import { requestToJoin } from "../src/members/membership.ts";
import {
  answerOffer, endRelationship, getRelationship, listRelationships, offerAnswered, peerEnded, proposeRelationship, receiveOffer,
  relationshipHistory, relaysOurs, relaysTheirs,
} from "../src/relationships/relationships.ts";
import { createUnion, type Union } from "../src/unions/unions.ts";
import { dialects } from "./helpers/databases.ts";
import { type Ctx, followId, person, sharedKeys, withCtx } from "./helpers/domain-context.ts";
import { recordedIntents } from "./helpers/membership-worker.ts";
import { overrideBylaws } from "./helpers/bylaws.ts";
import { setOfficer } from "../src/members/membership.ts";
import { castVote, closeProposal, createProposal, YES } from "../src/bylaws/proposals.ts";
import { namesPeer } from "../src/relationships/relationships.ts";
import { createAllyInvite } from "../src/relationships/backlinks.ts";
import { claimInviteForApplicant } from "../src/members/membership.ts";
import { readRoster } from "../src/members/roster.ts";
import { getUnionById } from "../src/unions/unions.ts";

const SELF = "https://here.example/u/a";
const B = "https://there.example/u/b";
const C = "https://elsewhere.example/u/c";

function makeUnion(c: Ctx): Promise<Union> {
  return createUnion({ db: c.db, events: c.deps.events, generateKeys: sharedKeys }, { slug: "a", name: "A", purpose: "testing", joinPolicy: "open" });
}
const proposal = (peer: string, kind: "ally" | "parent" = "ally") => ({
  peerActorId: peer, peerHandle: null, kind, relay: "both" as const, followIdFor: (id: string) => `${SELF}/relationships/${id}`, selfActorId: SELF,
});

async function getProposalId(c: Ctx, unionId: string, number: string): Promise<string> {
  return (await c.db.selectFrom("proposals").select("id").where("union_id", "=", unionId).where("number", "=", Number(number)).executeTakeFirstOrThrow()).id;
}

describe("a proposal names a union", () => {
  it("by its actor URL or full handle, not by a longer one that starts the same", () => {
    const peer = { actorId: "https://x.example/u/b", handle: "@b@x.example" };
    assert.ok(namesPeer("Ally with https://x.example/u/b.", peer));
    assert.ok(namesPeer("ally with @B@x.example now", peer));
    assert.ok(!namesPeer("Ally with https://x.example/u/bakers", peer));
    assert.ok(!namesPeer("Ally with @b@x.example.org", peer));
    assert.ok(!namesPeer("Ally with x@b@x.example", peer));
    assert.ok(!namesPeer("Ally with b", { ...peer, handle: null }));
  });
});

for (const d of dialects) {
  describe(`relationships between unions on ${d.name}`, { skip: d.skip }, () => {
    it("an officer proposes; the Follow intent commits with it; a second open one with the same union is refused", () => withCtx(d, async (c) => {
      const a = await makeUnion(c);
      const rel = await proposeRelationship(c.deps, a.id, OPERATOR, proposal(B));
      assert.equal(rel.state, "offered");
      assert.equal(rel.followId, `${SELF}/relationships/${rel.id}`);
      assert.deepEqual((await recordedIntents(c.db)).filter((i) => i.kind.startsWith("relationship.")), [{ kind: "relationship.follow", unionId: a.id, relationshipId: rel.id }]);
      await assert.rejects(proposeRelationship(c.deps, a.id, OPERATOR, proposal(B)), /already a relationship/);
      await assert.rejects(proposeRelationship(c.deps, a.id, OPERATOR, proposal(SELF)), /cannot ally with itself/);
      await assert.rejects(proposeRelationship(c.deps, a.id, OPERATOR, { ...proposal(C), relay: "sideways" as never }), /relay must be one of/);
    }));

    it("a plain member can neither propose, answer nor end", () => withCtx(d, async (c) => {
      const a = await makeUnion(c);
      const joined = await requestToJoin(c.deps, a.id, person("alice"), followId());
      const by = { kind: "member" as const, memberId: joined.member!.id };
      await assert.rejects(proposeRelationship(c.deps, a.id, by, proposal(B)), /only the leader and officers/);
      await receiveOffer(c.deps, a.id, { peerActorId: C, peerHandle: null, followId: `${C}/f/1`, kind: "ally", relay: "both" });
      const offer = (await listRelationships(c.db, a.id))[0]!;
      await assert.rejects(answerOffer(c.deps, a.id, offer.id, by, true), /only the leader and officers/);
      await assert.rejects(endRelationship(c.deps, a.id, offer.id, by), /only the leader and officers/);
      assert.equal((await getRelationship(c.db, a.id, offer.id))?.state, "received");
    }));

    it("an offer delivered twice is one offer; accepting it sends Accept and tells members", () => withCtx(d, async (c) => {
      const a = await makeUnion(c);
      const offer = { peerActorId: B, peerHandle: "@b@there.example", followId: `${B}/relationships/1`, kind: "chapter" as const, relay: "ours" as const };
      assert.equal(await receiveOffer(c.deps, a.id, offer), "received");
      assert.equal(await receiveOffer(c.deps, a.id, offer), "duplicate");
      const [rel] = await listRelationships(c.db, a.id);
      assert.equal(relaysOurs(rel!), false, "not before it is accepted");
      const accepted = await answerOffer(c.deps, a.id, rel!.id, OPERATOR, true);
      assert.equal(relaysOurs(accepted), true, "a chapter relays its parent's calls");
      assert.equal(relaysTheirs(accepted), false, "a parent does not relay its chapter's");
      await assert.rejects(answerOffer(c.deps, a.id, rel!.id, OPERATOR, false), /not an offer waiting/);
      const kinds = (await recordedIntents(c.db)).map((i) => i.kind).filter((k) => k.startsWith("relationship."));
      assert.deepEqual(kinds, ["relationship.accept", "relationship.notice"]);
    }));

    it("answers and Undos from anyone but the other party change nothing", () => withCtx(d, async (c) => {
      const a = await makeUnion(c);
      const rel = await proposeRelationship(c.deps, a.id, OPERATOR, proposal(B));
      assert.equal(await offerAnswered(c.deps, a.id, rel.followId, C, true), "unknown", "an Accept by a third union");
      assert.equal(await offerAnswered(c.deps, a.id, `${SELF}/relationships/never-sent`, B, true), "unknown", "an Accept of a Follow never sent");
      assert.equal((await getRelationship(c.db, a.id, rel.id))?.state, "offered");
      assert.equal(await offerAnswered(c.deps, a.id, rel.followId, B, true), "applied");
      assert.equal(await offerAnswered(c.deps, a.id, rel.followId, B, true), "duplicate", "the network repeating an Accept");
      assert.equal(await offerAnswered(c.deps, a.id, rel.followId, B, false), "unknown", "a Reject after the Accept");
      assert.equal(await peerEnded(c.deps, a.id, rel.followId, C), "unknown", "an Undo by a stranger");
      assert.equal((await getRelationship(c.db, a.id, rel.id))?.state, "active");
      assert.equal(await peerEnded(c.deps, a.id, rel.followId, B), "applied");
      assert.equal(await peerEnded(c.deps, a.id, rel.followId, B), "duplicate");
      assert.deepEqual((await relationshipHistory(c.db, a.id, rel.id)).map((e) => [e.event, e.state, e.by]),
        [["proposed", "offered", "operator"], ["accepted", "active", B], ["ended", "ended", B]]);
      // Once ended, a new relationship with the same union may be offered.
      await proposeRelationship(c.deps, a.id, OPERATOR, proposal(B));
    }));

    it("under member_vote bylaws an officer alone cannot commit the union; declining and the operator override still work", () => withCtx(d, async (c) => {
      const a = await makeUnion(c);
      const joined = await requestToJoin(c.deps, a.id, person("olga"), followId());
      await setOfficer(c.deps, a.id, joined.member!.id, OPERATOR, null);
      const officer = { kind: "member" as const, memberId: joined.member!.id };
      await proposeRelationship(c.deps, a.id, officer, proposal(C));
      await overrideBylaws(c.deps, "a", { allianceRatification: "member_vote" });
      await assert.rejects(proposeRelationship(c.deps, a.id, officer, proposal(B)), /ratified by member vote/);
      await assert.rejects(proposeRelationship(c.deps, a.id, officer, { ...proposal(B), proposalId: "99" }), /no proposal 99/);
      await receiveOffer(c.deps, a.id, { peerActorId: B, peerHandle: null, followId: `${B}/f/1`, kind: "ally", relay: "both" });
      const offer = (await listRelationships(c.db, a.id)).find((r) => r.peerActorId === B)!;
      await assert.rejects(answerOffer(c.deps, a.id, offer.id, officer, true), /ratified by member vote/);
      assert.equal((await answerOffer(c.deps, a.id, offer.id, officer, false)).state, "rejected");
      assert.equal((await proposeRelationship(c.deps, a.id, OPERATOR, proposal(B))).state, "offered", "the operator override");
    }));

    it("a passed proposal ratifies only the union it names, and only once", () => withCtx(d, async (c) => {
      const a = await makeUnion(c);
      const joined = await requestToJoin(c.deps, a.id, person("olga"), followId());
      await setOfficer(c.deps, a.id, joined.member!.id, OPERATOR, null);
      const officer = { kind: "member" as const, memberId: joined.member!.id };
      await overrideBylaws(c.deps, "a", { allianceRatification: "member_vote" });
      const passed = async (title: string, text = "") => {
        const p = await createProposal(c.deps, a.id, OPERATOR, { kind: "resolution", title, text, closesAt: new Date(Date.now() + 60_000) });
        await castVote(c.deps, a.id, p.id, { memberId: joined.member!.id }, [YES], { kind: "web" });
        const closed = await closeProposal(c.deps, a.id, p.id, { force: true });
        assert.equal(closed?.state, "passed", closed?.outcome?.reason);
        return String(closed!.number);
      };
      const forC = await passed("Ally with the elsewhere union", `We ally with ${C}.`);
      // The vote about C cannot ratify an alliance with B.
      await assert.rejects(proposeRelationship(c.deps, a.id, officer, { ...proposal(B), proposalId: forC }), /does not name https:\/\/there.example\/u\/b/);
      const forB = await passed(`Ally with ${B}`);
      const rel = await proposeRelationship(c.deps, a.id, officer, { ...proposal(B), proposalId: forB });
      assert.deepEqual((await relationshipHistory(c.db, a.id, rel.id)).map((e) => [e.event, e.proposalId]), [["proposed", (await getProposalId(c, a.id, forB))]]);
      await endRelationship(c.deps, a.id, rel.id, OPERATOR);
      // Used once: the same vote cannot ratify a second alliance with B.
      await assert.rejects(proposeRelationship(c.deps, a.id, officer, { ...proposal(B), proposalId: forB }), /already ratified a relationship/);
      // Accepting an offer names the offering union too, by handle here.
      await receiveOffer(c.deps, a.id, { peerActorId: "https://x.example/u/bakers", peerHandle: "@bakers@x.example", followId: "https://x.example/f/1", kind: "ally", relay: "both" });
      const offer = (await listRelationships(c.db, a.id)).find((r) => r.peerHandle === "@bakers@x.example")!;
      await assert.rejects(answerOffer(c.deps, a.id, offer.id, officer, true, forC), /does not name @bakers@x.example/);
      const forBakers = await passed("Accept the bakers", "Accept @Bakers@x.example as our ally.");
      assert.equal((await answerOffer(c.deps, a.id, offer.id, officer, true, forBakers)).state, "active");
      // An amendment is not a vote on an alliance, whatever its title says.
      const amendment = await createProposal(c.deps, a.id, OPERATOR, { kind: "amendment", title: `Ally with ${C}`, params: { memberInviteLimit: 4 }, closesAt: new Date(Date.now() + 60_000) });
      await castVote(c.deps, a.id, amendment.id, { memberId: joined.member!.id }, [YES], { kind: "web" });
      await closeProposal(c.deps, a.id, amendment.id, { force: true });
      await assert.rejects(proposeRelationship(c.deps, a.id, officer, { ...proposal(C), proposalId: String(amendment.number) }), /not a resolution/);
    }));

    it("cross-union backlinks: an ally invite records the ally's member and union on whoever joins with it; the tree stays acyclic; non-allies are refused", () => withCtx(d, async (c) => {
      const a = await makeUnion(c);
      await overrideBylaws(c.deps, "a", { membersVisibility: "public" });
      const sponsor = { actorId: "https://there.example/users/bea", unionActorId: B };
      await assert.rejects(createAllyInvite(c.deps, a.id, OPERATOR, sponsor), /not an active ally/);
      await receiveOffer(c.deps, a.id, { peerActorId: B, peerHandle: "@b@there.example", followId: `${B}/f/9`, kind: "ally", relay: "both" });
      const offer = (await listRelationships(c.db, a.id))[0]!;
      await assert.rejects(createAllyInvite(c.deps, a.id, OPERATOR, sponsor), /not an active ally/, "an offer is not an alliance yet");
      await answerOffer(c.deps, a.id, offer.id, OPERATOR, true);
      const joined = await requestToJoin(c.deps, a.id, person("plain"), followId());
      await assert.rejects(createAllyInvite(c.deps, a.id, { kind: "member", memberId: joined.member!.id }, sponsor), /only the leader and officers/);
      await assert.rejects(createAllyInvite(c.deps, a.id, OPERATOR, { ...sponsor, actorId: "not a url" }), /must be an actor URL/);
      const invite = await createAllyInvite(c.deps, a.id, OPERATOR, sponsor);
      const newcomer = person("nia", "third.example");
      await claimInviteForApplicant(c.deps, a.id, invite.code, newcomer.handle!);
      const result = await requestToJoin(c.deps, a.id, newcomer, followId());
      assert.equal(result.outcome, "accepted");
      const row = await c.db.selectFrom("members").select(["sponsor_id", "ally_sponsor_actor_id", "ally_sponsor_union"]).where("id", "=", result.member!.id).executeTakeFirstOrThrow();
      assert.deepEqual([row.ally_sponsor_actor_id, row.ally_sponsor_union], [sponsor.actorId, B]);
      // Her place in A's own tree is under A's members (here the root, as the operator issued the invite): never under a stranger.
      assert.ok(row.sponsor_id === null || (await c.db.selectFrom("members").select("union_id").where("id", "=", row.sponsor_id).executeTakeFirstOrThrow()).union_id === a.id);
      const union = (await getUnionById(c.db, a.id))!;
      const roster = await readRoster(c.db, union, { via: "federation" }, { limit: 50 });
      assert.ok(roster.ok);
      const item = roster.items.find((i) => i.actorId === newcomer.actorId)!;
      assert.deepEqual(item.allySponsor, { actorId: sponsor.actorId, unionActorId: B });
      assert.equal(roster.items.find((i) => i.actorId === person("plain").actorId)!.allySponsor, null);
      // The roster's rule still applies to who sees the backlink.
      await overrideBylaws(c.deps, "a", { membersVisibility: "officers" });
      const hidden = await readRoster(c.db, (await getUnionById(c.db, a.id))!, { via: "federation" }, { limit: 50 });
      assert.equal(hidden.ok, false);
    }));

    it("a union has one parent at most", () => withCtx(d, async (c) => {
      const a = await makeUnion(c);
      await proposeRelationship(c.deps, a.id, OPERATOR, proposal(B, "parent"));
      await assert.rejects(proposeRelationship(c.deps, a.id, OPERATOR, proposal(C, "parent")), /already has a parent/);
    }));
  });
}
