import type { Context, Federation } from "@fedify/fedify";
import { signRequest, verifyRequest } from "@fedify/fedify";
import { signedKeyOwner } from "./signed-key-owner.ts";
import { type Accept, Add, type Delete, PUBLIC_COLLECTION, type Reject, Remove } from "@fedify/vocab";
import { fanOut } from "./fanout-pages.ts";
import { preloadedContexts } from "@fedify/vocab-runtime";
import type { Context as HonoContext, MiddlewareHandler } from "hono";
import type { Kysely } from "kysely";
import type { DB } from "../src/db/schema.ts";
import type { DomainDeps } from "../src/domain-deps.ts";
import { logger } from "../src/logging.ts";
import { readModerators } from "../src/members/roster.ts";
import type { OutboxIntent } from "../src/outbox.ts";
import {
  consentedItems, type FeaturedCollection, FEATURED_COLLECTIONS, featureAnswered, featuredItem, getStamp, receiveFeatureRequest, stampRevoked,
} from "../src/relationships/featured.ts";
import { getUnionBySlug, type Union } from "../src/unions/unions.ts";
import { type OutboundDeps, recipientFor } from "./outbound.ts";

// FEP-7aa9 (Mastodon 4.6 "Collections"). Fedify 2.3.6 has no classes for
// these types, so the JSON is written here by hand and what arrives is read
// as plain JSON: FeatureRequest is answered in front of Fedify (whose
// parser refuses an unknown activity type), after this module checks its
// HTTP signature with Fedify's own verifyRequest. Accept, Reject and Delete
// are ordinary activities and come through Fedify's inbox listeners.

const log = logger("federation", "featured");

export const FEP_7AA9 = "https://w3id.org/fep/7aa9";
const AS = "https://www.w3.org/ns/activitystreams";
const JSON_TYPE = "application/activity+json";
/** What a stamp answer must carry, read by hand; a bigger document is not a stamp. */
const MAX_STAMP_BYTES = 64 * 1024;

/**
 * The FEP's context, kept here so that documents naming it are expanded
 * without fetching anything (the inbox refuses to fetch contexts). Only the
 * terms the FEP defines; written from its text.
 */
export const FEP_7AA9_CONTEXT = {
  "@context": {
    fep7aa9: "https://w3id.org/fep/7aa9#",
    FeaturedCollection: "fep7aa9:FeaturedCollection",
    FeaturedItem: "fep7aa9:FeaturedItem",
    FeatureRequest: "fep7aa9:FeatureRequest",
    FeatureAuthorization: "fep7aa9:FeatureAuthorization",
    featuredObject: { "@id": "fep7aa9:featuredObject", "@type": "@id" },
    featuredObjectType: { "@id": "fep7aa9:featuredObjectType", "@type": "@vocab" },
    featureAuthorization: { "@id": "fep7aa9:featureAuthorization", "@type": "@id" },
    featuredCollections: { "@id": "fep7aa9:featuredCollections", "@type": "@id" },
    topic: { "@id": "fep7aa9:topic" },
    interactingObject: { "@id": "https://gotosocial.org/ns#interactingObject", "@type": "@id" },
    interactionTarget: { "@id": "https://gotosocial.org/ns#interactionTarget", "@type": "@id" },
  },
};

/**
 * Adds the FEP's context to the ones Fedify ships preloaded, so Fedify's
 * loaders and the inbox guard (which refuses contexts it would have to
 * fetch) treat it as they treat ActivityStreams: known, never fetched.
 */
export function registerFepContext(): void {
  (preloadedContexts as Record<string, unknown>)[FEP_7AA9] = FEP_7AA9_CONTEXT;
}

/**
 * What our own documents carry: the FEP's terms inline rather than its
 * context URL, so no receiver has to fetch anything to read them (a Fedify
 * server without network access to w3id.org could not parse our actor).
 */
const FEP_TERMS = FEP_7AA9_CONTEXT["@context"];

