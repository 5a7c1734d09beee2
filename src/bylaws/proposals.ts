import { randomUUID } from "node:crypto";
import type { Kysely, Selectable } from "kysely";
import type { DB, ProposalsTable } from "../db/schema.ts";
import { type By, getMember, lockUnion, type Member } from "../members/members.ts";
import { applyChange, bylawsVersion, readBylaws, writeVersionIn } from "./bylaws.ts";
import { type BylawParams, BylawsError, formatParam, paramSpec, type ParamKey, PROPOSAL_KINDS, type ProposalKind, thresholdFor, thresholdRatio } from "./params.ts";
import { DomainError } from "../domain-error.ts";
import { type ChainHeads, lockChain } from "../actions/chain.ts";
import { prepared } from "../db/prepared.ts";
import { type BallotRow, chainBallot, chainOutcome, chainProposalOpened } from "./proposal-chain.ts";
import { installLeader, removeFromOffice } from "../members/leadership.ts";
import { syncRoleBadgesIn } from "../treasury/badges.ts";
import type { DomainDeps } from "../domain-deps.ts";
import { getTreasury } from "../treasury/treasury.ts";
import { parseWalletAddress } from "../treasury/badges.ts";
import { describeSpendExecution, officerSignaturesNeeded, queueSpendIn, spendExecution } from "../treasury/spends.ts";

// Proposals and their votes. A proposal is a poll: yes / no / abstain (one
// choice) for everything but elections, which are approval votes (any number
// of candidates). Rules come from the bylaws version in force when it opened.
// Closing is idempotent and happens once, whoever (scheduler, CLI, several
// workers) gets there first; passing applies the change in the same
// transaction.

export type ProposalState = "open" | "passed" | "failed";

export type ProposalChange =
  | { readonly kind: "resolution" }
  | { readonly kind: "amendment"; readonly params: Readonly<Record<string, unknown>>; readonly text?: string }
  | { readonly kind: "election"; readonly role: "officer" | "leader"; readonly portfolio: string | null; readonly candidates: readonly string[] }
  | { readonly kind: "recall"; readonly memberId: string }
  | { readonly kind: "spend"; readonly amount: string; readonly mint: string | null; readonly recipient: string; readonly purpose?: string };

export interface Proposal {
  readonly id: string;
  readonly unionId: string;
  readonly number: number;
  readonly kind: ProposalKind;
  readonly title: string;
  readonly text: string;
  readonly options: readonly string[];
  /** Approval voting (ActivityStreams anyOf): a ballot may choose several options. */
  readonly multiple: boolean;
  readonly change: ProposalChange;
  readonly bylawsVersion: number;
  readonly state: ProposalState;
  readonly openedBy: string | null;
  readonly openedAt: Date;
  readonly closesAt: Date;
  readonly eligibleCount: number;
  readonly closedAt: Date | null;
  readonly outcome: Outcome | null;
}

export interface OptionTally {
  readonly text: string;
  /** Members who chose this option themselves. */
  readonly direct: number;
  /** Members whose delegate chose it for them. */
  readonly delegated: number;
}

export interface Tally {
  readonly options: readonly OptionTally[];
  /** Members who voted themselves. */
  readonly voters: number;
  /** Members counted through a delegate. */
  readonly delegatedVoters: number;
  readonly eligible: number;
  readonly quorumPercent: number;
  readonly quorumMet: boolean;
}

export interface Outcome {
  readonly passed: boolean;
  readonly reason: string;
  readonly tally: Tally;
  /** Elections: the winner's member id. */
  readonly winner?: string;
  /** Amendments: the bylaws version that took force. */
  readonly bylawsVersion?: number;
}

export const YES = "Yes";
export const NO = "No";
export const ABSTAIN = "Abstain";
const MAX_CANDIDATES = 20;
const MIN_PERIOD_MS = 10_000;
const MAX_PERIOD_MS = 31 * 24 * 3600_000;

export class ProposalError extends DomainError<"invalid" | "forbidden" | "not_found" | "conflict"> {
  override name = "ProposalError";
}

export interface ProposalDeps extends DomainDeps {
  /**
   * Running tallies go out at most once per this many ms per proposal
   * (MUSTER_TALLY_BATCH_MS); default DEFAULT_TALLY_BATCH_MS.
   */
  readonly tallyBatchMs?: number;
}

export const DEFAULT_TALLY_BATCH_MS = 5_000;

export interface NewProposal {
  readonly kind: ProposalKind;
  readonly title: string;
  readonly text?: string;
  /** Defaults to now + the bylaws' voting period. */
  readonly closesAt?: Date;
  /** Amendment: parameter values (any accepted form) and/or new text. */
  readonly params?: Readonly<Record<string, unknown>>;
  readonly bylawsText?: string;
  /** Election: the office, and candidate member ids (1-20). */
  readonly role?: "officer" | "leader";
  readonly portfolio?: string | null;
  readonly candidates?: readonly string[];
  /** Recall: the leader's or an officer's member id. */
  readonly memberId?: string;
  /** Spend: base units, mint (or null), recipient (an address or a description), and what it is for. */
  readonly amount?: string | bigint;
  readonly mint?: string | null;
  readonly recipient?: string;
  readonly purpose?: string;
}

export function toProposal(r: Selectable<ProposalsTable>): Proposal {
  return {
    id: r.id,
    unionId: r.union_id,
    number: Number(r.number),
    kind: r.kind as ProposalKind,
    title: r.title,
    text: r.text_md,
    options: JSON.parse(r.options) as string[],
    multiple: Number(r.multiple) === 1,
    change: JSON.parse(r.change) as ProposalChange,
    bylawsVersion: Number(r.bylaws_version),
    state: r.state as ProposalState,
    openedBy: r.opened_by,
    openedAt: new Date(Number(r.opened_at)),
    closesAt: new Date(Number(r.closes_at)),
    eligibleCount: Number(r.eligible_count),
    closedAt: r.closed_at === null ? null : new Date(Number(r.closed_at)),
    outcome: r.outcome === null ? null : JSON.parse(r.outcome) as Outcome,
  };
}

