import "../src/temporal.ts";
import { type Context, createFederation, type Federation, type FederationQueueOptions, type KvStore, type MessageQueue, type RequestContext } from "@fedify/fedify";
import { Accept, Activity, Announce, Application, Block, Create, Delete, Endpoints, Follow, Group, Image, Like, Move, Reject, Undo, Update } from "@fedify/vocab";
import type { Kysely } from "kysely";
import type { DB } from "../src/db/schema.ts";
import type { EventBus } from "../src/events.ts";
import { logger } from "../src/logging.ts";
import { countUnions, getUnionBySlug } from "../src/unions/unions.ts";
import type { Outbox } from "../src/outbox.ts";
import { onBlock, onDelete, onFollow, onMove, onUndo, onUnverifiedDelete } from "./inbox-membership.ts";
import { processOnce } from "./inbox-record.ts";
import { onAnnounce, onCreate, onLike } from "./inbox-actions.ts";
import { actorRelationshipFields, followingOf, onAnswer } from "./relationships.ts";
import { onVote } from "./inbox-votes.ts";
import { onFeatureAnswer, onStampDelete, registerFepContext } from "./featured-collections.ts";
import { signedKeyOwner } from "./signed-key-owner.ts";
import { onReport } from "./relationship-reports.ts";
import { registerProposalObjects } from "./proposal-question.ts";
import { followersPage } from "./followers.ts";
import { mayReadRoster, readFollowerCount } from "../src/members/roster.ts";
import { featuredItems, outboxCount, outboxItems, registerActionObjects } from "./action-objects.ts";
import { INSTANCE_KEY_OWNER, loadKeyPairs, loadUnionKeyPairs } from "./keys.ts";
import { escapeHtml } from "./html.ts";
import { serverUsage } from "../src/unions/usage.ts";
import { SIGNATURE_WINDOW_MS } from "../src/replay-window.ts";

/** The instance actor's identifier; reserved, so no union can take it. */
export const INSTANCE_ACTOR = "instance";

export const ACTOR_PATH = "/u/{identifier}";
export const SOFTWARE_VERSION = "0.1.0";

export interface FederationDeps {
  readonly db: Kysely<DB>;
  readonly events: EventBus;
  readonly outbox: Outbox;
  readonly kv: KvStore;
  /** The durable queue's lanes for inbox, outbox and fan-out (queue-lanes.ts); absent means send inline. */
  readonly queue?: MessageQueue | FederationQueueOptions;
  readonly origin: URL;
  readonly allowPrivateAddress: boolean;
  /** Tests start and stop the queue themselves so `node --test` can exit. */
  readonly manuallyStartQueue?: boolean;
  /** How often, at most, an open vote's running tally goes out (ms per proposal). */
  readonly tallyBatchMs?: number;
}

const log = logger("federation");

