import type { CompiledQuery, Kysely } from "kysely";
import type { DB } from "./schema.ts";

/** Read on every cached GET (thousands a second): built and compiled once per database, not per read. */
const compiled = new WeakMap<Kysely<DB>, CompiledQuery<{ version: number | string }>>();

/** Bumped by triggers on every change to what the actor, WebFinger and NodeInfo documents show (migration 0018). */
export async function documentsVersion(db: Kysely<DB>): Promise<string> {
  let query = compiled.get(db);
  if (!query) {
    query = db.selectFrom("document_versions").select("version").where("scope", "=", "documents").compile() as CompiledQuery<{ version: number | string }>;
    compiled.set(db, query);
  }
  const row = (await db.executeQuery(query)).rows[0];
  return String(row?.version ?? 0);
}
