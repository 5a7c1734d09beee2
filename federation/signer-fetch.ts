import type { Context, Federation } from "@fedify/fedify";
import { type Actor, type CryptographicKey, isActor, Object as APObject } from "@fedify/vocab";
import type { Kysely } from "kysely";
import type { CachedActor } from "../src/actors/remote-actors.ts";
import type { DB } from "../src/db/schema.ts";
import { logger } from "../src/logging.ts";
import { fetchFollowerPlain } from "./follower-fetch.ts";
import type { SignatureClaim } from "./inbox-fast-verify.ts";
import { readPlainActor } from "./plain-actor.ts";
import { withoutKeeping } from "./recent-actors.ts";
import { actorToRemoteActor, createOfflineContextLoader, createOfflineDocumentLoader } from "./remote-actor-parse.ts";
import { isCollectiveActor } from "./relationships.ts";

const log = logger("federation", "signer-fetch");

/*
 * The signer of an inbox POST, fetched now from its own actor document: what
 * the follow's fast path (follow-fast-path.ts) has always done for a Follow,
 * and the inbox's fast path (inbox-fast-path.ts) does for a member whose key
 * is not cached or whose cached actor is stale. Moved here from the follow's
 * fast path unchanged, so both paths fetch, read and check keys alike.
 *
 * The rules (each a no, and the caller hands the request to Fedify):
 * - the key must be in the actor's own document (Mastodon's #main-key): the
 *   key id without its fragment is the actor id (the caller checks it before
 *   anything is read, fetchSigner again);
 * - the document is fetched signed, through the process-wide dispatcher
 *   (follower-fetch.ts: the private-address rule after DNS, the size limit,
 *   the timeouts), no redirect followed; what that plain GET does not take,
 *   Fedify's signed document loader fetches as before (redirects only within
 *   the actor's host);
 * - the document's id is the actor id, the key with the claimed id is in it
 *   and names the actor as its owner; the actor is not collective and names
 *   no aliases (Fedify's path does the account-migration check);
 * - the caller checks the request's signature with the key (`verifies`).
 */

export interface SignerFetchDeps {
  readonly db: Kysely<DB>;
  readonly origin: URL;
  /** Its signed document loader fetches what the plain GET does not take, as Fedify's verifier would. */
  readonly federation: Federation<void>;
  /** The identifier whose key signs fetches for the shared inbox (Fedify's shared key dispatcher). */
  readonly instanceActor: string;
  /** The Muster's private-address rule, applied to the fetch (the node-level inbox calls this outside the app's policy context). */
  readonly allowPrivateAddress: boolean;
  /** False reads every actor through Fedify's vocabulary (the path before plain-actor.ts; for the benchmark's comparison). */
  readonly plainActors?: boolean;
  /** False fetches every actor with Fedify's document loader only (the path before follower-fetch.ts; for the benchmark's comparison). */
  readonly plainFetch?: boolean;
}

/** What is cached of a signer: its actor and its key. */
export interface SignerEntry {
  /** The actor as the remote actor cache stores it; its fetchedAt is when it was fetched. */
  readonly actor: CachedActor;
  /** The key as Fedify's key cache stores it (KvKeyCache.set: the key's JSON-LD). */
  readonly keyJsonLd: unknown;
}

/** The signer as its document says now. */
export interface FetchedSigner {
  /** Whether the request's signature verifies with this key. */
  readonly verifies: (claim: SignatureClaim) => boolean;
  /** The actor and key to cache (read once, after a signature verified: nothing more is done for a forgery). */
  readonly entry: () => Promise<SignerEntry>;
}

