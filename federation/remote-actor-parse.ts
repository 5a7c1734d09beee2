import { preloadedContexts } from "@fedify/fedify";
import {
  type Actor,
  Object as APObject,
  type DocumentLoader,
  getActorTypeName,
  getTypeId,
  type Image,
  isActor,
  type Link,
  type RemoteDocument,
} from "@fedify/vocab";
import { buildHandle, type RemoteActor } from "../src/actors/remote-actors.ts";

/*
 * JSON-LD contexts without the network
 * ------------------------------------
 * Fedify expands every document with JSON-LD, which dereferences each @context
 * URL. Muster never fetches a context at run time: a context fetch is a
 * request to a third party on every parse, an outage there breaks parsing,
 * and its content decides what the document's terms mean. Contexts come from:
 *
 *  1. Fedify's `preloadedContexts` (ActivityStreams, security v1, data
 *     integrity, multikey, DID/CID, webfinger, schema.org, GoToSocial, Lemmy's
 *     join-lemmy.org/context.json, joinmastodon.org/ns, FEP-5711, FEP-ef61,
 *     miscellany), plus the http:// and .jsonld spellings of the AS URL.
 *  2. The LitePub context, which every Pleroma/Akkoma instance serves from its
 *     own host at /schemas/litepub-0.1.jsonld, so no fixed URL can be
 *     preloaded. A stand-in of our own (below) is served for that path on
 *     any host.
 *  3. Anything else is an unknown context. By default parsing fails with an
 *     UnknownContextError naming the URL. With `unknownContexts: "ignore"`
 *     it is read as an empty context: expansion then drops the terms only it
 *     defined, and never makes up data, so the result is what a plain-JSON
 *     reader (most of the fediverse) sees; the actor fields Muster keeps are
 *     all ActivityStreams terms, and id/type/host checks run afterwards.
 *
 * Inline (object) contexts need no loading and work as they are.
 */

const AS_CONTEXT = "https://www.w3.org/ns/activitystreams";

const CONTEXT_ALIASES: Readonly<Record<string, string>> = {
  "http://www.w3.org/ns/activitystreams": AS_CONTEXT,
  "https://www.w3.org/ns/activitystreams.jsonld": AS_CONTEXT,
  "http://w3id.org/security/v1": "https://w3id.org/security/v1",
};

const LITEPUB_PATH = "/schemas/litepub-0.1.jsonld";

// Not a copy of Pleroma's file: the ActivityStreams and security contexts
// plus the few extension terms Muster reads from actors (the Mastodon and
// ActivityStreams-extension spellings that LitePub documents reuse).
// Terms only LitePub defines are dropped on expansion, which is what a
// reader that does not know them should do anyway.
const LITEPUB_CONTEXT = {
  "@context": [
    "https://www.w3.org/ns/activitystreams",
    "https://w3id.org/security/v1",
    {
      toot: "http://joinmastodon.org/ns#",
      manuallyApprovesFollowers: "as:manuallyApprovesFollowers",
      alsoKnownAs: { "@id": "as:alsoKnownAs", "@type": "@id" },
      movedTo: { "@id": "as:movedTo", "@type": "@id" },
      discoverable: "toot:discoverable",
      featured: { "@id": "toot:featured", "@type": "@id" },
      sensitive: "as:sensitive",
    },
  ],
};

export type UnknownContextPolicy = "reject" | "ignore";

export class UnknownContextError extends Error {
  readonly url: string;
  constructor(url: string) {
    super(`JSON-LD context ${url} is not preloaded, and Muster does not fetch contexts from the network`);
    this.name = "UnknownContextError";
    this.url = url;
  }
}

/** The context document for `url` if Muster ships it, else undefined. */
export function preloadedContext(url: string): unknown {
  const canonical = CONTEXT_ALIASES[url] ?? url;
  if (Object.hasOwn(preloadedContexts, canonical)) return preloadedContexts[canonical];
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return undefined;
  }
  if ((parsed.protocol === "https:" || parsed.protocol === "http:") && parsed.pathname === LITEPUB_PATH && parsed.search === "") {
    return LITEPUB_CONTEXT;
  }
  return undefined;
}

