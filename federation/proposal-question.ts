import type { Context, Federation, RequestContext } from "@fedify/fedify";
import { Collection, Create, Note, PUBLIC_COLLECTION, Question, Update } from "@fedify/vocab";
import "../src/temporal.ts";
import type { MiddlewareHandler } from "hono";
import type { Kysely } from "kysely";
import { signedKeyOwner } from "./signed-key-owner.ts";
import { awaitChainWriters } from "../src/actions/chain.ts";
import { fanOut } from "./fanout-pages.ts";
import { describeOutcome, getProposal, type Proposal, type Tally, tallyOf } from "../src/bylaws/proposals.ts";
import type { DB } from "../src/db/schema.ts";
import { renderMarkdown } from "../src/actions/markdown.ts";
import { canSeeMembers } from "../src/members/visibility.ts";
import { getUnionBySlug, type Union } from "../src/unions/unions.ts";
import type { OutboxIntent } from "../src/outbox.ts";
import type { OutboundDeps } from "./outbound.ts";

// A proposal as a poll Mastodon and others render: a Question attributed to
// the union, oneOf (yes/no/abstain) or anyOf (approval election), with each
// option's count (direct + delegated) in replies.totalItems. Mastodon limits
// only polls made on its own servers to 4 options; remote polls are shown
// with all their options, so an election lists up to 20 candidates as
// options named by handle.

export function proposalUri(ctx: Context<void>, union: Union, p: Pick<Proposal, "id">): URL {
  return ctx.getObjectUri(Question, { identifier: union.slug, id: p.id });
}

