import { randomUUID } from "node:crypto";
import type { Kysely, Selectable } from "kysely";
import type { CrowdfundsTable, DB } from "../db/schema.ts";
import { DomainError } from "../domain-error.ts";
import type { DomainDeps } from "../domain-deps.ts";
import { readBylaws } from "../bylaws/bylaws.ts";
import { type By, getMember, lockUnion, requireOfficer } from "../members/members.ts";
import { renderMarkdown } from "../actions/markdown.ts";
import { memberStanding } from "../treasury/dues.ts";
import type { DuesParamsSource } from "../treasury/dues-params.ts";
import { parseWalletAddress } from "../treasury/badges.ts";
import { getTreasury } from "../treasury/treasury.ts";
import { getProposal } from "../bylaws/proposals.ts";

/**
 * A member's project raised through the union: proposed by a member the
 * bylaws allow, approved (or rejected) by officers, open for pledges into its
 * own vault until the deadline, then settled (goal reached: the beneficiary
 * gets the total minus the union's cut) or refunded (goal missed: every
 * pledge goes back where it came from). Chain work is solana/crowdfund-*.ts;
 * this module decides and records, in domain terms.
 */

export type CrowdfundState = "proposed" | "approved" | "open" | "succeeded" | "settled" | "failed" | "refunded" | "rejected";

export interface Crowdfund {
  readonly id: string;
  readonly unionId: string;
  readonly seq: number;
  readonly title: string;
  readonly bodyMd: string;
  readonly bodyHtml: string;
  /** u64 base units of the dues mint. */
  readonly goal: bigint;
  readonly deadline: Date;
  readonly beneficiary: string;
  readonly proposerId: string | null;
  readonly state: CrowdfundState;
  /** Fixed at approval from the bylaws. */
  readonly cutBps: number | null;
  readonly mint: string | null;
  readonly vault: string | null;
  readonly reference: string | null;
  readonly vaultSignature: string | null;
  readonly actionId: string | null;
  readonly decisionNote: string | null;
  /** The passed resolution that approved it, under the crowdfundApproval bylaw member_vote. */
  readonly approvedByProposal: string | null;
  readonly total: bigint | null;
  readonly cut: bigint | null;
  readonly createdAt: Date;
  readonly decidedAt: Date | null;
  readonly settledAt: Date | null;
}

export interface CrowdfundDraft {
  readonly title: string;
  readonly text: string;
  readonly goal: bigint;
  readonly deadline: Date;
  readonly beneficiary: string;
}

export interface CrowdfundDeps extends DomainDeps {
  readonly duesParams: DuesParamsSource;
}

export class CrowdfundError extends DomainError<"invalid" | "not_found" | "conflict" | "forbidden"> {
  override name = "CrowdfundError";
}

const U64_MAX = 0xffffffffffffffffn;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export function toCrowdfund(r: Selectable<CrowdfundsTable>): Crowdfund {
  const n = (v: number | null) => (v === null ? null : new Date(Number(v)));
  return {
    id: r.id, unionId: r.union_id, seq: Number(r.seq), title: r.title, bodyMd: r.body_md, bodyHtml: r.body_html,
    goal: BigInt(r.goal), deadline: new Date(Number(r.deadline)), beneficiary: r.beneficiary, proposerId: r.proposer_id,
    state: r.state as CrowdfundState, cutBps: r.cut_bps === null ? null : Number(r.cut_bps), mint: r.mint, vault: r.vault,
    reference: r.reference, vaultSignature: r.vault_signature, actionId: r.action_id, decisionNote: r.decision_note, approvedByProposal: r.approved_by_proposal ?? null,
    total: r.total === null ? null : BigInt(r.total), cut: r.cut === null ? null : BigInt(r.cut),
    createdAt: new Date(Number(r.created_at)), decidedAt: n(r.decided_at), settledAt: n(r.settled_at),
  };
}

/**
 * The union's cut of a total, floored: the union never takes a fraction of a
 * base unit more than its bylaws say, and the beneficiary gets the remainder.
 */
export function splitTotal(total: bigint, cutBps: number): { cut: bigint; beneficiary: bigint } {
  if (total < 0n || total > U64_MAX) throw new CrowdfundError("invalid", "a total is a u64");
  if (!Number.isInteger(cutBps) || cutBps < 0 || cutBps > 10_000) throw new CrowdfundError("invalid", "a cut is 0-10000 basis points");
  const cut = (total * BigInt(cutBps)) / 10_000n;
  return { cut, beneficiary: total - cut };
}

