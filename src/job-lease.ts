import type { Kysely } from "kysely";
import type { DB } from "./db/schema.ts";

/**
 * Claims (or renews) the lease on a scheduled job, so several workers
 * running the same schedule do the work once: the claim is a conditional
 * update, which only one of two racing workers wins. The holder renews on
 * each pass; when it dies, another takes over once the lease expires.
 */
export async function claimLease(db: Kysely<DB>, name: string, holder: string, ttlMs: number, now = Date.now()): Promise<boolean> {
  await db.insertInto("job_leases").values({ name, holder, expires_at: 0 }).onConflict((oc) => oc.column("name").doNothing()).execute();
  const r = await db.updateTable("job_leases").set({ holder, expires_at: now + ttlMs })
    .where("name", "=", name)
    .where((eb) => eb.or([eb("holder", "=", holder), eb("expires_at", "<", now)]))
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}
