import { createHash } from "node:crypto";
import type { Kysely } from "kysely";
import { executeNamed } from "../src/db/named-statement.ts";
import type { DB } from "../src/db/schema.ts";
import { HeldPromises } from "./held-promises.ts";
import { KEY_TTL_MS, keysGeneration } from "./keys.ts";

/**
 * Fedify's per-inbox delivery message carries the whole activity and the
 * sender's private keys (as JWK). A fan-out to 10^5 inboxes wrote both 10^5
 * times (5 KB a row) and, once claimed, parsed them 10^5 times. The queue
 * keeps them apart instead: the activity once in fedify_mq_payloads, named
 * by its hash; the keys not at all, only their keyIds, resolved again from
 * the key table when the message is handled. Fedify's handler still gets the
 * message in its own shape.
 */

/** What a stored delivery says in place of its activity. */
const PAYLOAD_FIELD = "$payload";

/** Finds the private key (as JWK) for a keyId, or undefined when it no longer exists. */
export type KeyResolver = (keyId: string) => Promise<JsonWebKey | undefined>;

interface Keyed {
  readonly keyId: string;
  readonly privateKey?: unknown;
}

interface DeliveryLike {
  readonly type?: unknown;
  readonly activity?: unknown;
  readonly keys?: readonly Keyed[];
  readonly [PAYLOAD_FIELD]?: unknown;
}

export interface Payload {
  readonly id: string;
  readonly body: string;
}

/** A message split for storage: its text and, when kept apart, the activity. */
export interface Split {
  readonly text: string;
  readonly payload: Payload | null;
}

// The messages of one fan-out share one activity object, and a retried or
// held message shares the object it was rebuilt from: hashed once each.
const hashed = new WeakMap<object, Payload>();

function payloadOf(activity: object): Payload {
  let p = hashed.get(activity);
  if (p === undefined) {
    const body = JSON.stringify(activity);
    p = { id: createHash("sha256").update(body).digest("hex"), body };
    hashed.set(activity, p);
  }
  return p;
}

function isDelivery(message: unknown): message is DeliveryLike & { activity: object; keys: readonly Keyed[] } {
  const m = message as DeliveryLike | null;
  return m?.type === "outbox" && typeof m.activity === "object" && m.activity !== null && Array.isArray(m.keys);
}

/**
 * The stored form of a message: deliveries without their private keys, and
 * without their activity unless `inline` (an activity for one recipient,
 * which no other message shares: a payload row would be written and read
 * back for it alone).
 */
export function split(message: unknown, inline = false): Split {
  if (!isDelivery(message)) {
    const text = JSON.stringify(message);
    if (text === undefined) throw new TypeError(`the queue cannot store a message of type ${typeof message}`);
    return { text, payload: null };
  }
  if (inline) {
    const { keys, ...rest } = message;
    return { text: JSON.stringify({ ...rest, keys: keys.map((k) => ({ keyId: k.keyId })) }), payload: null };
  }
  const payload = payloadOf(message.activity);
  const { activity: _activity, keys, ...rest } = message;
  return {
    text: JSON.stringify({ ...rest, keys: keys.map((k) => ({ keyId: k.keyId })), [PAYLOAD_FIELD]: payload.id }),
    payload,
  };
}

/**
 * Turns stored text back into the message Fedify wrote: the activity from
 * the payload (one parsed object per payload, shared by its deliveries) and
 * the private keys from the resolver. A key that no longer exists (its union
 * was deleted) is an error: the message is retried, then dead-lettered.
 */
export class Rejoiner {
  readonly #db: Kysely<DB>;
  readonly #resolveKey: KeyResolver | undefined;
  readonly #activities = new Map<string, object>();
  readonly #reading = new Map<string, Promise<object>>();
  // One entry per signing actor; a busy server signs for a few hundred unions at most.
  readonly #keys = new HeldPromises<JsonWebKey>({ ttlMs: KEY_TTL_MS, max: 1000 });
  #keysGeneration = 0;

  constructor(db: Kysely<DB>, resolveKey: KeyResolver | undefined) {
    this.#db = db;
    this.#resolveKey = resolveKey;
  }

