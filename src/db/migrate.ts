import { readdir } from "node:fs/promises";
import { pathToFileURL } from "node:url";
import { type Kysely, PostgresAdapter, sql } from "kysely";
import { type Migration, type MigrationProvider, type MigrationResultSet, Migrator } from "kysely/migration";

const MIGRATIONS_DIR = new URL("../../migrations/", import.meta.url);

/**
 * A migration that shrinks rows in place on SQLite (0069) leaves the slack in
 * the table's pages, which appends never reuse: it may ask for one VACUUM
 * after it ran, which cannot run inside the migration's transaction.
 */
type MigrationModule = Migration & { sqliteVacuumWanted?: (db: Kysely<any>) => Promise<boolean> };

async function loadMigrations(): Promise<Record<string, MigrationModule>> {
  const files = (await readdir(MIGRATIONS_DIR)).filter((f) => /^\d{4}_.*\.ts$/.test(f)).sort();
  const out: Record<string, MigrationModule> = {};
  for (const f of files) {
    out[f.replace(/\.ts$/, "")] = (await import(pathToFileURL(new URL(f, MIGRATIONS_DIR).pathname).href)) as MigrationModule;
  }
  return out;
}

/** Numbered files in migrations/ are migrations; helpers beside them are not. */
const provider: MigrationProvider = { getMigrations: loadMigrations };

export async function migrateToLatest(db: Kysely<any>): Promise<MigrationResultSet> {
  const result = await new Migrator({ db, provider }).migrateToLatest();
  if (result.error) {
    const failed = result.results?.find((r) => r.status === "Error")?.migrationName ?? "unknown";
    const msg = result.error instanceof Error ? result.error.message : String(result.error);
    throw new Error(`migration ${failed} failed: ${msg}`);
  }
  await vacuumIfAsked(db, result);
  return result;
}

/**
 * One VACUUM on SQLite when a migration that just ran asks for it: the
 * operator upgrading gets the space back without a step of their own. It needs
 * free disk as large as the database; when it fails (disk full), the data is
 * untouched and the file keeps its size, so the server starts anyway and says
 * how to do it by hand.
 */
async function vacuumIfAsked(db: Kysely<any>, result: MigrationResultSet): Promise<void> {
  if (db.getExecutor().adapter instanceof PostgresAdapter) return;
  const ran = (result.results ?? []).filter((r) => r.status === "Success" && r.direction === "Up").map((r) => r.migrationName);
  if (ran.length === 0) return;
  const modules = await loadMigrations();
  const asking: string[] = [];
  for (const name of ran) if (await modules[name]?.sqliteVacuumWanted?.(db)) asking.push(name);
  if (asking.length === 0) return;
  const mib = async () => {
    const r = (await sql<{ p: number; s: number }>`select page_count as p, page_size as s from pragma_page_count(), pragma_page_size()`.execute(db)).rows[0]!;
    return (Number(r.p) * Number(r.s)) / 2 ** 20;
  };
  const before = await mib();
  const started = performance.now();
  try {
    await sql`vacuum`.execute(db);
    console.warn(`after migration ${asking.join(", ")}: VACUUM gave the space back, ${before.toFixed(1)} → ${(await mib()).toFixed(1)} MiB in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  } catch (error) {
    const msg = error instanceof Error ? error.message : String(error);
    console.warn(`after migration ${asking.join(", ")}: VACUUM failed (${msg}); nothing is lost, but the file keeps its size (${before.toFixed(1)} MiB) until a VACUUM is run with the server stopped (README, Disk)`);
  }
}

/** Migrates up or down to the named migration (tests of a migration's effect on existing rows). */
export async function migrateTo(db: Kysely<any>, target: string): Promise<MigrationResultSet> {
  const result = await new Migrator({ db, provider }).migrateTo(target);
  if (result.error) throw result.error instanceof Error ? result.error : new Error(String(result.error));
  return result;
}
