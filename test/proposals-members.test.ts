import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { dialects } from "./helpers/databases.ts";
import { followId, LEADER, person, sharedKeys, withCtx, type Ctx } from "./helpers/domain-context.ts";
import { changeBylaws } from "../src/bylaws/bylaws.ts";
import { castVote, closeProposal, createProposal, type Proposal } from "../src/bylaws/proposals.ts";
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
}
