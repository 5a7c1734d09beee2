import type SQLite from "better-sqlite3";
import {
  CompiledQuery,
  type DatabaseConnection,
  type DatabaseIntrospector,
  type DialectAdapter,
  type Driver,
  type Kysely,
  type QueryCompiler,
  type QueryResult,
  SelectQueryNode,
  SqliteAdapter,
  SqliteIntrospector,
  SqliteQueryCompiler,
} from "kysely";
import type { Dialect } from "kysely";

/*
 * SQLite without freezing the process
 * -----------------------------------
 * better-sqlite3 is synchronous, and busy_timeout waits for another
 * process's write lock synchronously: with an operator's `sqlite3` or a
 * second `muster` command holding a write transaction, the whole event loop
 * stopped (/healthz took 12.8 s) and then writes failed with "database is
 * locked". Here busy_timeout is 0 and SQLITE_BUSY is retried on a timer with
 * backoff, so the loop keeps running while a write waits; past
 * BUSY_WAIT_MS the write fails with DatabaseBusyError, which the web answers
 * with 503 and Retry-After (nothing is half-written: the statement or
 * BEGIN IMMEDIATE did not run).
 *
 * Reads must not queue behind a waiting write, so there are two connections
 * to the file: plain SELECTs outside a transaction run on a reader (WAL lets
 * it read beside any writer), everything else on the writer, one user at a
 * time (a transaction spans awaits). `:memory:` has one connection, being
 * one database per connection.
 */

/** How long a write waits for another process's lock before failing with DatabaseBusyError. */
export const BUSY_WAIT_MS = 10_000;

export class DatabaseBusyError extends Error {
  readonly retryAfterSeconds: number;
  constructor(waitedMs: number, options?: ErrorOptions) {
    super(`The database is locked by another process (waited ${Math.round(waitedMs / 1000)} s); try again shortly`, options);
    this.name = "DatabaseBusyError";
    this.retryAfterSeconds = 5;
  }
}

const isBusy = (e: unknown) => typeof (e as { code?: unknown })?.code === "string" && (e as { code: string }).code.startsWith("SQLITE_BUSY");

/** Runs `run` until it does not fail with SQLITE_BUSY, waiting on timers between tries. */
async function retryBusy<T>(run: () => T, waitMs: number): Promise<T> {
  const started = Date.now();
  let delay = 2;
  for (;;) {
    try {
      return run();
    } catch (e) {
      if (!isBusy(e)) throw e;
      if (Date.now() - started >= waitMs) throw new DatabaseBusyError(Date.now() - started, { cause: e });
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 100);
    }
  }
}

function execute(db: SQLite.Database, query: CompiledQuery): QueryResult<unknown> {
  const stmt = db.prepare(query.sql);
  const parameters = query.parameters as unknown[];
  if (stmt.reader) return { rows: stmt.all(parameters) };
  const { changes, lastInsertRowid } = stmt.run(parameters);
  return {
    insertId: lastInsertRowid != null ? BigInt(lastInsertRowid) : undefined,
    numAffectedRows: changes != null ? BigInt(changes) : undefined,
    rows: [],
  };
}

/** One user of the writer at a time, in arrival order. */
class Mutex {
  #tail: Promise<void> = Promise.resolve();
  lock(): Promise<() => void> {
    let release!: () => void;
    const next = new Promise<void>((r) => release = r);
    const ready = this.#tail.then(() => release);
    this.#tail = this.#tail.then(() => next);
    return ready;
  }
}

/** What Kysely holds between acquireConnection and releaseConnection: a reader until it writes. */
class SessionConnection implements DatabaseConnection {
  readonly #driver: TwoConnectionDriver;
  #release: (() => void) | undefined;
  constructor(driver: TwoConnectionDriver) {
    this.#driver = driver;
  }
  async takeWriter(): Promise<void> {
    this.#release ??= await this.#driver.writerLock.lock();
  }
  releaseWriter(): void {
    this.#release?.();
    this.#release = undefined;
  }
  async executeQuery<R>(query: CompiledQuery): Promise<QueryResult<R>> {
    if (!this.#release && SelectQueryNode.is(query.query)) {
      return retryBusy(() => execute(this.#driver.reader, query), this.#driver.waitMs) as Promise<QueryResult<R>>;
    }
    await this.takeWriter();
    return retryBusy(() => execute(this.#driver.writer, query), this.#driver.waitMs) as Promise<QueryResult<R>>;
  }
  streamQuery<R>(): AsyncIterableIterator<QueryResult<R>> {
    throw new Error("Muster does not stream SQLite queries");
  }
}

class TwoConnectionDriver implements Driver {
  readonly writer: SQLite.Database;
  readonly reader: SQLite.Database;
  readonly writerLock = new Mutex();
  readonly waitMs: number;
  constructor(writer: SQLite.Database, reader: SQLite.Database, waitMs: number) {
    this.writer = writer;
    this.reader = reader;
    this.waitMs = waitMs;
  }
  async init(): Promise<void> {}
  async acquireConnection(): Promise<DatabaseConnection> {
    return new SessionConnection(this);
  }
  async beginTransaction(connection: DatabaseConnection): Promise<void> {
    // IMMEDIATE takes the write lock up front: a transaction that reads
    // before it writes would otherwise fail on the lock upgrade.
    await connection.executeQuery(CompiledQuery.raw("begin immediate"));
  }
  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw("commit"));
  }
  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw("rollback"));
  }
  async releaseConnection(connection: DatabaseConnection): Promise<void> {
    (connection as SessionConnection).releaseWriter();
  }
  async destroy(): Promise<void> {
    if (this.reader !== this.writer) this.reader.close();
    this.writer.close();
  }
}

class ConcurrentSqliteAdapter extends SqliteAdapter {
  override get supportsMultipleConnections(): boolean {
    return true;
  }
}

/** A Kysely dialect over a writer and a reader connection to one SQLite file; see the comment above. */
export class NonBlockingSqliteDialect implements Dialect {
  readonly #writer: SQLite.Database;
  readonly #reader: SQLite.Database;
  readonly #waitMs: number;
  constructor(writer: SQLite.Database, reader: SQLite.Database, waitMs = BUSY_WAIT_MS) {
    this.#writer = writer;
    this.#reader = reader;
    this.#waitMs = waitMs;
  }
  createDriver(): Driver {
    return new TwoConnectionDriver(this.#writer, this.#reader, this.#waitMs);
  }
  createQueryCompiler(): QueryCompiler {
    return new SqliteQueryCompiler();
  }
  createAdapter(): DialectAdapter {
    return new ConcurrentSqliteAdapter();
  }
  createIntrospector(db: Kysely<any>): DatabaseIntrospector {
    return new SqliteIntrospector(db);
  }
}
