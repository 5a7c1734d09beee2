import { resolve } from "node:path";

export type LogLevel = "debug" | "info" | "warning" | "error";

export interface Config {
  readonly port: number;
  /** The public URL of this instance, without a trailing slash. */
  readonly origin: URL;
  /** `sqlite:<file>` (embedded) or a `postgres://` URL. */
  readonly databaseUrl: string;
  readonly dialect: "sqlite" | "postgres";
  readonly dataDir: string;
  readonly logLevel: LogLevel;
  /** Development only: federate with loopback and private addresses. */
  readonly allowPrivateAddress: boolean;
  /** Largest inbox POST body accepted, in bytes. */
  readonly maxBodyBytes: number;
  /**
   * Behind a reverse proxy (Fly's, nginx) every request comes from the proxy;
   * trust its X-Forwarded-For for per-client rate limits. Off by default:
   * without a proxy, clients could forge the header.
   */
  readonly trustProxy: boolean;
  /**
   * Queue messages one process handles at once. Deliveries wait on other
   * servers, so one slow inbox must not hold up the rest: this is the number
   * of remote servers a worker talks to in parallel.
   */
  readonly queueConcurrency: number;
  /**
   * How long an outgoing request (a delivery, a key or actor fetch) may wait
   * for a connection, for the response headers, or between two chunks of the
   * body, in ms. A server that never answers then frees its handler slot and
   * its delivery is retried with backoff, instead of holding the slot until
   * the queue's handler timeout.
   */
  readonly httpTimeoutMs: number;
  /**
   * A Solana cluster's JSON-RPC URL (devnet, mainnet, a local validator).
   * Unset: the embedded ledger, served at /solana/rpc.
   */
  readonly solanaRpcUrl: string | null;
  /**
   * PostgreSQL connections per process (MUSTER_DB_POOL). Unset, it is sized
   * to what the process runs: the queue's handlers, its LISTEN connection
   * and the web's requests, or (serve --no-worker, CLI commands) the web's
   * requests alone (src/main.ts poolSizeFor).
   */
  readonly dbPool: number | undefined;
  /**
   * MUSTER_BATCH_DELIVERY: the delivery lanes' own sender (federation/batch-delivery.ts)
   * sends deliveries in batches; off (`0`), every delivery goes through Fedify's
   * handler, to compare the two. On when unset (and when a Config is built without it).
   */
  readonly batchDelivery?: boolean;
  /**
   * MUSTER_DELIVERY_THREADS: worker threads that sign and POST deliveries
   * (federation/delivery-threads.ts), 0 to 16. Unset: one when the machine
   * has a second core (federation/delivery-threads.ts deliveryThreadCount).
   */
  readonly deliveryThreads?: number;
  /**
   * MUSTER_SQLITE_CHECKPOINT_THREAD: a process that runs the queue on SQLite
   * checkpoints the WAL on a thread of its own (src/db/sqlite-checkpointer.ts);
   * off (`0`), in its commits as SQLite does by default. On when unset.
   */
  readonly sqliteCheckpointThread?: boolean;
  /**
   * MUSTER_DB_SYNC: how durable a commit is before it is answered.
   * "normal": it survives Muster's crash, but the last moments of commits
   * (never a half-written one) may be lost if the machine (or, on
   * PostgreSQL, the database server) crashes: SQLite's synchronous=NORMAL
   * in WAL mode, PostgreSQL's synchronous_commit=off (at most
   * 3 × wal_writer_delay, 600 ms by default). "full": a commit is on disk
   * before it is answered (SQLite synchronous=FULL, PostgreSQL
   * synchronous_commit=on). Unset: each dialect's default (DEFAULT_DB_SYNC).
   */
  readonly dbSync?: DbSync;
  /** An open vote's running tally goes out at most once per this many ms per proposal (MUSTER_TALLY_BATCH_MS). */
  readonly tallyBatchMs?: number;
  /**
   * MUSTER_SECRET_KEY: the key that seals the server's private keys in the
   * database (src/secrets/). Unset: DATA_DIR/secret.key, generated on first start.
   */
  readonly secretKey: string | null;
}

