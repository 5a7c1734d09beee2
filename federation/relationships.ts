import type { Context, Federation, InboxContext } from "@fedify/fedify";
import { Accept, type Actor, type Announce, Application, Create, Follow, Group, Note, PropertyValue, Reject, Service, Undo } from "@fedify/vocab";
import type { Hono } from "hono";
import type { Kysely } from "kysely";
import { getRemoteActor } from "../src/actors/remote-actors.ts";
import type { DB } from "../src/db/schema.ts";
import type { EventBus } from "../src/events.ts";
import { logger } from "../src/logging.ts";
import type { OutboxIntent } from "../src/outbox.ts";
import {
  getRelationship, listRelationships, mirrorRelay, offerAnswered, peerEnded, proposeRelationship, receiveOffer, type Relationship, RelationshipError,
  type Relay, relaysOurs, relaysTheirs,
} from "../src/relationships/relationships.ts";
import { getUnionBySlug, type Union } from "../src/unions/unions.ts";
import { isBlockedUrl, normalizeHost } from "../src/servers/blocklist.ts";
import type { Outbox } from "../src/outbox.ts";
import type { By } from "../src/members/members.ts";
import { addressing } from "./action-note.ts";
import { cacheActorObject } from "./remote-actor-cache.ts";
import { processOnce } from "./inbox-record.ts";
import { type OutboundDeps, recipientFor } from "./outbound.ts";
import { offerInstrument, parseOffer } from "./relationship-vocab.ts";
import { fanOut } from "./fanout-pages.ts";

const log = logger("federation", "relationships");

export interface RelationshipInboxDeps {
  readonly db: Kysely<DB>;
  readonly events: EventBus;
  readonly outbox: Outbox;
}

/**
 * Actors that are not people: another union's Group, a bot (Service), a
 * server (Application). Their Follow is never a request to join
 * (DESIGN.md: other unions are never members).
 */
export function isCollectiveActor(actor: Actor): boolean {
  return actor instanceof Group || actor instanceof Service || actor instanceof Application;
}

/** The Follow id this union uses for a relationship it offers: a URL under the union's actor. */
export function relationshipFollowId(origin: URL, slug: string, relationshipId: string): string {
  return new URL(`/u/${slug}/relationships/${relationshipId}`, origin).href;
}