async function activeMember(db: Kysely<DB>, unionId: string, memberId: string): Promise<Member> {
  const m = await getMember(db, unionId, memberId);
  if (!m || m.state !== "active") throw new ProposalError("not_found", `no active member ${memberId}`);
  return m;
}

/** Opens a proposal. `by` is the operator, or a member the bylaws allow to propose. */
export async function createProposal(deps: ProposalDeps, unionId: string, by: By, input: NewProposal, now = Date.now()): Promise<Proposal> {
  if (!PROPOSAL_KINDS.includes(input.kind)) throw new ProposalError("invalid", `a proposal is one of ${PROPOSAL_KINDS.join(", ")}; got ${JSON.stringify(input.kind)}`);
  const title = input.title?.trim() ?? "";
  if (title.length < 1 || title.length > 200) throw new ProposalError("invalid", "a proposal's title is 1-200 characters");
  const text = (input.text ?? "").trim();
  if (text.length > 20_000) throw new ProposalError("invalid", "a proposal's text is at most 20000 characters");
  const id = randomUUID();
  const proposal = await deps.db.transaction().execute(async (trx) => {
    await lockUnion(trx, unionId);
    const bylaws = await readBylaws(trx, unionId);
    let openedBy: string | null = null;
    if (by.kind === "member") {
      const m = await getMember(trx, unionId, by.memberId);
      if (!m || m.state !== "active") throw new ProposalError("forbidden", "only active members may propose");
      if (bylaws.params.proposers === "officers" && m.role === "member") throw new ProposalError("forbidden", "the bylaws let only the leader and officers open proposals");
      openedBy = m.id;
    }
    let options = [YES, NO, ABSTAIN];
    let multiple = false;
    let change: ProposalChange;
    switch (input.kind) {
      case "resolution":
        change = { kind: "resolution" };
        break;
      case "amendment": {
        const next = applyChange(bylaws, { params: input.params ?? {}, text: input.bylawsText });
        if (next.changed.length === 0 && !next.textChanged) throw new ProposalError("invalid", "an amendment must change a parameter or the text");
        const params: Record<string, unknown> = {};
        for (const k of next.changed) params[k] = typeof next.params[k] === "bigint" ? String(next.params[k]) : next.params[k];
        change = { kind: "amendment", params, ...(next.textChanged ? { text: next.text } : {}) };
        break;
      }
      case "election": {
        const role = input.role ?? "officer";
        if (role !== "officer" && role !== "leader") throw new ProposalError("invalid", "an election is for the leader or an officer");
        const portfolio = input.portfolio?.trim() || null;
        if (portfolio && portfolio.length > 120) throw new ProposalError("invalid", "a portfolio title is 1-120 characters");
        const ids = [...new Set(input.candidates ?? [])];
        if (ids.length < 1 || ids.length > MAX_CANDIDATES) throw new ProposalError("invalid", `an election has 1 to ${MAX_CANDIDATES} candidates`);
        const candidates = await Promise.all(ids.map((c) => activeMember(trx, unionId, c)));
        // Options are named by handle: a Mastodon vote names its option by text.
        options = candidates.map((c) => c.handle ?? c.actorId ?? c.id);
        multiple = true;
        change = { kind: "election", role, portfolio, candidates: candidates.map((c) => c.id) };
        break;
      }
      case "recall": {
        const target = await activeMember(trx, unionId, input.memberId ?? "");
        if (target.role !== "officer" && target.role !== "leader") throw new ProposalError("invalid", `${target.handle ?? target.id} holds no office: a recall removes the leader or an officer`);
        change = { kind: "recall", memberId: target.id };
        break;
      }
      case "spend": {
        const amount = String(input.amount ?? "").trim();
        if (!/^\d{1,20}$/.test(amount) || BigInt(amount) === 0n || BigInt(amount) > 18_446_744_073_709_551_615n) throw new ProposalError("invalid", "a spend's amount is a positive whole number of base units");
        const recipient = input.recipient?.trim() ?? "";
        if (recipient.length < 1 || recipient.length > 200) throw new ProposalError("invalid", "a spend names its recipient (1-200 characters)");
        const purpose = input.purpose?.trim() ?? "";
        if (purpose.length > 500) throw new ProposalError("invalid", "a spend's purpose is at most 500 characters");
        const mint = input.mint?.trim() || bylaws.params.duesMint;
        // The treasury pays a passed spend by itself (src/treasury/spends.ts): with a treasury, say now what it could not pay.
        const treasury = await getTreasury(trx, unionId);
        if (treasury) {
          try {
            parseWalletAddress(recipient);
          } catch {
            throw new ProposalError("invalid", `a spend's recipient must be a Solana address (base58 public key) for the treasury to send to; got ${JSON.stringify(recipient.slice(0, 60))}`);
          }
          if (mint && mint !== treasury.mint) throw new ProposalError("invalid", `the treasury holds ${treasury.mint}; it cannot send ${mint}`);
        }
        change = { kind: "spend", amount, mint: mint ?? treasury?.mint ?? null, recipient, ...(purpose ? { purpose } : {}) };
        break;
      }
    }
    const closesAt = input.closesAt?.getTime() ?? now + bylaws.params.votingPeriodHours * 3600_000;
    if (!Number.isFinite(closesAt) || closesAt - now < MIN_PERIOD_MS || closesAt - now > MAX_PERIOD_MS) {
      throw new ProposalError("invalid", "a vote stays open from 10 seconds to 31 days");
    }
    const last = await trx.selectFrom("proposals").select((eb) => eb.fn.max("number").as("n")).where("union_id", "=", unionId).executeTakeFirst();
    const eligible = await trx.selectFrom("members").select((eb) => eb.fn.countAll<number>().as("n"))
      .where("union_id", "=", unionId).where("state", "=", "active").where("joined_at", "<=", now).executeTakeFirstOrThrow();
    const row = {
      id,
      union_id: unionId,
      number: Number(last?.n ?? 0) + 1,
      kind: input.kind,
      title,
      text_md: text,
      options: JSON.stringify(options),
      multiple: multiple ? 1 : 0,
      change: JSON.stringify(change),
      bylaws_version: bylaws.version,
      state: "open",
      opened_by: openedBy,
      opened_at: now,
      closes_at: closesAt,
      eligible_count: Number(eligible.n),
      closed_at: null,
      outcome: null,
      tally_due_at: null,
    };
    await trx.insertInto("proposals").values(row).execute();
    const proposal = toProposal(row);
    await chainProposalOpened(trx, proposal);
    await deps.outbox.add(trx, { kind: "proposal.publish", unionId, proposalId: id });
    return proposal;
  });
  deps.events.emit("proposal.opened", { unionId, proposalId: id });
  return proposal;
}

