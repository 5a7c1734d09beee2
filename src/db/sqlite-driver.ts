import type SQLite from "better-sqlite3";
import {
  CompiledQuery,
  type DatabaseConnection,
  type DatabaseIntrospector,
  type Dialect,
  type DialectAdapter,
  type Driver,
  type Kysely,
  type QueryCompiler,
  type QueryResult,
  SqliteAdapter,
  SqliteIntrospector,
  SqliteQueryCompiler,
} from "kysely";

/*
 * SQLite without freezing the process
 * -----------------------------------
 * better-sqlite3 is synchronous, and its busy_timeout waits for another
 * process's write lock synchronously: with an operator's `sqlite3` or a
 * second `muster` command holding a write transaction, the whole event loop
 * stopped (/healthz took 12.8 s) and then writes failed with "database is
 * locked". Here busy_timeout is 0 and SQLITE_BUSY is retried on timers, so
 * the loop keeps running while a write waits; past BUSY_WAIT_MS it fails with
 * DatabaseBusyError (the web answers 503 + Retry-After; nothing was written,
 * the statement or BEGIN IMMEDIATE never ran).
 *
 * One connection, as before (a second one brought snapshot and ordering
 * surprises for no gain: WAL lets this connection read while another process
 * holds the write lock). Sharing it takes two rules:
 * - writes and transactions go one at a time, in arrival order (FIFO lock),
 *   and the lock is kept from the first write until the connection leaves
 *   its transaction, across awaits, since a transaction spans them;
 * - a read from anyone else runs at once unless the connection is inside a
 *   transaction (it would see uncommitted rows), so it never queues behind a
 *   write that is only waiting for another process's lock.
 */

/** How long a statement waits for another process's lock before failing with DatabaseBusyError. */
export const BUSY_WAIT_MS = 10_000;

/** Another process held the SQLite lock for too long; nothing was written, and the same request can be sent again. */
export class DatabaseBusyError extends Error {
  readonly retryAfterSeconds: number;
  constructor(waitedMs: number, options?: ErrorOptions) {
    super(`The database is locked by another process (waited ${Math.round(waitedMs / 1000)} s); try again shortly`, options);
    this.name = "DatabaseBusyError";
    this.retryAfterSeconds = 5;
  }
}

const isBusy = (e: unknown) => typeof (e as { code?: unknown } | null)?.code === "string" && (e as { code: string }).code.startsWith("SQLITE_BUSY");

// sqlite3_stmt_readonly() is true for these, yet they move the connection in
// or out of a transaction, so they take the write path.
const TRANSACTION_CONTROL = /^\s*(begin|commit|end|rollback|savepoint|release)\b/i;

/** Runs `run` until it does not fail with SQLITE_BUSY, waiting on timers (and for `ready`) between tries. */
async function retryBusy<T>(run: () => T, waitMs: number, ready?: () => Promise<void> | undefined, started = Date.now()): Promise<T> {
  let delay = 1;
  for (;;) {
    // Checked again after every wait: another transaction may have begun
    // meanwhile, and `run` must start with none open.
    for (let waiting = ready?.(); waiting; waiting = ready?.()) await waiting;
    try {
      return run();
    } catch (e) {
      if (!isBusy(e)) throw e;
      if (Date.now() - started >= waitMs) throw new DatabaseBusyError(Date.now() - started, { cause: e });
      await new Promise((r) => setTimeout(r, delay));
      delay = Math.min(delay * 2, 50);
    }
  }
}

function run(stmt: SQLite.Statement, parameters: unknown[]): QueryResult<unknown> {
  if (stmt.reader) return { rows: stmt.all(parameters) };
  const { changes, lastInsertRowid } = stmt.run(parameters);
  return {
    insertId: lastInsertRowid != null ? BigInt(lastInsertRowid) : undefined,
    numAffectedRows: changes != null ? BigInt(changes) : undefined,
    rows: [],
  };
}

/** A prepared statement, and whether it is a read that may run outside the write lock (not a transaction's BEGIN, COMMIT, SAVEPOINT...). */
interface PreparedEntry {
  readonly stmt: SQLite.Statement;
  readonly plainRead: boolean;
}

/** FIFO: lock() resolves to a release function once every earlier holder released. */
class FifoLock {
  #tail: Promise<void> = Promise.resolve();
  lock(): Promise<() => void> {
    let release!: () => void;
    const released = new Promise<void>((r) => release = r);
    const ready = this.#tail.then(() => release);
    this.#tail = this.#tail.then(() => released);
    return ready;
  }
}

/** What Kysely holds between acquireConnection and releaseConnection: one user's view of the shared connection. */
class SessionConnection implements DatabaseConnection {
  readonly #driver: NonBlockingSqliteDriver;
  #release: (() => void) | undefined;
  constructor(driver: NonBlockingSqliteDriver) {
    this.#driver = driver;
  }