/** A context loader that never touches the network; see the comment at the top of this file. */
export function createOfflineContextLoader(options: { unknownContexts?: UnknownContextPolicy } = {}): DocumentLoader {
  const policy = options.unknownContexts ?? "reject";
  return async (url: string): Promise<RemoteDocument> => {
    const document = preloadedContext(url);
    if (document !== undefined) return { contextUrl: null, documentUrl: url, document };
    // A fresh object each time: jsonld rewrites loaded contexts in place.
    if (policy === "ignore") return { contextUrl: null, documentUrl: url, document: { "@context": {} } };
    throw new UnknownContextError(url);
  };
}

/**
 * A document loader for the parse path: it answers context URLs like the
 * offline context loader and refuses everything else, so that parsing a
 * document never turns into fetching the objects it links to.
 */
export function createOfflineDocumentLoader(): DocumentLoader {
  return async (url: string): Promise<RemoteDocument> => {
    const document = preloadedContext(url);
    if (document !== undefined) return { contextUrl: null, documentUrl: url, document };
    throw new Error(`Refusing to fetch ${url}: remote actor parsing works offline`);
  };
}

export type RemoteActorErrorCode =
  | "invalid-document"
  | "not-an-actor"
  | "invalid-id"
  | "origin-mismatch"
  | "unknown-context";

export class RemoteActorError extends Error {
  readonly code: RemoteActorErrorCode;
  constructor(code: RemoteActorErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "RemoteActorError";
    this.code = code;
  }
}

export interface ParseRemoteActorOptions {
  /**
   * Where the document was fetched from (the final URL, after redirects).
   * The actor's id must be on the same host, so a server cannot hand out an
   * actor document claiming an identity on another server.
   */
  fetchedFrom?: URL;
  /** Defaults to an offline loader; only consulted for linked (not embedded) objects. */
  documentLoader?: DocumentLoader;
  /** Defaults to createOfflineContextLoader({ unknownContexts }). */
  contextLoader?: DocumentLoader;
  /** Ignored when contextLoader is given. Defaults to "reject". */
  unknownContexts?: UnknownContextPolicy;
  /** Epoch ms to record as fetchedAt; defaults to now. */
  fetchedAt?: number;
}

/**
 * Turns a fetched actor document into the fields Muster caches, parsing it
 * with Fedify's vocabulary classes. Throws RemoteActorError.
 */
export async function parseRemoteActor(json: unknown, options: ParseRemoteActorOptions = {}): Promise<RemoteActor> {
  if (json == null || typeof json !== "object" || Array.isArray(json)) {
    throw new RemoteActorError("invalid-document", "An actor document must be a JSON object");
  }
  const raw = json as Record<string, unknown>;
  // Checked before JSON-LD so that a bad id gets this error, not an expansion failure.
  if (typeof raw.id !== "string" || httpUrl(raw.id) == null) {
    throw new RemoteActorError("invalid-id", `Actor id must be an http(s) URL, got ${JSON.stringify(raw.id)}`);
  }
  const contextLoader = options.contextLoader ??
    createOfflineContextLoader({ unknownContexts: options.unknownContexts ?? "reject" });
  const documentLoader = options.documentLoader ?? createOfflineDocumentLoader();

  let object: APObject;
  try {
    object = await APObject.fromJsonLd(withDefaultContext(raw), { documentLoader, contextLoader });
  } catch (error) {
    const unknown = findCause(error, UnknownContextError);
    if (unknown) throw new RemoteActorError("unknown-context", `Cannot parse actor ${raw.id}: ${unknown.message}`, { cause: error });
    throw new RemoteActorError("invalid-document", `Cannot parse actor ${raw.id}: ${errorMessage(error)}`, { cause: error });
  }

  if (!isActor(object)) {
    const typeId = getTypeId(object)?.href ?? "untyped object";
    throw new RemoteActorError(
      "not-an-actor",
      `${raw.id} is ${typeId.replace(`${AS_CONTEXT}#`, "a ")}, not an actor (Person, Group, Service, Application or Organization)`,
    );
  }
  const id = object.id == null ? null : httpUrl(object.id.href);
  if (id == null) throw new RemoteActorError("invalid-id", `Actor id must be an http(s) URL, got ${object.id?.href ?? "none"}`);
  if (options.fetchedFrom != null && options.fetchedFrom.host !== id.host) {
    throw new RemoteActorError(
      "origin-mismatch",
      `Actor ${id.href} was served by ${options.fetchedFrom.host}; an actor document is only trusted from its own host`,
    );
  }
  return actorToRemoteActor(object, { documentLoader, contextLoader, fetchedAt: options.fetchedAt });
}