export async function getProposal(db: Kysely<DB>, unionId: string, idOrNumber: string): Promise<Proposal | undefined> {
  const q = db.selectFrom("proposals").selectAll().where("union_id", "=", unionId);
  const n = /^#?(\d{1,9})$/.exec(idOrNumber.trim());
  const row = n ? await q.where("number", "=", Number(n[1])).executeTakeFirst() : await q.where("id", "=", idOrNumber).executeTakeFirst();
  return row && toProposal(row);
}

export async function listProposals(db: Kysely<DB>, unionId: string, opts: { states?: readonly ProposalState[] } = {}): Promise<Proposal[]> {
  let q = db.selectFrom("proposals").selectAll().where("union_id", "=", unionId);
  if (opts.states) q = q.where("state", "in", opts.states);
  return (await q.orderBy("number", "desc").execute()).map(toProposal);
}

export type VoteSource = { readonly kind: "activity"; readonly id: string } | { readonly kind: "web" };
export type Voter = { readonly memberId: string } | { readonly actorId: string };
export type VoteResult = { readonly counted: true } | { readonly counted: false; readonly reason: string };

/**
 * Records a vote. Returns why a vote did not count rather than throwing, so
 * the inbox can log it and move on (a refused vote is never retried).
 *
 * Eligible: members active now who had joined when the proposal opened.
 * A poll answer from the fediverse cannot be changed (Mastodon offers no way
 * to): for one-choice polls the first answer stands and later ones are
 * refused; for approval polls each answer adds its option (Mastodon sends one
 * per chosen option). A web vote replaces the member's whole ballot.
 */
export async function castVote(deps: Pick<ProposalDeps, "db" | "events" | "outbox" | "tallyBatchMs">, unionId: string, proposalId: string, voter: Voter, choices: readonly string[], source: VoteSource, now = Date.now()): Promise<VoteResult> {
  // Votes for one union wait their turn here before taking a connection: a
  // vote waiting for the chain's lock would hold one of the pool's
  // connections for the whole burst. The lock below still orders votes
  // between processes (web server and workers).
  const result = await inTurn(deps.db, unionId, () => deps.db.transaction().execute((trx) => castVoteIn(deps, trx, unionId, proposalId, voter, choices, source, now)));
  if (result.counted && result.memberId) deps.events.emit("proposal.vote", { unionId, proposalId, memberId: result.memberId });
  return result.counted ? { counted: true } : result;
}

/**
 * castVote's checks and writes inside the caller's transaction, for a caller
 * that writes several votes in one (the inbox's group commit). The caller
 * emits "proposal.vote" with the returned memberId once it has committed.
 */
export async function castVoteIn(deps: Pick<ProposalDeps, "outbox" | "tallyBatchMs">, trx: Kysely<DB>, unionId: string, proposalId: string, voter: Voter, choices: readonly string[], source: VoteSource, now = Date.now(), batch: VoteBatch = voteBatch()): Promise<VoteResult & { memberId?: string }> {
  // Taken first: the ballot is appended to the union's hash chain, and two
  // votes that read the chain's head at once would both claim its next
  // position (one failing, a web voter seeing an error page). Also keeps a
  // member's concurrent answers from both passing the checks below.
  if (!batch.locked.has(unionId)) {
    await lockChain(trx, unionId);
    batch.locked.add(unionId);
  }
  const p = await voteProposal(trx, batch, unionId, proposalId);
  if (!p) return { counted: false, reason: "no such proposal" };
  if (p.state !== "open" || now >= p.closesAt) return { counted: false, reason: "the vote is closed" };
  const m = await voteMember(trx, batch, unionId, p.id, voter);
  if (!m || m.state !== "active") return { counted: false, reason: "not a member" };
  if (m.joinedAt === null || m.joinedAt > p.openedAt) return { counted: false, reason: "joined after the vote opened" };
  const picked = [...new Set(choices)];
  if (picked.length === 0) return { counted: false, reason: "no option chosen" };
  const indexes = picked.map((c) => p.options.indexOf(c));
  if (indexes.some((i) => i < 0)) return { counted: false, reason: `unknown option ${JSON.stringify(picked[indexes.findIndex((i) => i < 0)])}` };
  if (!p.multiple && indexes.length > 1) return { counted: false, reason: "this vote takes one option" };
  const existing = m.ballots;
  if (source.kind === "activity") {
    if (existing.some((b) => b.source_id === source.id)) return { counted: false, reason: "already counted (repeated delivery)" };
    if (!p.multiple && existing.length > 0) return { counted: false, reason: "already voted; a poll answer cannot be changed (vote on the web to change it)" };
    const fresh = indexes.filter((i) => !existing.some((b) => Number(b.option) === i));
    if (fresh.length === 0) return { counted: false, reason: "option already chosen" };
    for (const i of fresh) {
      await insertBallot(trx, p.id, m.id, i, "activity", source.id, now);
      existing.push({ member_id: m.id, option: i, source: "activity", source_id: source.id, cast_at: now });
    }
  } else {
    await trx.deleteFrom("ballots").where("proposal_id", "=", p.id).where("member_id", "=", m.id).execute();
    const rows = indexes.map((i) => ({ proposal_id: p.id, member_id: m.id, option: i, source: "web", source_id: `web:${m.id}:${now}`, cast_at: now }));
    await trx.insertInto("ballots").values(rows).execute();
    existing.splice(0, existing.length, ...rows);
  }
  // The ballot's rows as they now stand in the table (what chainBallot would read back).
  await chainBallot(trx, unionId, p.id, m.id, now, { rows: existing, heads: batch.heads });
  await scheduleTally(deps, trx, p, now);
  return { counted: true, memberId: m.id };
}