  async executeQuery<R>(query: CompiledQuery): Promise<QueryResult<R>> {
    const driver = this.#driver;
    const parameters = query.parameters as unknown[];
    // Prepared (or found prepared) synchronously: no timer, promise or closure
    // for it (a join runs about twenty statements; their promises were a good
    // part of its garbage), and every statement reaches the write lock's FIFO
    // after as many turns as any other, so writes keep their call order.
    // SQLITE_BUSY on a first try goes to retryBusy as before.
    let entry = driver.cached(query.sql);
    if (entry === undefined) {
      try {
        entry = driver.prepareEntry(query.sql);
      } catch (e) {
        if (!isBusy(e)) throw e;
        entry = await retryBusy(() => driver.prepareEntry(query.sql), driver.waitMs);
      }
    }
    const { stmt, plainRead } = entry;
    if (!this.#release && plainRead) {
      if (driver.outsideTransaction() === undefined) {
        try {
          return run(stmt, parameters) as QueryResult<R>;
        } catch (e) {
          if (!isBusy(e)) throw e;
        }
      }
      return retryBusy(() => run(stmt, parameters), driver.waitMs, () => driver.outsideTransaction()) as Promise<QueryResult<R>>;
    }
    // The wait counts from arrival, time in the FIFO included: otherwise each
    // write queued behind others waiting out the lock would add a full wait.
    const arrived = Date.now();
    this.#release ??= await driver.writeLock.lock();
    try {
      try {
        return run(stmt, parameters) as QueryResult<R>;
      } catch (e) {
        if (!isBusy(e)) throw e;
      }
      return await retryBusy(() => run(stmt, parameters), driver.waitMs, undefined, arrived) as QueryResult<R>;
    } finally {
      this.settle();
    }
  }

  /** Keeps the write lock while the connection is in a transaction, gives it back when not. */
  settle(): void {
    if (this.#driver.sqlite.inTransaction) {
      this.#driver.transactionOpened();
    } else if (this.#release) {
      this.#driver.transactionEnded();
      this.#release();
      this.#release = undefined;
    }
  }

  /**
   * A session that left its transaction open (a raw BEGIN without COMMIT) is
   * rolled back rather than handing its uncommitted rows to the next user.
   */
  async close(): Promise<void> {
    if (this.#release && this.#driver.sqlite.inTransaction) {
      try {
        this.#driver.sqlite.exec("rollback");
      } catch { /* settle still frees the lock */ }
    }
    this.settle();
  }

  async *streamQuery<R>(): AsyncIterableIterator<QueryResult<R>> {
    throw new Error("Muster does not stream SQLite queries");
  }
}

class NonBlockingSqliteDriver implements Driver {
  readonly sqlite: SQLite.Database;
  readonly waitMs: number;
  readonly writeLock = new FifoLock();
  #transaction: { done: Promise<void>; end: () => void } | undefined;
  // Kysely compiles the same few hundred statements over and over; preparing
  // each again cost about a tenth of a join's SQL time (issue 16 profile).
  // SQLite re-prepares a cached statement itself after a schema change.
  readonly #statements = new Map<string, PreparedEntry>();

  constructor(sqlite: SQLite.Database, waitMs: number) {
    this.sqlite = sqlite;
    this.waitMs = waitMs;
  }

  /** The statement for this text, if prepared already. */
  cached(sqlText: string): PreparedEntry | undefined {
    return this.#statements.get(sqlText);
  }

  prepareEntry(sqlText: string): PreparedEntry {
    let entry = this.#statements.get(sqlText);
    if (entry) return entry;
    const stmt = this.sqlite.prepare(sqlText);
    entry = { stmt, plainRead: stmt.readonly && !TRANSACTION_CONTROL.test(sqlText) };
    // Statements with literal values inlined would grow the map without bound.
    if (this.#statements.size >= STATEMENT_CACHE_SIZE) this.#statements.delete(this.#statements.keys().next().value!);
    this.#statements.set(sqlText, entry);
    return entry;
  }

  /** Resolves at once when the connection is not inside a transaction, else when it leaves it. */
  outsideTransaction(): Promise<void> | undefined {
    return this.#transaction?.done;
  }
  transactionOpened(): void {
    if (this.#transaction) return;
    let end!: () => void;
    const done = new Promise<void>((r) => end = r);
    this.#transaction = { done, end };
  }
  transactionEnded(): void {
    this.#transaction?.end();
    this.#transaction = undefined;
  }

  async init(): Promise<void> {}
  async acquireConnection(): Promise<DatabaseConnection> {
    return new SessionConnection(this);
  }
  async beginTransaction(connection: DatabaseConnection): Promise<void> {
    // IMMEDIATE takes the write lock up front: a transaction that reads
    // before it writes would otherwise fail on the lock upgrade, which
    // cannot be retried without redoing the reads.
    await connection.executeQuery(CompiledQuery.raw("begin immediate"));
  }
  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw("commit"));
  }
  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    await connection.executeQuery(CompiledQuery.raw("rollback"));
  }
  async releaseConnection(connection: DatabaseConnection): Promise<void> {
    await (connection as SessionConnection).close();
  }
  async destroy(): Promise<void> {
    this.sqlite.close();
  }
}

const STATEMENT_CACHE_SIZE = 1000;

/** Kysely's own mutex would make every read wait for a waiting write; the driver orders things itself. */
class SharedSqliteAdapter extends SqliteAdapter {
  override get supportsMultipleConnections(): boolean {
    return true;
  }
}

/** A Kysely dialect over one better-sqlite3 connection that never blocks the event loop on another process's lock. */
export class NonBlockingSqliteDialect implements Dialect {
  readonly #sqlite: SQLite.Database;
  readonly #waitMs: number;
  constructor(sqlite: SQLite.Database, waitMs = BUSY_WAIT_MS) {
    this.#sqlite = sqlite;
    this.#waitMs = waitMs;
  }
  createDriver(): Driver {
    return new NonBlockingSqliteDriver(this.#sqlite, this.#waitMs);
  }
  createQueryCompiler(): QueryCompiler {
    return new SqliteQueryCompiler();
  }
  createAdapter(): DialectAdapter {
    return new SharedSqliteAdapter();
  }
  createIntrospector(db: Kysely<any>): DatabaseIntrospector {
    return new SqliteIntrospector(db);
  }
}
