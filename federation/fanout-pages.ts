import type { Context, Federation } from "@fedify/fedify";
import { Activity } from "@fedify/vocab";
import type { Recipient } from "@fedify/vocab";
import type { Kysely } from "kysely";
import type { DB } from "../src/db/schema.ts";
import { logger } from "../src/logging.ts";
import { getUnionById } from "../src/unions/unions.ts";
import { committedPage, followersPage } from "./followers.ts";

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
}

export type FanoutAudience = { readonly kind: "committed"; readonly actionId: string };

export interface FanoutDeps {
  readonly db: Kysely<DB>;
  readonly federation: Federation<void>;
  readonly origin: URL;
  /** Queues a page in the fan-out lane. */
  enqueue(page: FanoutPage, options: { orderingKey: string }): Promise<void>;
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
  if (recipients.length > 0) {
    const ctx = deps.federation.createContext(deps.origin, undefined);
    const activity = await Activity.fromJsonLd(page.activity, { contextLoader: ctx.contextLoader, documentLoader: ctx.documentLoader });
    await ctx.sendActivity({ identifier: union.slug }, recipients, activity, { preferSharedInbox: shared, orderingKey: page.orderingKey, fanout: "skip" });
  }
  if (nextCursor !== null) await deps.enqueue({ ...page, cursor: nextCursor }, { orderingKey: page.orderingKey });
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
