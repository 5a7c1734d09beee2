import { createPrivateKey, type KeyObject } from "node:crypto";
import { importJwk, signRequest } from "@fedify/fedify";
import type { Kysely } from "kysely";
import { type Dispatcher, getGlobalDispatcher, request } from "undici";
import type { DB } from "../src/db/schema.ts";
import { logger } from "../src/logging.ts";
import { deliveryParts, type PartsSent } from "./direct-send.ts";
import { type Body, bodyOf, OTHER_SPEC, signedHeaders, type Spec } from "./delivery-sign.ts";
import type { DeliveryThreads } from "./delivery-threads.ts";
import { currentOutgoingPolicy } from "./http-client.ts";
import { KyselyKvStore } from "./kysely-kv-store.ts";
import type { ServerState } from "./kysely-message-queue.ts";

export { signedHeaders } from "./delivery-sign.ts";

/*
 * The delivery lane's own sender for Fedify's per-inbox delivery messages
 * ("outbox" type, Fedify 2.3's shape), used for the common case only: a
 * message whose server has no circuit-breaker state, sent with an RSA key,
 * answered 2xx. It claims a batch, reads the batch's circuit and signature
 * spec state in one query, signs with the imported key kept per key and
 * POSTs with undici's request (not fetch) over kept-alive connections. Fedify's
 * handler spent as much on its tracing spans, Request/Response objects and
 * two to three KV round trips per delivery as on the RSA signature.
 *
 * Everything else is Fedify's: a message this sender does not take, or that
 * fails here (transport error, redirect, a status other than 2xx after the
 * double knock, an Accept-Signature challenge), is handed to Fedify's own
 * handler as it is, which sends it again and applies its retry policy,
 * circuit breaker, permanent-failure handling and spec negotiation. So a
 * failing server costs one extra attempt per failure, and nothing in Fedify's
 * failure path is reimplemented here.
 */

export type FastOutcome = "sent" | "fallback";


/** Fedify's KV prefixes (FederationKvPrefixes defaults): circuit state per host, accepted spec per origin. */
const CIRCUIT_PREFIX = ["_fedify", "circuit"] as const;
const SPEC_PREFIX = ["_fedify", "httpMessageSignaturesSpec"] as const;

/** The part of Fedify 2.3's delivery message read here. */
interface Delivery {
  readonly type: "outbox";
  readonly keys: readonly { readonly keyId: string; readonly privateKey: JsonWebKey }[];
  readonly activity: object;
  readonly activityId?: string;
  readonly inbox: string;
  readonly sharedInbox?: boolean;
  readonly headers?: Record<string, string>;
  readonly circuitHeld?: boolean;
}

export interface BatchDelivererOptions {
  readonly db: Kysely<DB>;
  /** Fedify's firstKnock; Fedify's default. */
  readonly firstKnock?: Spec;
  /** Headers and body timeout of a delivery POST. */
  readonly timeoutMs: number;
  /** Defaults to the global dispatcher at the time of sending (http-client.ts installs the guarded one). */
  readonly dispatcher?: () => Dispatcher;
  /**
   * Given, deliveries are signed and POSTed on these worker threads
   * (delivery-threads.ts) instead of this one; a message with headers of its
   * own is still sent here.
   */
  readonly threads?: DeliveryThreads;
  /**
   * Whether deliveries to shared inboxes go to the threads too. Default
   * false: see onThread.
   */
  readonly threadsForSharedInboxes?: boolean;
  /** Where it notes the parts of a joined delivery it sent when the rest failed: its lanes' (createQueueLanes gives it). */
  readonly partsSent: PartsSent;
}

const log = logger("federation", "batch-delivery");

/** Deliveries sent here and handed to Fedify, by every sender in this process (the benchmark prints them). */
export const processStats = { sent: 0, fallback: 0 };