export async function createMusterFederation(deps: FederationDeps): Promise<Federation<void>> {
  const { db } = deps;
  registerFepContext();
  const federation = createFederation<void>({
    kv: deps.kv,
    queue: deps.queue,
    manuallyStartQueue: deps.manuallyStartQueue ?? false,
    origin: deps.origin.href,
    allowPrivateAddress: deps.allowPrivateAddress,
    // Stated, not left to Fedify's default: activity ids are pruned on the
    // assumption that no older HTTP signature verifies (src/replay-window.ts).
    signatureTimeWindow: { milliseconds: SIGNATURE_WINDOW_MS },
    userAgent: { software: `Muster/${SOFTWARE_VERSION}`, url: deps.origin },
  });

  federation
    .setActorDispatcher(ACTOR_PATH, async (ctx, identifier) => {
      if (identifier === INSTANCE_ACTOR) {
        const keys = await ctx.getActorKeyPairs(identifier);
        return new Application({
          id: ctx.getActorUri(identifier),
          preferredUsername: INSTANCE_ACTOR,
          name: ctx.host,
          summary: "The instance actor of this Muster server; it signs the server's own fetches.",
          url: new URL("/", ctx.origin),
          inbox: ctx.getInboxUri(identifier),
          outbox: ctx.getOutboxUri(identifier),
          endpoints: new Endpoints({ sharedInbox: ctx.getInboxUri() }),
          publicKey: keys[0]?.cryptographicKey,
          assertionMethods: keys.map((k) => k.multikey),
          manuallyApprovesFollowers: true,
        });
      }
      const union = await getUnionBySlug(db, identifier);
      if (!union) return null;
      const keys = await ctx.getActorKeyPairs(identifier);
      // Fedify's getActorKeyPairs answers [] when loading the keys failed
      // (a refused connection, say), and a union always has keys (unions.ts):
      // served, and kept by the read cache, such a document made receivers
      // refuse the union's deliveries until it next changed. An error here is
      // a 500 that is not cached; the receiver asks again.
      if (keys.length === 0) throw new Error(`the keys of union ${union.slug} could not be loaded`);
      const related = await actorRelationshipFields(db, deps.origin, union);
      return new Group({
        id: ctx.getActorUri(identifier),
        preferredUsername: union.slug,
        name: union.name,
        // AS2 summary is HTML; the purpose is plain text typed by an officer.
        summary: escapeHtml(union.purpose),
        url: ctx.getActorUri(identifier),
        icon: union.iconUrl ? new Image({ url: new URL(union.iconUrl) }) : null,
        inbox: ctx.getInboxUri(identifier),
        outbox: ctx.getOutboxUri(identifier),
        followers: ctx.getFollowersUri(identifier),
        following: ctx.getFollowingUri(identifier),
        streams: related.streams,
        attachments: related.attachments,
        featured: ctx.getFeaturedUri(identifier),
        // Lemmy's convention: a group's moderators are the collection it is attributed to.
        attribution: new URL(`/u/${union.slug}/moderators`, ctx.origin),
        endpoints: new Endpoints({ sharedInbox: ctx.getInboxUri() }),
        publicKey: keys[0]?.cryptographicKey,
        assertionMethods: keys.map((k) => k.multikey),
        manuallyApprovesFollowers: union.manuallyApprovesFollowers,
        discoverable: true,
        published: temporalInstant(union.createdAt),
      });
    })
    .mapHandle((_ctx, username) => username.toLowerCase())
    .setKeyPairsDispatcher(async (_ctx, identifier) => {
      if (identifier === INSTANCE_ACTOR) return loadKeyPairs(db, INSTANCE_KEY_OWNER);
      return loadUnionKeyPairs(db, identifier);
    });

  federation
    .setOutboxDispatcher("/u/{identifier}/outbox", async (ctx, identifier) => identifier === INSTANCE_ACTOR ? { items: [] } : outboxItems(db, ctx, identifier))
    .setCounter(async (ctx, identifier) => identifier === INSTANCE_ACTOR ? 0 : outboxCount(db, ctx as RequestContext<void>, identifier));
  federation
    .setFollowersDispatcher("/u/{identifier}/followers", async (_ctx, identifier, cursor) => {
      if (identifier === INSTANCE_ACTOR) return { items: [] };
      const union = await getUnionBySlug(db, identifier);
      return union ? followersPage(db, union.id, cursor) : null;
    })
    .setFirstCursor(() => "")
    .setCounter(async (ctx, identifier) => {
      if (identifier === INSTANCE_ACTOR) return 0;
      const union = await getUnionBySlug(db, identifier);
      if (!union) return null;
      const count = await readFollowerCount(db, union, { via: "federation", actorId: (await signedKeyOwner(ctx))?.href });
      return count.ok ? count.count : null;
    })
    // Only HTTP reads pass through here; fan-out to "followers" calls the
    // dispatcher directly, so delivery to every member is unaffected.
    .authorize(async (ctx, identifier) => {
      if (identifier === INSTANCE_ACTOR) return true;
      const union = await getUnionBySlug(db, identifier);
      if (!union) return true; // the dispatcher answers 404
      return mayReadRoster(db, union, { via: "federation", actorId: (await signedKeyOwner(ctx))?.href });
    });
  federation
    .setFollowingDispatcher("/u/{identifier}/following", async (_ctx, identifier) => {
      const union = identifier === INSTANCE_ACTOR ? undefined : await getUnionBySlug(db, identifier);
      return union ? { items: await followingOf(db, union.id) } : identifier === INSTANCE_ACTOR ? { items: [] } : null;
    });
  federation
    .setFeaturedDispatcher("/u/{identifier}/featured", async (ctx, identifier) => identifier === INSTANCE_ACTOR ? { items: [] } : featuredItems(db, ctx, identifier));
  registerActionObjects(federation, db);
  registerProposalObjects(federation, db);

  const inboxDeps = { db, events: deps.events, outbox: deps.outbox, instanceActor: INSTANCE_ACTOR, tallyBatchMs: deps.tallyBatchMs };
  federation
    .setInboxListeners("/u/{identifier}/inbox", "/inbox")
    // Keys fetched to verify shared-inbox deliveries are fetched signed, so
    // servers in authorized-fetch mode answer them.
    .setSharedKeyDispatcher(() => ({ identifier: INSTANCE_ACTOR }))
    .on(Follow, (ctx, a) => onFollow(inboxDeps, ctx, a))
    .on(Undo, (ctx, a) => onUndo(inboxDeps, ctx, a))
    .on(Block, (ctx, a) => onBlock(inboxDeps, ctx, a))
    // A Delete of a consent stamp we hold withdraws an item of our featured collections (FEP-7aa9).
    .on(Delete, async (ctx, a) => {
      if (!(await onStampDelete(inboxDeps, a))) await onDelete(inboxDeps, ctx, a);
    })
    .on(Move, (ctx, a) => onMove(inboxDeps, ctx, a))
    .on(Like, (ctx, a) => onLike(inboxDeps, ctx, a))
    .on(Announce, (ctx, a) => onAnnounce(inboxDeps, ctx, a))
    // A poll answer to a proposal is a vote, never a reply to a call-to-action.
    .on(Create, async (ctx, a) => {
      if (!(await onVote(inboxDeps, ctx, a))) await onCreate(inboxDeps, ctx, a);
    })
    // An Update carrying another union's report of totals; any other Update is recorded as before.
    .on(Update, async (ctx, a) => {
      if (await onReport(inboxDeps, ctx, a)) return;
      const union = ctx.recipient && ctx.recipient !== INSTANCE_ACTOR ? await getUnionBySlug(db, ctx.recipient) : undefined;
      await processOnce({ db, events: deps.events, documentLoader: ctx.documentLoader, contextLoader: ctx.contextLoader }, a, union?.id ?? null);
    })
    .on(Accept, async (ctx, a) => {
      if (!(await onFeatureAnswer({ ...inboxDeps, origin: deps.origin }, ctx, a, true))) await onAnswer(inboxDeps, ctx, a);
    })
    .on(Reject, async (ctx, a) => {
      if (!(await onFeatureAnswer({ ...inboxDeps, origin: deps.origin }, ctx, a, false))) await onAnswer(inboxDeps, ctx, a);
    })
    // Everything else is recorded (once) for the features that will read it.
    .on(Activity, async (ctx, activity) => {
      const union = ctx.recipient && ctx.recipient !== INSTANCE_ACTOR ? await getUnionBySlug(db, ctx.recipient) : undefined;
      await processOnce({ db, events: deps.events, documentLoader: ctx.documentLoader, contextLoader: ctx.contextLoader }, activity, union?.id ?? null);
    })
    .onUnverifiedActivity(async (ctx, activity, reason) => {
      if (reason.type === "keyFetchError") {
        const accepted = await onUnverifiedDelete(inboxDeps, ctx, activity);
        if (accepted) return accepted;
      }
      log.warn("Refused an inbox POST to {path} from {actor}: {reason}", {
        path: new URL(ctx.request.url).pathname,
        actor: activity.actorId?.href ?? "(no actor)",
        reason: reason.type,
      });
    })
    .onError((_ctx, error) => {
      log.error("Inbox listener failed: {error}", { error });
    });

  federation.setNodeInfoDispatcher("/nodeinfo/2.1", async () => {
    const usage = await serverUsage(db);
    return {
    software: {
      name: "muster",
      version: SOFTWARE_VERSION,
      repository: new URL("https://github.com/muster-union/muster"),
    },
    protocols: ["activitypub"],
    services: { inbound: [], outbound: [] },
    openRegistrations: false,
    usage: {
      // Unions are this server's only local actors; members live on their own servers.
      users: { total: usage.unions, activeHalfyear: usage.activeHalfyear, activeMonth: usage.activeMonth },
      localPosts: usage.posts,
      localComments: 0,
    },
    metadata: { nodeName: deps.origin.host },
  };
  });

  return federation;
}

function temporalInstant(d: Date): Temporal.Instant {
  return Temporal.Instant.fromEpochMilliseconds(d.getTime());
}
