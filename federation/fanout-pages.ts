import type { Context, Federation } from "@fedify/fedify";
import { Activity } from "@fedify/vocab";
import type { Recipient } from "@fedify/vocab";
import type { Kysely } from "kysely";
import type { DB } from "../src/db/schema.ts";
import { logger } from "../src/logging.ts";
import { getUnionById } from "../src/unions/unions.ts";
import { deliveryTargets, refreshTargetStatistics } from "../src/members/roster.ts";
import { committedPage, followersPage, PAGE } from "./followers.ts";
import { tapEnqueued } from "./queue-lanes.ts";
import { queuedOrDone, storedDeliveryKeys } from "./kysely-message-queue.ts";

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
  /**
   * Where the page before ended; null for the first page. With `by` "target"
   * the last fanout_targets id (as text), else the last member id.
   */
  readonly cursor: string | null;
  /**
   * "target": the pages go through the union's distinct inboxes
   * (fanout_targets, migration 0054), a row per delivery. Absent, through the
   * roster a member at a time: the committed audience, and pages queued by
   * an older version, whose cursor is a member id.
   */
  readonly by?: "target" | undefined;
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
  enqueueDelivery?(message: unknown, options: { orderingKey: string; storedKey?: string }): Promise<void>;
  /**
   * Given, each page waits for it before reading and queueing its
   * deliveries (waitForRoom): so a fan-out keeps a bounded backlog of
   * deliveries queued ahead of the senders instead of its whole roster.
   */
  room?(): Promise<void>;
}

/**
 * Ready deliveries a fan-out keeps queued ahead of its senders, at most
 * (about: a page adds up to PAGE more once the backlog is under it). On
 * PostgreSQL every claim and every settle's hand-over checks that no message
 * of a delivery's ordering key (its activity and server) is leased by
 * walking that key's queued rows (kysely-message-queue.ts: a lower id may
 * commit after a higher one of its key was claimed, and no index may hold the
 * lease, migration 0079), and a claim walks past every row held back behind
 * a busy key: with the whole roster queued at once, 10^2 to 10^3 rows per
 * key (10^5 personal inboxes on 10^3 or 10^2 servers), each walked for each
 * delivery. Queued a page at a time as the backlog drains, a key holds a few
 * rows (8 for 10^3 servers). The backlog is several seconds of sending, so
 * the pages (one at a time, 0.2-0.4 s each on a loaded machine) keep ahead:
 * at 4,096, with a page sleeping 500 ms whenever the backlog was just above
 * it, a fan-out to 10^5 personal inboxes was held to its pages' pace (131 s
 * against 80 s, loaded).
 */
export const ROOM_ROWS = 8192;
/** How often a waiting page looks at the backlog again: short, so a page never sleeps long past the moment there is room. */
const ROOM_POLL_MS = 100;
/**
 * The longest a page waits: the backlog may be held by a few slow servers
 * (their keys go one delivery at a time) while every other server idles, or
 * by retries of dead ones come due; after this the page queues its
 * deliveries anyway, so a fan-out never takes longer than a page every
 * ROOM_MAX_WAIT_MS, and a page's handler (whose timeout is a minute) never
 * waits long.
 */
const ROOM_MAX_WAIT_MS = 2000;

/**
 * With `settled` (the deliveries this process has settled so far), the
 * longest a waiting page goes without counting the backlog again while this
 * process's own settles have not yet taken it down to the limit: what other
 * processes settle is seen at the next count.
 */
const ROOM_RECOUNT_MS = 500;

/**
 * Resolves once `backlog(n)` (the ready deliveries, counted up to n) is at
 * most `limit`, or after `maxWaitMs`.
 *
 * Each count walks the backlog's rows (8,192 on PostgreSQL, where a page
 * waits), and counted every pollMs they were a seventh of PostgreSQL's
 * samples in a fan-out to 10^5 personal inboxes. Given `settled` (a
 * counter of the deliveries this process has settled), a page that found
 * `excess` rows over the limit counts again once this process has settled
 * that many more, looked at every pollMs in memory, or after
 * ROOM_RECOUNT_MS: about two counts a page instead of one every pollMs. The
 * count goes up to a page's worth past the limit, so the excess is known.
 */