export class BatchDeliverer {
  readonly #db: Kysely<DB>;
  readonly #kv: KyselyKvStore;
  readonly #firstKnock: Spec;
  readonly #timeoutMs: number;
  readonly #dispatcher: () => Dispatcher;
  readonly #threads: DeliveryThreads | undefined;
  readonly #threadShared: boolean;
  readonly #partsSent: PartsSent;
  /** A fan-out's deliveries share one activity object: serialized once. */
  readonly #bodies = new WeakMap<object, Body>();
  /** Imported private keys by JWK object (shared by a fan-out's messages) and, for whole messages, by key id and modulus. */
  readonly #keysByJwk = new WeakMap<object, Promise<CryptoKey>>();
  readonly #keysById = new Map<string, Promise<CryptoKey>>();
  /** The same keys as node:crypto KeyObjects, which the delivery threads sign with (delivery-sign.ts SigningKey). */
  readonly #keyObjects = new WeakMap<CryptoKey, KeyObject>();
  /** This sender's counters; processStats adds up every sender's in the process. */
  readonly stats = { sent: 0, fallback: 0, knocks: 0 };

  constructor(options: BatchDelivererOptions) {
    this.#db = options.db;
    this.#kv = new KyselyKvStore(options.db);
    this.#firstKnock = options.firstKnock ?? "rfc9421";
    this.#timeoutMs = options.timeoutMs;
    this.#dispatcher = options.dispatcher ?? getGlobalDispatcher;
    this.#threads = options.threads;
    this.#threadShared = options.threadsForSharedInboxes ?? false;
    this.#partsSent = options.partsSent;
  }

  /**
   * Sends what it can of `messages` (rejoined, in Fedify's shape) and says,
   * per message, whether it was sent or must go to Fedify's handler.
   * Never rejects.
   */
  async deliver(messages: readonly unknown[], each?: (index: number, outcome: FastOutcome) => void, states?: readonly ServerState[]): Promise<FastOutcome[]> {
    const outcomes: FastOutcome[] = messages.map(() => "fallback");
    const eligible: { index: number; message: Delivery; inbox: URL; circuitKey: string; specKey: string }[] = [];
    messages.forEach((m, index) => {
      const inbox = eligibleInbox(m);
      // The KV keys of its server's state, encoded once (read and looked up below).
      if (inbox !== null) eligible.push({ index, message: m as Delivery, inbox, circuitKey: kvKey(CIRCUIT_PREFIX, inbox.host), specKey: kvKey(SPEC_PREFIX, inbox.origin) });
    });
    if (eligible.length === 0) return this.#count(outcomes);
    let state: Map<string, string>;
    try {
      // Read with the claim when every message's was, under the keys derived here; otherwise asked now.
      state = fromClaims(eligible, states) ?? await this.#state(eligible);
    } catch (error) {
      log.warn("Could not read the delivery state of a batch; Fedify sends it: {error}", { error });
      return this.#count(outcomes);
    }
    await Promise.all(eligible.map(async ({ index, message, inbox, circuitKey, specKey }) => {
      // Any circuit state (open, half-open, or closed with failures counted)
      // is Fedify's to read and update.
      if (state.has(circuitKey)) return;
      const stored = state.get(specKey);
      const spec: Spec = stored === '"rfc9421"' || stored === '"draft-cavage-http-signatures-12"' ? JSON.parse(stored) as Spec : this.#firstKnock;
      // A joined delivery's activities (a join's Accept, then its welcome: direct-send.ts), one after the
      // other over the same kept-alive connection; the message is sent once all of them are. The first that
      // fails stops it: the handler's path sends it and the rest, and not the ones sent here (PartsSent).
      const parts = deliveryParts(message);
      const sent: Delivery[] = [];
      try {
        // A part that needed the other spec (double knock) leaves it for the next part.
        let using = spec;
        for (const part of parts) {
          const accepted = await this.#send(part, inbox, using);
          if (accepted === false) break;
          using = accepted;
          sent.push(part);
        }
      } catch (error) {
        log.debug("Delivery of {activityId} to {inbox} failed here; Fedify retries it: {error}", { activityId: parts[sent.length]?.activityId, inbox: inbox.href, error });
      }
      if (sent.length === parts.length) outcomes[index] = "sent";
      else for (const part of sent) this.#partsSent.add(part);
      each?.(index, outcomes[index]!);
    }));
    return this.#count(outcomes);
  }

