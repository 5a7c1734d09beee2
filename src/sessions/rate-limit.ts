import { randomUUID } from "node:crypto";
import type { Kysely } from "kysely";
import type { DB } from "../db/schema.ts";

// Sliding-window limits kept in the database, so they hold across every web
// process sharing it (and across restarts). Each allowed request leaves one
// row per bucket; a request is allowed while a bucket holds at most `max`
// rows in the last `windowMs`, counting its own. Insert-then-count is safe
// under concurrency: the k-th committed hit always sees at least k rows, so
// no more than `max` get through, whatever the interleaving.

export interface Limit {
  /** What is counted, e.g. `login:handle:@a@example.org`. */
  readonly bucket: string;
  readonly max: number;
  readonly windowMs: number;
}

export type LimitResult =
  | { readonly ok: true }
  | { readonly ok: false; readonly limit: Limit; readonly retryAfterMs: number };

/**
 * Counts one request against every limit, all or nothing: a request refused
 * by any limit is not counted against the others, so refused attempts never
 * extend a lockout.
 */
export async function hitLimits(db: Kysely<DB>, limits: readonly Limit[], now = Date.now()): Promise<LimitResult> {
  if (limits.length === 0) return { ok: true };
  const ids = limits.map(() => randomUUID());
  await db.insertInto("rate_limit_hits").values(limits.map((l, i) => ({ id: ids[i]!, bucket: l.bucket, at: now }))).execute();
  for (const limit of limits) {
    const n = await countHits(db, limit, now);
    if (n > limit.max) {
      await db.deleteFrom("rate_limit_hits").where("id", "in", ids).execute();
      return { ok: false, limit, retryAfterMs: await retryAfter(db, limit, now) };
    }
  }
  return { ok: true };
}

/** Whether one more hit would be allowed, without counting one. */
export async function checkLimit(db: Kysely<DB>, limit: Limit, now = Date.now()): Promise<LimitResult> {
  const n = await countHits(db, limit, now);
  return n < limit.max ? { ok: true } : { ok: false, limit, retryAfterMs: await retryAfter(db, limit, now) };
}

/** Counts one hit unconditionally (e.g. a failed attempt, checked beforehand with checkLimit). */
export async function recordHit(db: Kysely<DB>, bucket: string, now = Date.now()): Promise<void> {
  await db.insertInto("rate_limit_hits").values({ id: randomUUID(), bucket, at: now }).execute();
}

/** Forgets hits older than `maxWindowMs`: no limit looks back further. */
export async function pruneHits(db: Kysely<DB>, maxWindowMs: number, now = Date.now()): Promise<void> {
  await db.deleteFrom("rate_limit_hits").where("at", "<=", now - maxWindowMs).execute();
}

async function countHits(db: Kysely<DB>, limit: Limit, now: number): Promise<number> {
  const r = await db.selectFrom("rate_limit_hits").select((eb) => eb.fn.countAll<number>().as("n"))
    .where("bucket", "=", limit.bucket).where("at", ">", now - limit.windowMs).executeTakeFirstOrThrow();
  return Number(r.n);
}

/** How long until the bucket has room for one more: when enough of its oldest hits leave the window. */
async function retryAfter(db: Kysely<DB>, limit: Limit, now: number): Promise<number> {
  const hits = await db.selectFrom("rate_limit_hits").select("at")
    .where("bucket", "=", limit.bucket).where("at", ">", now - limit.windowMs)
    .orderBy("at").execute();
  // Room for one more needs at most max - 1 hits left in the window.
  const mustExpire = hits.length - (limit.max - 1);
  if (mustExpire <= 0) return 0;
  const last = hits[mustExpire - 1]!;
  return Math.max(1000, Number(last.at) + limit.windowMs - now);
}
