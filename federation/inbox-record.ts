import { type Activity, type Actor, type DocumentLoader, isActor } from "@fedify/vocab";
import type { Kysely } from "kysely";
import type { DB } from "../src/db/schema.ts";
import type { EventBus } from "../src/events.ts";
import { logger } from "../src/logging.ts";
import { cacheActorObject } from "./remote-actor-cache.ts";
import { getRemoteActor } from "../src/actors/remote-actors.ts";
import { fromRecentFetch } from "./recent-actors.ts";

const log = logger("federation", "inbox");
/** A cached sender younger than this is not fetched again before its activity is processed. */
export const ACTOR_CACHE_MS = 24 * 3600_000;

export interface InboxRecordDeps {
  readonly db: Kysely<DB>;
  readonly events: EventBus;
  readonly documentLoader: DocumentLoader;
  readonly contextLoader: DocumentLoader;
}

/** How long a claim holds off other copies; the work is a few fetches and writes, each with a timeout. */
const CLAIM_LEASE_MS = 5 * 60_000;

/**
 * Runs `work` for a verified inbound activity unless its id was already
 * processed or is being processed now: remote servers retry deliveries and
 * sometimes send copies at once, and neither may act twice.
 *
 * The id is claimed (inbox_claims) before the work, and recorded as
 * processed (inbox_activities) after it, in one transaction that also ends
 * the claim. Work that fails gives the claim back, so a retry runs it; a
 * process that dies mid-work leaves a claim that expires, so the activity is
 * not lost either. The domain's handlers are idempotent for that rare rerun.
 */
export async function processOnce(
  deps: InboxRecordDeps,
  activity: Activity,
  unionId: string | null,
  work: (actor: Actor | null) => Promise<void> = async () => {},
  opts: { freshActor?: boolean } = {},
): Promise<boolean> {
  const actorId = activity.actorId;
  if (!activity.id || !actorId) {
    log.warn("Ignored an activity without id or actor ({type})", { type: activity.constructor.name });
    return false;
  }
  const id = activity.id.href;
  if (await processed(deps.db, id)) {
    log.debug("Skipped {id}: already processed", { id });
    return false;
  }
  const lease = await claim(deps.db, id);
  // Checked again once claimed: a copy that finished in between has recorded it.
  if (lease === undefined || await processed(deps.db, id)) {
    if (lease !== undefined) await release(deps.db, id, lease);
    log.debug("Skipped {id}: another copy is being or was processed", { id });
    return false;
  }
  try {
    // Fetching the sender for every activity costs a signed round trip each;
    // a cached copy younger than a day will do unless the caller needs the
    // live document (a Follow checks account-migration links on it).
    const cached = await getRemoteActor(deps.db, actorId.href);
    const fresh = cached !== undefined && Date.now() - cached.fetchedAt < ACTOR_CACHE_MS;
    await work(opts.freshActor || !fresh ? await refreshSender(deps, activity) : null);
  } catch (error) {
    await release(deps.db, id, lease);
    throw error;
  }
  const type = activityType(activity);
  await deps.db.transaction().execute(async (trx) => {
    await trx.insertInto("inbox_activities")
      .values({ id, type, actor: actorId.href, union_id: unionId, received_at: Date.now() })
      .onConflict((oc) => oc.column("id").doNothing())
      .execute();
    await trx.deleteFrom("inbox_claims").where("id", "=", id).where("claimed_until", "=", lease).execute();
  });
  deps.events.emit("activity.received", { activityId: id, type, actor: actorId.href, unionId });
  return true;
}

async function processed(db: Kysely<DB>, id: string): Promise<boolean> {
  return (await db.selectFrom("inbox_activities").select("id").where("id", "=", id).executeTakeFirst()) !== undefined;
}

/** Takes the id for this process: a new claim, or one whose holder's lease ran out. Undefined when another holds it. */
async function claim(db: Kysely<DB>, id: string): Promise<number | undefined> {
  const now = Date.now();
  const until = now + CLAIM_LEASE_MS;
  const inserted = await db.insertInto("inbox_claims").values({ id, claimed_until: until })
    .onConflict((oc) => oc.column("id").doNothing()).executeTakeFirst();
  if (Number(inserted.numInsertedOrUpdatedRows ?? 0n) === 1) return until;
  // The conditional update is atomic on both dialects: of two that find the
  // same expired claim, one updates it and the other updates nothing.
  const taken = await db.updateTable("inbox_claims").set({ claimed_until: until })
    .where("id", "=", id).where("claimed_until", "<", now).executeTakeFirst();
  return Number(taken.numUpdatedRows) === 1 ? until : undefined;
}

async function release(db: Kysely<DB>, id: string, lease: number): Promise<void> {
  await db.deleteFrom("inbox_claims").where("id", "=", id).where("claimed_until", "=", lease).execute();
}

async function refreshSender(deps: InboxRecordDeps, activity: Activity): Promise<Actor | null> {
  try {
    // The document Fedify fetched a moment ago to verify the signature will do (recent-actors.ts).
    const fetched = await fromRecentFetch(() => activity.getActor({ documentLoader: deps.documentLoader, contextLoader: deps.contextLoader }));
    if (!fetched || !isActor(fetched) || fetched.id?.href !== activity.actorId?.href) return null;
    await cacheActorObject(deps.db, fetched);
    return fetched;
  } catch (error) {
    // The signature already proved who sent it; a stale cache entry is not
    // worth failing (and so retrying) the whole delivery for.
    log.warn("Could not refresh actor {actor}: {error}", { actor: activity.actorId?.href, error });
    return null;
  }
}

function activityType(activity: Activity): string {
  const t = (activity.constructor as { typeId?: URL }).typeId;
  return t ? t.href.replace("https://www.w3.org/ns/activitystreams#", "") : activity.constructor.name;
}