export type DbSync = "normal" | "full";

/**
 * Each dialect's commit durability when MUSTER_DB_SYNC is unset: SQLite's
 * "normal" as it always was (WAL, synchronous=NORMAL); PostgreSQL's "full",
 * the server's own default (README, configuration).
 */
export const DEFAULT_DB_SYNC: Readonly<Record<"sqlite" | "postgres", DbSync>> = { sqlite: "normal", postgres: "full" };

export class ConfigError extends Error {
  override name = "ConfigError";
}

const LOG_LEVELS: readonly LogLevel[] = ["debug", "info", "warning", "error"];

/**
 * Reads and validates the environment once, so a bad setting stops the
 * process at start-up with one clear line instead of failing later mid-request.
 */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const port = parsePort(env.PORT ?? "8000");
  const origin = parseOrigin(env.ORIGIN ?? `http://localhost:${port}`);
  const dataDir = resolve(env.DATA_DIR ?? "./data");
  const databaseUrl = env.DATABASE_URL?.trim() || `sqlite:${resolve(dataDir, "muster.sqlite")}`;
  const dialect = parseDialect(databaseUrl);
  const logLevel = (env.LOG_LEVEL ?? "info").toLowerCase() as LogLevel;
  if (!LOG_LEVELS.includes(logLevel)) {
    throw new ConfigError(`LOG_LEVEL must be one of ${LOG_LEVELS.join(", ")}; got ${JSON.stringify(env.LOG_LEVEL)}`);
  }
  const allowPrivateAddress = parseFlag("MUSTER_ALLOW_PRIVATE_ADDRESS", env.MUSTER_ALLOW_PRIVATE_ADDRESS);
  const maxBodyBytes = env.MUSTER_MAX_BODY_BYTES === undefined
    ? 1024 * 1024
    : parsePositiveInt("MUSTER_MAX_BODY_BYTES", env.MUSTER_MAX_BODY_BYTES);
  const trustProxy = parseFlag("MUSTER_TRUST_PROXY", env.MUSTER_TRUST_PROXY);
  const queueConcurrency = env.MUSTER_QUEUE_CONCURRENCY === undefined ? 16 : parsePositiveInt("MUSTER_QUEUE_CONCURRENCY", env.MUSTER_QUEUE_CONCURRENCY);
  // Mastodon's own read timeout is 10 s.
  const httpTimeoutMs = env.MUSTER_HTTP_TIMEOUT_MS === undefined ? 10_000 : parsePositiveInt("MUSTER_HTTP_TIMEOUT_MS", env.MUSTER_HTTP_TIMEOUT_MS);
  const solanaRpcUrl = env.SOLANA_RPC_URL?.trim() || null;
  if (solanaRpcUrl !== null && !/^https?:\/\/[^\s]+$/.test(solanaRpcUrl)) {
    throw new ConfigError(`SOLANA_RPC_URL must be an http(s) URL; got ${JSON.stringify(env.SOLANA_RPC_URL)}`);
  }
  const dbPool = env.MUSTER_DB_POOL === undefined ? undefined : parsePositiveInt("MUSTER_DB_POOL", env.MUSTER_DB_POOL);
  const batchDelivery = env.MUSTER_BATCH_DELIVERY === undefined || env.MUSTER_BATCH_DELIVERY === "" ? true : parseFlag("MUSTER_BATCH_DELIVERY", env.MUSTER_BATCH_DELIVERY);
  const deliveryThreads = blank(env.MUSTER_DELIVERY_THREADS) ? undefined : parseThreads(env.MUSTER_DELIVERY_THREADS!);
  const sqliteCheckpointThread = blank(env.MUSTER_SQLITE_CHECKPOINT_THREAD) ? true : parseFlag("MUSTER_SQLITE_CHECKPOINT_THREAD", env.MUSTER_SQLITE_CHECKPOINT_THREAD);
  const dbSync = blank(env.MUSTER_DB_SYNC) ? undefined : parseDbSync(env.MUSTER_DB_SYNC!);
  const tallyBatchMs = env.MUSTER_TALLY_BATCH_MS === undefined ? 5_000 : parsePositiveInt("MUSTER_TALLY_BATCH_MS", env.MUSTER_TALLY_BATCH_MS);
  const secretKey = env.MUSTER_SECRET_KEY?.trim() || null;
  if (secretKey !== null && !/^[0-9a-fA-F]{64}$/.test(secretKey) && !/^[A-Za-z0-9+/_-]{43}=?$/.test(secretKey)) {
    throw new ConfigError("MUSTER_SECRET_KEY must be a 32-byte key as 64 hex digits or base64 (make one with: openssl rand -hex 32)");
  }
  return { port, origin, databaseUrl, dialect, dataDir, logLevel, allowPrivateAddress, maxBodyBytes, trustProxy, queueConcurrency, httpTimeoutMs, solanaRpcUrl, dbPool, batchDelivery, deliveryThreads, sqliteCheckpointThread, dbSync, tallyBatchMs, secretKey };
}