/** The union and relationship one of our relationship URLs names. */
async function ownRelationshipUrl(db: Kysely<DB>, ctx: Context<void>, id: URL | null): Promise<{ union: Union; relId: string } | undefined> {
  if (!id || id.origin !== new URL(ctx.canonicalOrigin).origin) return undefined;
  const m = /^\/u\/([^/]+)\/relationships\/([^/#?]+)$/.exec(id.pathname);
  if (!m) return undefined;
  const union = await getUnionBySlug(db, decodeURIComponent(m[1]!));
  return union ? { union, relId: m[2]! } : undefined;
}

/**
 * A Follow of `union` by a non-person. Only one carrying a union's offer
 * (see relationship-vocab.ts) and coming from a Muster union becomes an
 * offer for the officers; anything else is logged and dropped.
 */
export async function onCollectiveFollow(deps: RelationshipInboxDeps, ctx: InboxContext<void>, union: Union, follow: Follow, actor: Actor): Promise<void> {
  const offer = await parseOffer(follow);
  if (!offer || !(actor instanceof Group)) {
    log.warn("A Follow of {union} by {type} {actor} carries no union's offer: it is not a membership, and was ignored", {
      union: union.slug, type: actor.constructor.name, actor: actor.id?.href,
    });
    return;
  }
  if (!(await isMusterServer(ctx, actor.id!))) {
    log.warn("Refused an offer to {union} from {actor}: its server does not answer as Muster", { union: union.slug, actor: actor.id?.href });
    return;
  }
  const handle = (await getRemoteActor(deps.db, actor.id!.href))?.handle ?? null;
  const outcome = await receiveOffer(deps, union.id, {
    peerActorId: actor.id!.href,
    peerHandle: handle,
    followId: follow.id!.href,
    kind: offer.kindForReceiver,
    relay: mirrorRelay(offer.relay),
  });
  if (outcome === "blocked") return void log.warn("Refused an offer to {union} from {actor}: its server is blocked", { union: union.slug, actor: actor.id!.href });
  log.info("Offer to {union} from {actor} ({kind}): {outcome}", { union: union.slug, actor: actor.id!.href, kind: offer.kindForReceiver, outcome });
}

/**
 * Only Muster unions ally or federate as chapters; plain FEP-1b12 groups do
 * not (the safety rule). Read from the server's NodeInfo by hand:
 * Fedify's lookupNodeInfo refuses loopback and private addresses even when
 * the federation allows them, and the actor's origin was already vetted when
 * Fedify fetched the actor. The document must live on that same origin.
 */
async function isMusterServer(_ctx: Context<void>, actorId: URL): Promise<boolean> {
  try {
    const wellKnown = await fetch(new URL("/.well-known/nodeinfo", actorId.origin), { headers: { Accept: "application/json" }, redirect: "error" });
    if (!wellKnown.ok) return false;
    const links = ((await smallJson(wellKnown)) as { links?: { rel?: string; href?: string }[] } | null)?.links ?? [];
    const href = links.find((l) => typeof l.rel === "string" && l.rel.startsWith("http://nodeinfo.diaspora.software/ns/schema/2."))?.href;
    if (!href || new URL(href).origin !== actorId.origin) return false;
    const info = await fetch(href, { headers: { Accept: "application/json" }, redirect: "error" });
    if (!info.ok) return false;
    return ((await smallJson(info)) as { software?: { name?: string } } | null)?.software?.name === "muster";
  } catch (error) {
    throw new Error(`could not read the NodeInfo of ${actorId.origin}; will retry: ${(error as Error).message}`);
  }
}

/** A JSON body of at most 64 KiB: a NodeInfo document is small, and a hostile server's endless one is not read. */
async function smallJson(res: Response): Promise<unknown> {
  const limit = 64 * 1024;
  const reader = res.body?.getReader();
  if (!reader) return null;
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > limit) {
      await reader.cancel();
      return null;
    }
    chunks.push(value);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString("utf8"));
  } catch {
    return null;
  }
}

/** Accept or Reject of a Follow this server's union sent. */
export async function onAnswer(deps: RelationshipInboxDeps, ctx: InboxContext<void>, answer: Accept | Reject): Promise<void> {
  const own = await ownRelationshipUrl(deps.db, ctx, answer.objectId);
  await processOnce({ ...deps, documentLoader: ctx.documentLoader, contextLoader: ctx.contextLoader }, answer, own?.union.id ?? null, async () => {
    if (!own || !answer.actorId) {
      log.warn("Ignored an {type} by {actor} of {object}: not a Follow a union here sent", {
        type: answer instanceof Accept ? "Accept" : "Reject", actor: answer.actorId?.href ?? "(none)", object: answer.objectId?.href ?? "(none)",
      });
      return;
    }
    const outcome = await offerAnswered(deps, own.union.id, answer.objectId!.href, answer.actorId.href, answer instanceof Accept);
    if (outcome === "unknown") log.warn("Refused an answer by {actor} to {follow}: no offer to that union is waiting", { actor: answer.actorId.href, follow: answer.objectId!.href });
  });
}

/**
 * An Undo that ends a relationship: of the peer's own Follow (it withdrew or
 * ended), or of our Accept of it. Returns false when the Undo is about no
 * relationship, so the caller handles it as before.
 */
