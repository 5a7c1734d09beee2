import { type Activity, type DocumentLoader, isActor } from "@fedify/vocab";
import type { Kysely } from "kysely";
import type { DB } from "../src/db/schema.ts";
import type { EventBus } from "../src/events.ts";
import { logger } from "../src/logging.ts";
import { cacheActorObject } from "./remote-actor-cache.ts";

const log = logger("federation", "inbox");

export interface InboxRecordDeps {
  readonly db: Kysely<DB>;
  readonly events: EventBus;
  readonly documentLoader: DocumentLoader;
  readonly contextLoader: DocumentLoader;
}

/**
 * Records a verified inbound activity once. Returns false when its id was
 * already seen: remote servers retry deliveries, and a retry must not act twice.
 * The insert is the idempotency gate, so a crash before it means a retry
 * processes the activity, and a crash after it means it is never processed again.
 */
export async function recordInboundActivity(deps: InboxRecordDeps, activity: Activity, unionId: string | null): Promise<boolean> {
  const actorId = activity.actorId;
  if (!activity.id || !actorId) {
    log.warn("Ignored an activity without id or actor ({type})", { type: activity.constructor.name });
    return false;
  }
  const type = activityType(activity);
  const inserted = await deps.db.insertInto("inbox_activities")
    .values({ id: activity.id.href, type, actor: actorId.href, union_id: unionId, received_at: Date.now() })
    .onConflict((oc) => oc.column("id").doNothing())
    .executeTakeFirst();
  if (Number(inserted.numInsertedOrUpdatedRows ?? 0n) === 0) {
    log.debug("Skipped {id}: already processed", { id: activity.id.href });
    return false;
  }
  try {
    const actor = await activity.getActor({ documentLoader: deps.documentLoader, contextLoader: deps.contextLoader });
    if (actor && isActor(actor) && actor.id?.href === actorId.href) await cacheActorObject(deps.db, actor);
  } catch (error) {
    // The activity is already verified and recorded; a stale cache entry is
    // not worth failing (and so retrying) the whole delivery for.
    log.warn("Could not refresh actor {actor}: {error}", { actor: actorId.href, error });
  }
  deps.events.emit("activity.received", { activityId: activity.id.href, type, actor: actorId.href, unionId });
  return true;
}

function activityType(activity: Activity): string {
  const t = (activity.constructor as { typeId?: URL }).typeId;
  return t ? t.href.replace("https://www.w3.org/ns/activitystreams#", "") : activity.constructor.name;
}
