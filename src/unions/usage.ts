import type { Kysely } from "kysely";
import type { DB } from "../db/schema.ts";

export interface ServerUsage {
  readonly unions: number;
  /** Unions created or publishing a call-to-action in the last 30 days. */
  readonly activeMonth: number;
  /** The same over 180 days. */
  readonly activeHalfyear: number;
  /** Calls-to-action published (and not retracted), across all unions. */
  readonly posts: number;
}

const DAY_MS = 86_400_000;

/** What NodeInfo reports, counted from the database: four small aggregate queries. */
export async function serverUsage(db: Kysely<DB>, now = Date.now()): Promise<ServerUsage> {
  const count = (n: { n: number | string | bigint } | undefined) => Number(n?.n ?? 0);
  const activeSince = async (since: number) => count(await db.selectFrom("unions")
    .select((e) => e.fn.countAll<number>().as("n"))
    .where((e) => e.or([
      e("created_at", ">=", since),
      e.exists(e.selectFrom("actions").select("actions.id")
        .whereRef("actions.union_id", "=", "unions.id")
        .where("actions.published_at", ">=", since)),
    ]))
    .executeTakeFirst());
  const [unions, activeMonth, activeHalfyear, posts] = await Promise.all([
    db.selectFrom("unions").select((e) => e.fn.countAll<number>().as("n")).executeTakeFirst().then(count),
    activeSince(now - 30 * DAY_MS),
    activeSince(now - 180 * DAY_MS),
    db.selectFrom("actions").select((e) => e.fn.countAll<number>().as("n")).where("state", "=", "published").executeTakeFirst().then(count),
  ]);
  return { unions, activeMonth, activeHalfyear, posts };
}
