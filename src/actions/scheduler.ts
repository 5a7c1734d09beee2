import "../temporal.ts";
import { logger } from "../logging.ts";
import { type ActionDeps, publishIn } from "./actions.ts";
import { closeExpired } from "./responses.ts";
import { every } from "../sleep.ts";

const log = logger("actions", "scheduler");
/** Thrown to roll back a day's claim when the queue turned out empty, so a draft queued later today still goes out. */
class Empty extends Error {}

/** The union's local date and whether its daily publication time has come, at `now`. */
export function localSchedule(now: number, timeZone: string, publishTime: string): { today: string; due: boolean } {
  const local = Temporal.Instant.fromEpochMilliseconds(now).toZonedDateTimeISO(timeZone);
  const [h, m] = publishTime.split(":").map(Number) as [number, number];
  const due = local.hour > h || (local.hour === h && local.minute >= m);
  return { today: local.toPlainDate().toString(), due };
}

/**
 * Publishes, for each union whose local publication time has passed today,
 * the oldest queued call-to-action: one a day. The union's
 * last_published_on is claimed with a conditional update in the same
 * transaction, so several workers running this at once publish once.
 */
export async function publishDue(deps: ActionDeps, now = Date.now()): Promise<string[]> {
  const unions = await deps.db.selectFrom("unions").select(["id", "slug", "time_zone", "publish_time", "last_published_on"]).execute();
  const published: string[] = [];
  for (const u of unions) {
    const { today, due } = localSchedule(now, u.time_zone, u.publish_time);
    if (!due || u.last_published_on === today) continue;
    let next: { id: string } | undefined;
    try {
      next = await deps.db.transaction().execute(async (trx) => {
        const claim = await trx.updateTable("unions").set({ last_published_on: today }).where("id", "=", u.id)
          .where((eb) => eb.or([eb("last_published_on", "is", null), eb("last_published_on", "!=", today)])).executeTakeFirst();
        if (Number(claim.numUpdatedRows) !== 1) return undefined;
        const n = await trx.selectFrom("actions").select("id").where("union_id", "=", u.id).where("state", "=", "queued")
          .orderBy("created_at").orderBy("id").limit(1).executeTakeFirst();
        if (!n) throw new Empty();
        await publishIn(deps, trx, u.id, n.id, now);
        return n;
      });
    } catch (e) {
      if (!(e instanceof Empty)) log.error("Could not publish for {union}: {error}", { union: u.slug, error: e });
      continue;
    }
    if (next) {
      published.push(next.id);
      deps.events.emit("action.published", { unionId: u.id, actionId: next.id });
      log.info("Published today's call-to-action for {union}", { union: u.slug });
    }
  }
  return published;
}

/** Runs the daily publisher and the deadline closer until the signal aborts. */
export function runScheduler(deps: ActionDeps, signal: AbortSignal, intervalMs = 30_000): Promise<void> {
  return every(intervalMs, signal, async () => {
    await publishDue(deps);
    await closeExpired(deps);
  }, (error) => log.error("Scheduler pass failed: {error}", { error }));
}

export interface NextPublication {
  /** Local date of the next scheduled publication, YYYY-MM-DD. */
  readonly date: string;
  /** Local HH:MM. */
  readonly time: string;
  readonly timeZone: string;
  /** Today's time has passed and nothing went out today: the scheduler publishes on its next pass. */
  readonly overdue: boolean;
}

/**
 * The union's next daily slot: today's if nothing went out on schedule today
 * (overdue once its time has passed: the scheduler's next pass takes it),
 * else tomorrow's. Mirrors publishDue, which keys "published today" on the
 * union's last_published_on. The one rule behind the console's "next
 * publication" and the CLI's "goes out ...".
 */
export function nextPublication(now: number, union: { readonly timeZone: string; readonly publishTime: string }, lastPublishedOn: string | null): NextPublication {
  const { today, due } = localSchedule(now, union.timeZone, union.publishTime);
  const todayFree = lastPublishedOn !== today;
  const date = todayFree ? today : Temporal.PlainDate.from(today).add({ days: 1 }).toString();
  return { date, time: union.publishTime, timeZone: union.timeZone, overdue: todayFree && due };
}

/**
 * When each queued call-to-action of a union will go out, oldest first, one
 * a day from the next slot (nextPublication), at the union's local
 * publication time; an overdue first slot goes out at once. Calls published
 * at once with "publish now" stand outside this rhythm and take no day's slot.
 */
export async function publicationSchedule(db: ActionDeps["db"], unionId: string, now = Date.now()): Promise<Map<string, { at: Date; immediate: boolean }>> {
  const u = await db.selectFrom("unions").select(["time_zone", "publish_time", "last_published_on"]).where("id", "=", unionId).executeTakeFirstOrThrow();
  const queued = await db.selectFrom("actions").select("id").where("union_id", "=", unionId).where("state", "=", "queued")
    .orderBy("created_at").orderBy("id").execute();
  const next = nextPublication(now, { timeZone: u.time_zone, publishTime: u.publish_time }, u.last_published_on);
  const [h, m] = u.publish_time.split(":").map(Number) as [number, number];
  const out = new Map<string, { at: Date; immediate: boolean }>();
  queued.forEach((q, i) => {
    if (i === 0 && next.overdue) {
      out.set(q.id, { at: new Date(now), immediate: true });
      return;
    }
    const day = Temporal.PlainDate.from(next.date).add({ days: i });
    const at = day.toZonedDateTime({ timeZone: u.time_zone, plainTime: new Temporal.PlainTime(h, m) });
    out.set(q.id, { at: new Date(at.epochMilliseconds), immediate: false });
  });
  return out;
}