export const collectionUrl = (origin: URL, slug: string, c: FeaturedCollection) => new URL(`/u/${slug}/collections/${c}`, origin);
export const itemUrl = (origin: URL, slug: string, c: FeaturedCollection, itemId: string) => new URL(`/u/${slug}/collections/${c}/items/${itemId}`, origin);

/** One FeaturedItem, as listed in its collection and served at its own URL (where an Add or Remove points). */
function itemJson(origin: URL, union: Union, collection: FeaturedCollection, i: { id: string; actorId: string; stamp: string | null; updatedAt: Date }) {
  return {
    id: itemUrl(origin, union.slug, collection, i.id).href,
    type: "FeaturedItem",
    featuredObject: i.actorId,
    featuredObjectType: collection === "allies" ? "Group" : "Person",
    featureAuthorization: i.stamp,
    published: i.updatedAt.toISOString(),
  };
}
export const requestUrl = (origin: URL, slug: string, itemId: string) => new URL(`/u/${slug}/feature-requests/${itemId}`, origin);
export const stampUrl = (origin: URL, slug: string, stampId: string) => new URL(`/u/${slug}/stamps/${stampId}`, origin);
const groupUrl = (origin: URL, slug: string) => new URL(`/u/${slug}`, origin);

const TITLES: Record<FeaturedCollection, (u: Union) => { name: string; summary: string }> = {
  allies: (u) => ({ name: `${u.name}: allies`, summary: `Unions allied with ${u.name}. Each one agreed to be listed here.` }),
  cabinet: (u) => ({ name: `${u.name}: cabinet`, summary: `The leader and officers of ${u.name}. Each one agreed to be listed here.` }),
};

/** The collection as FEP-7aa9 writes it: only items whose actor consented, each with its stamp. */
export async function featuredCollectionJson(db: Kysely<DB>, origin: URL, union: Union, collection: FeaturedCollection) {
  const items = await consentedItems(db, union.id, collection);
  const id = collectionUrl(origin, union.slug, collection).href;
  return {
    "@context": [AS, { ...FEP_TERMS, discoverable: "http://joinmastodon.org/ns#discoverable" }],
    id,
    type: "FeaturedCollection",
    ...TITLES[collection](union),
    attributedTo: groupUrl(origin, union.slug).href,
    url: new URL(`/u/${union.slug}`, origin).href,
    discoverable: true,
    totalItems: items.length,
    orderedItems: items.map((i) => itemJson(origin, union, collection, i)),
    published: union.createdAt.toISOString(),
  };
}

/** Lists the union's collections, for the actor's `featuredCollections`. */
export function featuredCollectionsJson(origin: URL, union: Union) {
  return {
    "@context": AS,
    id: new URL(`/u/${union.slug}/collections`, origin).href,
    type: "Collection",
    totalItems: FEATURED_COLLECTIONS.length,
    items: FEATURED_COLLECTIONS.map((c) => collectionUrl(origin, union.slug, c).href),
  };
}

/**
 * The Group's consent policy (the FEP reads GoToSocial's interactionPolicy):
 * the union's allies, listed in its `following` collection, are approved at
 * once; anyone else may ask, and an officer decides.
 */
export function interactionPolicyJson(origin: URL, union: Union) {
  return {
    canFeature: {
      automaticApproval: [new URL(`/u/${union.slug}/following`, origin).href],
      manualApproval: [`${AS}#Public`],
    },
  };
}

function stampJson(origin: URL, union: Union, s: { id: string; collection: string }) {
  return {
    "@context": [AS, FEP_TERMS],
    id: stampUrl(origin, union.slug, s.id).href,
    type: "FeatureAuthorization",
    attributedTo: groupUrl(origin, union.slug).href,
    interactingObject: s.collection,
    interactionTarget: groupUrl(origin, union.slug).href,
  };
}

