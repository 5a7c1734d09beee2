import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import SQLite from "better-sqlite3";
import pg from "pg";
import { Kysely, PostgresDialect } from "kysely";
import { NonBlockingSqliteDialect } from "./sqlite-driver.ts";
import { sqlitePath } from "../config.ts";
import type { DB } from "./schema.ts";
import { logger } from "../logging.ts";

const log = logger("db");

export type Dialect = "sqlite" | "postgres";

export interface Database {
  readonly db: Kysely<DB>;
  readonly dialect: Dialect;
  /** The pg pool when on PostgreSQL (for LISTEN/NOTIFY), else undefined. */
  readonly pgPool?: pg.Pool;
  close(): Promise<void>;
}

// pg returns BIGINT as a string to avoid precision loss; our BIGINTs are epoch
// milliseconds and counters, far below 2^53, so numbers are safe and match SQLite.
pg.types.setTypeParser(pg.types.builtins.INT8, (v) => Number(v));

/**
 * Kysely's SQLite driver prepares every query afresh, and better-sqlite3
 * frees a statement only when the garbage collector finalizes it: under load
 * preparing took 9% of a fan-out's CPU, and heaps of dead statements stalled
 * later queries. Statements are reused by SQL text instead, the least
 * recently used dropped past `size`. Safe because every query runs to
 * completion (all() or run()) before the next one on this connection starts;
 * nothing streams rows.
 */
function reuseStatements(sqlite: SQLite.Database, size = 256): void {
  const cache = new Map<string, SQLite.Statement>();
  const prepare = sqlite.prepare.bind(sqlite);
  sqlite.prepare = ((source: string) => {
    let statement = cache.get(source);
    if (statement) {
      cache.delete(source);
    } else {
      statement = prepare(source);
      if (cache.size >= size) cache.delete(cache.keys().next().value!);
    }
    cache.set(source, statement);
    return statement;
  }) as typeof sqlite.prepare;
}

export function openDatabase(databaseUrl: string, options: { poolSize?: number; busyWaitMs?: number } = {}): Database {
  if (databaseUrl.startsWith("sqlite:")) {
    const file = sqlitePath(databaseUrl);
    if (file !== ":memory:") mkdirSync(dirname(file), { recursive: true });
    const sqlite = new SQLite(file);
    // busy_timeout 0: another process's lock is waited for on timers, not
    // inside better-sqlite3 with the event loop stopped (sqlite-driver.ts).
    // WAL lets this connection read while another process writes.
    sqlite.pragma("busy_timeout = 0");
    sqlite.pragma("journal_mode = WAL");
    sqlite.pragma("synchronous = NORMAL");
    sqlite.pragma("foreign_keys = ON");
    reuseStatements(sqlite);
    const db = new Kysely<DB>({ dialect: new NonBlockingSqliteDialect(sqlite, options.busyWaitMs) });
    return { db, dialect: "sqlite", close: () => db.destroy() };
  }
  const pool = new pg.Pool({ connectionString: databaseUrl, max: options.poolSize ?? 10 });
  // An idle pooled connection that the server ends (a restart, a failover,
  // idle_session_timeout) is reported here; unheard, it would be an uncaught
  // exception that takes the whole process down. The pool replaces it.
  pool.on("error", (error) => log.warn("A pooled PostgreSQL connection failed while idle: {error}", { error: error.message }));
  const db = new Kysely<DB>({ dialect: new PostgresDialect({ pool }) });
  return { db, dialect: "postgres", pgPool: pool, close: () => db.destroy() };
}
