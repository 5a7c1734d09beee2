import type { Context, InboxContext } from "@fedify/fedify";
import { type Announce, type Create, type Like, Note, PUBLIC_COLLECTION } from "@fedify/vocab";
import type { Kysely } from "kysely";
import { offerRelay } from "../src/actions/relay.ts";
import { recordBoost, recordLike, recordReply, withdrawResponse } from "../src/actions/responses.ts";
import type { DB } from "../src/db/schema.ts";
import type { EventBus } from "../src/events.ts";
import { logger } from "../src/logging.ts";
import type { Outbox } from "../src/outbox.ts";
import { getUnionBySlug, type Union } from "../src/unions/unions.ts";
import { processOnce } from "./inbox-record.ts";
import { recordRelayedResponse, withdrawRelayedResponse } from "../src/relationships/tallies.ts";
import { isActivePeer, onPeerPost } from "./relationships.ts";
import { isPermanentFetchFailure } from "./fetch-failure.ts";
import { membershipsOfActor } from "../src/members/membership.ts";
import { recordPartnerResponse, withdrawPartnerResponse } from "../src/relationships/partner-counted.ts";
import { partnerVouching } from "./partner-membership.ts";

const log = logger("federation", "actions-inbox");

export interface ActionInboxDeps {
  readonly db: Kysely<DB>;
  readonly events: EventBus;
  readonly outbox: Outbox;
}

function record(deps: ActionInboxDeps, ctx: InboxContext<void>) {
  return { db: deps.db, events: deps.events, documentLoader: ctx.documentLoader, contextLoader: ctx.contextLoader };
}

/** The union and call-to-action an object id names, if it is one of our action notes. */
async function actionNamed(deps: ActionInboxDeps, ctx: Context<void>, id: URL | null): Promise<{ union: Union; actionId: string } | undefined> {
  const parsed = ctx.parseUri(id);
  if (parsed?.type !== "object" || parsed.class !== Note || !parsed.values.identifier || !parsed.values.id) return undefined;
  const union = await getUnionBySlug(deps.db, parsed.values.identifier);
  return union ? { union, actionId: parsed.values.id } : undefined;
}

async function recipientUnionId(deps: ActionInboxDeps, ctx: InboxContext<void>): Promise<string | null> {
  return ctx.recipient ? (await getUnionBySlug(deps.db, ctx.recipient))?.id ?? null : null;
}

/**
 * Which partner union vouches for a non-member who responded to one of our
 * calls (a member of an ally or chapter that relayed it; stock Mastodon
 * sends the response to the author, us). Asked outside processOnce, so no
 * claim is held across the partners' answers, and not for a repeat.
 * `activeMemberOf`: the unions the sender is an active member of, when the
 * caller already read them (onCreate); else read here, with the one query
 * that reads them (membershipsOfActor). An active member of the call's
 * union costs that one statement, not a repeat check and a member lookup.
 */
async function vouchedBy(deps: ActionInboxDeps, ctx: InboxContext<void>, target: { union: Union } | undefined, activity: { id: URL | null; actorId: URL | null }, activeMemberOf?: readonly string[]): Promise<string | undefined> {
  if (!target || !activity.id || !activity.actorId) return undefined;
  const active = activeMemberOf ?? activeUnionIds(await membershipsOfActor(deps.db, activity.actorId.href));
  // An active member of the call's union: partners are never asked, repeat or not.
  if (active.includes(target.union.id)) return undefined;
  if (await deps.db.selectFrom("inbox_activities").select("id").where("id", "=", activity.id.href).executeTakeFirst()) return undefined;
  return partnerVouching(deps.db, ctx, target.union, activity.actorId.href);
}

function activeUnionIds(memberships: readonly { unionId: string; state: "active" | "pending" }[]): string[] {
  return memberships.filter((m) => m.state === "active").map((m) => m.unionId);
}

export async function onLike(deps: ActionInboxDeps, ctx: InboxContext<void>, like: Like): Promise<void> {
  const target = await actionNamed(deps, ctx, like.objectId);
  const via = await vouchedBy(deps, ctx, target, like);
  await processOnce(record(deps, ctx), like, target?.union.id ?? await recipientUnionId(deps, ctx), async () => {
    if (target && like.id && like.actorId && via) await recordPartnerResponse(deps, target.union.id, target.actionId, via, like.actorId.href, { id: like.id.href, like: true });
    else if (target && like.id && like.actorId) await recordLike(deps, target.union.id, target.actionId, like.actorId.href, like.id.href);
    // A member's like of a call we relayed from an ally or parent: counted here, reported to its author.
    else if (like.id && like.actorId && like.objectId) await recordRelayedResponse(deps, like.objectId.href, like.actorId.href, { id: like.id.href, like: true });
  });
}

export async function onAnnounce(deps: ActionInboxDeps, ctx: InboxContext<void>, announce: Announce): Promise<void> {
  const target = await actionNamed(deps, ctx, announce.objectId);
  if (!target && await onPeerPost(deps, ctx, announce, announce.objectId)) return;
  await processOnce(record(deps, ctx), announce, target?.union.id ?? await recipientUnionId(deps, ctx), async () => {
    if (target && announce.id && announce.actorId) await recordBoost(deps, target.union.id, target.actionId, announce.actorId.href, announce.id.href);
  });
}