export async function waitForRoom(backlog: (limit: number) => Promise<number>, options: { limit?: number; maxWaitMs?: number; pollMs?: number; settled?: () => number } = {}): Promise<void> {
  const limit = options.limit ?? ROOM_ROWS;
  const until = Date.now() + (options.maxWaitMs ?? ROOM_MAX_WAIT_MS);
  const pollMs = options.pollMs ?? ROOM_POLL_MS;
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, Math.min(ms, Math.max(0, until - Date.now()))));
  for (;;) {
    let n: number;
    try {
      n = await backlog(limit + 1 + (options.settled === undefined ? 0 : PAGE));
    } catch (error) {
      log.warn("Could not count the deliveries queued; queueing the page's anyway: {error}", { error });
      return;
    }
    if (n <= limit || Date.now() >= until) return;
    if (options.settled === undefined) {
      await sleep(pollMs);
      continue;
    }
    const enough = options.settled() + (n - limit);
    const recount = Math.min(until, Date.now() + ROOM_RECOUNT_MS);
    do await sleep(pollMs);
    while (Date.now() < recount && options.settled() < enough);
  }
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
    ...(audience ? { audience } : { by: "target" }),
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
  await deps.room?.();
  const shared = page.audience === undefined;
  let found: Target[];
  let nextCursor: string | null;
  if (shared && page.by === "target") {
    if (page.cursor === null) await refreshTargetStatistics(deps.db).catch((error: unknown) => log.warn("Could not refresh fanout_targets' statistics: {error}", { error }));
    const byTarget = await deliveryTargets(deps.db, union.id, page.cursor === null ? 0 : Number(page.cursor), PAGE);
    found = byTarget.items.map(({ inbox, shared }) => ({ inbox, sharedInbox: shared, actorIds: [] }));
    nextCursor = byTarget.next === null ? null : String(byTarget.next);
  } else {
    const members = shared ? await followersPage(deps.db, union.id, page.cursor ?? "") : await committedPage(deps.db, union.id, page.audience!.actionId, page.cursor);
    found = byInbox(members.items, shared, deps.origin);
    nextCursor = members.nextCursor;
  }
  const targets = await notYetQueued(deps.db, page.activityId, found.filter((t) => originOf(t.inbox) !== deps.origin.origin));
  let signed = page.signed;
  if (targets.length > 0) {
    if (signed !== undefined && deps.enqueueDelivery !== undefined) {
      await queueSigned(deps.enqueueDelivery, page, signed, targets);
    } else {
      const ctx = deps.federation.createContext(deps.origin, undefined);
      const activity = await Activity.fromJsonLd(page.activity, { contextLoader: ctx.contextLoader, documentLoader: ctx.documentLoader });
      // A target is an inbox, not an actor: Fedify is given it as both. The
      // recipient's id only goes into the message's actorIds, which Fedify
      // reads for a permanent-failure handler (Muster sets none).
      const recipients: Recipient[] = targets.map((t) => ({ id: new URL(t.actorIds[0] ?? t.inbox), inboxId: new URL(t.inbox), endpoints: t.sharedInbox ? { sharedInbox: new URL(t.inbox) } : null }));
      // Signing is most of a page's cost (JSON-LD canonicalization for the
      // proof and the LD signature, 10^2 ms under load): done once, here,
      // and what Fedify signed is carried to the next pages.
      await tapEnqueued((m) => {
        const d = m as Partial<OutboxMessage> | null;
        if (signed !== undefined || d?.type !== "outbox" || d.activityId !== page.activityId || !Array.isArray(d.keys)) return;
        signed = { activity: d.activity, activityType: d.activityType!, keyIds: d.keys.map((k) => k.keyId), baseUrl: d.baseUrl! };
      }, () => ctx.sendActivity({ identifier: union.slug }, recipients, activity, { preferSharedInbox: true, orderingKey: page.orderingKey, fanout: "skip" }));
    }
  }
  if (nextCursor !== null) await deps.enqueue({ ...page, cursor: nextCursor, ...(signed ? { signed } : {}) }, { orderingKey: page.orderingKey });
}

