import { randomUUID } from "node:crypto";

/**
 * Activities for one recipient (a join's Accept, the welcome DM, a sign-in
 * link) sent as a pre-built JSON body with an HTTP signature only.
 *
 * Fedify's sendActivity gives every activity an Ed25519 object proof and an
 * RSA Linked Data signature, whose RDF canonicalisation alone was about a
 * third of a join's CPU. Those only matter for an activity someone relays
 * onward; a private activity addressed to one account is verified by its
 * HTTP signature, which is all Mastodon (and every other server) checks for
 * it. The body has exactly the shape and context Fedify's compact
 * serialisation gives the same vocabulary objects (test/direct-send.test.ts
 * compares them), so receivers parse it as before.
 *
 * The delivery is queued as Fedify's own outbox message (the shape
 * fanout-pages.ts queues for later pages), so Fedify's handler sends it with
 * its retries, circuit breaker and first-knock / double-knock signature
 * spec; the queue stores it without keys (queue-payloads.ts) and a dead
 * letter keeps none.
 */

// What Fedify 2.3's compact serialisation puts in every activity it makes.
const BASE_CONTEXT = ["https://w3id.org/identity/v1", "https://www.w3.org/ns/activitystreams", "https://w3id.org/security/data-integrity/v1", "https://gotosocial.org/ns"] as const;

// Fedify adds these term definitions to an activity that embeds a Note.
const NOTE_TERMS = {
  toot: "http://joinmastodon.org/ns#",
  misskey: "https://misskey-hub.net/ns#",
  fedibird: "http://fedibird.com/ns#",
  sensitive: "as:sensitive",
  votersCount: { "@id": "toot:votersCount", "@type": "http://www.w3.org/2001/XMLSchema#nonNegativeInteger" },
  Emoji: "toot:Emoji",
  Hashtag: "as:Hashtag",
  ChatMessage: "http://litepub.social/ns#ChatMessage",
  quote: { "@id": "https://w3id.org/fep/044f#quote", "@type": "@id" },
  quoteUrl: "as:quoteUrl",
  _misskey_quote: "misskey:_misskey_quote",
  quoteUri: "fedibird:quoteUri",
  QuoteAuthorization: "https://w3id.org/fep/044f#QuoteAuthorization",
  QuoteRequest: "https://w3id.org/fep/044f#QuoteRequest",
  quoteAuthorization: { "@id": "https://w3id.org/fep/044f#quoteAuthorization", "@type": "@id" },
  emojiReactions: { "@id": "fedibird:emojiReactions", "@type": "@id" },
} as const;

const AS = "https://www.w3.org/ns/activitystreams#";

export interface DirectActivity {
  readonly id: string;
  /** The expanded type IRI, as Fedify's delivery message names it. */
  readonly typeIri: string;
  readonly json: Record<string, unknown>;
}

/** An Accept or Reject of a Follow, embedding the Follow (Mastodon matches its pending follow by the Follow's id). */
export function followAnswer(type: "Accept" | "Reject", o: { id: string; actor: string; follow: { id: string; actor: string; object: string } }): DirectActivity {
  return {
    id: o.id,
    typeIri: AS + type,
    json: {
      "@context": [...BASE_CONTEXT],
      id: o.id,
      type,
      actor: o.actor,
      object: { id: o.follow.id, type: "Follow", actor: o.follow.actor, object: o.follow.object },
    },
  };
}

/**
 * A direct message: a Create of a Note addressed to one account and
 * mentioning it (Mastodon shows a direct message only to the accounts it mentions).
 */
export function directNote(o: { id: string; noteId: string; actor: string; to: string; mention: string; content: string; published: Date }): DirectActivity {
  const published = o.published.toISOString();
  return {
    id: o.id,
    typeIri: AS + "Create",
    json: {
      "@context": [...BASE_CONTEXT, NOTE_TERMS],
      id: o.id,
      type: "Create",
      actor: o.actor,
      object: {
        id: o.noteId,
        type: "Note",
        attributedTo: o.actor,
        content: o.content,
        published,
        tag: { type: "Mention", href: o.to, name: o.mention },
        to: o.to,
      },
      published,
      to: o.to,
    },
  };
}

/** The part of Fedify's (2.3) per-inbox delivery message that it reads when sending. */
export interface DirectDelivery {
  readonly type: "outbox";
  readonly id: string;
  readonly baseUrl: string;
  readonly keys: readonly { readonly keyId: string }[];
  readonly activity: Record<string, unknown>;
  readonly activityId: string;
  readonly activityType: string;
  readonly inbox: string;
  readonly sharedInbox: false;
  readonly actorIds: readonly string[];
  readonly started: string;
  readonly attempt: 0;
  readonly headers: Record<string, string>;
  readonly orderingKey: string;
  readonly traceContext: Record<string, string>;
  /** Checked when the delivery is about to be sent (outbound.ts, memberGate); Fedify keeps it on retries. */
  readonly musterGate?: MemberGate;
  /** More activities for the same inbox, sent after this one, in order (joinedDelivery). */
  readonly musterThen?: readonly DirectPart[];
}

/**
 * An activity that rides in another delivery's message to the same inbox
 * (a join's welcome in its Accept's): what differs between the two
 * messages Fedify would be given for them.
 */
export interface DirectPart {
  readonly id: string;
  readonly activity: Record<string, unknown>;
  readonly activityId: string;
  readonly activityType: string;
}

