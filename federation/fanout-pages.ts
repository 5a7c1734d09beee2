import type { Context, Federation } from "@fedify/fedify";
import { Activity } from "@fedify/vocab";
import type { Recipient } from "@fedify/vocab";
import type { Kysely } from "kysely";
import type { DB } from "../src/db/schema.ts";
import { logger } from "../src/logging.ts";
import { getUnionById } from "../src/unions/unions.ts";
import { committedPage, followersPage } from "./followers.ts";
import { tapEnqueued } from "./queue-lanes.ts";

const log = logger("federation", "fanout");

/**
 * A call-to-action goes to the whole roster, which may be 10^6 members: it is
 * sent a page of followers at a time, each page one message in the fan-out
 * lane that queues that page's deliveries and then the next page. Memory
 * holds one page, never the roster, and the first deliveries go out while
 * later pages are still being read.
 */
export interface FanoutPage {
  readonly type: "muster.fanout";
  readonly unionId: string;
  /** The activity as compact JSON-LD, unsigned: each page signs it as Fedify sends it. */
  readonly activity: unknown;
  readonly activityId: string;
  readonly orderingKey: string;
  /** The last member id of the page before; null for the first page. */
  readonly cursor: string | null;
  /**
   * Who gets it: every member (the default, through shared inboxes), or only
   * the members who committed to one call-to-action, each at their own inbox.
   * Mastodon shows an activity delivered to a personal inbox, and addressed to
   * nobody else, to that account alone (a "limited" post); through a shared
   * inbox it would reach everyone there who follows the union.
   */
  readonly audience?: FanoutAudience | undefined;
  /**
   * The activity as Fedify signed it (object proof, Linked Data signature)
   * for the first page that had recipients, with the ids of the keys it was
   * signed with (never the keys). Later pages queue their deliveries with
   * it as they are, instead of asking Fedify to sign it again per page.
   */
  readonly signed?: SignedActivity | undefined;
}

export interface SignedActivity {
  readonly activity: unknown;
  readonly activityType: string;
  readonly keyIds: readonly string[];
  readonly baseUrl: string;
}

export type FanoutAudience = { readonly kind: "committed"; readonly actionId: string };

export interface FanoutDeps {
  readonly db: Kysely<DB>;
  readonly federation: Federation<void>;
  readonly origin: URL;
  /** Queues a page in the fan-out lane. */
  enqueue(page: FanoutPage, options: { orderingKey: string }): Promise<void>;
  /**
   * Queues one of Fedify's delivery messages in the delivery lane, whose
   * queue stores it without the activity and keys (queue-payloads.ts) and
   * gives the keys back when it is handled. Absent, every page is sent
   * through Fedify's sendActivity.
   */
  enqueueDelivery?(message: unknown, options: { orderingKey: string }): Promise<void>;
}

/** Starts sending `activity` to every follower of the union, through shared inboxes. */
export async function fanOut(deps: FanoutDeps, ctx: Context<void>, unionId: string, activity: Activity, orderingKey: string, audience?: FanoutAudience): Promise<void> {
  if (activity.id === null) throw new TypeError("an activity to fan out needs an id");
  const page: FanoutPage = {
    type: "muster.fanout",
    unionId,
    activity: await activity.toJsonLd({ format: "compact", contextLoader: ctx.contextLoader }),
    activityId: activity.id.href,
    orderingKey,
    cursor: null,
    ...(audience ? { audience } : {}),
  };
  await deps.enqueue(page, { orderingKey });
}

export function isFanoutPage(message: unknown): message is FanoutPage {
  return (message as { type?: unknown } | null)?.type === "muster.fanout";
}

/**
 * Queues one page's deliveries, then the next page. Handled again after a
 * crash, it queues nothing twice: deliveries and the next page carry dedupe
 * keys (kysely-message-queue.ts).
 */
export async function handleFanoutPage(deps: FanoutDeps, page: FanoutPage): Promise<void> {
  const union = await getUnionById(deps.db, page.unionId);
  if (!union) {
    log.warn("Dropped the fan-out of {activityId}: union {unionId} no longer exists", { activityId: page.activityId, unionId: page.unionId });
    return;
  }
  const shared = page.audience === undefined;
  const { items, nextCursor } = shared
    ? await followersPage(deps.db, union.id, page.cursor ?? "")
    : await committedPage(deps.db, union.id, page.audience!.actionId, page.cursor);
  const recipients = await notYetQueued(deps.db, page.activityId, items, shared);
  let signed = page.signed;
  if (recipients.length > 0) {
    if (signed !== undefined && deps.enqueueDelivery !== undefined) {
      await queueSigned(deps, deps.enqueueDelivery, page, signed, recipients, shared);
    } else {
      const ctx = deps.federation.createContext(deps.origin, undefined);
      const activity = await Activity.fromJsonLd(page.activity, { contextLoader: ctx.contextLoader, documentLoader: ctx.documentLoader });
      // Signing is most of a page's cost (JSON-LD canonicalization for the
      // proof and the LD signature, 10^2 ms under load): done once, here,
      // and what Fedify signed is carried to the next pages.
      await tapEnqueued((m) => {
        const d = m as Partial<OutboxMessage> | null;
        if (signed !== undefined || d?.type !== "outbox" || d.activityId !== page.activityId || !Array.isArray(d.keys)) return;
        signed = { activity: d.activity, activityType: d.activityType!, keyIds: d.keys.map((k) => k.keyId), baseUrl: d.baseUrl! };
      }, () => ctx.sendActivity({ identifier: union.slug }, recipients, activity, { preferSharedInbox: shared, orderingKey: page.orderingKey, fanout: "skip" }));
    }
  }
  if (nextCursor !== null) await deps.enqueue({ ...page, cursor: nextCursor, ...(signed ? { signed } : {}) }, { orderingKey: page.orderingKey });
}