/** Whether a key id names a key in the actor's own document (the document fetched). */
export function keyOfActorDocument(keyId: string, actorId: string): boolean {
  return keyId.replace(/#.*$/, "") === actorId;
}

const offlineDocuments = createOfflineDocumentLoader();
const offlineContexts = createOfflineContextLoader();

export function createSignerFetch(deps: SignerFetchDeps) {
  const { db } = deps;
  // One context for the fetches: Fedify's createContext per request cost more than the fetch's signature.
  let context: Context<void> | undefined;

  /** The actor's document as fetched, if it is an object with the actor's id and came from the actor's host. */
  async function fetchDocument(recipient: string | null, actorId: string): Promise<Record<string, unknown> | undefined> {
    // One plain signed GET (follower-fetch.ts); whatever it does not take, Fedify's loader fetches as before.
    if (deps.plainFetch !== false) {
      const plain = await fetchFollowerPlain(db, deps.origin, recipient ?? deps.instanceActor, deps.instanceActor, actorId, deps.allowPrivateAddress);
      if (plain) return plain.id === actorId ? plain : undefined;
    }
    context ??= deps.federation.createContext(deps.origin, undefined);
    const loader = await context.getDocumentLoader({ identifier: recipient ?? deps.instanceActor });
    let remote;
    try {
      // The document is parsed here and asked for by no later fetch: not kept for one (recent-actors.ts).
      remote = await withoutKeeping(() => loader(actorId));
    } catch (error) {
      log.debug("Could not fetch {actor} on a fast path: {error}", { actor: actorId, error });
      return undefined;
    }
    const doc = remote.document as Record<string, unknown> | null;
    if (doc === null || typeof doc !== "object" || Array.isArray(doc) || doc.id !== actorId) return undefined;
    // After redirects, the host that answered is the one vouching for the actor.
    if (new URL(remote.documentUrl || actorId).host !== new URL(actorId).host) return undefined;
    return doc;
  }

  /** The document read through Fedify's vocabulary (what plain-actor.ts does not take). */
  async function parseActor(doc: Record<string, unknown>): Promise<Actor | undefined> {
    let object;
    try {
      object = await APObject.fromJsonLd(doc, { documentLoader: offlineDocuments, contextLoader: offlineContexts });
    } catch {
      return undefined;
    }
    return isActor(object) ? object : undefined;
  }

  /** Fedify's rule (resolveFetchedKey): the actor's key with that id; here it must also name the actor as owner. */
  async function keyOf(actor: Actor, keyId: string): Promise<CryptographicKey | undefined> {
    try {
      // Embedded keys were parsed with the actor; nothing is fetched (offline loaders).
      for await (const key of actor.getPublicKeys({ documentLoader: offlineDocuments, contextLoader: offlineContexts, suppressError: true })) {
        if (key.id?.href === keyId) return key.ownerId?.href === actor.id?.href ? key : undefined;
      }
    } catch {
      return undefined;
    }
    return undefined;
  }

  /**
   * The signer `actorId` with its key `keyId`, fetched now for the inbox
   * `recipient` (a union's slug, null for the shared inbox; it chooses the
   * key that signs the fetch); undefined when any rule above says no.
   */
  async function fetchSigner(recipient: string | null, actorId: string, keyId: string): Promise<FetchedSigner | undefined> {
    if (!keyOfActorDocument(keyId, actorId)) return undefined;
    const doc = await fetchDocument(recipient, actorId);
    if (!doc) return undefined;
    const now = Date.now();
    // Mastodon's and Fedify's plain actors are read as JSON (plain-actor.ts); anything else through Fedify's vocabulary, as before.
    const plain = deps.plainActors === false ? undefined : await readPlainActor(doc, actorId, keyId, now);
    if (plain) {
      const entry = Promise.resolve({ actor: plain.actor, keyJsonLd: plain.keyJsonLd });
      return { verifies: (claim) => claim.checkRsa(plain.key), entry: () => entry };
    }
    const actor = await parseActor(doc);
    if (!actor || actor.id?.href !== actorId || isCollectiveActor(actor) || actor.aliasIds.length > 0) return undefined;
    const key = await keyOf(actor, keyId);
    if (!key) return undefined;
    let entry: Promise<SignerEntry> | undefined;
    return {
      verifies: (claim) => claim.check(key),
      entry: () => entry ??= (async () => ({ actor: await actorToRemoteActor(actor, { fetchedAt: now }), keyJsonLd: await key.toJsonLd({ contextLoader: offlineContexts }) }))(),
    };
  }

  return { fetchSigner };
}

export type SignerFetch = ReturnType<typeof createSignerFetch>;