export async function onRelationshipUndo(deps: RelationshipInboxDeps, ctx: InboxContext<void>, undo: Undo, object: unknown): Promise<boolean> {
  let followId: URL | null = null;
  let union: Union | undefined;
  if (object instanceof Follow) {
    followId = object.id;
    const parsed = ctx.parseUri(object.objectId);
    if (parsed?.type === "actor") union = await getUnionBySlug(deps.db, parsed.identifier);
  } else if (object instanceof Accept) {
    const own = await ownRelationshipUrl(deps.db, ctx, object.objectId);
    followId = object.objectId;
    union = own?.union;
  } else return false;
  if (!union || !followId || !undo.actorId) return false;
  const rel = await deps.db.selectFrom("union_relationships").select("id").where("union_id", "=", union.id).where("follow_id", "=", followId.href).executeTakeFirst();
  if (!rel) return false;
  await processOnce({ ...deps, documentLoader: ctx.documentLoader, contextLoader: ctx.contextLoader }, undo, union.id, async () => {
    const outcome = await peerEnded(deps, union.id, followId.href, undo.actorId!.href);
    if (outcome === "unknown") log.warn("Refused an Undo by {actor} of {follow}: not the other party", { actor: undo.actorId!.href, follow: followId.href });
  });
  return true;
}

/**
 * A call-to-action (or another union's relay of one) from a union whose
 * calls this union relays: Announced to this union's members, once per
 * note however many paths it arrives by. Returns whether a relationship
 * applied.
 */
export async function relayFromPeer(deps: RelationshipInboxDeps, peerActorId: string, noteId: string, createId: string | null): Promise<boolean> {
  const rels = await deps.db.selectFrom("union_relationships").select(["union_id", "id"]).where("peer_actor_id", "=", peerActorId).where("state", "=", "active").execute();
  let applied = false;
  for (const r of rels) {
    const rel = await getRelationship(deps.db, r.union_id, r.id);
    if (!rel || !relaysTheirs(rel)) continue;
    applied = true;
    await deps.db.transaction().execute(async (trx) => {
      const ins = await trx.insertInto("relay_requests").values({
        union_id: rel.unionId, note_id: noteId, create_id: createId, author_id: peerActorId, state: "relayed",
        excerpt: `relayed from ${rel.kind} ${rel.peerHandle ?? rel.peerActorId}`, created_at: Date.now(), decided_at: Date.now(),
      }).onConflict((oc) => oc.columns(["union_id", "note_id"]).doNothing()).executeTakeFirst();
      if (Number(ins.numInsertedOrUpdatedRows ?? 0n) !== 1) return;
      await deps.outbox.add(trx, { kind: "relay", unionId: rel.unionId, noteId, createId, cascade: rel.kind === "parent" });
    });
  }
  return applied;
}

/** Whether any union here has an active relationship with this actor. */
export async function isActivePeer(db: Kysely<DB>, actorId: string): Promise<boolean> {
  return (await db.selectFrom("union_relationships").select("id").where("peer_actor_id", "=", actorId).where("state", "=", "active").executeTakeFirst()) !== undefined;
}

/** A Create or Announce from a Group: relayed when it comes from a union we relay; true when handled here. */
export async function onPeerPost(deps: RelationshipInboxDeps, ctx: InboxContext<void>, activity: Create | Announce, noteId: URL | null): Promise<boolean> {
  if (!activity.actorId || !noteId || !activity.id) return false;
  if (!(await isActivePeer(deps.db, activity.actorId.href))) return false;
  await processOnce({ ...deps, documentLoader: ctx.documentLoader, contextLoader: ctx.contextLoader }, activity, null, async () => {
    const relayed = await relayFromPeer(deps, activity.actorId!.href, noteId.href, activity instanceof Create ? activity.id!.href : null);
    if (!relayed) log.info("Not relaying {note} from {actor}: no relationship relays it", { note: noteId.href, actor: activity.actorId!.href });
  });
  return true;
}

type RelationshipIntent = Extract<OutboxIntent, { kind: `relationship.${string}`; relationshipId: string }>;

