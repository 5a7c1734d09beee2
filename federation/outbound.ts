import { randomUUID } from "node:crypto";
import type { Context, Federation } from "@fedify/fedify";
import type { Recipient } from "@fedify/vocab";
import type { Kysely } from "kysely";
import { getRemoteActor } from "../src/actors/remote-actors.ts";
import type { DB } from "../src/db/schema.ts";
import { prepared } from "../src/db/prepared.ts";
import { logger } from "../src/logging.ts";
import { getMember, type Member } from "../src/members/members.ts";
import type { JoinKnown, Outbox, OutboxIntent } from "../src/outbox.ts";
import { getUnionById, type Union } from "../src/unions/unions.ts";
import type { GateHint, KyselyMessageQueue } from "./kysely-message-queue.ts";
import { refreshRemoteActor } from "./remote-actor-cache.ts";
import { escapeHtml } from "./html.ts";
import { handleActionIntent } from "./outbound-actions.ts";
import type { FanoutDeps } from "./fanout-pages.ts";
import { handleReportIntent } from "./relationship-reports.ts";
import { handleRelationshipIntent } from "./relationships.ts";
import { handleProposalIntent } from "./proposal-question.ts";
import { handleFeaturedIntent } from "./featured-collections.ts";
import { readBylaws } from "../src/bylaws/bylaws.ts";
import { type DirectActivity, type DirectDelivery, directDelivery, directNote, followAnswer, joinedDelivery, gateOf, gateText, type MemberGate, rsaKeyIdOf } from "./direct-send.ts";

const log = logger("federation", "outbound");

/** What sits in the domain queue: the intent plus an id that makes its activities' ids stable across retries. */
interface QueuedIntent {
  readonly intentId: string;
  readonly intent: OutboxIntent;
}

/**
 * The domain's Outbox, kept in the database queue under its own name. Chain
 * work goes to the ledger lane when one is given, so a slow RPC never holds
 * up an Accept or a vote. With `direct`, a join's Accept and welcome are
 * queued as deliveries in the join's own transaction (no domain message to
 * claim and handle first); each carries a gate, checked when it is sent, so
 * a member gone by then still gets neither (direct-send.ts).
 */
export function queueOutbox(queue: KyselyMessageQueue, ledgerQueue?: KyselyMessageQueue, direct?: DirectLane): Outbox {
  return {
    add: async (trx, intent, options) => {
      const batch = options?.batch;
      if (direct && intent.kind === "member.join" && options?.notBefore === undefined) {
        const deliveries = await cachedJoinDeliveries(trx, direct.origin, intent, randomUUID(), options?.known);
        if (deliveries) {
          // Each activity goes to this member alone: kept in its message's row, no payload row to write and read back.
          // Both in ONE message when they can share it (always: one member, one inbox): one row to claim and settle,
          // the Accept sent first, then the welcome (direct-send.ts, joinedDelivery).
          const joined = joinedDelivery(deliveries);
          const key = deliveries[0]?.orderingKey;
          if (joined) await direct.queue.enqueueWith(trx, joined, { orderingKey: joined.orderingKey, batch, inlineActivity: true });
          else if (deliveries.every((d) => d.orderingKey === key)) await direct.queue.enqueueAllWith(trx, deliveries, { orderingKey: key, batch, inlineActivity: true });
          else for (const d of deliveries) await direct.queue.enqueueWith(trx, d, { orderingKey: d.orderingKey, batch, inlineActivity: true });
          return;
        }
      }
      const wait = Math.max(0, (options?.notBefore ?? 0) - Date.now());
      return (LEDGER_KINDS.has(intent.kind) && ledgerQueue ? ledgerQueue : queue)
        .enqueueWith(trx, { intentId: randomUUID(), intent } satisfies QueuedIntent, { orderingKey: orderingKeyOf(intent), batch, ...(wait > 0 ? { delay: { total: () => wait } } : {}) });
    },
    // Besides the gate checked at sending: a sender that takes deliveries
    // without going through it (a batch sender) still finds none to send.
    ...(direct ? {
      withdrawWelcome: async (trx: Kysely<DB>, unionId: string, memberId: string) => {
        const now = Date.now();
        await trx.deleteFrom("fedify_mq").where("queue", "=", direct.queue.name)
          .where((eb) => eb.or([eb("lease_until", "is", null), eb("lease_until", "<=", now)]))
          .where("message", "like", `%${gateText({ unionId, memberId })}%`)
          .execute();
      },
    } : {}),
  };
}

