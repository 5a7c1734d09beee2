import type { Context, Hono } from "hono";
import type { Kysely } from "kysely";
import { AmountError } from "../bylaws/amounts.ts";
import { BylawsError, parseAssignments, PROPOSAL_KINDS, type ProposalKind } from "../bylaws/params.ts";
import {
  ballotOf, castVote, createProposal, delegateVote, describeOutcome, type DelegationScope, getProposal, listProposals, type NewProposal, ProposalError, tallyOf,
  withdrawDelegation,
} from "../bylaws/proposals.ts";
import { delegationState, mayPropose, spendAmount, spendUnit } from "../bylaws/proposing.ts";
import type { DB } from "../db/schema.ts";
import { readVoters } from "../bylaws/turnout.ts";
import { logger } from "../logging.ts";
import { findMemberByHandle, type Member, MemberError, type MembershipDeps } from "../members/members.ts";
import { normaliseHandle, type Union, UnionError } from "../unions/unions.ts";
import { signedInMember } from "./members-web.ts";
import { errorPage } from "./pages/error.ts";
import { newProposalPage, proposalPage, proposalsListPage } from "./pages/proposal.ts";

// Proposals on the web: the list, opening one of any kind, the proposal page
// with web voting (a changed web vote replaces the earlier one), and
// delegating one's vote. The rules are the domain's (src/bylaws/); this file
// turns forms into those calls and refusals into messages on the same form.

export interface ProposalsWebDeps {
  readonly db: Kysely<DB>;
  readonly membership: MembershipDeps;
  readonly loadUnion: (c: Context) => Promise<Union | undefined>;
}

const log = logger("http", "proposals");
const FORM_FIELDS = ["kind", "title", "text", "params", "office", "portfolio", "candidates", "member", "amount", "recipient", "purpose"] as const;
const MAX_CANDIDATES = 20;

type FormError = ProposalError | BylawsError | UnionError | MemberError | AmountError;
const isFormError = (e: unknown): e is FormError =>
  e instanceof ProposalError || e instanceof BylawsError || e instanceof UnionError || e instanceof MemberError || e instanceof AmountError;

/** An active member of this union by handle, or a refusal naming the handle. */
async function memberByHandle(db: Kysely<DB>, unionId: string, raw: string, what: string): Promise<Member> {
  const handle = normaliseHandle(raw);
  const m = await findMemberByHandle(db, unionId, handle);
  if (!m || m.state !== "active") throw new ProposalError("not_found", `${what}${handle} is not a member of this union`);
  return m;
}

/** The form's fields as createProposal's input; handles become member ids, a typed amount becomes base units. */
async function proposalInput(db: Kysely<DB>, union: Union, form: Record<string, string>): Promise<NewProposal> {
  const kind = form.kind as ProposalKind;
  if (!PROPOSAL_KINDS.includes(kind)) throw new ProposalError("invalid", `choose a kind of proposal: ${PROPOSAL_KINDS.join(", ")}`);
  const base = { kind, title: form.title ?? "", text: form.text ?? "" };
  const lines = (form.params ?? "").split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== "");
  if (kind !== "amendment" && lines.length > 0) throw new ProposalError("invalid", `a ${kind} changes no rule; choose an amendment to change the bylaws`);
  switch (kind) {
    case "resolution":
      return base;
    case "amendment":
      return { ...base, params: parseAssignments(lines) };
    case "election": {
      const handles = (form.candidates ?? "").split(/[\s,]+/).filter((h) => h !== "");
      if (handles.length === 0) throw new ProposalError("invalid", "name at least one candidate by handle, such as @ana@example.social");
      if (handles.length > MAX_CANDIDATES) throw new ProposalError("invalid", `an election has at most ${MAX_CANDIDATES} candidates; got ${handles.length}`);
      const candidates: string[] = [];
      for (const h of handles) candidates.push((await memberByHandle(db, union.id, h, "candidate ")).id);
      const role = form.office === "leader" ? "leader" : "officer";
      return { ...base, role, portfolio: role === "officer" ? form.portfolio || null : null, candidates };
    }
    case "recall": {
      if (!(form.member ?? "").trim()) throw new ProposalError("invalid", "name the leader or officer to recall by handle");
      return { ...base, memberId: (await memberByHandle(db, union.id, form.member!, "")).id };
    }
    case "spend": {
      const unit = await spendUnit(db, union.id);
      return { ...base, amount: spendAmount(unit, form.amount ?? ""), recipient: form.recipient ?? "", purpose: form.purpose ?? "" };
    }
  }
}