/** Turns a relationship intent into the Follow, Accept, Reject, Undo or notice it stands for. */
export async function handleRelationshipIntent(deps: OutboundDeps, ctx: Context<void>, union: Union, intent: RelationshipIntent): Promise<void> {
  const rel = await getRelationship(deps.db, union.id, intent.relationshipId);
  if (!rel) {
    log.warn("Dropped {kind}: relationship {id} is gone", { kind: intent.kind, id: intent.relationshipId });
    return;
  }
  const groupId = ctx.getActorUri(union.slug);
  const own = new URL(relationshipFollowId(deps.origin, union.slug, rel.id));
  const peer = new URL(rel.peerActorId);
  const sender = { identifier: union.slug };
  if (intent.kind === "relationship.notice") {
    const { to, cc } = addressing(ctx, union);
    const name = rel.peerHandle ?? rel.peerActorId;
    const link = `<a href="${esc(rel.peerActorId)}">${esc(name)}</a>`;
    const what = rel.kind === "ally" ? "an ally" : rel.kind === "parent" ? "our parent union" : "our chapter";
    const text = intent.event === "started" ? `${esc(union.name)} and ${link} are now united: ${link} is ${what}.` : `${link} is no longer ${what} of ${esc(union.name)}.`;
    const note = new Note({ id: new URL(`${own.href}/notice-${intent.event}`), attribution: groupId, to, cc, content: `<p>${text}</p>`, published: Temporal.Now.instant() });
    // Members hear of it the way they hear calls-to-action: a page of the roster at a time.
    await fanOut(deps, ctx, union.id, new Create({ id: new URL(`${note.id!.href}/activity`), actor: groupId, object: note, to, cc, published: note.published }), own.href);
    return;
  }
  const recipient = await recipientFor(deps, ctx, union, rel.peerActorId);
  if (!recipient) return;
  const opts = { orderingKey: `relationship:${rel.id}` };
  const theirFollow = () => new Follow({ id: new URL(rel.followId), actor: peer, object: groupId });
  const ourFollow = () => new Follow({
    id: new URL(rel.followId), actor: groupId, object: peer,
    summary: `${union.name} offers ${rel.kind === "ally" ? "an alliance" : "to be a chapter"} (relaying: ${rel.relay})`,
    instrument: offerInstrument(groupId, peer, rel.kind === "parent" ? "parent" : "ally", rel.relay),
  });
  switch (intent.kind) {
    case "relationship.follow":
      await ctx.sendActivity(sender, recipient, ourFollow(), opts);
      return;
    case "relationship.accept":
      await ctx.sendActivity(sender, recipient, new Accept({ id: new URL(`${own.href}/accept`), actor: groupId, object: theirFollow() }), opts);
      return;
    case "relationship.reject":
      await ctx.sendActivity(sender, recipient, new Reject({ id: new URL(`${own.href}/reject`), actor: groupId, object: theirFollow() }), opts);
      return;
    case "relationship.undo": {
      const object = rel.direction === "outbound"
        ? new Follow({ id: new URL(rel.followId), actor: groupId, object: peer })
        : new Accept({ id: new URL(`${own.href}/accept`), actor: groupId, object: theirFollow() });
      await ctx.sendActivity(sender, recipient, new Undo({ id: new URL(`${own.href}/undo`), actor: groupId, object }), opts);
      return;
    }
  }
}

/** The peers a call-to-action of this union goes to: chapters, and allies that relay ours. */
export async function relayingPeers(deps: OutboundDeps, union: Union, opts: { chaptersOnly: boolean }): Promise<Relationship[]> {
  const rels = await listRelationships(deps.db, union.id, { states: ["active"] });
  return rels.filter((r) => relaysOurs(r) && (!opts.chaptersOnly || r.kind === "chapter"));
}

/** Sends an activity to each peer that relays; one peer's dead inbox does not hold up the others (each is its own delivery). */
export async function sendToPeers(deps: OutboundDeps, ctx: Context<void>, union: Union, peers: readonly Relationship[], activity: Create | Announce): Promise<void> {
  for (const p of peers) {
    const recipient = await recipientFor(deps, ctx, union, p.peerActorId);
    if (recipient) await ctx.sendActivity({ identifier: union.slug }, recipient, activity, { orderingKey: `relationship:${p.id}` });
  }
}

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);
}

export interface ProposeDeps extends RelationshipInboxDeps {
  readonly federation: Federation<void>;
  readonly origin: URL;
}

/**
 * An officer's proposal, from a handle (`@slug@host`) or a Group URL on
 * this or another server: the target must be a Group on a Muster server.
 * Fails with a RelationshipError the user can read.
 */