/** HTTP routes: the collections, the list of them, and the stamps this union issued. */
export function featuredRoutes(db: Kysely<DB>, origin: URL, federation: Federation<void>): MiddlewareHandler {
  return async (c, next) => {
    if (c.req.method !== "GET" && c.req.method !== "HEAD") return next();
    const m = /^\/u\/([^/]+)\/(collections|stamps)(?:\/([^/]+))?(?:\/items\/([^/]+))?$/.exec(c.req.path);
    if (!m) return next();
    const union = await getUnionBySlug(db, decodeURIComponent(m[1]!));
    if (!union) return c.json({ error: "no such union" }, 404);
    const [, , kind, name, itemId] = m;
    if (itemId !== undefined && kind !== "collections") return c.json({ error: "not found" }, 404);
    if (kind === "collections" && name === undefined) return activityJson(c, featuredCollectionsJson(origin, union));
    if (kind === "collections") {
      if (!(FEATURED_COLLECTIONS as readonly string[]).includes(name!)) return c.json({ error: "no such collection" }, 404);
      // The cabinet names the officers: it is shown to whoever may see who holds office.
      if (name === "cabinet") {
        const viewer = await signedKeyOwner(federation.createContext(c.req.raw, undefined));
        const mods = await readModerators(db, union, { via: "federation", actorId: viewer?.href });
        if (!mods.ok) return c.json({ error: "this union does not show who holds office to you" }, mods.refused === "unidentified" ? 401 : 403);
      }
      if (itemId !== undefined) {
        const item = await featuredItem(db, itemId);
        if (!item || item.collection !== name || item.unionId !== union.id) return c.json({ error: "no such item" }, 404);
        // Removed from the list (or never consented to): gone, as the Remove said.
        if (item.state !== "accepted") return c.json({ error: "this item is no longer in the collection" }, 410);
        return activityJson(c, { "@context": [AS, FEP_TERMS], ...itemJson(origin, union, item.collection, item) });
      }
      return activityJson(c, await featuredCollectionJson(db, origin, union, name as FeaturedCollection));
    }
    const stamp = await getStamp(db, union.id, name!);
    if (!stamp) return c.json({ error: "no such stamp" }, 404);
    // A withdrawn consent must stop verifying: 410 Gone, as for a deleted object.
    if (stamp.state !== "accepted") return c.json({ error: "this consent was withdrawn or never given" }, 410);
    return activityJson(c, stampJson(origin, union, stamp));
  };
}

function activityJson(c: HonoContext, body: unknown) {
  return c.body(JSON.stringify(body), 200, { "Content-Type": JSON_TYPE, Vary: "Accept, Signature, Signature-Input" });
}

/**
 * A FeatureRequest POSTed to a union's inbox (or the shared inbox), answered
 * before Fedify sees it. It must be signed by its actor, name this union as
 * its object and a collection on the requester's own server as its
 * instrument; a repeat finds the stamp it made.
 */
