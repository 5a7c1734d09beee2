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
  const opened = new Set<Database>();
  return {
    url: url.href,
    open: () => {
      const database = openDatabase(url.href, { poolSize: 5 });
      opened.add(database);
      return {
        ...database,
        close: async () => {
          opened.delete(database);
          await database.close();
        },
      };
    },
    destroy: async () => {
      // A test that forgot to close what it opened would otherwise have its
      // connections killed under it.
      for (const database of opened) await database.close();
      opened.clear();
      const c = new pg.Client({ connectionString: PG_URL });
      await c.connect();
      try {
        await untilDisconnected(c, name);
        // No FORCE: with every client gone, a connection made since is a leak
        // and must fail the test rather than be killed mid-query.
        await c.query(`DROP DATABASE IF EXISTS ${name}`);
      } finally {
        await c.end();
      }
    },
  };
}

/**
 * Waits until no client is connected to the database any more. pg's
 * Pool.end() resolves as soon as it has asked its connections to close, not
 * once they have: a DROP ... WITH (FORCE) right after it terminated a backend
 * still saying goodbye, whose "terminating connection due to administrator
 * command" then reached the pool (which has no error listener) as an
 * uncaught exception in whichever test had opened it.
 */
async function untilDisconnected(c: pg.Client, name: string, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    // Autovacuum workers are not ours; DROP DATABASE stops them itself.
    const { rows } = await c.query<{ pid: number; state: string | null; query: string }>(
      "SELECT pid, state, query FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'",
      [name],
    );
    if (rows.length === 0) return;
    if (Date.now() > until) {
      const who = rows.map((r) => `pid ${r.pid} (${r.state ?? "?"}, last: ${r.query.slice(0, 80)})`).join("; ");
      throw new Error(`test database ${name} is still in use ${timeoutMs} ms after every pool was closed, so it was not dropped: ${who}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}
