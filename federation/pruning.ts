import { type Kysely, PostgresAdapter, sql } from "kysely";
import type { DB } from "../src/db/schema.ts";
import { logger } from "../src/logging.ts";
import { ACTIVITY_ID_RETENTION_MS } from "../src/replay-window.ts";
import { pruneExpired as pruneSessions } from "../src/sessions/sessions.ts";
import { pruneJoinClaims } from "../src/members/invites.ts";

const log = logger("pruning");

/** How often the workers prune; each run deletes in chunks, so it never holds the write lock long. */
export const PRUNE_INTERVAL_MS = 10 * 60_000;
/** Rows per delete statement: SQLite has one writer, and a join's Accept must not wait behind a million-row delete. */
const CHUNK = 5000;
/** A claim on an inbox activity is a five-minute lease; one an hour past it belongs to a process that died. */
const DEAD_CLAIM_MS = 3600_000;
/** Wallet challenges a day past expiry (each one is a row per "link my wallet" click, kept forever before). */
const SPENT_CHALLENGE_MS = 24 * 3600_000;

export interface PruneDeps {
  readonly db: Kysely<DB>;
  /** Finished-delivery keys and unreferenced activity payloads of the queue (KyselyMessageQueue.pruneDone). */
  readonly pruneQueue: (now: number) => Promise<number>;
}

export type PruneReport = Record<string, number | "failed">;

/**
 * Deletes what no longer protects anything: processed inbox activity ids past
 * the replay window, dead inbox claims, spent join claims, expired sessions
 * and sign-in links, the queue's finished-delivery keys and expired wallet
 * challenges. Each step runs even when another fails; a failure is logged
 * with its table (a prune that keeps failing lets a table grow without bound,
 * which someone must see).
 */
export async function pruneStorage(deps: PruneDeps, now = Date.now()): Promise<PruneReport> {
  const steps: [string, () => Promise<number>][] = [
    ["inbox_activities", () => pruneInboxActivities(deps.db, now - ACTIVITY_ID_RETENTION_MS)],
    ["inbox_claims", () => chunked(deps.db, "inbox_claims", "id", "claimed_until", now - DEAD_CLAIM_MS)],
    ["join_claims", () => pruneJoinClaims(deps.db, now)],
    ["sessions and sign-in links", async () => (await pruneSessions(deps.db, now), 0)],
    ["queue done keys", () => deps.pruneQueue(now)],
    // A spent or expired wallet challenge proves nothing more: the link keeps its own copy of the signed text.
    ["wallet challenges", () => chunked(deps.db, "wallet_challenges", "nonce", "expires_at", now - SPENT_CHALLENGE_MS)],
  ];
  const report: PruneReport = {};
  for (const [what, step] of steps) {
    try {
      report[what] = await step();
    } catch (error) {
      report[what] = "failed";
      log.error("Pruning {what} failed: {error}", { what, error });
    }
  }
  log.debug("Pruned {report}", { report });
  return report;
}

/**
 * Processed activity ids older than the retention. A Follow's record is what
 * tells an old Undo from a current one once the member rejoined
 * (inbox-membership.ts staleFollowGuard), so it goes only while it is still
 * the member's current Follow (members.follow_id holds it); the moment it
 * stops being that, migration 0047's trigger records it again, and such a
 * record stays.
 */
async function pruneInboxActivities(db: Kysely<DB>, before: number): Promise<number> {
  // members.follow_id is stored relative to the actor's origin when it is on it (migration 0058,
  // src/members/members.ts followIdOf); i.actor = m.actor_id, so the origin is i.actor's.
  const instr = db.getExecutor().adapter instanceof PostgresAdapter ? sql.raw("strpos") : sql.raw("instr");
  const scheme = sql`${instr}(i.actor, '://')`;
  const slash = sql`${instr}(substr(i.actor, ${scheme} + 3), '/')`;
  const originOfActor = sql`(case when ${scheme} = 0 then '' when ${slash} = 0 then i.actor else substr(i.actor, 1, ${scheme} + ${slash} + 1) end)`;
  const others = await chunked(db, "inbox_activities", "id", "received_at", before, "and type <> 'Follow'");
  let follows = 0;
  for (;;) {
    // members_actor_union (actor_id, union_id) finds the member; one per record.
    const r = await sql`delete from inbox_activities where id in (
      select i.id from inbox_activities i where i.received_at < ${before} and i.type = 'Follow'
        and exists (select 1 from members m where m.actor_id = i.actor and m.union_id = i.union_id
          and (m.follow_id = i.id or (substr(m.follow_id, 1, 1) = '/' and i.id = ${originOfActor} || m.follow_id)))
      limit ${CHUNK})`.execute(db);
    const n = Number(r.numAffectedRows ?? 0n);
    follows += n;
    if (n < CHUNK) return others + follows;
  }
}

/** Deletes rows whose `column` is before `before`, CHUNK at a time; returns how many went. */
async function chunked(db: Kysely<DB>, table: string, key: string, column: string, before: number, extra = ""): Promise<number> {
  let total = 0;
  for (;;) {
    const r = await sql`delete from ${sql.table(table)} where ${sql.ref(key)} in (select ${sql.ref(key)} from ${sql.table(table)} where ${sql.ref(column)} < ${before} ${sql.raw(extra)} limit ${CHUNK})`.execute(db);
    const n = Number(r.numAffectedRows ?? 0n);
    total += n;
    if (n < CHUNK) return total;
  }
}
