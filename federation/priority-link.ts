import { type Kysely, sql } from "kysely";
import type pg from "pg";
import type { DB } from "../src/db/schema.ts";
import { logger } from "../src/logging.ts";
import type { LanePriority } from "./queue-priority.ts";
import { listenBusy, poolTag, PRIORITY_QUEUE } from "./shared-listen.ts";

const log = logger("queue", "priority");

/**
 * A process's interactive work only holds back bulk lanes in other
 * processes while a fan-out is draining somewhere: a bulk lane's heartbeat
 * (lane-share.ts, sent while it has messages in flight) was heard this
 * recently. Otherwise nothing is announced, so a join storm with no
 * fan-out sends no NOTIFY of this kind at all.
 */
const BULK_RECENT_MS = 3000;

const linked = new WeakMap<LanePriority, pg.Pool>();

/**
 * Links a process's lane priority (queue-priority.ts) to the others' on the
 * same PostgreSQL database, through the pool's one LISTEN connection
 * (shared-listen.ts): when this process starts handling interactive work
 * while a fan-out drains, a NOTIFY tells the other processes, whose bulk
 * lanes then yield to it as they yield to their own; when it is done,
 * another NOTIFY lets them go on. Once per priority.
 */
export function linkPriority(priority: LanePriority, pool: pg.Pool, db: Kysely<DB>, channel: string): void {
  if (linked.get(priority) === pool) return;
  linked.set(priority, pool);
  const from = poolTag(pool);
  // MUSTER_QUEUE_TRACE=1: what this process heard and how its bulk lanes waited (bench/under-fanout.ts prints the last).
  if (process.env.MUSTER_QUEUE_TRACE === "1") setInterval(() => process.stderr.write(`TRACEPRIO ${process.pid} ${JSON.stringify(priority.stats)}\n`), 2000).unref();
  const busy = listenBusy(pool, channel, (peer, isBusy) => priority.heard(peer, isBusy));
  /** Whether the last thing said was busy: then its end is said too, fan-out or not. */
  let said = false;
  priority.announceTo((isBusy) => {
    if (isBusy ? performance.now() - busy.bulkAt() > BULK_RECENT_MS : !said) return;
    said = isBusy;
    const payload = JSON.stringify({ queue: PRIORITY_QUEUE, at: 0, from, busy: isBusy });
    void sql`select pg_notify(${channel}, ${payload})`.execute(db).catch((error: unknown) => {
      // Other processes' bulk work then goes on (or stops waiting after its cap).
      log.warn("Could not announce interactive work to other processes: {error}", { error: String(error) });
    });
  });
}