/** The memo a pledge carries: which crowdfund, and which member pledges. */
export function pledgeMemo(crowdfundId: string, actorId: string): string {
  return `muster crowdfund ${crowdfundId} ${actorId}`;
}

export function parsePledgeMemo(memo: string | null): { crowdfundId: string; actorId: string } | null {
  const m = memo === null ? null : /^muster crowdfund ([0-9a-f-]{36}) (\S{1,2000})$/i.exec(memo.trim());
  return m ? { crowdfundId: m[1]!.toLowerCase(), actorId: m[2]! } : null;
}

function validate(d: CrowdfundDraft, now: number) {
  const title = d.title.trim();
  if (title.length < 1 || title.length > 200) throw new CrowdfundError("invalid", "a title is 1-200 characters");
  const text = d.text.trim();
  if (text.length < 1 || text.length > 20_000) throw new CrowdfundError("invalid", "the text is 1-20000 characters of Markdown");
  if (typeof d.goal !== "bigint" || d.goal < 1n || d.goal > U64_MAX) throw new CrowdfundError("invalid", "the goal is a whole number of base units, 1 to 2^64-1");
  if (Number.isNaN(d.deadline.getTime()) || d.deadline.getTime() <= now) throw new CrowdfundError("invalid", "the deadline must be a valid time in the future");
  let beneficiary: string;
  try {
    beneficiary = parseWalletAddress(d.beneficiary);
  } catch (e) {
    throw new CrowdfundError("invalid", `beneficiary: ${(e as Error).message}`);
  }
  return { title, text, goal: d.goal, deadline: d.deadline.getTime(), beneficiary };
}

/** Whether the bylaws let this member raise a crowdfund now; the reason when not. */
export async function mayPropose(deps: Pick<CrowdfundDeps, "db" | "duesParams">, unionId: string, memberId: string, now = Date.now()): Promise<string | null> {
  const member = await getMember(deps.db, unionId, memberId);
  if (!member || member.state !== "active") return "only an active member may propose a crowdfund";
  const { crowdfundEligibility } = (await readBylaws(deps.db, unionId)).params;
  if (crowdfundEligibility === "officers" && member.role === "member") return "the bylaws let only the leader and officers propose a crowdfund";
  if (crowdfundEligibility === "good_standing") {
    // A union without dues has every active member in good standing (dues.ts).
    const { standing } = await memberStanding({ db: deps.db, duesParams: deps.duesParams }, unionId, memberId, now);
    if (standing !== "good") return `the bylaws ask for good standing to propose a crowdfund; this member is in ${standing}`;
  }
  return null;
}

export async function proposeCrowdfund(deps: CrowdfundDeps, unionId: string, proposerId: string, draft: CrowdfundDraft): Promise<Crowdfund> {
  const now = Date.now();
  const v = validate(draft, now);
  const refusal = await mayPropose(deps, unionId, proposerId, now);
  if (refusal) throw new CrowdfundError("forbidden", refusal);
  const id = randomUUID();
  await deps.db.transaction().execute(async (trx) => {
    await lockUnion(trx, unionId);
    const max = await trx.selectFrom("crowdfunds").select((eb) => eb.fn.max("seq").as("max")).where("union_id", "=", unionId).executeTakeFirst();
    await trx.insertInto("crowdfunds").values({
      id, union_id: unionId, seq: Number(max?.max ?? 0) + 1, title: v.title, body_md: v.text, body_html: renderMarkdown(v.text),
      goal: v.goal.toString(), deadline: v.deadline, beneficiary: v.beneficiary, proposer_id: proposerId, state: "proposed",
      cut_bps: null, mint: null, vault: null, reference: null, vault_raw: null, vault_last_valid_block_height: null, vault_signature: null,
      action_id: null, decided_by: null, decision_note: null, total: null, cut: null, created_at: now, decided_at: null, settled_at: null,
    }).execute();
  });
  return (await getCrowdfund(deps.db, unionId, id))!;
}