/** The part of Fedify's (2.3) delivery message this module reads or writes. */
interface OutboxMessage {
  readonly type: "outbox";
  readonly id: string;
  readonly baseUrl: string;
  readonly keys: readonly { readonly keyId: string; readonly privateKey?: unknown }[];
  readonly activity: unknown;
  readonly activityId: string;
  readonly activityType: string;
  readonly inbox: string;
  readonly sharedInbox: boolean;
  readonly actorIds: readonly string[];
  readonly started: string;
  readonly attempt: number;
  readonly headers: Record<string, string>;
  readonly orderingKey: string;
  readonly traceContext: Record<string, string>;
}

/**
 * Queues the deliveries of a page in the shape Fedify's sendActivity gives
 * them (one per inbox, shared inboxes preferred, ordered per origin), so
 * Fedify's own delivery handler sends them, with its retries and circuit
 * breaker. Only the key ids go in: the queue resolves the keys when a
 * delivery is handled.
 */
async function queueSigned(deps: FanoutDeps, enqueue: NonNullable<FanoutDeps["enqueueDelivery"]>, page: FanoutPage, signed: SignedActivity, recipients: readonly Recipient[], shared: boolean): Promise<void> {
  const inboxes = new Map<string, { sharedInbox: boolean; actorIds: string[] }>();
  for (const r of recipients) {
    const viaShared = shared && r.endpoints?.sharedInbox != null;
    const inbox = viaShared ? r.endpoints!.sharedInbox! : r.inboxId;
    if (inbox == null || r.id == null || inbox.origin === deps.origin.origin) continue;
    let entry = inboxes.get(inbox.href);
    if (entry === undefined) inboxes.set(inbox.href, (entry = { sharedInbox: viaShared, actorIds: [] }));
    entry.actorIds.push(r.id.href);
  }
  const started = new Date().toISOString();
  const keys = signed.keyIds.map((keyId) => ({ keyId }));
  await Promise.all([...inboxes].map(([inbox, { sharedInbox, actorIds }]) => {
    const orderingKey = `${page.orderingKey}\n${new URL(inbox).origin}`;
    const message: OutboxMessage = {
      type: "outbox", id: crypto.randomUUID(), baseUrl: signed.baseUrl, keys, activity: signed.activity, activityId: page.activityId,
      activityType: signed.activityType, inbox, sharedInbox, actorIds, started, attempt: 0, headers: {}, orderingKey, traceContext: {},
    };
    return enqueue(message, { orderingKey });
  }));
}

function inboxOf(r: Recipient, shared: boolean): string | null {
  return ((shared ? r.endpoints?.sharedInbox : null) ?? r.inboxId)?.href ?? null;
}

/**
 * Followers on a server with a shared inbox come in every page; the server
 * gets the activity once. Recipients whose inbox already has this activity
 * queued or delivered are left out here, before Fedify signs anything for
 * them (the queue would drop the duplicates too, but only after the work).
 */
async function notYetQueued(db: Kysely<DB>, activityId: string, items: readonly Recipient[], shared: boolean): Promise<Recipient[]> {
  const keyOf = (r: Recipient) => {
    const inbox = inboxOf(r, shared);
    return inbox === null ? null : `${activityId} ${inbox} 0`;
  };
  const keys = [...new Set(items.map(keyOf).filter((k): k is string => k !== null))];
  if (keys.length === 0) return [];
  const seen = new Set<string>();
  for (let i = 0; i < keys.length; i += 500) {
    const chunk = keys.slice(i, i + 500);
    const rows = await db.selectFrom("fedify_mq").select("dedupe_key").where("dedupe_key", "in", chunk)
      .unionAll(db.selectFrom("fedify_mq_done").select("dedupe_key").where("dedupe_key", "in", chunk))
      .execute();
    for (const r of rows) if (r.dedupe_key !== null) seen.add(r.dedupe_key);
  }
  return items.filter((r) => {
    const k = keyOf(r);
    return k !== null && !seen.has(k);
  });
}