export function mountProposalsWeb(app: Hono, deps: ProposalsWebDeps): void {
  const { db, membership, loadUnion } = deps;
  const noUnion = (c: Context) => c.html(errorPage(404, "No such union here."), 404);

  async function proposalView(c: Context, extra: { error?: string; done?: boolean } = {}) {
    const union = await loadUnion(c);
    const proposal = union && /^\d{1,9}$/.test(c.req.param("n") ?? "") ? await getProposal(db, union.id, c.req.param("n")!) : undefined;
    if (!union || !proposal) return undefined;
    const member = await signedInMember(db, c, union);
    const eligible = member !== undefined && member.state === "active" && member.joinedAt !== null && member.joinedAt.getTime() <= proposal.openedAt.getTime();
    let delegation: { allowed: boolean; delegate?: string } | undefined;
    if (member) {
      const d = await delegationState(db, union.id, member);
      const mine = d.current.find((x) => x.scope === proposal.kind) ?? d.current.find((x) => x.scope === "all");
      delegation = { allowed: d.allowed, delegate: mine?.delegate.handle ?? undefined };
    }
    return {
      union, proposal, member, delegation, tally: await tallyOf(db, proposal),
      voters: await readVoters(db, union, proposal, { via: "web", member }),
      ballot: member ? await ballotOf(db, proposal.id, member.id) : undefined,
      canVote: eligible && proposal.state === "open" && Date.now() < proposal.closesAt.getTime(),
      spend: proposal.kind === "spend" && proposal.state === "passed" ? (await describeOutcome(db, proposal))?.at(-1) : undefined, ...extra,
    };
  }

  // Public like each proposal's page: the titles, states and outcomes of the union's votes.
  app.get("/u/:slug/proposals", async (c) => {
    const union = await loadUnion(c);
    if (!union) return noUnion(c);
    const member = await signedInMember(db, c, union);
    c.header("Cache-Control", "private, no-cache");
    return c.html(proposalsListPage({ union, proposals: await listProposals(db, union.id), mayPropose: await mayPropose(db, union.id, member) }));
  });

  // Who may propose is the domain's rule (the bylaws' proposers): the form is shown to any signed-in member and a
  // refusal comes back on it. Registered before /:n so "new" is not a number.
  app.get("/u/:slug/proposals/new", async (c) => {
    const union = await loadUnion(c);
    if (!union) return noUnion(c);
    if (!(await signedInMember(db, c, union))) return c.redirect(`/u/${union.slug}/login`, 303);
    return c.html(newProposalPage({ union, unit: await spendUnit(db, union.id) }));
  });

  app.post("/u/:slug/proposals/new", async (c) => {
    const union = await loadUnion(c);
    if (!union) return noUnion(c);
    const member = await signedInMember(db, c, union);
    if (!member) return c.html(errorPage(403, "Sign in as a member to open a proposal."), 403);
    const body = await c.req.parseBody();
    const form = Object.fromEntries(FORM_FIELDS.map((k) => [k, String(body[k] ?? "")]));
    try {
      const p = await createProposal(membership, union.id, { kind: "member", memberId: member.id }, await proposalInput(db, union, form));
      log.info("{handle} opened proposal #{n} ({kind}) in {slug}", { handle: member.handle, n: p.number, kind: p.kind, slug: union.slug });
      return c.redirect(`/u/${union.slug}/proposals/${p.number}`, 303);
    } catch (e) {
      if (!isFormError(e)) throw e;
      const status = e.code === "forbidden" ? 403 : 400;
      return c.html(newProposalPage({ union, unit: await spendUnit(db, union.id), form, error: e.message }), status);
    }
  });

  app.get("/u/:slug/proposals/:n", async (c) => {
    const v = await proposalView(c, { done: c.req.query("done") === "voted" });
    if (!v) return c.html(errorPage(404, "No such proposal here."), 404);
    c.header("Cache-Control", "private, no-cache");
    return c.html(proposalPage(v));
  });

  // A member delegates their vote (all proposals, or one kind) to another member by handle, or withdraws it.
  app.post("/u/:slug/delegation", async (c) => {
    const union = await loadUnion(c);
    if (!union) return noUnion(c);
    const member = await signedInMember(db, c, union);
    if (!member) return c.html(errorPage(403, "Sign in as a member to delegate your vote."), 403);
    const form = await c.req.parseBody();
    const scope = String(form.scope ?? "all") as DelegationScope;
    try {
      if (form.withdraw === "1") {
        await withdrawDelegation(membership, union.id, { kind: "member", memberId: member.id }, scope);
      } else {
        const to = await findMemberByHandle(db, union.id, normaliseHandle(String(form.delegate ?? "")));
        if (!to) throw new ProposalError("not_found", "no member with that handle");
        await delegateVote(membership, union.id, { kind: "member", memberId: member.id }, to.id, scope);
      }
    } catch (e) {
      if (!(e instanceof ProposalError || e instanceof UnionError)) throw e;
      return c.html(errorPage(e.code === "forbidden" ? 403 : 400, e.message), e.code === "forbidden" ? 403 : 400);
    }
    return c.redirect(String(form.back ?? "").startsWith(`/u/${union.slug}/`) ? String(form.back) : `/u/${union.slug}`, 303);
  });

  app.post("/u/:slug/proposals/:n/vote", async (c) => {
    const v = await proposalView(c);
    if (!v) return c.html(errorPage(404, "No such proposal here."), 404);
    if (!v.member) return c.html(proposalPage({ ...v, error: "Sign in as a member to vote." }), 403);
    const form = await c.req.parseBody({ all: true });
    const raw = form.option;
    const choices = (Array.isArray(raw) ? raw : raw === undefined ? [] : [raw]).map(String);
    const r = await castVote(membership, v.union.id, v.proposal.id, { memberId: v.member.id }, choices, { kind: "web" });
    if (!r.counted) return c.html(proposalPage({ ...(await proposalView(c))!, error: `Your vote was not recorded: ${r.reason}.` }), 400);
    return c.redirect(`/u/${v.union.slug}/proposals/${v.proposal.number}?done=voted`, 303);
  });
}
