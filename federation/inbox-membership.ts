import type { Context, InboxContext, RequestContext } from "@fedify/fedify";
import { type Activity, type Actor, Announce, type Block, Delete, Follow, isActor, Like, type Move, type Undo } from "@fedify/vocab";
import type { Kysely } from "kysely";
import { deleteRemoteActor, getRemoteActor } from "../src/actors/remote-actors.ts";
import type { DB } from "../src/db/schema.ts";
import type { EventBus } from "../src/events.ts";
import { logger } from "../src/logging.ts";
import { findMemberByActor, MemberError, type MembershipDeps } from "../src/members/members.ts";
import { leaveUnion, migrateMember, requestToJoin, unionsOfActor } from "../src/members/membership.ts";
import type { Outbox } from "../src/outbox.ts";
import { getUnionBySlug, type Union } from "../src/unions/unions.ts";
import { processOnce } from "./inbox-record.ts";
import { withdraw } from "./inbox-actions.ts";
import { cacheActorObject } from "./remote-actor-cache.ts";
import { isCollectiveActor, onCollectiveFollow, onRelationshipUndo } from "./relationships.ts";
import { fetchStatus } from "./fetch-failure.ts";

const log = logger("federation", "membership");

export interface InboxDeps {
  readonly db: Kysely<DB>;
  readonly events: EventBus;
  readonly outbox: Outbox;
  /** The identifier of the instance actor, which is not a union. */
  readonly instanceActor: string;
}

function membership(deps: InboxDeps): MembershipDeps {
  return { db: deps.db, events: deps.events, outbox: deps.outbox };
}

function record(deps: InboxDeps, ctx: InboxContext<void>) {
  return { db: deps.db, events: deps.events, documentLoader: ctx.documentLoader, contextLoader: ctx.contextLoader };
}

/** The union an object id names, if it is one of ours. */
async function unionNamed(deps: InboxDeps, ctx: Context<void>, id: URL | null): Promise<Union | undefined> {
  const parsed = ctx.parseUri(id);
  if (parsed?.type !== "actor" || parsed.identifier === deps.instanceActor) return undefined;
  return getUnionBySlug(deps.db, parsed.identifier);
}

/** The union whose inbox received the delivery, or null for the shared inbox. */
async function recipientUnion(deps: InboxDeps, ctx: InboxContext<void>): Promise<Union | null> {
  if (!ctx.recipient || ctx.recipient === deps.instanceActor) return null;
  return (await getUnionBySlug(deps.db, ctx.recipient)) ?? null;
}

export async function onFollow(deps: InboxDeps, ctx: InboxContext<void>, follow: Follow): Promise<void> {
  const union = await unionNamed(deps, ctx, follow.objectId);
  if (!union || !follow.id) {
    log.info("Ignored a Follow of {object} from {actor}: not a union here", { object: follow.objectId?.href ?? "(none)", actor: follow.actorId?.href ?? "(none)" });
    await processOnce(record(deps, ctx), follow, null);
    return;
  }
  await processOnce(record(deps, ctx), follow, union.id, async (actor) => {
    if (!actor?.id) throw new Error(`could not fetch the follower ${follow.actorId?.href}; will retry`);
    // Other unions (and bots, servers) never join: their Follow is a relationship offer.
    if (isCollectiveActor(actor)) return onCollectiveFollow(deps, ctx, union, follow, actor);
    const handle = (await getRemoteActor(deps.db, actor.id.href))?.handle ?? null;
    const applicant = { actorId: actor.id.href, handle };
    const movedFrom = await movedFromMember(deps, ctx, union, actor);
    if (movedFrom) {
      await migrateMember(membership(deps), union.id, movedFrom, applicant, follow.id!.href);
      return;
    }
    const r = await requestToJoin(membership(deps), union.id, applicant, follow.id!.href);
    log.info("Follow of {union} by {actor}: {outcome}", { union: union.slug, actor: actor.id.href, outcome: r.outcome });
  }, { freshActor: true });
}

/**
 * A Follow from a new account that names a current member's account in its
 * alsoKnownAs, while that old account names it back with movedTo, is the
 * member arriving after an account migration. Both sides must say so: one
 * claim alone would let anyone take over a member's place.
 */
async function movedFromMember(deps: InboxDeps, ctx: InboxContext<void>, union: Union, actor: Actor): Promise<string | undefined> {
  for (const alias of actor.aliasIds) {
    const m = await findMemberByActor(deps.db, union.id, alias.href);
    if (!m || (m.state !== "active" && m.state !== "pending")) continue;
    const old = await fetchActor(ctx, alias);
    if (old?.successorId?.href === actor.id?.href) return alias.href;
    log.warn("{actor} claims to be {alias}, but {alias} does not point back with movedTo", { actor: actor.id?.href, alias: alias.href });
  }
  return undefined;
}

async function fetchActor(ctx: InboxContext<void>, id: URL): Promise<Actor | null> {
  try {
    const o = await ctx.lookupObject(id.href);
    return o && isActor(o) ? o : null;
  } catch (error) {
    log.warn("Could not fetch {id}: {error}", { id: id.href, error });
    return null;
  }
}

