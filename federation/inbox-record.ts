import { type Activity, type Actor, type DocumentLoader, isActor } from "@fedify/vocab";
import type { Kysely } from "kysely";
import type { DB } from "../src/db/schema.ts";
import type { EventBus } from "../src/events.ts";
import { logger } from "../src/logging.ts";
import { cacheActorObject } from "./remote-actor-cache.ts";
import { getRemoteActor } from "../src/actors/remote-actors.ts";

const log = logger("federation", "inbox");
const ACTOR_CACHE_MS = 24 * 3600_000;

export interface InboxRecordDeps {
  readonly db: Kysely<DB>;
  readonly events: EventBus;
  readonly documentLoader: DocumentLoader;
  readonly contextLoader: DocumentLoader;
}

/**
 * Runs `work` for a verified inbound activity unless its id was already
 * processed: remote servers retry deliveries, and a retry must not act twice.
 *
 * The id is recorded after the work, not before: a crash in between makes
 * the retry run the work again, which the domain's handlers tolerate (they
 * are idempotent), whereas recording first would lose the activity.
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
  if (await deps.db.selectFrom("inbox_activities").select("id").where("id", "=", id).executeTakeFirst()) {
    log.debug("Skipped {id}: already processed", { id });
    return false;
  }
  // Fetching the sender for every activity costs a signed round trip each;
  // a cached copy younger than a day will do unless the caller needs the
  // live document (a Follow checks account-migration links on it).
  const cached = await getRemoteActor(deps.db, actorId.href);
  const fresh = cached !== undefined && Date.now() - cached.fetchedAt < ACTOR_CACHE_MS;
  await work(opts.freshActor || !fresh ? await refreshSender(deps, activity) : null);
  const type = activityType(activity);
  const inserted = await deps.db.insertInto("inbox_activities")
    .values({ id, type, actor: actorId.href, union_id: unionId, received_at: Date.now() })
    .onConflict((oc) => oc.column("id").doNothing())
    .executeTakeFirst();
  // Two deliveries of one activity processed at once: only one announces it.
  if (Number(inserted.numInsertedOrUpdatedRows ?? 0n) === 0) return false;
  deps.events.emit("activity.received", { activityId: id, type, actor: actorId.href, unionId });
  return true;
}

async function refreshSender(deps: InboxRecordDeps, activity: Activity): Promise<Actor | null> {
  try {
    const fetched = await activity.getActor({ documentLoader: deps.documentLoader, contextLoader: deps.contextLoader });
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
