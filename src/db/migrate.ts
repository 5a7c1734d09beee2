import { readdir } from "node:fs/promises";
import { pathToFileURL } from "node:url";
import type { Kysely } from "kysely";
import { type Migration, type MigrationProvider, type MigrationResultSet, Migrator } from "kysely/migration";

const MIGRATIONS_DIR = new URL("../../migrations/", import.meta.url);

/** Numbered files in migrations/ are migrations; helpers beside them are not. */
const provider: MigrationProvider = {
  async getMigrations() {
    const files = (await readdir(MIGRATIONS_DIR)).filter((f) => /^\d{4}_.*\.ts$/.test(f)).sort();
    const out: Record<string, Migration> = {};
    for (const f of files) {
      out[f.replace(/\.ts$/, "")] = (await import(pathToFileURL(new URL(f, MIGRATIONS_DIR).pathname).href)) as Migration;
    }
    return out;
  },
};

export async function migrateToLatest(db: Kysely<any>): Promise<MigrationResultSet> {
  const result = await new Migrator({ db, provider }).migrateToLatest();
  if (result.error) {
    const failed = result.results?.find((r) => r.status === "Error")?.migrationName ?? "unknown";
    const msg = result.error instanceof Error ? result.error.message : String(result.error);
    throw new Error(`migration ${failed} failed: ${msg}`);
  }
  return result;
}

/** Migrates up or down to the named migration (tests of a migration's effect on existing rows). */
export async function migrateTo(db: Kysely<any>, target: string): Promise<MigrationResultSet> {
  const result = await new Migrator({ db, provider }).migrateTo(target);
  if (result.error) throw result.error instanceof Error ? result.error : new Error(String(result.error));
  return result;
}