/** Where a join's deliveries go when written with the join: the interactive outbox lane. */
export interface DirectLane {
  readonly queue: KyselyMessageQueue;
  readonly origin: URL;
}

/** Intents that are chain work, handled by the ledger lane (solana/). */
const LEDGER_KINDS: ReadonlySet<OutboxIntent["kind"]> = new Set(["badge.sync", "treasury.transfer", "treasury.create", "treasury.spend"]);

// An Accept and a later Reject for the same member must leave in that order.
function orderingKeyOf(intent: OutboxIntent): string {
  if (intent.kind === "treasury.spend") return `treasury:${intent.unionId}`;
  if ("memberId" in intent) return `member:${intent.memberId}`;
  if ("actionId" in intent) return `action:${intent.actionId}`;
  if ("relationshipId" in intent) return `relationship:${intent.relationshipId}`;
  if ("proposalId" in intent) return `proposal:${intent.proposalId}`;
  if ("itemId" in intent) return `featured:${intent.itemId}`;
  if ("stampId" in intent) return `stamp:${intent.stampId}`;
  if ("transferId" in intent || intent.kind === "treasury.create") return `treasury:${intent.unionId}`;
  if (intent.kind === "relationship.tally") return `tally:${intent.unionId}:${intent.noteId}`;
  if (intent.kind === "relationship.report") return `report:${intent.unionId}`;
  return intent.kind === "relay" ? `relay:${intent.noteId}` : `actor:${intent.actorId}`;
}

export interface OutboundDeps extends FanoutDeps {
  readonly db: Kysely<DB>;
  readonly federation: Federation<void>;
  readonly origin: URL;
  /**
   * Queues one of Fedify's delivery messages in the interactive outbox lane:
   * activities for one recipient go out HTTP-signed only (direct-send.ts).
   */
  enqueueDirect(message: unknown, options: { orderingKey: string }): Promise<void>;
}

/**
 * Turns one domain intent into activities handed to Fedify's outbox queue.
 * Running it twice for the same message sends activities with the same ids,
 * which receivers treat as one.
 */
