import type { Actor, DocumentLoader } from "@fedify/vocab";
import type { Kysely } from "kysely";
import { type RemoteActor, upsertRemoteActor } from "../src/actors/remote-actors.ts";
import type { DB } from "../src/db/schema.ts";
import {
  actorToRemoteActor,
  createOfflineContextLoader,
  createOfflineDocumentLoader,
  parseRemoteActor,
  type UnknownContextPolicy,
} from "./remote-actor-parse.ts";

/** A Fedify Context (only its documentLoader is used) or a bare document loader. */
export type ActorLoaderSource = DocumentLoader | { readonly documentLoader: DocumentLoader };

export interface RefreshRemoteActorOptions {
  /**
   * Defaults to Muster's offline context loader, even when a Fedify Context
   * is passed: its contextLoader would fetch unknown contexts from the network.
   */
  contextLoader?: DocumentLoader;
  unknownContexts?: UnknownContextPolicy;
  /** Defaults to now. */
  fetchedAt?: number;
}

/**
 * Fetches an actor by id with the caller's loader (`ctx.documentLoader`, or
 * an authenticated loader for servers that require signed fetches), parses it
 * and stores it. Throws RemoteActorError on a document that is not an actor or
 * whose id is on another host than the URL that finally served it.
 */
export async function refreshRemoteActor(
  source: ActorLoaderSource,
  db: Kysely<DB>,
  actorId: URL | string,
  options: RefreshRemoteActorOptions = {},
): Promise<RemoteActor> {
  const documentLoader = typeof source === "function" ? source : source.documentLoader;
  const url = typeof actorId === "string" ? new URL(actorId) : actorId;
  const remote = await documentLoader(url.href);
  const actor = await parseRemoteActor(remote.document, {
    // After redirects: the host that actually answered is the one vouching.
    fetchedFrom: new URL(remote.documentUrl || url.href),
    documentLoader,
    contextLoader: options.contextLoader ?? createOfflineContextLoader({ unknownContexts: options.unknownContexts }),
    fetchedAt: options.fetchedAt,
  });
  await upsertRemoteActor(db, actor);
  return actor;
}

export interface CacheActorObjectOptions {
  /**
   * Only needed if the actor links (rather than embeds) its icon; by default
   * nothing is fetched and such an icon is left out.
   */
  documentLoader?: DocumentLoader;
  contextLoader?: DocumentLoader;
  fetchedAt?: number;
}

/**
 * Stores an actor Fedify has already fetched and verified, e.g. the result
 * of `await activity.getActor()` in an inbox listener.
 */
export async function cacheActorObject(db: Kysely<DB>, actor: Actor, options: CacheActorObjectOptions = {}): Promise<RemoteActor> {
  const remote = await actorToRemoteActor(actor, {
    documentLoader: options.documentLoader ?? createOfflineDocumentLoader(),
    contextLoader: options.contextLoader ?? createOfflineContextLoader(),
    fetchedAt: options.fetchedAt,
  });
  await upsertRemoteActor(db, remote);
  return remote;
}
