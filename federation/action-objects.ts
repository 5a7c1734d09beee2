import type { Federation, RequestContext } from "@fedify/fedify";
import { Create, Note } from "@fedify/vocab";
import type { Kysely } from "kysely";
import { currentAction, getAction, hashesOf, listActions } from "../src/actions/actions.ts";
import type { DB } from "../src/db/schema.ts";
import { canSeeMembers } from "../src/members/visibility.ts";
import { getUnionBySlug, type Union } from "../src/unions/unions.ts";
import { listProposals, tallyOf } from "../src/bylaws/proposals.ts";
import { actionNote } from "./action-note.ts";
import { proposalQuestion } from "./proposal-question.ts";

/**
 * Members-only calls-to-action are served to whoever may see the member
 * list: a signed fetch from a server that hosts members (Mastodon fetches a
 * followers-only post signed by the instance or by the reader).
 */
async function maySee(db: Kysely<DB>, ctx: RequestContext<void>, union: Union): Promise<boolean> {
  if (union.actionsVisibility === "public") return true;
  const owner = await ctx.getSignedKeyOwner();
  if (!owner?.id) return false;
  return canSeeMembers(db, { ...union, membersVisibility: "members" }, { via: "federation", actorId: owner.id.href });
}

export function registerActionObjects(federation: Federation<void>, db: Kysely<DB>): void {
  federation
    .setObjectDispatcher(Note, "/u/{identifier}/actions/{id}", async (ctx, values) => {
      const union = await getUnionBySlug(db, values.identifier);
      const action = union && await getAction(db, union.id, values.id);
      if (!union || !action || action.state !== "published") return null;
      return actionNote(ctx, union, action, (await hashesOf(db, action.id))?.prevHash ?? "");
    })
    .authorize(async (ctx, values) => {
      const union = await getUnionBySlug(db, values.identifier);
      return !union || maySee(db, ctx, union);
    });
}

/**
 * Open proposals as Questions with their counts so far. While a vote runs it
 * belongs where a member looking at the Group's profile sees it (pinned and in
 * the outbox); once closed the Update(Question) in their timelines carries
 * the result and it leaves both.
 */
async function openQuestions(db: Kysely<DB>, ctx: RequestContext<void>, union: Union) {
  const questions = [];
  for (const p of await listProposals(db, union.id, { states: ["open"] })) questions.push(proposalQuestion(ctx, union, p, await tallyOf(db, p)));
  return questions;
}

/** The outbox: published calls-to-action and open proposals as their Create activities, newest first, as far as the requester may see. */
export async function outboxItems(db: Kysely<DB>, ctx: RequestContext<void>, identifier: string) {
  const union = await getUnionBySlug(db, identifier);
  if (!union) return null;
  if (!(await maySee(db, ctx, union))) return { items: [] };
  const actions = await listActions(db, union.id, { states: ["published"], limit: 50 });
  const actor = ctx.getActorUri(union.slug);
  const items = [];
  for (const a of actions) {
    const note = actionNote(ctx, union, a, (await hashesOf(db, a.id))?.prevHash ?? "");
    items.push(new Create({ id: new URL(`${note.id!.href}/activity`), actor, object: note, to: note.toId, cc: note.ccId, published: note.published }));
  }
  // Same activity id as the Create delivered at opening (proposal-question.ts), so a reader sees one post.
  for (const q of await openQuestions(db, ctx, union)) {
    items.push(new Create({ id: new URL(`${q.id!.href}/activity`), actor, object: q, to: q.toId, cc: q.ccId, published: q.published }));
  }
  items.sort((a, b) => Number((b.published?.epochMilliseconds ?? 0) - (a.published?.epochMilliseconds ?? 0)));
  return { items };
}

export async function outboxCount(db: Kysely<DB>, ctx: RequestContext<void>, identifier: string): Promise<number | null> {
  const union = await getUnionBySlug(db, identifier);
  if (!union) return null;
  if (!(await maySee(db, ctx, union))) return 0;
  return (await listActions(db, union.id, { states: ["published"], limit: 100_000 })).length
    + (await listProposals(db, union.id, { states: ["open"] })).length;
}

/** Featured (pinned): the current call-to-action, until the next one replaces it, and every proposal open for voting. */
export async function featuredItems(db: Kysely<DB>, ctx: RequestContext<void>, identifier: string) {
  const union = await getUnionBySlug(db, identifier);
  if (!union) return null;
  if (!(await maySee(db, ctx, union))) return { items: [] };
  const current = await currentAction(db, union.id);
  return {
    items: [
      ...(current ? [actionNote(ctx, union, current, (await hashesOf(db, current.id))?.prevHash ?? "")] : []),
      ...await openQuestions(db, ctx, union),
    ],
  };
}