export async function handleIntent(deps: OutboundDeps, message: QueuedIntent): Promise<void> {
  const { intent, intentId } = message;
  const union = await getUnionById(deps.db, intent.unionId);
  if (!union) {
    log.warn("Dropped {kind}: union {unionId} no longer exists", { kind: intent.kind, unionId: intent.unionId });
    return;
  }
  const ctx = deps.federation.createContext(deps.origin, undefined);
  const groupId = ctx.getActorUri(union.slug);
  const activityId = (n = "") => new URL(`/u/${union.slug}/activities/${intentId}${n}`, deps.origin);

  switch (intent.kind) {
    case "member.join": {
      // One message for a join (when it was not written with the join itself): the Accept, then the welcome.
      const member = await getMember(deps.db, union.id, intent.memberId);
      if (!member?.actorId || !member.followId) {
        log.warn("Cannot answer the follow of member {memberId}: no actor or Follow id", { memberId: intent.memberId });
        return;
      }
      if (gone(member)) return;
      const recipient = await recipientFor(deps, ctx, union, member.actorId);
      if (!recipient) return;
      const deliveries = await joinDeliveries(deps.db, deps.origin, union, groupId, member, { id: recipient.id?.href ?? member.actorId, inbox: recipient.inboxId!.href }, intent.inviteCode, activityId);
      // One message for both when they can share it (direct-send.ts, joinedDelivery); otherwise enqueued in the
      // same turn: one transaction for both (kysely-message-queue.ts), the Accept first.
      const joined = joinedDelivery(deliveries);
      if (joined) await deps.enqueueDirect(joined, { orderingKey: joined.orderingKey });
      else await Promise.all(deliveries.map((d) => deps.enqueueDirect(d, { orderingKey: d.orderingKey })));
      return;
    }
    case "follow.accept":
    case "follow.reject": {
      const member = await getMember(deps.db, union.id, intent.memberId);
      if (!member?.actorId || !member.followId) {
        log.warn("Cannot answer the follow of member {memberId}: no actor or Follow id", { memberId: intent.memberId });
        return;
      }
      if (intent.kind === "follow.accept" && gone(member)) return;
      const recipient = await recipientFor(deps, ctx, union, member.actorId);
      if (!recipient) return;
      const answer = answerOf(intent.kind === "follow.accept" ? "Accept" : "Reject", groupId, member.actorId, member.followId, activityId());
      // A Reject goes out even to a member removed meanwhile: it is how their server learns it.
      await send(deps, groupId, recipient, member.actorId, answer, intent.kind === "follow.accept" ? { unionId: union.id, memberId: member.id } : undefined);
      return;
    }
    case "member.welcome": {
      const member = await getMember(deps.db, union.id, intent.memberId);
      if (!member?.actorId || gone(member)) return;
      const recipient = await recipientFor(deps, ctx, union, member.actorId);
      if (!recipient) return;
      await send(deps, groupId, recipient, member.actorId, await welcomeOf(deps.db, deps.origin, union, groupId, member.actorId, member.handle, intent.inviteCode, activityId), { unionId: union.id, memberId: member.id });
      return;
    }
    case "action.publish":
    case "action.update":
    case "action.retract":
    case "action.progress":
    case "relay":
      await handleActionIntent(deps, ctx, union, intent, intentId);
      return;
    case "relationship.follow":
    case "relationship.accept":
    case "relationship.reject":
    case "relationship.undo":
    case "relationship.notice":
      await handleRelationshipIntent(deps, ctx, union, intent);
      return;
    case "relationship.tally":
    case "relationship.report":
      await handleReportIntent(deps, ctx, union, intent);
      return;
    case "proposal.publish":
    case "proposal.closed":
    case "proposal.tally":
      await handleProposalIntent(deps, ctx, union, intent);
      return;
    case "featured.request":
    case "featured.answer":
    case "featured.withdraw":
    case "featured.add":
    case "featured.remove":
      await handleFeaturedIntent(deps, ctx, union, intent);
      return;
    case "badge.sync":
    case "treasury.transfer":
    case "treasury.create":
    case "treasury.spend":
      // Chain work belongs to the ledger lane (solana/); here it would be lost.
      throw new Error(`${intent.kind} in union ${intent.unionId} reached the federation lane; it needs the ledger lane`);
    case "login.link": {
      const recipient = await recipientFor(deps, ctx, union, intent.actorId);
      if (!recipient) return;
      const actor = await getRemoteActor(deps.db, intent.actorId);
      const minutes = Math.max(1, Math.round((intent.expiresAt - Date.now()) / 60_000));
      const body = `<p>Your sign-in link for ${escapeHtml(union.name)} (valid for ${minutes} minutes, once): <a href="${escapeHtml(intent.url)}">${escapeHtml(intent.url)}</a></p><p>If you did not ask to sign in, ignore this message.</p>`;
      await send(deps, groupId, recipient, intent.actorId, directMessage(groupId, intent.actorId, actor?.handle ?? null, activityId, body));
      return;
    }
  }
}

/**
 * A member who left, was removed or whose account was deleted before their
 * Accept or welcome went out is not sent it: it would re-fetch (and cache
 * again) an account that is gone, and retry against its 410 for nothing.
 * A Reject still goes out: it is how a removed member's server learns it.
 */