/**
 * What castVoteIn has read and written so far in one transaction, so that
 * a caller casting many votes in one (the inbox's group commit) reads each
 * proposal, each voter's ballot and each union's chain head once, takes the
 * chain's lock once and skips the running tally's claim once it is made.
 * Valid for one transaction only, in which castVoteIn (with this batch) is
 * the only writer of ballots, the chain and the tally's time; a new one for
 * each transaction (a failed shared one is run again with new ones).
 */
export interface VoteBatch {
  readonly locked: Set<string>;
  readonly proposals: Map<string, VoteProposal | undefined>;
  readonly voters: Map<string, VoteMember | undefined>;
  readonly heads: ChainHeads;
}

export function voteBatch(): VoteBatch {
  return { locked: new Set(), proposals: new Map(), voters: new Map(), heads: new Map() };
}

/** The proposal as castVoteIn checks it. */
interface VoteProposal {
  readonly id: string;
  readonly unionId: string;
  readonly state: string;
  readonly openedAt: number;
  readonly closesAt: number;
  readonly options: readonly string[];
  readonly multiple: boolean;
  /** The running tally's window end as last read or claimed; it only ever moves forward. */
  tallyDueAt: number | null;
}

/** A voter as castVoteIn checks them, with their ballot on one proposal as it stands in this transaction. */
interface VoteMember {
  readonly id: string;
  readonly state: string;
  readonly joinedAt: number | null;
  readonly ballots: BallotRow[];
}

async function voteProposal(trx: Kysely<DB>, batch: VoteBatch, unionId: string, proposalId: string): Promise<VoteProposal | undefined> {
  const key = `${unionId}\n${proposalId}`;
  if (batch.proposals.has(key)) return batch.proposals.get(key);
  const r = (await readVoteProposal(trx, unionId, proposalId)).rows[0];
  const p = r && {
    id: r.id,
    unionId: r.union_id,
    state: r.state,
    openedAt: Number(r.opened_at),
    closesAt: Number(r.closes_at),
    options: JSON.parse(r.options) as string[],
    multiple: Number(r.multiple) === 1,
    tallyDueAt: r.tally_due_at === null ? null : Number(r.tally_due_at),
  };
  batch.proposals.set(key, p);
  return p;
}

async function voteMember(trx: Kysely<DB>, batch: VoteBatch, unionId: string, proposalId: string, voter: Voter): Promise<VoteMember | undefined> {
  const prefix = `${unionId}\n${proposalId}\n`;
  const key = prefix + ("memberId" in voter ? `m:${voter.memberId}` : `a:${voter.actorId}`);
  if (batch.voters.has(key)) return batch.voters.get(key);
  const rows = "memberId" in voter
    ? (await readVoterById(trx, proposalId, unionId, voter.memberId)).rows
    : (await readVoterByActor(trx, proposalId, unionId, voter.actorId)).rows;
  const r = rows.find((x) => Number(x.k) === 1);
  const m = r && {
    id: r.t1!,
    state: r.t3!,
    joinedAt: r.n1 === null ? null : Number(r.n1),
    ballots: rows.filter((b) => Number(b.k) === 2).map((b) => ({ member_id: r.t1!, option: Number(b.n1), source: b.t1!, source_id: b.t2!, cast_at: Number(b.n2) })),
  };
  batch.voters.set(key, m);
  // The same member by their other name: one ballot, whichever way they are found next.
  if (r) batch.voters.set(prefix + ("memberId" in voter ? `a:${r.t2}` : `m:${r.t1}`), m);
  return m;
}

const readVoteProposal = prepared<[unionId: string, proposalId: string], { id: string; union_id: string; state: string; opened_at: number; closes_at: number; options: string; multiple: number; tally_due_at: number | null }>((db, unionId, proposalId) =>
  db.selectFrom("proposals").select(["id", "union_id", "state", "opened_at", "closes_at", "options", "multiple", "tally_due_at"])
    .where("union_id", "=", unionId).where("id", "=", proposalId));

/** A voter's row (k 1: text1-3 are id, actor_id, state, n1 joined_at) then their ballot's rows (k 2: source, source_id, n1 option, n2 cast_at). */
type VoterRow = { k: number; t1: string | null; t2: string | null; t3: string | null; n1: number | null; n2: number | null };

// One statement for the member and their ballot: a LEFT JOIN of the two cost
// SQLite about three times the two lookups it makes (28 against 10 µs).
const voterQuery = (db: Kysely<DB>, proposalId: string, unionId: string, byActor: boolean, voter: string) => {
  const member = db.selectFrom("members").where("union_id", "=", unionId).where(byActor ? "actor_id" : "id", "=", voter);
  return member.select((eb) => [eb.lit(1).$castTo<number>().as("k"), "id as t1", "actor_id as t2", eb.ref("state").$castTo<string | null>().as("t3"), "joined_at as n1", eb.lit(null).$castTo<number | null>().as("n2")])
    .unionAll(db.selectFrom("ballots").select((eb) => [eb.lit(2).$castTo<number>().as("k"), "source as t1", "source_id as t2", eb.lit(null).$castTo<string | null>().as("t3"), eb.ref("option").$castTo<number | null>().as("n1"), "cast_at as n2"])
      .where("proposal_id", "=", proposalId)
      .where("member_id", "=", byActor ? member.select("id") : voter));
};