/**
 * Deliveries to one inbox, from one sender, under one gate and ordering key
 * (a join's Accept and welcome) as ONE queue message: one row to write,
 * claim and settle instead of two, and both POSTs from the worker that
 * claimed it, one after the other over its kept-alive connection to that
 * server. Each activity keeps its own id, stable across retries. Sent whole
 * by the batch sender (batch-delivery.ts) when it can; otherwise taken
 * apart again into the messages they were (deliveryParts), each handed to
 * Fedify's handler with its own retries and circuit breaker, and only the
 * ones not yet sent (PartsSent). Undefined when they cannot share a message.
 */
export function joinedDelivery(deliveries: readonly DirectDelivery[]): DirectDelivery | undefined {
  const [first, ...rest] = deliveries;
  if (first === undefined || rest.length === 0 || first.musterThen !== undefined) return undefined;
  const same = (d: DirectDelivery) => d.inbox === first.inbox && d.orderingKey === first.orderingKey && d.baseUrl === first.baseUrl
    && d.musterThen === undefined && JSON.stringify(d.keys) === JSON.stringify(first.keys) && JSON.stringify(d.musterGate) === JSON.stringify(first.musterGate)
    && JSON.stringify(d.actorIds) === JSON.stringify(first.actorIds) && Object.keys(d.headers).length === 0;
  if (Object.keys(first.headers).length > 0 || !rest.every(same)) return undefined;
  // Last in the message, after the first part's fields (the queue reads its gate and inbox from the message object: claim-hints.ts).
  return { ...first, musterThen: rest.map((d) => ({ id: d.id, activity: d.activity, activityId: d.activityId, activityType: d.activityType })) };
}

/** The activities a joined delivery carries beyond its first, or undefined for an ordinary message. */
export function thenOf(message: unknown): readonly DirectPart[] | undefined {
  const m = message as { type?: unknown; musterThen?: unknown } | null;
  if (m?.type !== "outbox" || !Array.isArray(m.musterThen) || m.musterThen.length === 0) return undefined;
  return m.musterThen as readonly DirectPart[];
}

/**
 * A joined delivery taken apart into the messages its activities would have
 * been, in order (each without musterThen): what Fedify's handler is given.
 * An ordinary message is its own only part.
 */
export function deliveryParts<T extends object>(message: T): T[] {
  const then = thenOf(message);
  if (then === undefined) return [message];
  const { musterThen: _, ...first } = message as T & { musterThen?: unknown };
  return [first as T, ...then.map((p) => ({ ...first, id: p.id, activity: p.activity, activityId: p.activityId, activityType: p.activityType }) as T)];
}

/**
 * Parts of joined deliveries already sent while their message as a whole
 * is not settled yet (the batch sender sent the Accept, the welcome failed):
 * the handler's path then sends only the others. One per Muster: its queue
 * lanes make it (queue-lanes.ts, createQueueLanes) and give it to their
 * batch sender, so two in one
 * process (tests) keep apart what each sent, as two processes do. Kept in
 * memory: after a crash, a message is sent again whole (at least once;
 * receivers drop an activity id they have seen). Bounded: an entry not
 * taken (its message buried, or handled elsewhere) is forgotten.
 */
export class PartsSent {
  readonly #keys = new Set<string>();

  #key(part: { activityId?: unknown; inbox?: unknown }): string {
    return `${String(part.activityId)}\n${String(part.inbox)}`;
  }

  add(part: { activityId?: unknown; inbox?: unknown }): void {
    if (this.#keys.size >= 10_000) this.#keys.delete(this.#keys.values().next().value!);
    this.#keys.add(this.#key(part));
  }

  /** Whether this part was sent, forgetting it. */
  take(part: { activityId?: unknown; inbox?: unknown }): boolean {
    return this.#keys.delete(this.#key(part));
  }
}

/** Send only while this member is active: a join's Accept and welcome. */
export interface MemberGate {
  readonly unionId: string;
  readonly memberId: string;
}

/** How a gate reads in a stored message's JSON (ids are UUIDs: nothing for LIKE to escape). */
export function gateText(gate: MemberGate): string {
  return `"musterGate":${JSON.stringify({ unionId: gate.unionId, memberId: gate.memberId })}`;
}

export function gateOf(message: unknown): MemberGate | undefined {
  const g = (message as { type?: unknown; musterGate?: Partial<MemberGate> } | null);
  if (g?.type !== "outbox" || typeof g.musterGate?.unionId !== "string" || typeof g.musterGate.memberId !== "string") return undefined;
  return g.musterGate as MemberGate;
}

/**
 * The delivery of `activity` to one actor's own inbox, HTTP-signed with
 * `keyId` (the union's RSA key; the queue fetches the key itself when the
 * message is handled). Messages for the same `orderingKey` and server are
 * sent in the order queued, as with Fedify's sendActivity.
 */
export function directDelivery(o: { origin: URL; keyId: string; activity: DirectActivity; inbox: string; actorId: string; orderingKey: string; gate?: MemberGate | undefined }): DirectDelivery {
  const orderingKey = `${o.orderingKey}\n${new URL(o.inbox).origin}`;
  return {
    type: "outbox",
    id: randomUUID(),
    baseUrl: o.origin.origin,
    keys: [{ keyId: o.keyId }],
    activity: o.activity.json,
    activityId: o.activity.id,
    activityType: o.activity.typeIri,
    inbox: o.inbox,
    sharedInbox: false,
    actorIds: [o.actorId],
    started: new Date().toISOString(),
    attempt: 0,
    headers: {},
    orderingKey,
    traceContext: {},
    ...(o.gate ? { musterGate: { unionId: o.gate.unionId, memberId: o.gate.memberId } } : {}),
  };
}

/**
 * The key id Fedify gives an actor's first key pair (federation.ts's key
 * pairs dispatcher lists a union's RSA key first: keys.ts).
 */
export function rsaKeyIdOf(actorUri: URL): string {
  return new URL("#main-key", actorUri).href;
}
