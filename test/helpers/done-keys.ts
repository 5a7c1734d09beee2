import { type Kysely, type RawBuilder, sql } from "kysely";
import { compactKey, storedKey } from "../../federation/kysely-message-queue.ts";

export { storedKey };

/**
 * fedify_mq.dedupe_key as text, for `like`: the key itself on SQLite, its
 * uuid on PostgreSQL (migration 0088).
 */
export const dedupeText: RawBuilder<string> = sql<string>`cast(dedupe_key as text)`;

/**
 * A `like` pattern matching the done keys of an activity's deliveries: on
 * SQLite "<activity id> %", on PostgreSQL the 8 hex digits its compact keys
 * start with (compactKey: the hash of the key's first word).
 */
export function deliveriesOf(db: Kysely<any>, activityId: string): string {
  return storedKey(db, activityId) === activityId ? `${activityId} %` : `${compactKey(activityId).slice(0, 8)}-%`;
}