const readVoterByActor = prepared<[proposalId: string, unionId: string, actorId: string], VoterRow>((db, proposalId, unionId, actorId) => voterQuery(db, proposalId, unionId, true, actorId));

const readVoterById = prepared<[proposalId: string, unionId: string, memberId: string], VoterRow>((db, proposalId, unionId, memberId) => voterQuery(db, proposalId, unionId, false, memberId));

const insertBallot = prepared<[proposalId: string, memberId: string, option: number, source: string, sourceId: string, castAt: number], unknown>((db, proposalId, memberId, option, source, sourceId, castAt) =>
  db.insertInto("ballots").values({ proposal_id: proposalId, member_id: memberId, option, source, source_id: sourceId, cast_at: castAt }));

const claimTally = prepared<[dueAt: number, proposalId: string, at: number], unknown>((db, dueAt, proposalId, at) =>
  db.updateTable("proposals").set({ tally_due_at: dueAt }).where("id", "=", proposalId)
    .where((eb) => eb.or([eb("tally_due_at", "is", null), eb("tally_due_at", "<=", at)])));

/** The last vote queued per union, per database handle (so two pools in one process still meet at the database's lock). */
const voteTurns = new WeakMap<object, Map<string, Promise<unknown>>>();

/** Runs `work` after every earlier call for the same union and database handle has settled. */
function inTurn<T>(db: Kysely<DB>, unionId: string, work: () => Promise<T>): Promise<T> {
  const turns = voteTurns.get(db) ?? new Map<string, Promise<unknown>>();
  voteTurns.set(db, turns);
  const before = turns.get(unionId) ?? Promise.resolve();
  const mine = before.then(work, work);
  const settled = mine.catch(() => undefined);
  turns.set(unionId, settled);
  void settled.then(() => {
    if (turns.get(unionId) === settled) turns.delete(unionId);
  });
  return mine;
}

/**
 * Queues the running tally's Update for the end of the current batch window,
 * unless one is already queued for a window not yet over: votes in a burst
 * share one Update, which counts them all when it is handled (after the
 * window ends, so after their commits). Written with the ballot, so the
 * Update is neither lost nor doubled by a crash.
 */
async function scheduleTally(deps: Pick<ProposalDeps, "outbox" | "tallyBatchMs">, trx: Kysely<DB>, p: VoteProposal, now: number): Promise<void> {
  const batch = deps.tallyBatchMs ?? DEFAULT_TALLY_BATCH_MS;
  // The clock now, not when the vote arrived: a vote that waited its turn
  // may come after the window it arrived in was counted, and must then
  // queue the next window's Update rather than count on one already sent.
  const at = Math.max(now, Date.now());
  const dueAt = (Math.floor(at / batch) + 1) * batch;
  // tally_due_at only ever moves forward (this is its only writer), so a
  // window end already seen past `at` means the claim below would match
  // nothing: an Update is queued for a window this vote's commit precedes.
  if (p.tallyDueAt !== null && p.tallyDueAt > at) return;
  const claimed = await claimTally(trx, dueAt, p.id, at);
  if (Number(claimed.numAffectedRows ?? 0n) !== 1) return;
  p.tallyDueAt = dueAt;
  await deps.outbox.add(trx, { kind: "proposal.tally", unionId: p.unionId, proposalId: p.id, dueAt }, { notBefore: dueAt });
}

/** The options a member chose themselves, for the web form. */
export async function ballotOf(db: Kysely<DB>, proposalId: string, memberId: string): Promise<string[]> {
  const p = await db.selectFrom("proposals").select("options").where("id", "=", proposalId).executeTakeFirst();
  if (!p) return [];
  const options = JSON.parse(p.options) as string[];
  const rows = await db.selectFrom("ballots").select("option").where("proposal_id", "=", proposalId).where("member_id", "=", memberId).orderBy("option").execute();
  return rows.map((r) => options[Number(r.option)]!);
}

/** Who voted themselves (member ids), in order of first vote; how they voted is not returned. */
export async function votersOf(db: Kysely<DB>, proposalId: string): Promise<string[]> {
  const rows = await db.selectFrom("ballots").select("member_id").select((eb) => eb.fn.min("cast_at").as("at"))
    .where("proposal_id", "=", proposalId).groupBy("member_id").orderBy("at").execute();
  return rows.map((r) => r.member_id);
}

async function paramsAtOpening(db: Kysely<DB>, p: Proposal): Promise<BylawParams> {
  return (await bylawsVersion(db, p.unionId, p.bylawsVersion) ?? await readBylaws(db, p.unionId)).params;
}

/**
 * Counts a proposal now. A member who did not vote is counted with the
 * ballot of the first member up their delegation chain who did (a delegation
 * for this kind of proposal wins over one for all), when the bylaws in force
 * at opening allow delegation. Only members eligible for this vote count.
 */
