import { type Activity, type Actor, type DocumentLoader, isActor } from "@fedify/vocab";
import { type Kysely, PostgresAdapter, sql } from "kysely";
import type { DB } from "../src/db/schema.ts";
import type { EventBus } from "../src/events.ts";
import { logger } from "../src/logging.ts";
import { cacheActorObject } from "./remote-actor-cache.ts";
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
  const lease = await claim(deps.db, id);
  if (lease === undefined) {
    log.debug("Skipped {id}: already processed, or another copy is being processed", { id });
    return false;
  }
  let fresh: boolean;
  try {
    // Checked again once claimed (a copy that finished in between has
    // recorded it), in the same statement as the sender's cache age.
    const state = await claimedState(deps.db, id, actorId.href);
    if (state.processed) {
      await release(deps.db, id, lease);
      log.debug("Skipped {id}: another copy was processed meanwhile", { id });
      return false;
    }
    fresh = state.fetchedAt !== null && Date.now() - state.fetchedAt < ACTOR_CACHE_MS;
  } catch (error) {
    await release(deps.db, id, lease).catch(() => {});
    throw error;
  }
  try {
    // Fetching the sender for every activity costs a signed round trip each;
    // a cached copy younger than a day will do unless the caller needs the
    // live document (a Follow checks account-migration links on it).
    await work(opts.freshActor || !fresh ? await refreshSender(deps, activity) : null);
  } catch (error) {
    await release(deps.db, id, lease);
    throw error;
  }
  const type = activityType(activity);
  await record(deps.db, { id, type, actor: actorId.href, union_id: unionId, received_at: Date.now() }, lease);
  deps.events.emit("activity.received", { activityId: id, type, actor: actorId.href, unionId });
  return true;
}

/*
 * Each function below is one round trip on PostgreSQL. processOnce was seven
 * or eight (processed?, claim, processed again?, the sender's cache row,
 * BEGIN, record, end the claim, COMMIT) for every activity through Fedify's
 * path, at about 0.17 ms of driver CPU each on loopback TCP; now three.
 */

/**
 * Takes the id for this process unless it was processed already: a new
 * claim, or one whose holder's lease ran out. Undefined when processed or
 * held by another. One statement: the expired-lease takeover is the upsert's
 * condition, atomic on both dialects (of two that find the same expired
 * claim, one updates it and the other updates nothing).
 */
async function claim(db: Kysely<DB>, id: string): Promise<number | undefined> {
  const now = Date.now();
  const until = now + CLAIM_LEASE_MS;
  // INSERT … SELECT … WHERE: SQLite needs the WHERE to tell the upsert's ON from a join's.
  const r = await sql<{ claimed_until: number }>`
    insert into inbox_claims (id, claimed_until)
    select cast(${id} as text), cast(${until} as bigint) where not exists (select 1 from inbox_activities where id = ${id})
    on conflict (id) do update set claimed_until = excluded.claimed_until where inbox_claims.claimed_until < ${now}
    returning claimed_until`.execute(db);
  return r.rows.length === 1 ? until : undefined;
}

/** Whether the id has been recorded as processed, and when its sender was last cached (null: not cached). */
async function claimedState(db: Kysely<DB>, id: string, actorId: string): Promise<{ processed: boolean; fetchedAt: number | null }> {
  const r = await sql<{ processed: number | boolean; fetched_at: number | string | null }>`
    select exists (select 1 from inbox_activities where id = ${id}) as processed,
      (select fetched_at from remote_actors where id = ${actorId}) as fetched_at`.execute(db);
  const row = r.rows[0]!;
  return { processed: Boolean(row.processed), fetchedAt: row.fetched_at === null ? null : Number(row.fetched_at) };
}

/** Records the id as processed and ends this process's claim, atomically. */
async function record(db: Kysely<DB>, row: { id: string; type: string; actor: string; union_id: string | null; received_at: number }, lease: number): Promise<void> {
  if (db.getExecutor().adapter instanceof PostgresAdapter) {
    // One statement is one transaction: both or neither.
    await sql`
      with recorded as (
        insert into inbox_activities (id, type, actor, union_id, received_at)
        values (${row.id}, ${row.type}, ${row.actor}, ${row.union_id}, ${row.received_at})
        on conflict (id) do nothing
      )
      delete from inbox_claims where id = ${row.id} and claimed_until = ${lease}`.execute(db);
    return;
  }
  await db.transaction().execute(async (trx) => {
    await trx.insertInto("inbox_activities").values(row).onConflict((oc) => oc.column("id").doNothing()).execute();
    await trx.deleteFrom("inbox_claims").where("id", "=", row.id).where("claimed_until", "=", lease).execute();
  });
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