export function featureRequestInbox(deps: DomainDeps & { origin: URL; federation: Federation<void> }): MiddlewareHandler {
  return async (c, next) => {
    if (c.req.method !== "POST") return next();
    const path = c.req.path;
    const m = /^\/u\/([^/]+)\/inbox$/.exec(path);
    if (!m && path !== "/inbox") return next();
    // The inbox guard has read and parsed the body already; anything but a FeatureRequest goes on to Fedify untouched.
    const body = c.get("inboxActivity");
    if (!body) return next();
    if (body.type !== "FeatureRequest" && body.type !== `${FEP_7AA9}#FeatureRequest`) return next();
    const ctx = deps.federation.createContext(c.req.raw, undefined);
    let key;
    try {
      key = await verifyRequest(c.req.raw.clone(), { documentLoader: ctx.documentLoader, contextLoader: ctx.contextLoader });
    } catch (error) {
      log.info("Refused a FeatureRequest: its signature could not be checked: {error}", { error });
    }
    const actor = idOf(body.actor);
    if (!key || !actor || key.ownerId?.href !== actor) {
      return c.text("A FeatureRequest must be signed by its actor.", 401);
    }
    const id = idOf(body.id);
    const object = idOf(body.object);
    const instrument = idOf(body.instrument);
    if (!id || !object || !instrument || !sameOrigin(id, actor) || !sameOrigin(instrument, actor)) {
      return c.text("A FeatureRequest needs an id and an instrument (the collection) on its actor's server, and an object.", 400);
    }
    const target = ctx.parseUri(new URL(object));
    const union = target?.type === "actor" ? await getUnionBySlug(deps.db, target.identifier) : undefined;
    if (!union || (m && decodeURIComponent(m[1]!) !== union.slug)) {
      return c.text("That FeatureRequest does not name a union of this inbox.", 400);
    }
    const ally = await deps.db.selectFrom("union_relationships").select("id").where("union_id", "=", union.id)
      .where("peer_actor_id", "=", actor).where("kind", "=", "ally").where("state", "=", "active").executeTakeFirst();
    try {
      const stamp = await receiveFeatureRequest(deps, union.id, { requestId: id, requester: actor, collection: instrument, fromAlly: !!ally });
      log.info("FeatureRequest {id} from {actor} for {union}: {state}", { id, actor, union: union.slug, state: stamp.state });
    } catch (error) {
      return c.text(String((error as Error).message), 409);
    }
    return c.body(null, 202);
  };
}

function idOf(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (v && typeof v === "object" && typeof (v as { id?: unknown }).id === "string") return (v as { id: string }).id;
  return undefined;
}

function sameOrigin(a: string, b: string): boolean {
  try {
    return new URL(a).origin === new URL(b).origin;
  } catch {
    return false;
  }
}

