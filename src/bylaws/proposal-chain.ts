import { createHash } from "node:crypto";
import type { Kysely } from "kysely";
import { appendEntry, type ChainBreak, type ChainEntry, type ChainHeads } from "../actions/chain.ts";
import type { DB } from "../db/schema.ts";
import { type Outcome, type Proposal, toProposal } from "./proposals.ts";

// Proposals join the union's hash chain beside calls-to-action: the proposal
// as opened, each ballot as cast (or changed), and the outcome. A member who
// reads the chain can see that nothing was rewritten; the server's verify
// (muster action verify) also checks that the rows as stored now are what the
// chain recorded, so a ballot edited in the database shows up.
//
// The chain is readable by whoever may read the calls-to-action, which may be
// the public, while who voted and how is not. So a ballot entry names its
// voter by a pseudonym for this proposal only (sha256 of proposal and member
// id: not linkable across proposals) and commits to the ballot's rows (options,
// times, the activity that carried it) by their hash; the rows themselves,
// with voter, weight, time and activity id, stay in `ballots`.

const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");

/** The voter's name in the chain for this proposal. */
export function voterPseudonym(proposalId: string, memberId: string): string {
  return sha256(`${proposalId}\n${memberId}`);
}

export interface BallotRow {
  readonly member_id: string;
  readonly option: number | string;
  readonly source: string;
  readonly source_id: string;
  readonly cast_at: number | string;
}

/** A member's whole ballot for a proposal (every chosen option, each with its time and carrying activity), as one hash. */
export function ballotCommitment(proposalId: string, memberId: string, rows: readonly BallotRow[]): string {
  const lines = rows.map((r) => `${Number(r.option)}\t${Number(r.cast_at)}\t${r.source}\t${r.source_id}`).sort();
  return sha256(`${proposalId}\n${memberId}\n${lines.join("\n")}`);
}

function proposalPayload(p: Proposal): Record<string, unknown> {
  return {
    proposalId: p.id,
    number: p.number,
    kind: p.kind,
    title: p.title,
    textMd: p.text,
    options: [...p.options],
    multiple: p.multiple ? 1 : 0,
    change: JSON.stringify(p.change),
    bylawsVersion: p.bylawsVersion,
    openedAt: p.openedAt.toISOString(),
    closesAt: p.closesAt.toISOString(),
    eligible: p.eligibleCount,
  };
}

function outcomePayload(proposalId: string, state: string, o: Outcome, ballotsDigest: string, closedAt: number): Record<string, unknown> {
  return {
    proposalId,
    state,
    reason: o.reason,
    direct: o.tally.options.map((x) => x.direct),
    delegated: o.tally.options.map((x) => x.delegated),
    voters: o.tally.voters,
    delegatedVoters: o.tally.delegatedVoters,
    eligible: o.tally.eligible,
    quorumPercent: o.tally.quorumPercent,
    bylawsVersion: o.bylawsVersion ?? null,
    winner: o.winner ?? null,
    ballots: ballotsDigest,
    closedAt: new Date(closedAt).toISOString(),
  };
}

export async function chainProposalOpened(trx: Kysely<DB>, p: Proposal): Promise<void> {
  await appendEntry(trx, p.unionId, p.id, "proposal", proposalPayload(p), p.openedAt.getTime());
}

/** Records a member's ballot as it now stands (after a new answer or a changed web vote). */
export async function chainBallot(trx: Kysely<DB>, unionId: string, proposalId: string, memberId: string, now: number, known?: { readonly rows: readonly BallotRow[]; readonly heads: ChainHeads }): Promise<void> {
  // A caller that has just written the ballot knows its rows: the same ones this would read back.
  const rows = known?.rows ?? await trx.selectFrom("ballots").select(["member_id", "option", "source", "source_id", "cast_at"])
    .where("proposal_id", "=", proposalId).where("member_id", "=", memberId).execute();
  await appendEntry(trx, unionId, proposalId, "ballot", {
    proposalId,
    voter: voterPseudonym(proposalId, memberId),
    // One member, one vote: what delegates carry for others is in the outcome's delegated counts.
    weight: 1,
    ballot: ballotCommitment(proposalId, memberId, rows),
    at: new Date(now).toISOString(),
  }, now, known?.heads);
}

/** Every ballot of a proposal as one hash: the set the outcome was counted from. */
async function ballotsDigest(db: Kysely<DB>, proposalId: string): Promise<string> {
  return sha256((await commitmentsOf(db, proposalId)).map(([v, c]) => `${v} ${c}`).sort().join("\n"));
}