export async function onUndo(deps: InboxDeps, ctx: InboxContext<void>, undo: Undo): Promise<void> {
  const object = await undo.getObject({ documentLoader: ctx.documentLoader, contextLoader: ctx.contextLoader, crossOrigin: "trust" });
  const union = await recipientUnion(deps, ctx);
  if (await onRelationshipUndo(deps, ctx, undo, object)) return;
  if (!(object instanceof Follow)) {
    await processOnce(record(deps, ctx), undo, union?.id ?? null, async () => {
      // Undo of a Like or a boost withdraws the response it counted (only the actor's own).
      if ((object instanceof Like || object instanceof Announce) && object.actorId?.href === undo.actorId?.href) {
        await withdraw(deps, object.id, undo.actorId);
      }
    });
    return;
  }
  // The signature proves who sent the Undo; it must also be whose Follow it undoes.
  if (object.actorId?.href !== undo.actorId?.href) {
    log.warn("Refused an Undo by {actor} of a Follow by {other}", { actor: undo.actorId?.href, other: object.actorId?.href ?? "(none)" });
    return;
  }
  const target = await unionNamed(deps, ctx, object.objectId);
  await processOnce(record(deps, ctx), undo, target?.id ?? null, async () => {
    if (!target) return;
    await leaveUnion(membership(deps), target.id, undo.actorId!.href, "left", await staleFollowGuard(deps, object, undo));
  });
}

/**
 * The Follow id leaveUnion should insist on. Lemmy's Undo embeds a freshly
 * made Follow rather than the original, so an id we never saw is honoured;
 * only an earlier Follow of the same account that we did process (an old
 * Undo arriving after the member rejoined) must not end the membership.
 */
async function staleFollowGuard(deps: InboxDeps, follow: Follow, undo: Undo): Promise<string | undefined> {
  if (!follow.id) return undefined;
  const seen = await deps.db.selectFrom("inbox_activities").select("id")
    .where("id", "=", follow.id.href).where("type", "=", "Follow").where("actor", "=", undo.actorId!.href).executeTakeFirst();
  return seen ? follow.id.href : undefined;
}

export async function onBlock(deps: InboxDeps, ctx: InboxContext<void>, block: Block): Promise<void> {
  const target = await unionNamed(deps, ctx, block.objectId);
  await processOnce(record(deps, ctx), block, target?.id ?? null, async () => {
    // Blocking the union ends the follow on the member's side; the membership goes with it.
    if (target) await leaveUnion(membership(deps), target.id, block.actorId!.href, "left");
  });
}

export async function onDelete(deps: InboxDeps, ctx: InboxContext<void>, del: Delete): Promise<void> {
  const union = await recipientUnion(deps, ctx);
  await processOnce(record(deps, ctx), del, union?.id ?? null, async () => {
    if (del.objectId?.href && del.objectId.href === del.actorId?.href) await actorDeleted(deps, del.actorId.href);
    // A deleted reply no longer counts.
    else await withdraw(deps, del.objectId, del.actorId);
  });
}

async function actorDeleted(deps: InboxDeps, actorId: string): Promise<void> {
  for (const unionId of await unionsOfActor(deps.db, actorId)) {
    await leaveUnion(membership(deps), unionId, actorId, "deleted");
  }
  await deleteRemoteActor(deps.db, actorId);
}

/**
 * Mastodon signs an account's Delete with that account's key, which is gone
 * (410) by the time we fetch it, so the signature cannot be checked. Such a
 * Delete is acted on only when we see for ourselves that the account is gone.
 */
export async function onUnverifiedDelete(deps: InboxDeps, ctx: RequestContext<void>, activity: Activity): Promise<Response | undefined> {
  if (!(activity instanceof Delete) || !activity.actorId || activity.objectId?.href !== activity.actorId.href) return undefined;
  const actorId = activity.actorId;
  try {
    await ctx.documentLoader(actorId.href);
    return undefined; // Still there: the Delete is not what it claims.
  } catch (error) {
    // Gone means the account's own URL answered 404 or 410; a server that is
    // down, overloaded (5xx) or redirecting elsewhere proves nothing.
    const status = fetchStatus(error, actorId);
    if (status !== 404 && status !== 410) {
      log.warn("Ignored an unverifiable Delete of {actor}: its fetch did not say it is gone ({error})", { actor: actorId.href, error: String(error) });
      return undefined;
    }
  }
  log.info("{actor} is gone (404/410): acting on its unverifiable Delete", { actor: actorId.href });
  await actorDeleted(deps, actorId.href);
  return new Response(null, { status: 202 });
}

export async function onMove(deps: InboxDeps, ctx: InboxContext<void>, move: Move): Promise<void> {
  const from = move.objectId ?? move.actorId;
  const to = move.targetId;
  const union = await recipientUnion(deps, ctx);
  if (!from || !to || from.href !== move.actorId?.href) {
    log.warn("Ignored a Move whose actor is not the account moved ({actor})", { actor: move.actorId?.href });
    return;
  }
  await processOnce(record(deps, ctx), move, union?.id ?? null, async () => {
    const unions = await unionsOfActor(deps.db, from.href);
    if (unions.length === 0) return;
    const target = await fetchActor(ctx, to);
    if (!target?.id || !target.aliasIds.some((a) => a.href === from.href)) {
      log.warn("Refused a Move of {from} to {to}: the target does not list the old account in alsoKnownAs", { from: from.href, to: to.href });
      return;
    }
    const handle = (await cacheActorObject(deps.db, target)).handle;
    for (const unionId of unions) {
      try {
        await migrateMember({ db: deps.db, events: deps.events, outbox: deps.outbox }, unionId, from.href, { actorId: target.id.href, handle }, null);
      } catch (e) {
        if (!(e instanceof MemberError)) throw e;
        log.warn("Move of {from} to {to} not applied: {error}", { from: from.href, to: to.href, error: e.message });
      }
    }
  });
}

