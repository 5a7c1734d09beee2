import type { Kysely } from "kysely";
import type { DB } from "./schema.ts";

/** Bumped by triggers on every change to what the actor, WebFinger and NodeInfo documents show (migration 0018). */
export async function documentsVersion(db: Kysely<DB>): Promise<string> {
  const row = await db.selectFrom("document_versions").select("version").where("scope", "=", "documents").executeTakeFirst();
  return String(row?.version ?? 0);
}
