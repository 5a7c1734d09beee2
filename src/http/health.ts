import type { Kysely } from "kysely";
import type { DB } from "../db/schema.ts";
import { logger } from "../logging.ts";

const log = logger("http");
/** A check older than this is refreshed (in the background: the answer does not wait for it). */
const FRESH_MS = 1000;
/** A check still unanswered after this long means the database is not answering. */
const STUCK_MS = 5000;

export interface Health {
  readonly ok: boolean;
}

/**
 * /healthz answers from memory: the database's state as last seen, refreshed
 * at most once a second in the background. Querying on every probe made the
 * probe wait behind whatever held the database (a queue transaction, a
 * SQLite writer), so under load it reported the load, not health. Only the
 * very first probe waits for a check.
 */
export function healthMonitor(db: Kysely<DB>, now: () => number = Date.now) {
  let last: { ok: boolean; at: number } | undefined;
  let inFlight: { since: number; done: Promise<void> } | undefined;
  const check = () => {
    const since = now();
    const done = db.selectFrom("unions").select("id").limit(1).execute().then(
      () => {
        last = { ok: true, at: now() };
      },
      (error: unknown) => {
        if (last?.ok !== false) log.error("Health check failed: {error}", { error });
        last = { ok: false, at: now() };
      },
    ).finally(() => {
      inFlight = undefined;
    });
    inFlight = { since, done };
    return done;
  };
  return async (): Promise<Health> => {
    if (!last) await (inFlight?.done ?? check());
    else if (!inFlight && now() - last.at >= FRESH_MS) void check();
    if (inFlight && now() - inFlight.since >= STUCK_MS) return { ok: false };
    return { ok: last!.ok };
  };
}
