import { existsSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";
import SQLite from "better-sqlite3";
import pg from "pg";
import { Kysely, PostgresDialect, sql } from "kysely";
import { Deferred, Pipeline, type PipelinedStatement } from "./pipeline.ts";
import { SqliteCheckpointer } from "./sqlite-checkpointer.ts";
import { NonBlockingSqliteDialect } from "./sqlite-driver.ts";
import { DEFAULT_DB_SYNC, type DbSync, sqlitePath } from "../config.ts";
import type { DB } from "./schema.ts";
import { logger } from "../logging.ts";
import { DatabaseUnavailableError, redactUrl } from "./unavailable.ts";

export { DatabaseUnavailableError };

const log = logger("db");

export type Dialect = "sqlite" | "postgres";

export interface Database {
  readonly db: Kysely<DB>;
  readonly dialect: Dialect;
  /** Most connections this process's pool may open (PostgreSQL); undefined on SQLite. */
  readonly poolSize?: number;
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

const FS_REASONS: Record<string, string> = {
  ENOENT: "its parent directory does not exist",
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  EROFS: "the file system is read-only",
  ENOTDIR: "a part of the path is a file, not a directory",
  ENOSPC: "no space left on the device",
};

/**
 * Creates the directory the SQLite file lives in, one level only (`mkdir`,
 * not `mkdir -p`): the default ./data appears on first start, while a
 * mistyped path fails at once instead of silently growing a tree. Node's
 * recursive mkdir also retries forever on some paths (under /proc), which
 * looked like a hung start-up at 100% CPU.
 */
function ensureSqliteDirectory(file: string): void {
  const dir = dirname(file);
  try {
    mkdirSync(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? "";
    if (code === "EEXIST") return;
    // ENOENT with the parent present: the file system itself (/proc, /sys) has no room for it.
    const reason = code === "ENOENT" && existsSync(dirname(dir)) ? `${dirname(dir)} does not allow new directories` : FS_REASONS[code] ?? (e as Error).message;
    throw new DatabaseUnavailableError(`cannot create the database directory ${dir}: ${reason}`);
  }
}

/** How long opening a SQLite database waits for another process's lock. */
const OPEN_BUSY_MS = 5000;

export function openDatabase(databaseUrl: string, options: { poolSize?: number; busyWaitMs?: number; checkpointThread?: boolean; sync?: DbSync } = {}): Database {
  if (databaseUrl.startsWith("sqlite:")) {
    const file = sqlitePath(databaseUrl);
    let sqlite: SQLite.Database;
    try {
      if (file !== ":memory:") ensureSqliteDirectory(file);
      sqlite = new SQLite(file);
    } catch (e) {
      if (e instanceof DatabaseUnavailableError) throw e;
      throw new DatabaseUnavailableError(`cannot open the SQLite database ${file}: ${(e as Error).message}`);
    }
    // Opening waits for another process's lock (one recovering the WAL after
    // a crash, or holding the database exclusively) up to OPEN_BUSY_MS, inside
    // SQLite: a CLI command or test run while `serve` restarts failed at once
    // with "database is locked". Only here, where nothing else runs yet.
    sqlite.pragma(`busy_timeout = ${OPEN_BUSY_MS}`);
    try {
      // WAL lets this connection read while another process writes.
      sqlite.pragma("journal_mode = WAL");
    } catch (e) {
      sqlite.close();
      throw new DatabaseUnavailableError(`cannot open the SQLite database ${file}: ${(e as Error).message} (another process held it for ${OPEN_BUSY_MS / 1000} s)`);
    }
    // busy_timeout 0 from here on: another process's lock is waited for on
    // timers, not inside better-sqlite3 with the event loop stopped (sqlite-driver.ts).
    sqlite.pragma("busy_timeout = 0");
    // NORMAL in WAL mode: a commit survives the process's crash; the OS's or a power loss may undo the last ones, never half of one (MUSTER_DB_SYNC).
    sqlite.pragma(`synchronous = ${(options.sync ?? DEFAULT_DB_SYNC.sqlite) === "full" ? "FULL" : "NORMAL"}`);
    sqlite.pragma("foreign_keys = ON");
    // 16 MiB of page cache instead of SQLite's 2: a fan-out's queue rows and
    // their random ordering-key and dedupe-key index pages (10^5 deliveries)
    // were read back from the OS for every claim and settle.
    sqlite.pragma("cache_size = -16000");
    reuseStatements(sqlite);
    const db = new Kysely<DB>({ dialect: new NonBlockingSqliteDialect(sqlite, options.busyWaitMs) });
    // Long-running processes (serve, worker) checkpoint the WAL on a thread
    // of their own instead of inside a commit on this one (sqlite-checkpointer.ts).
    const checkpointer = options.checkpointThread && file !== ":memory:" ? new SqliteCheckpointer(sqlite, file) : undefined;
    return {
      db,
      dialect: "sqlite",
      close: async () => {
        await checkpointer?.close();
        await db.destroy();
      },
    };
  }
  const poolSize = options.poolSize ?? 10;
  // Idle connections are kept for 60 s, not pg's 10 s: a worker's pool
  // (its handler slots) went idle between bursts and was opened again, and
  // each new backend cost PostgreSQL its start-up and cold caches (49 new
  // backends in 31 s of the workers benchmark's joins).
  const pool = new pg.Pool({ connectionString: databaseUrl, max: poolSize, idleTimeoutMillis: 60_000, Client: LastResultClient });
  // An idle pooled connection that the server ends (a restart, a failover,
  // idle_session_timeout) is reported here; unheard, it would be an uncaught
  // exception that takes the whole process down. The pool replaces it.
  pool.on("error", (error) => log.warn("A pooled PostgreSQL connection failed while idle: {error}", { error: error.message }));
  // MUSTER_DB_SYNC=normal: commits are answered before their WAL is flushed
  // (synchronous_commit=off, for this pool's sessions only). Queued on each
  // new connection before anything else runs on it; "full" leaves the
  // server's own setting.
  if ((options.sync ?? DEFAULT_DB_SYNC.postgres) === "normal") pool.on("connect", (client) => void client.query("set synchronous_commit = off").catch((error: Error) => log.warn("Could not set synchronous_commit=off on a new PostgreSQL connection (MUSTER_DB_SYNC=normal): {error}", { error: error.message })));
  const db = new Kysely<DB>({ dialect: new PostgresDialect({ pool: retryingConnects(pool) }) });
  return { db, dialect: "postgres", pgPool: pool, poolSize, close: () => db.destroy() };
}

/**
 * A client whose several-statement query (simple protocol, no parameters)
 * answers with its last statement's result, as one statement does: pg
 * answers with an array of results, of which Kysely's driver kept nothing
 * (no rows). It also runs a Pipeline (src/db/pipeline.ts): its statements
 * written at once, answered with the last one's result (or the one it
 * names). Every other query is answered exactly as before.
 *
 * Named (prepared) statements are kept by the server per connection until
 * it closes: past MAX_NAMED_STATEMENTS names on a connection, a statement
 * runs unnamed, so a text that varies cannot grow a backend without bound.
 */
class LastResultClient extends pg.Client {
  readonly #names = new Set<string>();

  /** A transaction's BEGIN not sent yet: it goes out with the transaction's first statement. */
  #beginPending = false;
  /** Between a BEGIN and its COMMIT or ROLLBACK (as sent by Kysely): where a Deferred may wait for the next statement. */
  #inTransaction = false;
  /** Deferred statements (pipeline.ts) waiting for the transaction's next statement. */
  #deferred: Deferred[] = [];

  // pg.Client's query is heavily overloaded; only a promise of an array of results is changed.
  override query(...args: unknown[]): never {
    const first = args[0];
    // Kysely's BEGIN (a bare "begin", no values) is answered at once and sent in one pipeline with the
    // statement after it: a transaction costs a round trip less (every join, every group commit).
    // Whatever follows (COMMIT or ROLLBACK included) runs in it as if BEGIN had been sent alone first.
    if (first === "begin" && !this.#beginPending && (args.length === 1 || (Array.isArray(args[1]) && args[1].length === 0))) {
      this.#beginPending = true;
      this.#inTransaction = true;
      return Promise.resolve({ command: "BEGIN", rowCount: null, rows: [], fields: [] }) as never;
    }
    if (first instanceof Deferred) {
      if (this.#inTransaction) {
        this.#deferred.push(first);
        return Promise.resolve({ command: "DEFERRED", rowCount: null, rows: [], fields: [] }) as never;
      }
      // Nothing to travel with: sent now.
      return this.#pipelined(new Pipeline([first.statement]), [first]).then(() => first.result) as never;
    }
    if ((first === "commit" || first === "rollback") && (args.length === 1 || (Array.isArray(args[1]) && args[1].length === 0))) this.#inTransaction = false;
    if (this.#beginPending || this.#deferred.length > 0) {
      const before: PipelinedStatement[] = this.#beginPending ? [{ text: "begin", values: [] }] : [];
      const deferred = this.#deferred;
      this.#beginPending = false;
      this.#deferred = [];
      before.push(...deferred.map((d) => d.statement));
      const values = Array.isArray(args[1]) ? args[1] as unknown[] : undefined;
      if (first instanceof Pipeline) return this.#pipelined(new Pipeline([...before, ...first.statements], first.answer === undefined ? undefined : before.length + first.answer), deferred) as never;
      if (typeof first === "string" && args.length <= 2) return this.#pipelined(new Pipeline([...before, { text: first, values: values ?? [] }]), deferred) as never;
      const config = first as { name?: unknown; text?: unknown; values?: unknown } | null;
      if (args.length <= 2 && typeof config?.text === "string" && (config.name === undefined || typeof config.name === "string") && (values !== undefined || config.values === undefined || Array.isArray(config.values))) {
        return this.#pipelined(new Pipeline([...before, { text: config.text, values: values ?? (config.values as unknown[] | undefined) ?? [], ...(typeof config.name === "string" ? { name: config.name } : {}) }]), deferred) as never;
      }
      // Any other form: what waits goes first on its own (pg sends queued queries in order);
      // a failure there aborts the transaction, which fails the query after it too.
      void this.#pipelined(new Pipeline(before), deferred).catch(() => {});
    }
    if (first instanceof Pipeline) return this.#pipelined(first) as never;
    if (typeof first === "object" && first !== null && typeof (first as { name?: unknown }).name === "string") args[0] = this.#bounded(first as { name: string; text: string });
    const r = (super.query as (...a: unknown[]) => unknown)(...args);
    if (r instanceof Promise) return r.then((x: unknown) => (Array.isArray(x) && x.length > 0 ? x[x.length - 1] : x)) as never;
    return r as never;
  }

  #bounded<C extends { name: string; text: string }>(config: C): C | Omit<C, "name"> {
    if (this.#names.has(config.name)) return config;
    if (this.#names.size >= MAX_NAMED_STATEMENTS) {
      const { name: _name, ...unnamed } = config;
      return unnamed;
    }
    this.#names.add(config.name);
    return config;
  }

  /**
   * pg's pipeline mode, on only while this pipeline's statements are out:
   * Kysely gives a connection one query at a time, so nothing else is
   * queued on it meanwhile, and every other query takes pg's usual path.
   */
  async #pipelined(p: Pipeline, deferred: readonly Deferred[] = []): Promise<unknown> {
    if (p.statements.length === 0) throw new TypeError("an empty pipeline");
    const query = super.query.bind(this) as (config: unknown) => Promise<unknown>;
    const modes = this as { pipeline: boolean };
    modes.pipeline = true;
    let results: PromiseSettledResult<unknown>[];
    try {
      // pg writes each statement's messages corked, then uncorks (one writev each). Corked around all of
      // them (cork nests), the whole pipeline is one write: on a loaded machine a socket write to the
      // server cost about half a millisecond of this process's CPU (the loopback delivery is charged to it).
      const stream = (this as unknown as { connection: { stream: { cork?(): void; uncork?(): void } } }).connection.stream;
      stream.cork?.();
      let sent: Promise<PromiseSettledResult<unknown>[]>;
      try {
        // pg submits a pipelined statement at once (synchronously): all of them are written below, before uncork.
        // `pipelined` tells statement counters (bench/pg-count.ts, tests) which ones share the first one's round trip.
        sent = Promise.allSettled(p.statements.map((s, i) => {
          const config = s.name === undefined ? { text: s.text } : this.#bounded({ name: s.name, text: s.text });
          return query({ ...config, values: s.values, pipelined: i });
        }));
      } finally {
        stream.uncork?.();
      }
      results = await sent;
    } catch (error) {
      for (const d of deferred) d.reject(error);
      throw error;
    } finally {
      modes.pipeline = false;
    }
    // Each deferred statement's own result (pg's shape is Kysely's QueryResult less numAffectedRows, which no caller reads).
    for (const d of deferred) {
      const r = results[p.statements.indexOf(d.statement)];
      if (r === undefined) d.reject(new Error("a deferred statement was not sent"));
      else if (r.status === "fulfilled") d.resolve(r.value as never);
      else d.reject(r.reason);
    }
    const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed) throw failed.reason;
    // A several-statement simple query among them (after a BEGIN) answers as query() does: its last result.
    const last = (results[p.answer ?? results.length - 1] as PromiseFulfilledResult<unknown>).value;
    return Array.isArray(last) && last.length > 0 ? last[last.length - 1] : last;
  }
}

/** Named statements a connection keeps (LastResultClient); a few dozen texts are hot. */
const MAX_NAMED_STATEMENTS = 200;

/** SQLSTATE 53300: the server (max_connections) or the database (CONNECTION LIMIT) has no slot left. */
const TOO_MANY_CONNECTIONS = "53300";
/** Waits between attempts to open a connection the server refused for want of slots: about 6 s in all. */
const CONNECT_RETRY_MS = [50, 100, 200, 400, 800, 1600, 3000];

/**
 * The pool as Kysely sees it, where a new connection the server refuses for
 * want of slots ("sorry, too many clients already") is tried again a few
 * times, meanwhile taking any connection this pool frees, instead of failing
 * the query. A web process and two workers at the default queue concurrency
 * may hold up to 114 connections, over PostgreSQL's default of 100 (and on a
 * shared server others hold some): the refused queries failed whatever ran
 * them, and one failure that Fedify swallows (an actor's key pairs) was
 * served, and cached, as the union's actor without its public key, so every
 * receiver refused that fan-out's deliveries for good.
 */
function retryingConnects(pool: pg.Pool): pg.Pool {
  const connect = async (): Promise<pg.PoolClient> => {
    for (let attempt = 0; ; attempt++) {
      try {
        return await pool.connect();
      } catch (error) {
        const wait = CONNECT_RETRY_MS[attempt];
        if ((error as { code?: string }).code !== TOO_MANY_CONNECTIONS || wait === undefined) throw error;
        if (attempt === 0) log.warn("PostgreSQL refused a new connection ({error}); retrying for a few seconds", { error: (error as Error).message });
        await new Promise((resolve) => setTimeout(resolve, wait));
      }
    }
  };
  // Kysely calls only connect() and end(); everything else stays the pool's.
  return new Proxy(pool, {
    get(target, property, receiver) {
      if (property === "connect") return connect;
      const value = Reflect.get(target, property, receiver) as unknown;
      return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}

/**
 * Answers whether the database can be used at all, before migrations run, so
 * an unreachable or missing PostgreSQL reads as what it is rather than as a
 * failed migration. The URL is shown without its password.
 */
export async function checkConnection(database: Database, databaseUrl: string): Promise<void> {
  try {
    await sql`select 1`.execute(database.db);
  } catch (e) {
    const where = database.dialect === "postgres" ? redactUrl(databaseUrl) : sqlitePath(databaseUrl);
    const err = e as { code?: string; message?: string; errors?: { code?: string }[] };
    const code = err.code ?? err.errors?.[0]?.code;
    const reason = code === "3D000" ? "the database does not exist (create it first, e.g. createdb)"
      : code === "28P01" || code === "28000" ? `the server refused the login: ${err.message}`
      : code === "ECONNREFUSED" ? "cannot reach the server: connection refused"
      : code === "ENOTFOUND" || code === "EAI_AGAIN" ? "cannot reach the server: unknown host"
      : code === "ETIMEDOUT" ? "cannot reach the server: timed out"
      : `cannot use it: ${err.message ?? String(e)}`;
    throw new DatabaseUnavailableError(`database ${where}: ${reason}`);
  }
}

/**
 * What to tell the operator when this process's pool, with the connections
 * already open on the server, could exceed what the server allows; undefined
 * when it fits. Each `muster worker` at the default queue concurrency may
 * open 52, so two of them and `serve` exceed PostgreSQL's default of 100.
 */
export function connectionBudgetWarning(poolSize: number, allowed: number, inUse: number): string | undefined {
  if (inUse + poolSize <= allowed) return undefined;
  return `this process may open up to ${poolSize} PostgreSQL connections; the server allows ${allowed} (max_connections less those reserved) and ${inUse} are open now. `
    + "Lower MUSTER_QUEUE_CONCURRENCY (each worker's pool is its handler slots + 9) or MUSTER_DB_POOL, or raise max_connections: refused connections are retried for a few seconds, then fail";
}

/** Logs connectionBudgetWarning for this process (PostgreSQL), once at start. Never throws. */
export async function warnIfOverConnectionBudget(database: Database): Promise<void> {
  if (database.dialect !== "postgres" || database.poolSize === undefined) return;
  try {
    const r = await sql<{ allowed: number; in_use: number }>`
      select current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int as allowed,
        (select count(*) from pg_stat_activity where backend_type = 'client backend')::int as in_use`.execute(database.db);
    const row = r.rows[0];
    const warning = row && connectionBudgetWarning(database.poolSize, row.allowed, row.in_use);
    if (warning) log.warn(warning);
  } catch (error) {
    log.debug("Could not read the server's connection limit: {error}", { error: (error as Error).message });
  }
}
