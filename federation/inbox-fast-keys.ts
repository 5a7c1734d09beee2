import type { KvKey, KvStore } from "@fedify/fedify";
import { CryptographicKey } from "@fedify/vocab";
import { type DocumentLoader, preloadedContexts } from "@fedify/vocab-runtime";

/**
 * The public keys Fedify has already fetched and cached (its KV entries under
 * ["_fedify", "publicKey", keyId]), kept parsed and imported in memory, for
 * the inbox's fast path. Fedify's own cache parses each entry's JSON-LD and
 * imports its PEM on every request (about a fifth of an inbox POST's CPU).
 *
 * It never fetches and never writes: a key it does not hold, or one that no
 * longer verifies (rotated), makes the fast path hand the request to Fedify,
 * which fetches (signed, under the private-address rule) and caches as ever.
 * A memory entry is re-read from the KV store after TTL_MS, and dropped at
 * once when verification with it fails.
 */
const PREFIX = ["_fedify", "publicKey"] as const;

/** Where Fedify's KvKeyCache keeps a public key (what the fast paths write for a key they fetched). */
export const publicKeyEntry = (keyId: string): KvKey => [...PREFIX, keyId];
const TTL_MS = 60_000;
const MAX_KEYS = 10_000;

/** Loads only contexts Fedify ships; anything else is refused, never fetched. */
export const preloadedOnly: DocumentLoader = async (url: string) => {
  if (Object.hasOwn(preloadedContexts, url)) return { contextUrl: null, documentUrl: url, document: preloadedContexts[url] };
  throw new Error(`not fetched on the inbox's fast path: ${url}`);
};

/** A loader that fetches nothing: a key missing from the cache ends the fast path. */
export const refuseFetch: DocumentLoader = async (url: string) => {
  throw new Error(`not fetched on the inbox's fast path: ${url}`);
};

interface Entry {
  readonly serialized: string;
  readonly key: CryptographicKey | null;
  readonly until: number;
}

export class FastKeyCache {
  readonly #kv: KvStore;
  readonly #memory = new Map<string, Entry>();

  constructor(kv: KvStore) {
    this.#kv = kv;
  }

  /** What Fedify's verifier asks first: the cached key, or undefined (then it tries to fetch, which refuseFetch refuses). */
  async get(keyId: URL): Promise<CryptographicKey | undefined> {
    const id = keyId.href;
    const now = Date.now();
    const held = this.#memory.get(id);
    if (held && held.until > now) return held.key ?? undefined;
    const stored = await this.#kv.get(publicKeyEntry(id));
    if (stored === undefined || stored === null) {
      this.#memory.delete(id);
      return undefined;
    }
    const serialized = JSON.stringify(stored);
    let key: CryptographicKey | null = held?.serialized === serialized ? held.key : null;
    if (!key) {
      try {
        key = await CryptographicKey.fromJsonLd(stored, { documentLoader: refuseFetch, contextLoader: preloadedOnly });
      } catch {
        key = null;
      }
    }
    this.#memory.delete(id);
    if (this.#memory.size >= MAX_KEYS) this.#memory.delete(this.#memory.keys().next().value!);
    this.#memory.set(id, { serialized, key, until: now + TTL_MS });
    return key ?? undefined;
  }

  /** Fedify's verifier calls this with null when its (refused) fetch fails: forget the key, write nothing. */
  async set(keyId: URL, _key: unknown): Promise<void> {
    this.#memory.delete(keyId.href);
  }

  /** The key did not verify a request (rotated, or a forgery): ask the store again next time. */
  forget(keyId: string): void {
    this.#memory.delete(keyId);
  }
}