export interface ActorMappingOptions {
  /** Defaults to an offline loader, so mapping reads only what the object embeds. */
  documentLoader?: DocumentLoader;
  contextLoader?: DocumentLoader;
  fetchedAt?: number;
}

/**
 * The one mapping from a Fedify actor to the cached fields, shared by the
 * parse path and by actors Fedify has already fetched (inbox listeners).
 * Throws RemoteActorError if the actor has no http(s) id.
 */
export async function actorToRemoteActor(actor: Actor, options: ActorMappingOptions = {}): Promise<RemoteActor> {
  if (!isActor(actor)) throw new RemoteActorError("not-an-actor", "Not an actor object");
  const id = actor.id == null ? null : httpUrl(actor.id.href);
  if (id == null) throw new RemoteActorError("invalid-id", `Actor id must be an http(s) URL, got ${actor.id?.href ?? "none"}`);
  const preferredUsername = text(actor.preferredUsername);
  return {
    id: id.href,
    type: getActorTypeName(actor),
    handle: buildHandle(preferredUsername, id),
    preferredUsername,
    name: text(actor.name),
    summary: text(actor.summary),
    url: profileUrl(actor.urls),
    avatarUrl: await avatarUrl(actor, {
      documentLoader: options.documentLoader ?? createOfflineDocumentLoader(),
      contextLoader: options.contextLoader ?? createOfflineContextLoader(),
    }),
    inbox: actor.inboxId?.href ?? null,
    sharedInbox: actor.endpoints?.sharedInbox?.href ?? null,
    fetchedAt: options.fetchedAt ?? Date.now(),
  };
}

/**
 * AS2 §2.1: a document without a reference to the ActivityStreams context is
 * read as if it had one. Lemmy's stored examples, for one, carry no @context.
 */
function withDefaultContext(doc: Record<string, unknown>): Record<string, unknown> {
  const context = doc["@context"];
  const list = context == null ? [] : Array.isArray(context) ? context : [context];
  const hasAs = list.some((c) => typeof c === "string" && (CONTEXT_ALIASES[c] ?? c) === AS_CONTEXT);
  return hasAs ? doc : { ...doc, "@context": [AS_CONTEXT, ...list] };
}

function httpUrl(value: string): URL | null {
  try {
    const url = new URL(value);
    return url.protocol === "https:" || url.protocol === "http:" ? url : null;
  } catch {
    return null;
  }
}

function text(value: unknown): string | null {
  // LanguageString extends String, so this also covers language-tagged values.
  return value == null ? null : String(value);
}

/** The first plain URL or HTML link: PeerTube and others also list feeds and media. */
function profileUrl(urls: readonly (URL | Link)[]): string | null {
  const html = urls.find((u) =>
    u instanceof URL || (u.href != null && (u.mediaType == null || u.mediaType.split(";")[0]!.trim() === "text/html"))
  );
  const chosen = html ?? urls[0];
  if (chosen == null) return null;
  return (chosen instanceof URL ? chosen : chosen.href)?.href ?? null;
}

/**
 * The largest embedded icon (PeerTube lists several sizes, smallest first).
 * The actor's own document is the authority on its avatar, so an icon whose
 * @id is on a media host is trusted rather than re-fetched.
 */
async function avatarUrl(actor: Actor, loaders: { documentLoader: DocumentLoader; contextLoader: DocumentLoader }): Promise<string | null> {
  let best: { url: string; area: number } | null = null;
  for await (const icon of actor.getIcons({ ...loaders, suppressError: true, crossOrigin: "trust" })) {
    const url = imageUrl(icon);
    if (url == null) continue;
    const area = (icon.width ?? 0) * (icon.height ?? 0);
    if (best == null || area > best.area) best = { url, area };
  }
  return best?.url ?? null;
}

function imageUrl(image: Image): string | null {
  for (const u of image.urls) {
    const href = u instanceof URL ? u : u.href;
    if (href != null && (href.protocol === "https:" || href.protocol === "http:")) return href.href;
  }
  return null;
}

function findCause<T extends Error>(error: unknown, type: new (...args: never[]) => T): T | undefined {
  const seen = new Set<unknown>();
  let current: unknown = error;
  while (current != null && typeof current === "object" && !seen.has(current)) {
    if (current instanceof type) return current;
    seen.add(current);
    const c = current as { cause?: unknown; details?: { cause?: unknown } };
    current = c.details?.cause ?? c.cause;
  }
  return undefined;
}

function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