async function commitmentsOf(db: Kysely<DB>, proposalId: string): Promise<[string, string][]> {
  const rows = await db.selectFrom("ballots").select(["member_id", "option", "source", "source_id", "cast_at"]).where("proposal_id", "=", proposalId).execute();
  const byMember = new Map<string, BallotRow[]>();
  for (const r of rows) byMember.set(r.member_id, [...(byMember.get(r.member_id) ?? []), r]);
  return [...byMember].map(([m, rs]) => [voterPseudonym(proposalId, m), ballotCommitment(proposalId, m, rs)]);
}

export async function chainOutcome(trx: Kysely<DB>, unionId: string, proposalId: string, state: string, outcome: Outcome, now: number): Promise<void> {
  await appendEntry(trx, unionId, proposalId, "outcome", outcomePayload(proposalId, state, outcome, await ballotsDigest(trx, proposalId), now), now);
}

export const PROPOSAL_EVENTS: ReadonlySet<string> = new Set(["proposal", "ballot", "outcome"]);

/**
 * What differs between the proposals and ballots as stored and as the chain
 * recorded them: a proposal or ballot absent from the chain, one changed or
 * deleted behind its back, an outcome rewritten.
 */
export async function proposalBreaks(db: Kysely<DB>, unionId: string, entries: readonly ChainEntry[]): Promise<ChainBreak[]> {
  const breaks: ChainBreak[] = [];
  const opened = new Map<string, ChainEntry>();
  const outcomes = new Map<string, ChainEntry>();
  const ballots = new Map<string, Map<string, ChainEntry>>();
  for (const e of entries) {
    if (e.event === "proposal") opened.set(e.actionId, e);
    else if (e.event === "outcome") outcomes.set(e.actionId, e);
    else if (e.event === "ballot") {
      const voter = String((JSON.parse(e.payload) as { voter?: unknown }).voter);
      const m = ballots.get(e.actionId) ?? new Map<string, ChainEntry>();
      m.set(voter, e);
      ballots.set(e.actionId, m);
    }
  }
  const rows = await db.selectFrom("proposals").selectAll().where("union_id", "=", unionId).orderBy("number").execute();
  for (const row of rows) {
    const p = toProposal(row);
    const at = (n: number, problem: string) => breaks.push({ n, actionId: p.id, problem: `proposal #${p.number}: ${problem}` });
    const e = opened.get(p.id);
    if (!e) {
      at(0, "absent from the chain");
    } else {
      const recorded = JSON.parse(e.payload) as Record<string, unknown>;
      const now = proposalPayload(p);
      const differs = Object.keys(now).filter((k) => JSON.stringify(now[k]) !== JSON.stringify(recorded[k]));
      if (differs.length) at(e.n, `the stored ${differs.join(", ")} differ from what entry ${e.n} recorded`);
    }
    const chained = ballots.get(p.id) ?? new Map<string, ChainEntry>();
    const seen = new Set<string>();
    for (const [voter, commitment] of await commitmentsOf(db, p.id)) {
      seen.add(voter);
      const b = chained.get(voter);
      if (!b) at(0, `a ballot (voter ${voter.slice(0, 12)}) is absent from the chain`);
      else if ((JSON.parse(b.payload) as { ballot?: unknown }).ballot !== commitment) at(b.n, `a ballot (voter ${voter.slice(0, 12)}) differs from what entry ${b.n} recorded`);
    }
    for (const [voter, b] of chained) if (!seen.has(voter)) at(b.n, `the ballot entry ${b.n} recorded (voter ${voter.slice(0, 12)}) is no longer stored`);
    const o = outcomes.get(p.id);
    if (p.state === "open") {
      if (o) at(o.n, `open, yet entry ${o.n} recorded its outcome`);
    } else if (!o) {
      at(0, "closed, but its outcome is absent from the chain");
    } else {
      const recorded = JSON.parse(o.payload) as Record<string, unknown>;
      const now = outcomePayload(p.id, p.state, p.outcome!, await ballotsDigest(db, p.id), p.closedAt!.getTime());
      const differs = Object.keys(now).filter((k) => JSON.stringify(now[k]) !== JSON.stringify(recorded[k]));
      if (differs.length) at(o.n, `the stored outcome's ${differs.join(", ")} differ from what entry ${o.n} recorded`);
    }
  }
  const present = new Set(rows.map((r) => r.id));
  for (const [id, e] of opened) if (!present.has(id)) breaks.push({ n: e.n, actionId: id, problem: `entry ${e.n} records a proposal no longer stored here` });
  return breaks;
}
