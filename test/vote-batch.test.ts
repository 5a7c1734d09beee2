import { describe, it } from "node:test";
import assert from "node:assert/strict";
import type { KyselyPlugin, Kysely } from "kysely";
import { dialects } from "./helpers/databases.ts";
import { followId, LEADER, person, sharedKeys, withCtx, type Ctx } from "./helpers/domain-context.ts";
import { recordedIntents } from "./helpers/membership-worker.ts";
import { castVote, castVoteIn, createProposal, NO, tallyOf, getProposal, voteBatch, YES } from "../src/bylaws/proposals.ts";
import { createUnion } from "../src/unions/unions.ts";
import { requestToJoin } from "../src/members/membership.ts";
import { type Member } from "../src/members/members.ts";
import { chainOf, verifyChain } from "../src/actions/chain.ts";
import type { DB } from "../src/db/schema.ts";

// castVoteIn with a VoteBatch: the inbox's group commit casts many poll
// answers in one transaction, reading each proposal, voter and chain head
// once. What it writes and refuses must be what castVote alone does.

/** Counts every statement run through the returned handle (prepared ones included: results pass every plugin). */
function counting(db: Kysely<DB>): { db: Kysely<DB>; count: () => number } {
  let n = 0;
  const plugin: KyselyPlugin = {
    transformQuery: (args) => args.node,
    transformResult: async (args) => {
      n++;
      return args.result;
    },
  };
  return { db: db.withPlugin(plugin), count: () => n };
}

const answer = (id: string) => ({ kind: "activity", id: `https://remote.example/votes/${id}` }) as const;

async function world(c: Ctx, n: number) {
  const union = await createUnion({ db: c.db, events: c.deps.events, generateKeys: sharedKeys }, { slug: "riders", name: "Riders", purpose: "Fair pay", leaderHandle: LEADER.handle, joinPolicy: "open" });
  const lead = (await requestToJoin(c.deps, union.id, LEADER, followId())).member;
  const members: Member[] = [];
  for (let i = 0; i < n; i++) members.push((await requestToJoin(c.deps, union.id, person(`m${i}`), followId())).member);
  await new Promise((r) => setTimeout(r, 5));
  const by = { kind: "member", memberId: lead.id } as const;
  const closesAt = new Date(Date.now() + 60_000);
  const motion = await createProposal(c.deps, union.id, by, { kind: "resolution", title: "Strike on Friday", closesAt });
  const election = await createProposal(c.deps, union.id, by, { kind: "election", title: "Treasurer", role: "officer", candidates: [members[0]!.id, members[1]!.id], closesAt });
  return { union, lead, members, motion, election };
}