export async function tallyOf(db: Kysely<DB>, p: Proposal): Promise<Tally> {
  const params = await paramsAtOpening(db, p);
  // Costs what was voted and delegated, not the size of the union: only the
  // eligible count reads every member (a count, in the database). A running
  // tally is taken for each batch window of every open vote.
  const openedAt = p.openedAt.getTime();
  const counted = await db.selectFrom("members").select((eb) => eb.fn.countAll<number>().as("n")).where("union_id", "=", p.unionId).where("state", "=", "active")
    .where("joined_at", "<=", openedAt).executeTakeFirstOrThrow();
  const eligible = Number(counted.n);
  const ballots = new Map<string, number[]>();
  const rows = await db.selectFrom("ballots as b").innerJoin("members as m", "m.id", "b.member_id").select(["b.member_id", "b.option"])
    .where("b.proposal_id", "=", p.id).where("m.union_id", "=", p.unionId).where("m.state", "=", "active").where("m.joined_at", "<=", openedAt).execute();
  for (const b of rows) {
    const list = ballots.get(b.member_id) ?? [];
    list.push(Number(b.option));
    ballots.set(b.member_id, list);
  }
  const direct = p.options.map(() => 0);
  const delegated = p.options.map(() => 0);
  for (const choices of ballots.values()) for (const i of choices) direct[i]!++;
  let delegatedVoters = 0;
  if (params.delegation === "opt_in") {
    const edges = await delegationMap(db, p.unionId, p.kind);
    // Only an eligible member who delegated and did not vote can be counted through a delegate.
    const delegators = await db.selectFrom("delegations as d").innerJoin("members as m", "m.id", "d.delegator_id").select("d.delegator_id")
      .where("d.union_id", "=", p.unionId).where("d.scope", "in", ["all", p.kind]).where("m.state", "=", "active").where("m.joined_at", "<=", openedAt).execute();
    const resolved = new Map<string, string | null>();
    for (const member of new Set(delegators.map((d) => d.delegator_id))) {
      if (ballots.has(member)) continue;
      const voter = resolveDelegateMemo(edges, member, (m) => ballots.has(m), resolved);
      if (!voter) continue;
      delegatedVoters++;
      for (const i of ballots.get(voter)!) delegated[i]!++;
    }
  }
  const voters = ballots.size;
  const participating = voters + delegatedVoters;
  const quorumMet = eligible > 0 && participating * 100 >= params.quorumPercent * eligible;
  return {
    options: p.options.map((text, i) => ({ text, direct: direct[i]!, delegated: delegated[i]! })),
    voters,
    delegatedVoters,
    eligible,
    quorumPercent: params.quorumPercent,
    quorumMet,
  };
}

/** delegator → delegate for this kind: a kind-specific delegation wins over one for all. */
async function delegationMap(db: Kysely<DB>, unionId: string, kind: ProposalKind): Promise<Map<string, string>> {
  const rows = await db.selectFrom("delegations").select(["delegator_id", "delegate_id", "scope"]).where("union_id", "=", unionId)
    .where("scope", "in", ["all", kind]).execute();
  const map = new Map<string, string>();
  for (const r of rows) if (r.scope === "all") map.set(r.delegator_id, r.delegate_id);
  for (const r of rows) if (r.scope === kind) map.set(r.delegator_id, r.delegate_id);
  return map;
}

/**
 * resolveDelegate for every member of a tally at once: each member on the
 * walked path (none of whom voted) gets the same answer, remembered, so a
 * chain of length L costs L steps in all rather than L²/2 (10^5 members in
 * one chain would otherwise take 5·10^9 steps).
 */
function resolveDelegateMemo(edges: ReadonlyMap<string, string>, member: string, voted: (m: string) => boolean, memo: Map<string, string | null>): string | undefined {
  const path: string[] = [member];
  const onPath = new Set(path);
  let result: string | null = null;
  let at = edges.get(member);
  while (at !== undefined) {
    if (voted(at)) {
      result = at;
      break;
    }
    const known = memo.get(at);
    if (known !== undefined) {
      result = known;
      break;
    }
    if (onPath.has(at)) break; // a cycle with no voter on it
    path.push(at);
    onPath.add(at);
    at = edges.get(at);
  }
  for (const m of path) memo.set(m, result);
  return result ?? undefined;
}


/** Decides a tally under the bylaws: quorum, then the kind's threshold. A tie never passes. */
export function decide(p: Pick<Proposal, "kind" | "options" | "multiple">, tally: Tally, params: BylawParams): { passed: boolean; reason: string; winnerIndex?: number } {
  if (!tally.quorumMet) {
    return { passed: false, reason: `quorum missed: ${tally.voters + tally.delegatedVoters} of ${tally.eligible} eligible voted, ${tally.quorumPercent}% needed` };
  }
  const threshold = thresholdFor(params, p.kind);
  const [num, den] = thresholdRatio(threshold);
  const weight = (o: OptionTally) => o.direct + o.delegated;
  if (p.kind === "election") {
    const counts = tally.options.map(weight);
    const top = Math.max(...counts);
    const leaders = counts.filter((c) => c === top).length;
    if (top === 0) return { passed: false, reason: "no candidate was approved" };
    if (leaders > 1) return { passed: false, reason: `tie: ${leaders} candidates with ${top} approvals each` };
    const ballots = tally.voters + tally.delegatedVoters;
    if (!meets(top, ballots, num, den)) return { passed: false, reason: `the leading candidate was approved on ${top} of ${ballots} ballots; ${threshold.replace("_", " ")} needed` };
    const winnerIndex = counts.indexOf(top);
    return { passed: true, reason: `${p.options[winnerIndex]} elected with ${top} of ${ballots} approvals`, winnerIndex };
  }
  const yes = weight(tally.options[0]!);
  const no = weight(tally.options[1]!);
  if (yes === no) return { passed: false, reason: `tie: ${yes} yes, ${no} no` };
  if (!meets(yes, yes + no, num, den)) return { passed: false, reason: `${yes} yes, ${no} no: ${threshold.replace("_", " ")} needed` };
  return { passed: true, reason: `${yes} yes, ${no} no (${threshold.replace("_", " ")} needed)` };
}

/** part/whole reaches num/den; a simple majority must be strictly more than half. */
function meets(part: number, whole: number, num: number, den: number): boolean {
  if (whole === 0) return false;
  return num * 2 === den ? part * den > num * whole : part * den >= num * whole;
}

/**
 * Closes a proposal: counts, decides and applies the outcome, once. Before
 * its end time only `force` (the operator's `proposal close`) closes it.
 * Returns undefined when it was already closed or is not due.
 */