/**
 * Officers approve: the cut in force is fixed for this crowdfund and the
 * treasury's mint chosen. The vault is then opened by the ledger process
 * (solana/crowdfund-vault.ts), which announces the crowdfund once its vault
 * exists, so no member is asked to pledge into an account not yet there.
 */
export async function approveCrowdfund(deps: Pick<CrowdfundDeps, "db">, unionId: string, ref: string, by: By, note?: string, proposal?: string): Promise<Crowdfund> {
  return decide(deps, unionId, ref, by, "approved", note, proposal);
}

/**
 * Under the crowdfundApproval bylaw `member_vote`, an officer approves a
 * crowdfund only by naming a passed resolution that names it ("crowdfund
 * #N", in its title or text); each vote approves one crowdfund. As for
 * alliances (requireRatification in src/relationships/relationships.ts): a
 * proposal named is always checked and recorded, the operator's too;
 * without one the operator overrides.
 */
async function requireApprovalVote(trx: Kysely<DB>, unionId: string, by: By, proposalRef: string | undefined, cf: Crowdfund): Promise<string | null> {
  if (by.kind === "operator" && !proposalRef) return null;
  const rules = await readBylaws(trx, unionId);
  if (rules.params.crowdfundApproval !== "member_vote" && !proposalRef) return null;
  if (!proposalRef) throw new CrowdfundError("forbidden", "this union's bylaws say crowdfunds are approved by member vote: pass the number of the resolution that passed");
  const proposal = await getProposal(trx, unionId, proposalRef);
  if (!proposal) throw new CrowdfundError("not_found", `no proposal ${proposalRef} in this union`);
  if (proposal.state !== "passed") throw new CrowdfundError("forbidden", `proposal ${proposal.number} is ${proposal.state}, not passed`);
  if (proposal.kind !== "resolution") throw new CrowdfundError("forbidden", `proposal ${proposal.number} is an ${proposal.kind}, not a resolution approving this crowdfund`);
  if (!namesCrowdfund(`${proposal.title}\n${proposal.text}`, cf)) {
    throw new CrowdfundError("forbidden", `proposal ${proposal.number} does not name crowdfund #${cf.seq}: the members voted on something else`);
  }
  const used = await trx.selectFrom("crowdfunds").select("seq").where("approved_by_proposal", "=", proposal.id).executeTakeFirst();
  if (used) throw new CrowdfundError("conflict", `proposal ${proposal.number} already approved crowdfund #${used.seq}; each vote approves one`);
  return proposal.id;
}

/** Whether a proposal's words name the crowdfund: "crowdfund #N" (any case; not #N0) or its id. */
export function namesCrowdfund(words: string, cf: Pick<Crowdfund, "seq" | "id">): boolean {
  return new RegExp(`\\bcrowdfund #${cf.seq}(?!\\d)`, "i").test(words) || words.toLowerCase().includes(cf.id.toLowerCase());
}

export async function rejectCrowdfund(deps: Pick<CrowdfundDeps, "db">, unionId: string, ref: string, by: By, note?: string): Promise<Crowdfund> {
  return decide(deps, unionId, ref, by, "rejected", note);
}

async function decide(deps: Pick<CrowdfundDeps, "db">, unionId: string, ref: string, by: By, to: "approved" | "rejected", note?: string, proposal?: string): Promise<Crowdfund> {
  const cf = await findCrowdfund(deps.db, unionId, ref);
  const trimmed = note?.trim().slice(0, 1000) || null;
  await deps.db.transaction().execute(async (trx) => {
    const officer = await requireOfficer(trx, unionId, by);
    let set: Partial<Selectable<CrowdfundsTable>> = { state: to, decided_by: officer?.id ?? "operator", decision_note: trimmed, decided_at: Date.now() };
    if (to === "approved") {
      const treasury = await getTreasury(trx, unionId);
      if (!treasury) throw new CrowdfundError("conflict", "this union has no treasury yet (muster treasury create), so a crowdfund has no mint to raise in");
      if (cf.deadline.getTime() <= Date.now()) throw new CrowdfundError("conflict", "the deadline has passed; propose it again with a new one");
      const approvedBy = await requireApprovalVote(trx, unionId, by, proposal, cf);
      set = { ...set, cut_bps: (await readBylaws(trx, unionId)).params.crowdfundCutBps, mint: treasury.mint, approved_by_proposal: approvedBy };
    }
    const r = await trx.updateTable("crowdfunds").set(set).where("id", "=", cf.id).where("state", "=", "proposed").executeTakeFirst();
    if (Number(r.numUpdatedRows) !== 1) {
      const now = await getCrowdfund(trx, unionId, cf.id);
      throw new CrowdfundError("conflict", `crowdfund #${cf.seq} is already ${now?.state}`);
    }
  });
  return (await getCrowdfund(deps.db, unionId, cf.id))!;
}

