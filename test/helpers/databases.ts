import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { type Database, openDatabase } from "../../src/db/database.ts";
import { migrateToLatest } from "../../src/db/migrate.ts";

export interface TestDatabase {
  readonly url: string;
  /** Opens another connection to the same database (a second process would). */
  open(): Database;
  /** Drops the database (PostgreSQL) or removes its directory (SQLite). */
  destroy(): Promise<void>;
}

export interface DialectCase {
  readonly name: "sqlite" | "postgres";
  /** A reason to skip, reported by node:test, never a silent pass. */
  readonly skip: string | false;
  create(): Promise<TestDatabase>;
}

const PG_URL = process.env.TEST_DATABASE_URL;

/** Every storage and federation test runs once per dialect in this list. */
export const dialects: readonly DialectCase[] = [
  { name: "sqlite", skip: false, create: createSqlite },
  {
    name: "postgres",
    skip: PG_URL ? false : "TEST_DATABASE_URL is not set, so PostgreSQL tests are skipped",
    create: createPostgres,
  },
];

async function createSqlite(): Promise<TestDatabase> {
  const dir = mkdtempSync(join(tmpdir(), "muster-test-"));
  const url = `sqlite:${join(dir, "muster.sqlite")}`;
  const first = openDatabase(url);
  await migrateToLatest(first.db);
  await first.close();
  return {
    url,
    open: () => openDatabase(url),
    destroy: async () => rmSync(dir, { recursive: true, force: true }),
  };
}

async function createPostgres(): Promise<TestDatabase> {
  if (!PG_URL) throw new Error("TEST_DATABASE_URL is not set");
  const name = `muster_test_${randomBytes(6).toString("hex")}`;
  const admin = new pg.Client({ connectionString: PG_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(PG_URL);
  url.pathname = `/${name}`;
  const first = openDatabase(url.href);
  await migrateToLatest(first.db);
  await first.close();
  return {
    url: url.href,
    open: () => openDatabase(url.href, { poolSize: 5 }),
    destroy: async () => {
      const c = new pg.Client({ connectionString: PG_URL });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}