for (const d of dialects) {
  describe(`castVoteIn with a batch, on ${d.name}`, { skip: d.skip }, () => {
    it("one transaction of answers: each proposal, voter and chain head read once; the same ballots, refusals, chain and tally intent as one at a time", () => withCtx(d, async (c) => {
      const w = await world(c, 12);
      const deps = { ...c.deps, tallyBatchMs: 60_000 };
      const intentsBefore = (await recordedIntents(c.db)).filter((i) => i.kind === "proposal.tally").length;
      const { db, count } = counting(c.db);
      const results = await db.transaction().execute(async (trx) => {
        const batch = voteBatch();
        const out: unknown[] = [];
        const cast = async (m: Member, proposalId: string, choice: string, id: string) =>
          out.push(await castVoteIn(deps, trx, w.union.id, proposalId, { actorId: m.actorId! }, [choice], answer(id), Date.now(), batch));
        for (const [i, m] of w.members.entries()) await cast(m, w.motion.id, i % 3 ? YES : NO, `motion-${i}`);
        // A repeated delivery, a second answer to a one-choice poll, an unknown option: refused as castVote refuses them.
        await cast(w.members[0]!, w.motion.id, NO, "motion-0");
        await cast(w.members[1]!, w.motion.id, NO, "motion-1b");
        await cast(w.members[2]!, w.motion.id, "Maybe", "motion-2b");
        // An approval vote in two answers from one voter (Mastodon's anyOf, GoToSocial's two Notes): both count, then a repeat of an option is refused.
        const [a, b] = w.election.options;
        await cast(w.members[3]!, w.election.id, a!, "el-3a");
        await cast(w.members[3]!, w.election.id, b!, "el-3b");
        await cast(w.members[3]!, w.election.id, a!, "el-3c");
        return out;
      });
      const statements = count();
      assert.deepEqual(results.slice(0, 12), w.members.map((m) => ({ counted: true, memberId: m.id })));
      assert.deepEqual(results.slice(12), [
        { counted: false, reason: "already counted (repeated delivery)" },
        { counted: false, reason: "already voted; a poll answer cannot be changed (vote on the web to change it)" },
        { counted: false, reason: "unknown option \"Maybe\"" },
        { counted: true, memberId: w.members[3]!.id },
        { counted: true, memberId: w.members[3]!.id },
        { counted: false, reason: "option already chosen" },
      ]);
      // 14 ballots counted in one transaction. One at a time castVoteIn ran about 8
      // statements each (lock, proposal, member, ballots, insert, ballots again,
      // chain head, chain insert, tally claim): over 140 here. Now the ballot and
      // its chain entry, plus a few reads per proposal, voter and union.
      assert.ok(statements <= 14 * 3 + 2 * 3 + 13 + 4, `${statements} statements for 14 ballots and 4 refusals`);
      // The chain is whole, and each counted answer has its entry.
      const report = await verifyChain(c.db, w.union.id);
      assert.ok(report.ok, JSON.stringify(report.breaks));
      assert.equal((await chainOf(c.db, w.union.id)).filter((e) => e.event === "ballot").length, 14);
      const motion = await tallyOf(c.db, (await getProposal(c.db, w.union.id, w.motion.id))!);
      assert.equal(motion.voters, 12);
      assert.deepEqual(motion.options.slice(0, 2).map((o) => o.direct), [8, 4]);
      const election = await tallyOf(c.db, (await getProposal(c.db, w.union.id, w.election.id))!);
      assert.deepEqual(election.options.map((o) => o.direct), [1, 1]);
      // One running-tally Update per proposal for the window, not one per ballot.
      const intents = (await recordedIntents(c.db)).filter((i) => i.kind === "proposal.tally").length;
      assert.equal(intents - intentsBefore, 2);
      // A web vote afterwards (no batch) replaces that member's ballot and extends the same chain.
      assert.deepEqual(await castVote(deps, w.union.id, w.motion.id, { memberId: w.members[0]!.id }, [YES], { kind: "web" }), { counted: true });
      assert.ok((await verifyChain(c.db, w.union.id)).ok);
    }));

    it("a batch is the transaction's own: a rolled-back transaction's ballots and chain entries are not remembered by the next", () => withCtx(d, async (c) => {
      const w = await world(c, 3);
      const deps = { ...c.deps, tallyBatchMs: 60_000 };
      await assert.rejects(c.db.transaction().execute(async (trx) => {
        const batch = voteBatch();
        for (const [i, m] of w.members.entries()) await castVoteIn(deps, trx, w.union.id, w.motion.id, { actorId: m.actorId! }, [YES], answer(`rb-${i}`), Date.now(), batch);
        throw new Error("rolled back");
      }), /rolled back/);
      // Run again, as the group commit runs each piece alone after a failed shared transaction.
      for (const [i, m] of w.members.entries()) {
        const r = await c.db.transaction().execute((trx) => castVoteIn(deps, trx, w.union.id, w.motion.id, { actorId: m.actorId! }, [YES], answer(`rb-${i}`), Date.now(), voteBatch()));
        assert.deepEqual(r, { counted: true, memberId: m.id });
      }
      assert.ok((await verifyChain(c.db, w.union.id)).ok);
      assert.equal((await tallyOf(c.db, (await getProposal(c.db, w.union.id, w.motion.id))!)).voters, 3);
    }));
  });
}