  /** `body`: the activity's stored text when the claim returned it (no read then). */
  async rejoin(text: string, body?: string | null): Promise<unknown> {
    const message = JSON.parse(text) as DeliveryLike;
    const payloadId = message?.[PAYLOAD_FIELD];
    if (typeof payloadId !== "string") {
      // Stored with its activity inline (split's `inline`): only the keys to put back.
      if (!isDelivery(message) || message.keys.every((k) => k.privateKey !== undefined)) return message;
      return { ...message, keys: await Promise.all(message.keys.map(async (k) => ({ keyId: k.keyId, privateKey: await this.#key(k.keyId) }))) };
    }
    const { [PAYLOAD_FIELD]: _ref, keys, ...rest } = message;
    return {
      ...rest,
      activity: typeof body === "string" ? this.#parsed(payloadId, body) : await this.#activity(payloadId),
      keys: await Promise.all((keys ?? []).map(async (k) => ({ keyId: k.keyId, privateKey: await this.#key(k.keyId) }))),
    };
  }

  /** The stored text with the activity back in place and no keys: what a dead letter keeps. */
  async withActivity(text: string): Promise<string> {
    const message = JSON.parse(text) as DeliveryLike;
    const payloadId = message?.[PAYLOAD_FIELD];
    if (typeof payloadId !== "string") return text;
    const { [PAYLOAD_FIELD]: _ref, ...rest } = message;
    return JSON.stringify({ ...rest, activity: await this.#activity(payloadId).catch(() => `(payload ${payloadId} is gone)`) });
  }

  async #activity(id: string): Promise<object> {
    const cached = this.#activities.get(id);
    if (cached !== undefined) return cached;
    // A claimed batch of a fan-out's deliveries names one activity: one read for all of them, not one each.
    let reading = this.#reading.get(id);
    if (reading === undefined) {
      reading = (async () => {
        try {
          const row = (await executeNamed(this.#db, this.#db.selectFrom("fedify_mq_payloads").select("body").where("id", "=", id).compile())).rows[0];
          if (row === undefined) throw new Error(`the activity ${id} of this delivery is no longer stored`);
          return this.#parsed(id, row.body);
        } finally {
          this.#reading.delete(id);
        }
      })();
      this.#reading.set(id, reading);
    }
    return reading;
  }

  #parsed(id: string, body: string): object {
    const cached = this.#activities.get(id);
    if (cached !== undefined) return cached;
    const activity = JSON.parse(body) as object;
    hashed.set(activity, { id, body });
    // A handful of fan-outs run at once; keep the newest few.
    if (this.#activities.size >= 32) this.#activities.delete(this.#activities.keys().next().value!);
    this.#activities.set(id, activity);
    return activity;
  }

  /**
   * A claimed batch of 64 deliveries of one union misses together: they
   * share one resolve (the promise is held, not its result). Held as long as
   * keys.ts holds the imported key, and dropped with it when a key is
   * replaced in this process (forgetActorKeys), so a rotated key is not
   * handed out after the rotation commits.
   */
  #key(keyId: string): Promise<JsonWebKey> {
    const generation = keysGeneration(this.#db);
    if (generation !== this.#keysGeneration) {
      this.#keys.clear();
      this.#keysGeneration = generation;
    }
    const resolve = this.#resolveKey;
    // A key that could not be found is asked for again by the next message.
    return this.#keys.get(keyId, async () => {
      const jwk = resolve === undefined ? undefined : await resolve(keyId);
      if (jwk === undefined) throw new Error(`the signing key ${keyId} of this delivery no longer exists`);
      return shareImports(jwk);
    });
  }
}

/**
 * Fedify imports a delivery's private keys from their JWK again for every
 * message (crypto.subtle.importKey, twice a delivery: RSA and Ed25519), 4 %
 * of a fan-out's CPU. The JWK objects the Rejoiner hands out are shared by
 * every delivery that names the key (kept KEY_TTL_MS), so their import is kept
 * with them, once per algorithm and usage. Only those objects are
 * remembered: every other import in the process goes straight through.
 */
const sharedJwks = new WeakSet<object>();
const importedKeys = new WeakMap<object, Map<string, Promise<CryptoKey>>>();
let importPatched = false;

function shareImports(jwk: JsonWebKey): JsonWebKey {
  if (!importPatched) {
    importPatched = true;
    const subtle = globalThis.crypto.subtle;
    const importKey = subtle.importKey;
    subtle.importKey = function (this: SubtleCrypto, format: string, keyData: unknown, algorithm: unknown, extractable: boolean, usages: readonly KeyUsage[]) {
      if (format !== "jwk" || typeof keyData !== "object" || keyData === null || !sharedJwks.has(keyData)) {
        return (importKey as (...args: unknown[]) => Promise<CryptoKey>).call(this, format, keyData, algorithm, extractable, usages);
      }
      let byUse = importedKeys.get(keyData);
      if (byUse === undefined) importedKeys.set(keyData, (byUse = new Map()));
      const use = JSON.stringify([algorithm, extractable, usages]);
      let key = byUse.get(use);
      if (key === undefined) {
        key = (importKey as (...args: unknown[]) => Promise<CryptoKey>).call(this, format, keyData, algorithm, extractable, usages);
        // A failed import is not kept: the next message tries again.
        key.catch(() => byUse!.delete(use));
        byUse.set(use, key);
      }
      return key;
    } as typeof subtle.importKey;
  }
  sharedJwks.add(jwk);
  return jwk;
}

/** Payloads that no queued message names any more, kept `graceMs` after they were written. */
export async function prunePayloads(db: Kysely<DB>, now: number, graceMs = 3600_000): Promise<number> {
  const r = await db.deleteFrom("fedify_mq_payloads")
    .where("created_at", "<", now - graceMs)
    .where((eb) => eb.not(eb.exists(eb.selectFrom("fedify_mq").select("fedify_mq.id").whereRef("fedify_mq.payload", "=", "fedify_mq_payloads.id"))))
    .executeTakeFirst();
  return Number(r.numDeletedRows);
}