function gone(member: Member): boolean {
  if (member.state === "active") return false;
  log.info("Not sending to member {memberId}: their membership is {state}", { memberId: member.id, state: member.state });
  return true;
}

function answerOf(type: "Accept" | "Reject", groupId: URL, actorId: string, followId: string, id: URL): DirectActivity {
  // Mastodon matches the answer to its pending follow by the embedded Follow's id.
  return followAnswer(type, { id: id.href, actor: groupId.href, follow: { id: followId, actor: actorId, object: groupId.href } });
}

async function welcomeOf(db: Kysely<DB>, origin: URL, union: Union, groupId: URL, actorId: string, handle: string | null, inviteCode: string | null, activityId: (n?: string) => URL, bylawsVersion?: number): Promise<DirectActivity> {
  const invite = inviteCode ? new URL(`/u/${union.slug}/join/${inviteCode}`, origin).href : null;
  const text = union.welcomeText ?? `Welcome to ${union.name}! ${union.purpose}`;
  // The version in force when the welcome goes out: the rules the member joined under (read by the join itself, when it gives it).
  const bylaws = bylawsVersion === undefined ? await readBylaws(db, union.id) : { version: bylawsVersion };
  const bylawsUrl = new URL(`/u/${union.slug}/bylaws#history`, origin).href;
  const body = [escapeHtml(text), invite ? `Your own invite link, to recruit others: <a href="${escapeHtml(invite)}">${escapeHtml(invite)}</a>` : null,
    `The union's bylaws, version ${bylaws.version}, which only members' votes change: <a href="${escapeHtml(bylawsUrl)}">${escapeHtml(bylawsUrl)}</a>`]
    .filter(Boolean).map((p) => `<p>${p}</p>`).join("");
  return directMessage(groupId, actorId, handle, activityId, body);
}

function directMessage(groupId: URL, actorId: string, handle: string | null, activityId: (n?: string) => URL, html: string): DirectActivity {
  // Mastodon shows a direct message only to the accounts it mentions.
  const mention = handle ? `<span class="h-card"><a href="${escapeHtml(actorId)}" class="u-url mention">${escapeHtml(handle)}</a></span> ` : "";
  return directNote({ id: activityId().href, noteId: activityId("#note").href, actor: groupId.href, to: actorId, mention: handle ?? actorId, content: `${mention}${html}`, published: new Date() });
}

/**
 * Queues an activity for one recipient as a delivery of its own, HTTP-signed
 * only (direct-send.ts). The ordering key is the actor's: an Accept, the
 * welcome after it and a later Reject leave in the order they were queued.
 */
function send(deps: OutboundDeps, groupId: URL, recipient: Recipient, actorId: string, activity: DirectActivity, gate?: MemberGate): Promise<void> {
  const message = directDelivery({ origin: deps.origin, keyId: rsaKeyIdOf(groupId), activity, inbox: recipient.inboxId!.href, actorId: recipient.id?.href ?? actorId, orderingKey: actorId, gate });
  return deps.enqueueDirect(message, { orderingKey: message.orderingKey });
}

/** A join's Accept and welcome, in that order, each sent only while the member is still active. */
async function joinDeliveries(db: Kysely<DB>, origin: URL, union: Union, groupId: URL, member: Member, recipient: { id: string; inbox: string }, inviteCode: string | null, activityId: (n?: string) => URL, bylawsVersion?: number): Promise<DirectDelivery[]> {
  const accept = answerOf("Accept", groupId, member.actorId!, member.followId!, activityId("/accept"));
  const welcome = await welcomeOf(db, origin, union, groupId, member.actorId!, member.handle, inviteCode, (n = "") => activityId(`/welcome${n}`), bylawsVersion);
  const gate = { unionId: union.id, memberId: member.id };
  return [accept, welcome].map((activity) =>
    directDelivery({ origin, keyId: rsaKeyIdOf(groupId), activity, inbox: recipient.inbox, actorId: recipient.id, orderingKey: member.actorId!, gate }));
}