export async function getCrowdfund(db: Kysely<DB>, unionId: string, id: string): Promise<Crowdfund | undefined> {
  const r = await db.selectFrom("crowdfunds").selectAll().where("union_id", "=", unionId).where("id", "=", id).executeTakeFirst();
  return r && toCrowdfund(r);
}

/** By `3`, `#3` or its UUID. */
export async function findCrowdfund(db: Kysely<DB>, unionId: string, ref: string): Promise<Crowdfund> {
  const t = ref.trim();
  let q = db.selectFrom("crowdfunds").selectAll().where("union_id", "=", unionId);
  if (/^#?\d{1,9}$/.test(t)) q = q.where("seq", "=", Number(t.replace("#", "")));
  else if (UUID.test(t)) q = q.where("id", "=", t.toLowerCase());
  else throw new CrowdfundError("invalid", `a crowdfund is named by its number (3 or #3) or its id; got ${JSON.stringify(t.slice(0, 60))}`);
  const r = await q.executeTakeFirst();
  if (!r) throw new CrowdfundError("not_found", `no crowdfund ${t} in this union`);
  return toCrowdfund(r);
}

export async function listCrowdfunds(db: Kysely<DB>, unionId: string, opts: { states?: readonly CrowdfundState[] } = {}): Promise<Crowdfund[]> {
  let q = db.selectFrom("crowdfunds").selectAll().where("union_id", "=", unionId);
  if (opts.states?.length) q = q.where("state", "in", [...opts.states]);
  return (await q.orderBy("seq", "desc").execute()).map(toCrowdfund);
}

/** Approved crowdfunds whose vault is not yet confirmed on-chain. */
export async function crowdfundsAwaitingVault(db: Kysely<DB>): Promise<Crowdfund[]> {
  return (await db.selectFrom("crowdfunds").selectAll().where("state", "=", "approved").orderBy("created_at").execute()).map(toCrowdfund);
}

/** Open crowdfunds, before their deadline, whose announcement was never made. */
export async function crowdfundsUnannounced(db: Kysely<DB>, now = Date.now()): Promise<Crowdfund[]> {
  return (await db.selectFrom("crowdfunds").selectAll().where("state", "=", "open").where("action_id", "is", null).where("deadline", ">", now)
    .orderBy("created_at").execute()).map(toCrowdfund);
}

/**
 * Stores the vault's signed creation before it is submitted (kept until it
 * is seen). Only the first plan is kept: false tells a second worker that
 * another creation is already stored, which it must send instead of its own.
 */
export async function planVault(db: Kysely<DB>, id: string, plan: { vault: string; reference: string; raw: string; lastValidBlockHeight: number }): Promise<boolean> {
  const r = await db.updateTable("crowdfunds").set({
    vault: plan.vault, reference: plan.reference, vault_raw: plan.raw, vault_last_valid_block_height: plan.lastValidBlockHeight,
  }).where("id", "=", id).where("state", "=", "approved").where("vault_signature", "is", null).where("vault_raw", "is", null).executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

/** The stored vault creation never landed (its blockhash passed): forget it so a fresh one is signed. */
export async function dropVaultPlan(db: Kysely<DB>, id: string, raw: string): Promise<void> {
  await db.updateTable("crowdfunds").set({ vault: null, reference: null, vault_raw: null, vault_last_valid_block_height: null })
    .where("id", "=", id).where("state", "=", "approved").where("vault_signature", "is", null).where("vault_raw", "=", raw).execute();
}

/**
 * The vault exists: the crowdfund opens for pledges. Returns true for the
 * caller that opened it (it announces); false when it was already open.
 */
export async function markVaultOpen(db: Kysely<DB>, id: string, signature: string): Promise<boolean> {
  const r = await db.updateTable("crowdfunds").set({ state: "open", vault_signature: signature, vault_raw: null })
    .where("id", "=", id).where("state", "=", "approved").executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}