export function proposalQuestion(ctx: Context<void>, union: Union, p: Proposal, tally: Tally): Question {
  const groupId = ctx.getActorUri(union.slug);
  const page = new URL(`/u/${union.slug}/proposals/${p.number}`, ctx.origin);
  const options = tally.options.map((o) => new Note({ name: o.text, replies: new Collection({ totalItems: o.direct + o.delegated }) }));
  const closed = p.state !== "open";
  const body = `<p><strong>${escapeHtml(p.title)}</strong></p>${p.text ? renderMarkdown(p.text) : ""}`
    + `<p>Proposal #${p.number} (${p.kind}) · <a href="${page.href}">details and web voting</a>${closed && p.outcome ? ` · ${p.state}: ${escapeHtml(p.outcome.reason)}` : ""}</p>`;
  return new Question({
    id: proposalUri(ctx, union, p),
    attribution: groupId,
    content: body,
    url: page,
    published: Temporal.Instant.fromEpochMilliseconds(p.openedAt.getTime()),
    endTime: Temporal.Instant.fromEpochMilliseconds(p.closesAt.getTime()),
    ...(closed && p.closedAt ? { closed: Temporal.Instant.fromEpochMilliseconds(p.closedAt.getTime()) } : {}),
    voters: tally.voters + tally.delegatedVoters,
    ...(p.multiple ? { inclusiveOptions: options } : { exclusiveOptions: options }),
    to: ctx.getFollowersUri(union.slug),
    cc: union.actionsVisibility === "public" ? PUBLIC_COLLECTION : null,
  });
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Members' polls are served to whoever may see the members (a signed fetch from a server hosting members), or to all for public unions. */
async function maySee(db: Kysely<DB>, ctx: RequestContext<void>, union: Union): Promise<boolean> {
  if (union.actionsVisibility === "public") return true;
  const owner = await ctx.getSignedKeyOwner();
  if (!owner?.id) return false;
  return canSeeMembers(db, { ...union, membersVisibility: "members" }, { via: "federation", actorId: owner.id.href });
}

export function registerProposalObjects(federation: Federation<void>, db: Kysely<DB>): void {
  federation
    .setObjectDispatcher(Question, "/u/{identifier}/proposals/{id}", async (ctx, values) => {
      const union = await getUnionBySlug(db, values.identifier);
      const p = union && /^[0-9a-f-]{36}$/.test(values.id) ? await getProposal(db, union.id, values.id) : undefined;
      if (!union || !p) return null;
      return proposalQuestion(ctx, union, p, await tallyOf(db, p));
    })
    .authorize(async (ctx, values) => {
      const union = await getUnionBySlug(db, values.identifier);
      return !union || maySee(db, ctx, union);
    });
}

/**
 * A proposal opening goes to the members as Create(Question); its running
 * tally, while open, as Update(Question) once per batch window; its close as
 * Update(Question) with the final counts and the `closed` time. Activity ids
 * derive from the proposal (and the window), so a retried intent resends the
 * same activity and the fan-out's keys drop what was already sent.
 */
export async function handleProposalIntent(deps: OutboundDeps, ctx: Context<void>, union: Union, intent: Extract<OutboxIntent, { kind: "proposal.publish" | "proposal.closed" | "proposal.tally" }>): Promise<void> {
  const p = await getProposal(deps.db, union.id, intent.proposalId);
  if (!p) return;
  // A tally that comes due after the close has nothing to add: the close's Update carries the final counts.
  if (intent.kind === "proposal.tally" && p.state !== "open") return;
  // A running tally counts after every vote already begun has committed:
  // such a vote saw this window's Update queued and did not queue another.
  const tally = intent.kind === "proposal.tally"
    ? await deps.db.transaction().execute(async (trx) => {
      await awaitChainWriters(trx, union.id);
      return tallyOf(trx, p);
    })
    : await tallyOf(deps.db, p);
  const question = proposalQuestion(ctx, union, p, tally);
  const actor = ctx.getActorUri(union.slug);
  const common = { actor, object: question, to: question.toId, cc: question.ccId };
  const activity = intent.kind === "proposal.publish"
    ? new Create({ id: new URL(`${question.id!.href}/activity`), ...common, published: question.published })
    : new Update({ id: new URL(intent.kind === "proposal.closed" ? `${question.id!.href}/closed` : `${question.id!.href}/tally/${intent.dueAt}`), ...common });
  // A page of the roster at a time, like a call-to-action (fanout-pages.ts).
  await fanOut(deps, ctx, union.id, activity, `proposal:${p.id}`);
  if (intent.kind === "proposal.closed") await postResult(deps, ctx, union, p, question);
}

/**
 * The result in plain words, as a reply in the poll's thread, to whom the
 * poll went: clients show the Update only as changed counts, and not every
 * server shows a closed poll's outcome at all.
 */
async function postResult(deps: OutboundDeps, ctx: Context<void>, union: Union, p: Proposal, question: Question): Promise<void> {
  const note = await resultNote(deps.db, union, p, question);
  if (!note) return;
  const create = new Create({ id: new URL(`${note.id!.href}/activity`), actor: question.attributionId, object: note, to: note.toId, cc: note.ccId, published: note.published });
  await fanOut(deps, ctx, union.id, create, `proposal:${p.id}`);
}

/** The result Note of a closed proposal (undefined while open): the same object whether delivered or fetched by its id. */
async function resultNote(db: Kysely<DB>, union: Union, p: Proposal, question: Question): Promise<Note | undefined> {
  const lines = await describeOutcome(db, p);
  if (!lines) return undefined;
  return new Note({
    id: new URL(`${question.id!.href}/result`),
    attribution: question.attributionId,
    replyTarget: question.id,
    content: lines.map((l) => `<p>${escapeHtml(l)}</p>`).join(""),
    url: question.url,
    published: Temporal.Instant.fromEpochMilliseconds(p.closedAt!.getTime()),
    to: question.toId,
    cc: question.ccId,
  });
}

const RESULT_PATH = /^\/u\/([^/]+)\/proposals\/([0-9a-f-]{36})\/result$/;
const AP_TYPES = /application\/(activity\+json|ld\+json)/;

/**
 * GET of a result Note by its id. Fedify keeps one object dispatcher per
 * type and Note's serves the calls-to-action, so this route answers before
 * Fedify, under the Question's own rule: anyone for a union whose calls are
 * public, otherwise a signed fetch by a server that may see the members
 * (401 unsigned, 403 refused). A browser is sent to the proposal's page.
 */
export function proposalResultRoute(db: Kysely<DB>, federation: Federation<void>): MiddlewareHandler {
  return async (c, next) => {
    if (c.req.method !== "GET" && c.req.method !== "HEAD") return next();
    const m = RESULT_PATH.exec(c.req.path);
    if (!m) return next();
    const union = await getUnionBySlug(db, decodeURIComponent(m[1]!));
    const p = union ? await getProposal(db, union.id, m[2]!) : undefined;
    if (!union || !p || p.state === "open") return c.json({ error: "no such result" }, 404);
    if (!AP_TYPES.test(c.req.header("Accept") ?? "")) return c.redirect(`/u/${union.slug}/proposals/${p.number}`, 303);
    const ctx = federation.createContext(c.req.raw, undefined);
    if (union.actionsVisibility !== "public") {
      const viewer = await signedKeyOwner(ctx);
      if (!viewer) return c.json({ error: "sign the request: this union's votes are for its members" }, 401);
      if (!(await canSeeMembers(db, { ...union, membersVisibility: "members" }, { via: "federation", actorId: viewer.href }))) {
        return c.json({ error: "this union's votes are for its members" }, 403);
      }
    }
    const note = await resultNote(db, union, p, proposalQuestion(ctx, union, p, await tallyOf(db, p)));
    if (!note) return c.json({ error: "no such result" }, 404);
    const body = await note.toJsonLd({ format: "compact", contextLoader: ctx.contextLoader });
    return c.body(JSON.stringify(body), 200, { "Content-Type": "application/activity+json", Vary: "Accept, Signature, Signature-Input" });
  };
}