/** The item one of our FeatureRequest URLs names, if it is ours. */
async function ownRequest(db: Kysely<DB>, origin: URL, id: URL | null) {
  if (!id || id.origin !== origin.origin) return undefined;
  const m = /^\/u\/([^/]+)\/feature-requests\/([^/#?]+)$/.exec(id.pathname);
  if (!m) return undefined;
  const item = await featuredItem(db, m[2]!);
  return item ? { item, slug: decodeURIComponent(m[1]!) } : undefined;
}

/**
 * An Accept or Reject of one of our FeatureRequests. An Accept counts only
 * when its `result` is a stamp on the featured actor's own server that says
 * what it must (FeatureAuthorization, our collection, that actor); the
 * stamp is fetched, never taken from the activity. Returns false when the
 * answer is about something else.
 */
export async function onFeatureAnswer(deps: DomainDeps & { origin: URL }, ctx: Context<void>, answer: Accept | Reject, accepted: boolean): Promise<boolean> {
  const own = await ownRequest(deps.db, deps.origin, answer.objectId);
  if (!own) return false;
  const actor = answer.actorId?.href;
  if (!actor || actor !== own.item.actorId) {
    log.warn("Refused an answer to FeatureRequest {id} by {actor}: only {featured} can answer it", { id: answer.objectId?.href, actor: actor ?? "(none)", featured: own.item.actorId });
    return true;
  }
  if (!accepted) {
    await featureAnswered(deps, own.item.id, actor, { accepted: false });
    return true;
  }
  const stamp = answer.resultId?.href;
  const check = stamp ? await checkStamp(ctx, own.slug, deps.origin, own.item, stamp) : "no result (stamp) in the Accept";
  if (check !== true) {
    log.warn("Refused an Accept of FeatureRequest {id} by {actor}: {why}", { id: answer.objectId?.href, actor, why: check });
    return true;
  }
  await featureAnswered(deps, own.item.id, actor, { accepted: true, stamp: stamp! });
  return true;
}

async function checkStamp(ctx: Context<void>, slug: string, origin: URL, item: { actorId: string; collection: FeaturedCollection }, stamp: string): Promise<true | string> {
  if (!sameOrigin(stamp, item.actorId)) return `the stamp ${stamp} is not on the featured actor's server`;
  let doc: Record<string, unknown>;
  try {
    const loader = await ctx.getDocumentLoader({ identifier: slug });
    const { document } = await loader(stamp);
    doc = document as Record<string, unknown>;
    if (JSON.stringify(doc).length > MAX_STAMP_BYTES) return "the stamp document is too large";
  } catch (error) {
    return `the stamp could not be fetched: ${(error as Error).message}`;
  }
  const type = doc.type;
  if (type !== "FeatureAuthorization" && type !== `${FEP_7AA9}#FeatureAuthorization`) return `the stamp is a ${String(type)}, not a FeatureAuthorization`;
  if (idOf(doc.id) !== stamp) return "the stamp's id is not the URL it was fetched from";
  if (idOf(doc.interactingObject) !== collectionUrl(origin, slug, item.collection).href) return "the stamp is for another collection";
  if (idOf(doc.interactionTarget) !== item.actorId) return "the stamp is for another actor";
  return true;
}

/** A Delete of a stamp we hold: the actor withdrew its consent. Returns false when it is about something else. */
export async function onStampDelete(deps: DomainDeps, del: Delete): Promise<boolean> {
  const object = del.objectId?.href;
  const actor = del.actorId?.href;
  if (!object || !actor) return false;
  const held = await deps.db.selectFrom("featured_items").select("id").where("stamp", "=", object).executeTakeFirst();
  if (!held) return false;
  // Only the featured actor's server holds the stamp; the Delete must come from that actor.
  const n = await stampRevoked(deps, object, actor);
  if (n === 0) log.warn("Ignored a Delete of stamp {stamp} by {actor}: not the actor it belongs to", { stamp: object, actor });
  return true;
}

type FeaturedIntent = Extract<OutboxIntent, { kind: "featured.request" | "featured.answer" | "featured.withdraw" | "featured.add" | "featured.remove" }>;

/**
 * Sends what a featured.* intent asks for, signed by the union's key. These
 * activities have no Fedify class, so they are signed with Fedify's
 * signRequest and POSTed here; a failure throws, and the queue retries.
 */
export async function handleFeaturedIntent(deps: OutboundDeps, ctx: Context<void>, union: Union, intent: FeaturedIntent): Promise<void> {
  const group = groupUrl(deps.origin, union.slug).href;
  if (intent.kind === "featured.add" || intent.kind === "featured.remove") {
    const item = await featuredItem(deps.db, intent.itemId);
    if (!item) return;
    // As Mastodon does: Add and Remove by the owner, `target` the collection, to its followers. The
    // object is the item's URL (its document is served there while it is listed; 410 after).
    const url = itemUrl(deps.origin, union.slug, item.collection, item.id);
    const Kind = intent.kind === "featured.add" ? Add : Remove;
    const activity = new Kind({
      id: new URL(`${url.href}#${intent.kind === "featured.add" ? "add" : "remove"}`),
      actor: new URL(group), object: url, target: collectionUrl(deps.origin, union.slug, item.collection),
      to: ctx.getFollowersUri(union.slug), cc: PUBLIC_COLLECTION,
    });
    await fanOut(deps, ctx, union.id, activity, `featured:${item.id}`);
    return;
  }
  if (intent.kind === "featured.request") {
    const item = await featuredItem(deps.db, intent.itemId);
    if (!item || item.state !== "requested") return;
    await postSigned(deps, ctx, union, item.actorId, {
      "@context": [AS, FEP_TERMS],
      id: requestUrl(deps.origin, union.slug, item.id).href,
      type: "FeatureRequest",
      actor: group,
      object: item.actorId,
      instrument: collectionUrl(deps.origin, union.slug, item.collection).href,
      to: item.actorId,
    });
    return;
  }
  const stamp = await getStamp(deps.db, union.id, intent.stampId);
  if (!stamp) return;
  const url = stampUrl(deps.origin, union.slug, stamp.id).href;
  if (intent.kind === "featured.withdraw") {
    await postSigned(deps, ctx, union, stamp.requester, { "@context": AS, id: `${url}/delete`, type: "Delete", actor: group, object: url, to: stamp.requester });
    return;
  }
  if (stamp.state === "pending" || stamp.state === "withdrawn") return;
  const accepted = stamp.state === "accepted";
  await postSigned(deps, ctx, union, stamp.requester, {
    "@context": AS,
    id: `${url}/${accepted ? "accept" : "reject"}`,
    type: accepted ? "Accept" : "Reject",
    actor: group,
    object: stamp.requestId,
    ...(accepted ? { result: url } : {}),
    to: stamp.requester,
  });
}

async function postSigned(deps: OutboundDeps, ctx: Context<void>, union: Union, actorId: string, body: Record<string, unknown>): Promise<void> {
  const recipient = await recipientFor(deps, ctx, union, actorId);
  if (!recipient?.inboxId) return;
  const keys = await ctx.getActorKeyPairs(union.slug);
  const rsa = keys.find((k) => k.privateKey.algorithm.name === "RSASSA-PKCS1-v1_5") ?? keys[0];
  if (!rsa) throw new Error(`union ${union.slug} has no signing key`);
  const request = new Request(recipient.inboxId, {
    method: "POST",
    headers: { "Content-Type": JSON_TYPE, Accept: JSON_TYPE },
    body: JSON.stringify(body),
  });
  const signed = await signRequest(request, rsa.privateKey, rsa.keyId);
  const res = await fetch(signed, { redirect: "manual" });
  await res.body?.cancel();
  if (res.ok) return;
  // Software without FEP-7aa9 refuses the type (Fedify answers 400): retrying would not change that.
  if (res.status >= 400 && res.status < 500 && res.status !== 408 && res.status !== 429) {
    log.info("{type} to {inbox} was refused with {status}; not retried (the server may not support FEP-7aa9)", { type: body.type, inbox: recipient.inboxId.href, status: res.status });
    return;
  }
  throw new Error(`${body.type} to ${recipient.inboxId.href} was answered ${res.status}`);
}

/**
 * Adds `featuredCollections` and the consent policy to the Group actor that
 * Fedify serves (its Group class has no such properties). Applied to
 * Fedify's answer before the read cache keeps it (src/http/federation-mount.ts);
 * only the union actors' own JSON documents are touched.
 */
export function actorFeaturedFields(db: Kysely<DB>, origin: URL): (request: Request, res: Response) => Promise<Response> {
  return async (request, res) => {
    if (request.method !== "GET" || res.status !== 200) return res;
    const m = /^\/u\/([^/]+)$/.exec(new URL(request.url).pathname);
    const type = res.headers.get("content-type") ?? "";
    if (!m || !(type.includes("activity+json") || type.includes("ld+json"))) return res;
    const union = await getUnionBySlug(db, decodeURIComponent(m[1]!));
    if (!union) return res;
    const doc = await res.clone().json() as Record<string, unknown>;
    if (doc.type !== "Group") return res;
    const context = Array.isArray(doc["@context"]) ? [...doc["@context"] as unknown[]] : [doc["@context"]];
    context.push({ ...FEP_TERMS, interactionPolicy: { "@id": "https://gotosocial.org/ns#interactionPolicy", "@type": "@id" }, canFeature: { "@id": "https://w3id.org/fep/7aa9#canFeature", "@type": "@id" }, automaticApproval: { "@id": "https://gotosocial.org/ns#automaticApproval", "@type": "@id" }, manualApproval: { "@id": "https://gotosocial.org/ns#manualApproval", "@type": "@id" } });
    const body = JSON.stringify({ ...doc, "@context": context, featuredCollections: new URL(`/u/${union.slug}/collections`, origin).href, interactionPolicy: interactionPolicyJson(origin, union) });
    const headers = new Headers(res.headers);
    headers.delete("content-length");
    headers.delete("etag");
    return new Response(body, { status: 200, headers });
  };
}
