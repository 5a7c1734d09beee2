import type { Kysely } from "kysely";
import { prepared } from "./prepared.ts";
import type { DB } from "./schema.ts";

/** Read on every cached GET (thousands a second): built and compiled once per database, not per read. */
const readVersion = prepared<[], { version: number | string }>((db) =>
  db.selectFrom("document_versions").select("version").where("scope", "=", "documents"));

/** Bumped by triggers on every change to what the actor, WebFinger and NodeInfo documents show (migration 0018). */
export async function documentsVersion(db: Kysely<DB>): Promise<string> {
  const row = (await readVersion(db)).rows[0];
  return String(row?.version ?? 0);
}