export async function closeProposal(deps: ProposalDeps, unionId: string, proposalId: string, opts: { now?: number; force?: boolean } = {}): Promise<Proposal | undefined> {
  const now = opts.now ?? Date.now();
  const emits: (() => void)[] = [];
  const closed = await deps.db.transaction().execute(async (trx) => {
    await lockUnion(trx, unionId);
    const row = await trx.selectFrom("proposals").selectAll().where("union_id", "=", unionId).where("id", "=", proposalId).executeTakeFirst();
    if (!row) throw new ProposalError("not_found", "no such proposal");
    const p = toProposal(row);
    if (p.state !== "open" || (!opts.force && now < p.closesAt.getTime())) return undefined;
    const params = await paramsAtOpening(trx, p);
    const tally = await tallyOf(trx, p);
    const d = decide(p, tally, params);
    let outcome: Outcome = { passed: d.passed, reason: d.reason, tally };
    if (d.passed) outcome = await apply(trx, p, outcome, d.winnerIndex, now, emits);
    // Roles changed: the leader's and officers' badges follow (src/treasury/badges.ts).
    if (d.passed && (p.change.kind === "recall" || p.change.kind === "election")) await syncRoleBadgesIn(trx, deps.outbox, unionId);
    // A passed spend: the ledger lane pays it (or records why not), queued with the outcome.
    if (outcome.passed && p.change.kind === "spend") await queueSpendIn(trx, deps.outbox, p);
    // The state guard makes a second closer (another worker that read the
    // row before this one committed) change nothing.
    const updated = await trx.updateTable("proposals")
      .set({ state: outcome.passed ? "passed" : "failed", closed_at: now, outcome: JSON.stringify(outcome) })
      .where("id", "=", p.id).where("state", "=", "open").executeTakeFirst();
    if (Number(updated.numUpdatedRows) !== 1) throw new ProposalError("conflict", "closed concurrently");
    await chainOutcome(trx, unionId, p.id, outcome.passed ? "passed" : "failed", outcome, now);
    await deps.outbox.add(trx, { kind: "proposal.closed", unionId, proposalId: p.id });
    return toProposal((await trx.selectFrom("proposals").selectAll().where("id", "=", p.id).executeTakeFirstOrThrow()));
  }).catch((e: unknown) => {
    if (e instanceof ProposalError && e.code === "conflict") return undefined;
    throw e;
  });
  if (closed) {
    for (const emit of emits) emit();
    deps.events.emit("proposal.closed", { unionId, proposalId, state: closed.state as "passed" | "failed" });
  }
  return closed;
}

async function apply(trx: Kysely<DB>, p: Proposal, outcome: Outcome, winnerIndex: number | undefined, now: number, emits: (() => void)[]): Promise<Outcome> {
  const c = p.change;
  switch (c.kind) {
    case "resolution":
    case "spend":
      // A spend is approved here; closeProposal queues its payment by the treasury.
      return outcome;
    case "amendment": {
      try {
        const v = await writeVersionIn(trx, p.unionId, { kind: "proposal", proposalId: p.id }, { params: c.params, text: c.text }, now);
        return { ...outcome, bylawsVersion: v.version };
      } catch (e) {
        if (e instanceof BylawsError && e.code === "invalid") return { ...outcome, reason: `${outcome.reason}; nothing to apply: ${e.message}` };
        throw e;
      }
    }
    case "recall": {
      if (!await removeFromOffice(trx, p.unionId, c.memberId)) return { ...outcome, reason: `${outcome.reason}; they no longer held an office` };
      return outcome;
    }
    case "election": {
      const winnerId = c.candidates[winnerIndex!]!;
      const w = await getMember(trx, p.unionId, winnerId);
      if (!w || w.state !== "active") return { ...outcome, passed: false, reason: `${outcome.reason}; but the winner is no longer a member` };
      if (c.role === "leader") {
        // The leader is the root of the sponsor tree: see src/members/leadership.ts.
        await installLeader(trx, p.unionId, w.id, now);
      } else if (w.role === "leader") {
        await trx.updateTable("members").set({ portfolio: c.portfolio }).where("id", "=", w.id).execute();
      } else {
        await trx.updateTable("members").set({ role: "officer", portfolio: c.portfolio }).where("id", "=", w.id).execute();
      }
      return { ...outcome, winner: w.id };
    }
  }
}

/** Closes every open proposal whose end time has passed; safe to run from several workers at once. */
export async function closeDue(deps: ProposalDeps, now = Date.now()): Promise<Proposal[]> {
  const due = await deps.db.selectFrom("proposals").select(["id", "union_id"]).where("state", "=", "open").where("closes_at", "<=", now).execute();
  const out: Proposal[] = [];
  for (const d of due) {
    const p = await closeProposal(deps, d.union_id, d.id, { now });
    if (p) out.push(p);
  }
  return out;
}

/**
 * The result of a closed proposal in plain words, one sentence a line: what
 * was decided, the counts and quorum, and what changes now. Posted in the
 * poll's thread; names members by handle (the poll went to members only).
 */
