import { type Activity, type Actor, type DocumentLoader, isActor } from "@fedify/vocab";
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
  let actor: Actor | null = null;
  try {
    const fetched = await activity.getActor({ documentLoader: deps.documentLoader, contextLoader: deps.contextLoader });
    if (fetched && isActor(fetched) && fetched.id?.href === actorId.href) {
      actor = fetched;
      await cacheActorObject(deps.db, actor);
    }
  } catch (error) {
    // The signature already proved who sent it; a stale cache entry is not
    // worth failing (and so retrying) the whole delivery for.
    log.warn("Could not refresh actor {actor}: {error}", { actor: actorId.href, error });
  }
  await work(actor);
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

function activityType(activity: Activity): string {
  const t = (activity.constructor as { typeId?: URL }).typeId;
  return t ? t.href.replace("https://www.w3.org/ns/activitystreams#", "") : activity.constructor.name;
}