/**
 * A join's deliveries from what the join's transaction can read: undefined
 * when the member's account is not cached with an inbox (the domain lane
 * then fetches it).
 */
async function cachedJoinDeliveries(db: Kysely<DB>, origin: URL, intent: { unionId: string; memberId: string; inviteCode: string | null }, intentId: string, known?: JoinKnown): Promise<DirectDelivery[] | undefined> {
  // What the join read and wrote under the union's lock is what these reads would find.
  const fromJoin = known !== undefined && known.union.id === intent.unionId && known.member.id === intent.memberId ? known : undefined;
  const union = fromJoin?.union ?? await getUnionById(db, intent.unionId);
  const member = fromJoin?.member ?? (union && await getMember(db, union.id, intent.memberId));
  if (!union || !member?.actorId || !member.followId || member.state !== "active") return undefined;
  const actor = fromJoin ? (fromJoin.actor?.id === member.actorId ? fromJoin.actor : undefined) : await getRemoteActor(db, member.actorId);
  if (!actor?.inbox) return undefined;
  // Fedify's actor URI for the union (federation.ts, ACTOR_PATH); slugs need no escaping.
  const groupId = new URL(`/u/${union.slug}`, origin);
  const activityId = (n = "") => new URL(`/u/${union.slug}/activities/${intentId}${n}`, origin);
  return joinDeliveries(db, origin, union, groupId, member, { id: actor.id, inbox: actor.inbox }, intent.inviteCode, activityId, fromJoin?.bylawsVersion);
}

const memberState = prepared<[unionId: string, memberId: string], { state: string }>((db, unionId, memberId) =>
  db.selectFrom("members").select("state").where("union_id", "=", unionId).where("id", "=", memberId));

/**
 * Checks a delivery's gate when it is about to be sent: is the member still
 * active? `hint`, the gate and state its claim read (kysely-message-queue.ts,
 * gatesWithClaim), answers without a query when it names this gate.
 */
export function memberGate(db: Kysely<DB>): (message: unknown, hint?: GateHint) => Promise<boolean> {
  return async (message, hint) => {
    const gate = gateOf(message);
    if (gate === undefined) return true;
    const prefix = `${gate.unionId}"${gate.memberId}"`;
    // The state alone (two gates a join): not the whole row made into a Member.
    const state = typeof hint === "string" && hint.startsWith(prefix) ? (hint.slice(prefix.length) || undefined)
      : (await memberState(db, gate.unionId, gate.memberId)).rows[0]?.state;
    if (state === "active") return true;
    log.info("Not sending {activityId} to member {memberId}: their membership is {state}", { activityId: (message as { activityId?: string }).activityId, memberId: gate.memberId, state: state ?? "gone" });
    return false;
  };
}

/** The inbox to deliver to, from the cache, or fetched (signed as the union) when unknown. */
export async function recipientFor(deps: OutboundDeps, ctx: Context<void>, union: Union, actorId: string): Promise<Recipient | null> {
  let actor = await getRemoteActor(deps.db, actorId);
  if (!actor?.inbox) {
    try {
      const loader = await ctx.getDocumentLoader({ identifier: union.slug });
      actor = await refreshRemoteActor(loader, deps.db, actorId, { unknownContexts: "ignore" });
    } catch (error) {
      // Thrown on purpose: the queue retries with backoff, the server may be back later.
      throw new Error(`cannot resolve the inbox of ${actorId}: ${(error as Error).message}`);
    }
  }
  if (!actor.inbox) {
    log.warn("Actor {actorId} has no inbox; nothing sent", { actorId });
    return null;
  }
  return {
    id: new URL(actor.id),
    inboxId: new URL(actor.inbox),
    endpoints: actor.sharedInbox ? { sharedInbox: new URL(actor.sharedInbox) } : null,
  };
}