function parsePort(raw: string): number {
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0 || n > 65535) {
    throw new ConfigError(`PORT must be an integer from 0 to 65535; got ${JSON.stringify(raw)}`);
  }
  return n;
}

const blank = (raw: string | undefined): boolean => raw === undefined || raw.trim() === "";

function parseThreads(raw: string): number {
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0 || n > 16) throw new ConfigError(`MUSTER_DELIVERY_THREADS must be an integer from 0 to 16; got ${JSON.stringify(raw)}`);
  return n;
}

function parseDbSync(raw: string): DbSync {
  const v = raw.trim().toLowerCase();
  if (v === "normal" || v === "full") return v;
  throw new ConfigError(`MUSTER_DB_SYNC must be normal (a commit survives Muster's crash, not always the machine's) or full (every commit on disk before it is answered); got ${JSON.stringify(raw)}`);
}

function parsePositiveInt(name: string, raw: string): number {
  const n = Number(raw);
  if (!Number.isInteger(n) || n <= 0) throw new ConfigError(`${name} must be a positive integer; got ${JSON.stringify(raw)}`);
  return n;
}

function parseOrigin(raw: string): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError(`ORIGIN must be an absolute URL such as https://union.example; got ${JSON.stringify(raw)}`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") {
    throw new ConfigError(`ORIGIN must use http or https; got ${JSON.stringify(raw)}`);
  }
  if ((url.pathname !== "/" && url.pathname !== "") || url.search || url.hash) {
    throw new ConfigError(`ORIGIN must be a bare origin with no path, query or fragment; got ${JSON.stringify(raw)}`);
  }
  return new URL(url.origin);
}

function parseDialect(databaseUrl: string): "sqlite" | "postgres" {
  if (/^postgres(ql)?:\/\//i.test(databaseUrl)) return "postgres";
  if (databaseUrl.startsWith("sqlite:")) return "sqlite";
  throw new ConfigError(
    `DATABASE_URL must be a postgres:// URL or sqlite:<path>; got ${JSON.stringify(databaseUrl.replace(/\/\/[^@]*@/, "//***@"))}`,
  );
}

function parseFlag(name: string, raw: string | undefined): boolean {
  if (raw === undefined || raw === "" || raw === "0" || raw.toLowerCase() === "false") return false;
  if (raw === "1" || raw.toLowerCase() === "true") return true;
  throw new ConfigError(`${name} must be 1 or 0; got ${JSON.stringify(raw)}`);
}

/** The SQLite file path of a `sqlite:` DATABASE_URL. */
export function sqlitePath(databaseUrl: string): string {
  return databaseUrl.slice("sqlite:".length);
}