/**
 * A reply to a call-to-action is a response (a comment, and a commitment
 * when it says so). Any other public post that mentions a union is offered
 * for relaying to its members.
 */
export async function onCreate(deps: ActionInboxDeps, ctx: InboxContext<void>, create: Create): Promise<void> {
  // Replies count and posts are relayed only for members: a stranger's post
  // costs no fetch and no reading of its HTML.
  // (and for unions whose calls this one relays: allies, parents).
  // A stranger's reply may still come from a partner's member, answering a call the partner relayed.
  const memberships = create.actorId ? await membershipsOfActor(deps.db, create.actorId.href) : [];
  const stranger = !create.actorId || (memberships.length === 0 && !(await isActivePeer(deps.db, create.actorId.href)));
  if (!create.actorId || (stranger && !(await anyPartnerRelays(deps.db)))) {
    await processOnce(record(deps, ctx), create, await recipientUnionId(deps, ctx));
    return;
  }
  let note: unknown;
  try {
    note = await create.getObject({ documentLoader: ctx.documentLoader, contextLoader: ctx.contextLoader });
  } catch (error) {
    // An object another server says is gone is recorded without a response;
    // any other failure (down, 5xx, timeout) leaves the Create unrecorded so
    // that a retry or the sender's redelivery processes it.
    if (!isPermanentFetchFailure(error)) {
      log.warn("Could not load the object of {create}, will retry: {error}", { create: create.id?.href ?? "(no id)", error: String(error) });
      throw error;
    }
    log.info("The object of {create} is gone: {error}", { create: create.id?.href ?? "(no id)", error: String(error) });
    note = null;
  }
  if (!(note instanceof Note) || !note.id) {
    await processOnce(record(deps, ctx), create, await recipientUnionId(deps, ctx));
    return;
  }
  // The note must be the sender's own: a Create cannot put words in another's mouth.
  if (note.attributionId?.href !== create.actorId.href) {
    log.warn("Ignored a Create by {actor} of a note attributed to {author}", { actor: create.actorId.href, author: note.attributionId?.href ?? "(none)" });
    return;
  }
  const reply = await actionNamed(deps, ctx, note.replyTargetId);
  if (stranger && !reply) {
    await processOnce(record(deps, ctx), create, await recipientUnionId(deps, ctx));
    return;
  }
  if (!reply && await onPeerPost(deps, ctx, create, note.id)) return;
  const via = await vouchedBy(deps, ctx, reply, create, activeUnionIds(memberships));
  await processOnce(record(deps, ctx), create, reply?.union.id ?? await recipientUnionId(deps, ctx), async () => {
    if (reply && via) {
      await recordPartnerResponse(deps, reply.union.id, reply.actionId, via, create.actorId!.href, { id: note.id!.href, replyHtml: String(note.content ?? "") });
      return;
    }
    if (reply) {
      await recordReply(deps, reply.union.id, reply.actionId, create.actorId!.href, note.id!.href, String(note.content ?? ""), reply.union);
      return;
    }
    if (note.replyTargetId && await recordRelayedResponse(deps, note.replyTargetId.href, create.actorId!.href, { id: note.id!.href, replyHtml: String(note.content ?? "") }) > 0) return;
    const audience = [...note.toIds, ...note.ccIds, ...create.toIds, ...create.ccIds].map((u) => u.href);
    const isPublic = audience.includes(PUBLIC_COLLECTION.href);
    for await (const tag of note.getTags({ documentLoader: ctx.documentLoader, contextLoader: ctx.contextLoader })) {
      const href = (tag as { href?: URL | null }).href;
      const parsed = ctx.parseUri(href ?? null);
      if (parsed?.type !== "actor") continue;
      const union = await getUnionBySlug(deps.db, parsed.identifier);
      if (!union) continue;
      const outcome = await offerRelay(deps, union.id, {
        noteId: note.id!.href,
        createId: create.id?.href ?? null,
        authorActorId: create.actorId!.href,
        contentHtml: String(note.content ?? ""),
        isPublic,
        isReplyToAction: false,
      });
      log.debug("Post {note} mentioning {union}: {outcome}", { note: note.id!.href, union: union.slug, outcome });
    }
  });
}

/** Undo of a Like or Announce, or Delete of a reply: withdraw what it counted. */
export async function withdraw(deps: ActionInboxDeps, sourceId: URL | null, actorId: URL | null): Promise<void> {
  if (!sourceId || !actorId) return;
  await withdrawResponse(deps, sourceId.href, actorId.href);
  await withdrawRelayedResponse(deps, sourceId.href, actorId.href);
  await withdrawPartnerResponse(deps, sourceId.href, actorId.href);
}

/** Whether any union here has a partner relaying its calls: only then can a stranger's reply count. */
async function anyPartnerRelays(db: Kysely<DB>): Promise<boolean> {
  const r = await db.selectFrom("union_relationships").select("id").where("state", "=", "active")
    .where((eb) => eb.or([eb("kind", "=", "chapter"), eb.and([eb("kind", "=", "ally"), eb("relay", "in", ["both", "ours"])])])).executeTakeFirst();
  return r !== undefined;
}