/** One delivery to make: an inbox and the members it reaches (when known). */
interface Target {
  readonly inbox: string;
  readonly sharedInbox: boolean;
  readonly actorIds: string[];
}

/** A target with its delivery's done key as the queue stores it (notYetQueued). */
type KeyedTarget = Target & { readonly storedKey: string };

/** Members grouped by the inbox they are reached at: a shared inbox once for all of its members. */
function byInbox(recipients: readonly Recipient[], shared: boolean, origin: URL): Target[] {
  const inboxes = new Map<string, Target>();
  for (const r of recipients) {
    const viaShared = shared && r.endpoints?.sharedInbox != null;
    const inbox = viaShared ? r.endpoints!.sharedInbox! : r.inboxId;
    if (inbox == null || r.id == null || inbox.origin === origin.origin) continue;
    let entry = inboxes.get(inbox.href);
    if (entry === undefined) inboxes.set(inbox.href, (entry = { inbox: inbox.href, sharedInbox: viaShared, actorIds: [] }));
    entry.actorIds.push(r.id.href);
  }
  return [...inboxes.values()];
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
 * them (one per inbox, ordered per origin), so Fedify's own delivery handler
 * sends them, with its retries and circuit breaker. Only the key ids go in:
 * the queue resolves the keys when a delivery is handled.
 */
async function queueSigned(enqueue: NonNullable<FanoutDeps["enqueueDelivery"]>, page: FanoutPage, signed: SignedActivity, targets: readonly KeyedTarget[]): Promise<void> {
  const started = new Date().toISOString();
  const keys = signed.keyIds.map((keyId) => ({ keyId }));
  await Promise.all(targets.map(({ inbox, sharedInbox, actorIds, storedKey }) => {
    const orderingKey = `${page.orderingKey}\n${originOf(inbox)}`;
    const message: OutboxMessage = {
      type: "outbox", id: crypto.randomUUID(), baseUrl: signed.baseUrl, keys, activity: signed.activity, activityId: page.activityId,
      activityType: signed.activityType, inbox, sharedInbox, actorIds, started, attempt: 0, headers: {}, orderingKey, traceContext: {},
    };
    return enqueue(message, { orderingKey, storedKey });
  }));
}

/**
 * URL.origin of an absolute inbox URL, by string for the plain forms (a fan-out
 * takes it of 10^5 inboxes); anything URL would normalise (case, a default
 * port, credentials, non-ASCII, backslashes) goes through URL.
 */
export function originOf(url: string): string {
  const start = url.indexOf("://");
  if (start > 0) {
    const end = url.indexOf("/", start + 3);
    const origin = end < 0 ? url : url.slice(0, end);
    if (/^https?:\/\/[a-z0-9.\-]+(:[0-9]+)?$/.test(origin) && !/:(80|443)$/.test(origin) && !/:0[0-9]/.test(origin)) return origin;
  }
  return safeOrigin(url);
}

function safeOrigin(url: string): string {
  try {
    return new URL(url).origin;
  } catch {
    return "null";
  }
}

/**
 * A shared inbox's members come in every page of the roster; pages by target
 * can be handled twice after a crash. Inboxes that already have this
 * activity queued or delivered are left out here, before anything is signed
 * for them (the queue would drop the duplicates too, but only after the work).
 * Each target left comes with its delivery's done key as stored, which its
 * enqueue is given (queueSigned) rather than computing it again.
 */
async function notYetQueued(db: Kysely<DB>, activityId: string, targets: readonly Target[]): Promise<KeyedTarget[]> {
  if (targets.length === 0) return [];
  const keyed = storedDeliveryKeys(db, activityId, targets.map((t) => t.inbox));
  const seen = await queuedOrDone(db, [...new Set(keyed)]);
  return targets.flatMap((t, i) => (seen.has(keyed[i]!) ? [] : [{ ...t, storedKey: keyed[i]! }]));
}
