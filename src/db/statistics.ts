import { type Kysely, PostgresAdapter, sql } from "kysely";
import type { DB } from "./schema.ts";

/**
 * On PostgreSQL, analyzes each of `tables` whose statistics are missing or
 * more than a tenth of whose rows (at least 1,000) changed since they were
 * taken, asked in one statement: autovacuum may be slow or off (as on CI),
 * and a table grown from nothing by a bulk change, planned with the
 * statistics of an empty one, is read by whole-range scans and sorts where
 * an index in order would read a page. Returns the tables it analyzed;
 * SQLite plans without statistics here.
 */
export async function refreshStatistics(db: Kysely<DB>, tables: readonly (keyof DB & string)[]): Promise<string[]> {
  if (!(db.getExecutor().adapter instanceof PostgresAdapter) || tables.length === 0) return [];
  const stale = (await sql<{ name: string }>`select relname as name from pg_stat_user_tables
    where relid in (${sql.join(tables.map((t) => sql`${t}::regclass`))}) and n_mod_since_analyze > greatest(1000, n_live_tup / 10)`.execute(db)).rows.map((r) => r.name);
  for (const t of stale) await sql`analyze ${sql.table(t)}`.execute(db);
  return stale;
}