  #count(outcomes: FastOutcome[]): FastOutcome[] {
    for (const o of outcomes) {
      this.stats[o]++;
      processStats[o]++;
    }
    return outcomes;
  }

  /** The stored circuit states and accepted specs of these inboxes' hosts and origins, by encoded KV key. */
  async #state(inboxes: readonly { circuitKey: string; specKey: string }[]): Promise<Map<string, string>> {
    const keys = new Set<string>();
    for (const { circuitKey, specKey } of inboxes) {
      keys.add(circuitKey);
      keys.add(specKey);
    }
    const now = Date.now();
    const rows = await this.#db.selectFrom("fedify_kv").select(["key", "value", "expires_at"]).where("key", "in", [...keys]).execute();
    const state = new Map<string, string>();
    for (const r of rows) if (r.expires_at === null || Number(r.expires_at) > now) state.set(r.key, r.value);
    return state;
  }

  /** The spec the inbox accepted once it answered 2xx; false for anything Fedify should handle. */
  async #send(message: Delivery, inbox: URL, spec: Spec): Promise<Spec | false> {
    const rsa = message.keys.find((k) => (k.privateKey as JsonWebKey | undefined)?.kty === "RSA");
    if (rsa === undefined) return false;
    const privateKey = await this.#importKey(rsa.keyId, rsa.privateKey);
    const body = this.#body(message.activity);
    if (this.#threads !== undefined && onThread(message, this.#threadShared)) {
      const r = await this.#threads.send({
        inbox, key: this.#keyObject(privateKey, rsa.privateKey), keyId: rsa.keyId, body, spec,
        // See #post.
        reset: message.sharedInbox === true,
        // The rule of the Muster whose queue this is (its listeners run in its context).
        allowPrivateAddress: currentOutgoingPolicy().allowPrivateAddress,
      });
      if (r.knocked) this.stats.knocks++;
      if (r.ok && r.knocked) await this.#kv.set([...SPEC_PREFIX, inbox.origin], r.spec);
      return r.ok ? r.spec : false;
    }
    const keyId = new URL(rsa.keyId);
    const first = await this.#post(message, inbox, privateKey, keyId, body, spec);
    if (first.ok) return spec;
    // Fedify's double knock: a server that refused the signature may accept
    // the other spec; an Accept-Signature challenge is left to Fedify.
    if ((first.status !== 400 && first.status !== 401) || first.acceptSignature) return false;
    this.stats.knocks++;
    const other = OTHER_SPEC[spec];
    const second = await this.#post(message, inbox, privateKey, keyId, body, other);
    if (!second.ok) return false;
    await this.#kv.set([...SPEC_PREFIX, inbox.origin], other);
    return other;
  }

  async #post(message: Delivery, inbox: URL, privateKey: CryptoKey, keyId: URL, body: Body, spec: Spec): Promise<{ ok: boolean; status: number; acceptSignature: boolean }> {
    const headers = message.headers === undefined || Object.keys(message.headers).length === 0
      ? await signedHeaders(inbox, privateKey, keyId, body, spec)
      : await this.#signedByFedify(message.headers, inbox, privateKey, keyId, body, spec);
    const response = await request(inbox, {
      method: "POST",
      headers,
      body: body.text,
      dispatcher: this.#dispatcher(),
      headersTimeout: this.#timeoutMs,
      bodyTimeout: this.#timeoutMs,
      // A shared inbox gets one delivery per activity however many members
      // are there: its connection is closed once answered instead of idling
      // (2·10^4 servers a fan-out). A member's own inbox is usually one of
      // many on that server, and keeps its connection for the next one.
      reset: message.sharedInbox === true,
    });
    // Read to the end (an inbox answers a few bytes) so the connection is kept for the next delivery.
    await response.body.dump({ limit: 64 * 1024 });
    const ok = response.statusCode >= 200 && response.statusCode < 300;
    return { ok, status: response.statusCode, acceptSignature: response.headers["accept-signature"] !== undefined };
  }

  /** A message with headers of its own (Fedify's sendActivity `headers` option): signed by Fedify's signRequest, which signs them all. */
  async #signedByFedify(extra: Record<string, string>, inbox: URL, privateKey: CryptoKey, keyId: URL, body: Body, spec: Spec): Promise<Record<string, string>> {
    const headers = new Headers(extra);
    headers.set("Content-Type", "application/activity+json");
    const signed = await signRequest(new Request(inbox, { method: "POST", headers, body: body.text }), privateKey, keyId, { spec, body: body.bytes.buffer });
    const sent: Record<string, string> = {};
    for (const [name, value] of signed.headers) sent[name] = value;
    return sent;
  }

  #body(activity: object): Body {
    let b = this.#bodies.get(activity);
    if (b === undefined) {
      b = bodyOf(JSON.stringify(activity));
      this.#bodies.set(activity, b);
    }
    return b;
  }

  /** One KeyObject per imported key (so one handle, and one copy per thread), made from the JWK it was imported from. */
  #keyObject(imported: CryptoKey, jwk: JsonWebKey): KeyObject {
    let k = this.#keyObjects.get(imported);
    if (k === undefined) {
      k = createPrivateKey({ key: jwk as import("node:crypto").JsonWebKey, format: "jwk" });
      this.#keyObjects.set(imported, k);
    }
    return k;
  }

  #importKey(keyId: string, jwk: JsonWebKey): Promise<CryptoKey> {
    let key = this.#keysByJwk.get(jwk);
    if (key !== undefined) return key;
    // A message stored whole (not split) brings its own JWK object.
    const id = `${keyId} ${jwk.n ?? ""} ${jwk.d ?? ""}`;
    key = this.#keysById.get(id);
    if (key === undefined) {
      key = importJwk(jwk, "private");
      key.catch(() => this.#keysById.delete(id));
      if (this.#keysById.size >= 64) this.#keysById.delete(this.#keysById.keys().next().value!);
      this.#keysById.set(id, key);
    }
    this.#keysByJwk.set(jwk, key);
    return key;
  }
}