export async function describeOutcome(db: Kysely<DB>, p: Proposal): Promise<string[] | undefined> {
  const o = p.outcome;
  if (p.state === "open" || !o) return undefined;
  const t = o.tally;
  const lines = [`Proposal #${p.number} "${p.title}" ${o.passed ? "passed" : "failed"}: ${o.reason}.`];
  const counts = t.options.map((x) => `${x.text} ${x.direct + x.delegated}${x.delegated > 0 ? ` (${x.delegated} by delegation)` : ""}`);
  lines.push(`${p.multiple ? "Approvals" : "Votes"}: ${counts.join(", ")}. ${t.voters} of ${t.eligible} eligible members voted${t.delegatedVoters > 0 ? ` and ${t.delegatedVoters} more through a delegate` : ""}; quorum ${t.quorumPercent}% ${t.quorumMet ? "met" : "missed"}.`);
  const handle = async (id: string) => {
    const m = await getMember(db, p.unionId, id);
    return m?.handle ?? m?.actorId ?? "a former member";
  };
  const c = p.change;
  if (!o.passed) {
    lines.push("Nothing changes.");
  } else if (c.kind === "resolution") {
    lines.push("The resolution is adopted.");
  } else if (c.kind === "amendment") {
    if (o.bylawsVersion === undefined) {
      lines.push("The bylaws stay as they were: the change no longer applied.");
    } else {
      const changes = Object.entries(c.params).map(([k, v]) => {
        try {
          const spec = paramSpec(k);
          return `${spec.label} is now ${formatParam(spec.key as ParamKey, spec.parse(v) as never)}`;
        } catch {
          return `${k} is now ${String(v)}`;
        }
      });
      if (c.text !== undefined) changes.push("the text is amended");
      lines.push(`Bylaws version ${o.bylawsVersion} is in force from now: ${changes.join("; ")}.`);
    }
  } else if (c.kind === "election") {
    if (o.winner) lines.push(`${await handle(o.winner)} is elected ${c.role === "leader" ? "leader" : `officer${c.portfolio ? ` (${c.portfolio})` : ""}`}.`);
  } else if (c.kind === "recall") {
    lines.push(/no longer an officer/.test(o.reason) ? "Nothing changes: they were no longer an officer." : `${await handle(c.memberId)} is no longer an officer.`);
  } else if (c.kind === "spend") {
    const execution = await spendExecution(db, p.unionId, p.id);
    const done = (!execution || execution.state === "queued") && !isAddress(c.recipient)
      ? "the treasury cannot send it: the recipient is not a Solana address"
      : describeSpendExecution(execution, await officerSignaturesNeeded(db, p.unionId));
    lines.push(`A spend of ${c.amount} base units${c.mint ? ` of ${c.mint}` : ""} to ${c.recipient} is approved; ${done}.`);
  }
  return lines;
}

function isAddress(s: string): boolean {
  try {
    parseWalletAddress(s);
    return true;
  } catch {
    return false;
  }
}

/** Passed spend proposals (what the treasury did with each: src/treasury/spends.ts). */
export async function approvedSpends(db: Kysely<DB>, unionId: string): Promise<{ proposalId: string; number: number; amount: bigint; mint: string | null; recipient: string; approvedAt: Date }[]> {
  const rows = await db.selectFrom("proposals").selectAll().where("union_id", "=", unionId).where("kind", "=", "spend").where("state", "=", "passed").orderBy("number").execute();
  return rows.map(toProposal).map((p) => {
    const c = p.change as Extract<ProposalChange, { kind: "spend" }>;
    return { proposalId: p.id, number: p.number, amount: BigInt(c.amount), mint: c.mint, recipient: c.recipient, approvedAt: p.closedAt! };
  });
}

/** Whether a proposal passed (alliances ratified by member vote check this). */
export async function proposalPassed(db: Kysely<DB>, unionId: string, proposalId: string): Promise<boolean> {
  const r = await db.selectFrom("proposals").select("state").where("union_id", "=", unionId).where("id", "=", proposalId).executeTakeFirst();
  return r?.state === "passed";
}

export type DelegationScope = "all" | ProposalKind;

/**
 * A member delegates their vote (for all proposals or one kind) to another
 * member; where the bylaws allow it. Only the member themselves may do it.
 * A delegation that would make a cycle is refused.
 */
export async function delegateVote(deps: Pick<ProposalDeps, "db" | "events">, unionId: string, by: By, delegateId: string, scope: DelegationScope = "all"): Promise<void> {
  if (by.kind !== "member") throw new ProposalError("forbidden", "only a member delegates their own vote");
  if (scope !== "all" && !PROPOSAL_KINDS.includes(scope)) throw new ProposalError("invalid", `a delegation is for all proposals or one kind (${PROPOSAL_KINDS.join(", ")})`);
  await deps.db.transaction().execute(async (trx) => {
    await lockUnion(trx, unionId);
    const params = (await readBylaws(trx, unionId)).params;
    if (params.delegation !== "opt_in") throw new ProposalError("forbidden", "the bylaws do not allow delegating votes");
    const me = await activeMember(trx, unionId, by.memberId);
    const to = await activeMember(trx, unionId, delegateId);
    if (me.id === to.id) throw new ProposalError("invalid", "a member cannot delegate to themselves");
    // Check every kind the delegation would apply to for a chain leading back to me.
    const mine = new Set((await delegationsOf(trx, unionId, me.id)).map((d) => d.scope));
    for (const kind of scope === "all" ? PROPOSAL_KINDS : [scope]) {
      if (scope === "all" && mine.has(kind)) continue;
      const edges = await delegationMap(trx, unionId, kind);
      const seen = new Set<string>();
      for (let at: string | undefined = to.id; at !== undefined && !seen.has(at); at = edges.get(at)) {
        if (at === me.id) throw new ProposalError("conflict", `delegating to ${to.handle ?? to.id} would make a cycle: their vote already comes back to you`);
        seen.add(at);
      }
    }
    await trx.deleteFrom("delegations").where("union_id", "=", unionId).where("delegator_id", "=", me.id).where("scope", "=", scope).execute();
    await trx.insertInto("delegations").values({ union_id: unionId, delegator_id: me.id, scope, delegate_id: to.id, created_at: Date.now() }).execute();
  });
}

export async function withdrawDelegation(deps: Pick<ProposalDeps, "db" | "events">, unionId: string, by: By, scope: DelegationScope = "all"): Promise<boolean> {
  if (by.kind !== "member") throw new ProposalError("forbidden", "only a member withdraws their own delegation");
  const r = await deps.db.deleteFrom("delegations").where("union_id", "=", unionId).where("delegator_id", "=", by.memberId).where("scope", "=", scope).executeTakeFirst();
  return Number(r.numDeletedRows) > 0;
}

export async function delegationsOf(db: Kysely<DB>, unionId: string, memberId: string): Promise<{ scope: DelegationScope; delegateId: string }[]> {
  const rows = await db.selectFrom("delegations").select(["scope", "delegate_id"]).where("union_id", "=", unionId).where("delegator_id", "=", memberId).execute();
  return rows.map((r) => ({ scope: r.scope as DelegationScope, delegateId: r.delegate_id }));
}