export async function proposeTo(deps: ProposeDeps, union: Union, by: By, target: string, kind: "ally" | "parent", relay: Relay, opts: { proposalId?: string } = {}): Promise<Relationship> {
  const ctx = deps.federation.createContext(deps.origin, undefined);
  const self = ctx.getActorUri(union.slug);
  // Refused before the lookup: a blocked server is not even asked.
  let targetHost: string | undefined;
  try {
    targetHost = normalizeHost(target);
  } catch {
    targetHost = undefined;
  }
  if (targetHost && await isBlockedUrl(deps.db, `https://${targetHost}/`)) throw new RelationshipError("forbidden", `the server ${targetHost} is blocked here`);
  let object: unknown;
  try {
    const documentLoader = await ctx.getDocumentLoader({ identifier: union.slug });
    object = await ctx.lookupObject(target.trim(), { documentLoader });
  } catch (error) {
    throw new RelationshipError("not_found", `could not look up ${target}: ${(error as Error).message}`);
  }
  if (!(object instanceof Group) || !object.id) throw new RelationshipError("invalid", `${target} is not a union (no Group actor found there)`);
  if (object.id.href !== self.href && !(await isMusterServer(ctx, object.id))) {
    throw new RelationshipError("invalid", `${target} is not a Muster union: only Muster unions can ally or be a parent union`);
  }
  const cached = await cacheActorObject(deps.db, object);
  return proposeRelationship(deps, union.id, by, {
    peerActorId: object.id.href,
    peerHandle: cached.handle,
    kind,
    relay,
    followIdFor: (id) => relationshipFollowId(deps.origin, union.slug, id),
    selfActorId: self.href,
    ...(opts.proposalId ? { proposalId: opts.proposalId } : {}),
  });
}

/** The Groups this union follows: the other side of every active relationship it offered. */
export async function followingOf(db: Kysely<DB>, unionId: string): Promise<URL[]> {
  const rels = await listRelationships(db, unionId, { states: ["active"] });
  return rels.filter((r) => r.direction === "outbound").map((r) => new URL(r.peerActorId));
}

/**
 * The union's allies and chapters as public OrderedCollections. The
 * parent's chapters collection is what confirms a chapter's claim: a
 * chapter is listed only once the parent's officers accepted it.
 */
export function mountRelationshipCollections(app: Hono, deps: { db: Kysely<DB>; origin: URL }): void {
  for (const [path, kind] of [["allies", "ally"], ["chapters", "chapter"]] as const) {
    app.get(`/u/:slug/${path}`, async (c) => {
      const union = await getUnionBySlug(deps.db, c.req.param("slug"));
      if (!union) return c.json({ error: { code: "not_found", message: "no such union" } }, 404);
      const items = (await listRelationships(deps.db, union.id, { states: ["active"], kinds: [kind] })).map((r) => r.peerActorId);
      return c.json({
        "@context": "https://www.w3.org/ns/activitystreams",
        id: new URL(`/u/${union.slug}/${path}`, deps.origin).href,
        type: "OrderedCollection",
        attributedTo: new URL(`/u/${union.slug}`, deps.origin).href,
        totalItems: items.length,
        orderedItems: items,
      }, 200, { "Content-Type": "application/activity+json" });
    });
  }
}

/** What the Group actor says about its relationships: the two collections, and a backlink to its parent. */
export async function actorRelationshipFields(db: Kysely<DB>, origin: URL, union: Union): Promise<{ streams: URL[]; attachments: PropertyValue[] }> {
  const parent = (await listRelationships(db, union.id, { states: ["active"], kinds: ["parent"] }))[0];
  return {
    streams: [new URL(`/u/${union.slug}/allies`, origin), new URL(`/u/${union.slug}/chapters`, origin)],
    attachments: parent
      ? [new PropertyValue({ name: "Parent union", value: `<a href="${esc(parent.peerActorId)}" rel="nofollow noopener">${esc(parent.peerHandle ?? parent.peerActorId)}</a>` })]
      : [],
  };
}