/**
 * Whether a delivery is signed and POSTed on a delivery thread (when there
 * are threads) or here. A message with headers of its own is signed here, by
 * Fedify. A delivery to a shared inbox is made here too: it is one POST to
 * its server for the whole fan-out, over a connection opened for it and
 * closed after it, so a thread saves only the signing's hand-over (RSA runs
 * on libuv's pool either way) and adds its own: the job and its answer
 * crossing threads, and a second connection pool. Measured on a fan-out to
 * 5·10^3 shared inboxes, the thread cost more CPU per delivery than it took
 * off this one. A member's own inbox is one of many on its server, over a
 * kept-alive connection: there the thread takes the request's work off the
 * thread that claims and settles.
 */
function onThread(message: Delivery, shared: boolean): boolean {
  if (message.headers !== undefined && Object.keys(message.headers).length > 0) return false;
  return shared || message.sharedInbox !== true;
}

/** The batch's server states as the claims read them, or undefined when one was not (or under other keys). */
function fromClaims(eligible: readonly { index: number; circuitKey: string; specKey: string }[], states: readonly ServerState[] | undefined): Map<string, string> | undefined {
  if (states === undefined) return undefined;
  const state = new Map<string, string>();
  for (const { index, circuitKey, specKey } of eligible) {
    const s = states[index];
    if (!s || s.length !== 4 || s[0] !== circuitKey || s[2] !== specKey) return undefined;
    if (typeof s[1] === "string") state.set(circuitKey, s[1]);
    if (typeof s[3] === "string") state.set(specKey, s[3]);
  }
  return state;
}

/** A Fedify KV key as KyselyKvStore stores it (JSON of the key's parts), for a prefix and one more part. */
function kvKey(prefix: readonly string[], last: string): string {
  return JSON.stringify([...prefix, last]);
}

/** The inbox of a delivery this sender may take, or null. */
function eligibleInbox(m: unknown): URL | null {
  const d = m as Partial<Delivery> & { musterGate?: unknown } | null;
  // A gated message (a join's Accept or welcome: sent only while the member is
  // still active) goes through the lane's handler, which checks the gate.
  if (d?.type !== "outbox" || d.musterGate !== undefined || d.circuitHeld || typeof d.inbox !== "string" || typeof d.activity !== "object" || d.activity === null || !Array.isArray(d.keys)) return null;
  try {
    const inbox = new URL(d.inbox);
    return inbox.protocol === "https:" || inbox.protocol === "http:" ? inbox : null;
  } catch {
    return null;
  }
}
