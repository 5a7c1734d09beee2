import { AsyncLocalStorage } from "node:async_hooks";
import type { Federation, KvStore } from "@fedify/fedify";
import type { DocumentLoader, RemoteDocument } from "@fedify/vocab-runtime";
import { logger } from "../src/logging.ts";

const log = logger("federation", "recent-actors");

/**
 * A join cost two GETs of the follower's actor document: one when Fedify
 * fetched the signing key (`…/users/alice#main-key` is that same document)
 * to verify the Follow, and one a moment later when the inbox lane fetched
 * the actor fresh to check its account-migration links. Both go through
 * Fedify's signed (authenticated) document loader, which has no cache.
 *
 * This keeps the actor documents that loader fetches for RECENT_MS in the KV
 * store (shared by every process on the database, so a key fetched by the web
 * process is reused by a worker), keyed by the URL without its fragment: the
 * second fetch of a join is answered from there. Only actor documents (a type
 * and an inbox) are kept, for a minute. Every fetch stores; only a fetch
 * inside `fromRecentFetch` (the sender's refresh right after its signature
 * was verified, inbox-record.ts) reads: any other lookup, such as the check
 * that an old account now names its successor with movedTo, goes to the
 * network as before, so it never sees a copy from before the change.
 *
 * Fedify takes no loader factory of ours beside allowPrivateAddress and
 * userAgent (it throws), so the federation's factory is wrapped after
 * creation: `authenticatedDocumentLoaderFactory` is a field of Fedify's
 * FederationImpl (2.3.6), not of its public interface; if it is missing this
 * does nothing and says so.
 */
export const RECENT_MS = 60_000;
const PREFIX = ["muster", "recentActor"] as const;
const ACTOR_TYPES = new Set(["Person", "Service", "Group", "Application", "Organization"]);

const reading = new AsyncLocalStorage<true>();

const notKeeping = new AsyncLocalStorage<true>();

/**
 * Runs `fn` without keeping the actor documents it fetches: for a caller
 * that parses the document itself and that no later fetch will ask for
 * (the follow's fast path, federation/follow-fast-path.ts).
 */
export function withoutKeeping<T>(fn: () => Promise<T>): Promise<T> {
  return notKeeping.run(true, fn);
}

/** Runs `fn` with fetches of actor documents answered from one fetched in the last minute, if any. */
export function fromRecentFetch<T>(fn: () => Promise<T>): Promise<T> {
  return reading.run(true, fn);
}

type Factory = (identity: unknown, options?: unknown) => DocumentLoader;

export function shareRecentActorDocuments(federation: Federation<void>, kv: KvStore): boolean {
  const impl = federation as unknown as { authenticatedDocumentLoaderFactory?: Factory };
  const base = impl.authenticatedDocumentLoaderFactory;
  if (typeof base !== "function") {
    log.warn("Fedify has no authenticatedDocumentLoaderFactory to wrap: each join fetches the follower's actor twice");
    return false;
  }
  impl.authenticatedDocumentLoaderFactory = (identity, options) => recentActorLoader(base(identity, options), kv);
  return true;
}

export function recentActorLoader(loader: DocumentLoader, kv: KvStore): DocumentLoader {
  return async (url, options) => {
    const key = [...PREFIX, withoutFragment(url)] as const;
    if (reading.getStore()) {
      const hit = await kv.get<RemoteDocument>(key);
      if (hit !== undefined) return hit;
    }
    const fetched = await loader(url, options);
    if (!notKeeping.getStore() && isActorDocument(fetched.document)) {
      await kv.set(key, { contextUrl: fetched.contextUrl, documentUrl: fetched.documentUrl, document: fetched.document }, { ttl: Temporal.Duration.from({ milliseconds: RECENT_MS }) });
    }
    return fetched;
  };
}

function withoutFragment(url: string): string {
  const i = url.indexOf("#");
  return i < 0 ? url : url.slice(0, i);
}

function isActorDocument(doc: unknown): boolean {
  if (typeof doc !== "object" || doc === null) return false;
  const { type, inbox } = doc as { type?: unknown; inbox?: unknown };
  const types = Array.isArray(type) ? type : [type];
  return typeof inbox === "string" && types.some((t) => typeof t === "string" && ACTOR_TYPES.has(t));
}
