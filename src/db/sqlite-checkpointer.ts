import { fileURLToPath } from "node:url";
import { Worker } from "node:worker_threads";
import type SQLite from "better-sqlite3";
import { logger } from "../logging.ts";

/*
 * SQLite's WAL checkpoints on a thread of their own
 * -------------------------------------------------
 * In WAL mode the connection that commits the write that takes the WAL past
 * wal_autocheckpoint pages (1000 by default) also copies the WAL back into
 * the database file and syncs it, inside that commit. Muster has one
 * connection, on the main thread: during a fan-out to 2·10^4 personal
 * inboxes those checkpoints were 5.5 s of the 9 s the main thread spent
 * in COMMIT (p90 76 ms, max 234 ms per commit; the event loop stopped
 * meanwhile, and every delivery, claim and request waited).
 *
 * Here the main connection never checkpoints (wal_autocheckpoint = 0);
 * a worker thread with its own connection to the same file runs a PASSIVE
 * checkpoint every CHECKPOINT_EVERY_MS. PASSIVE takes no lock that a writer
 * or reader waits for: it copies what no reader still needs and returns.
 * When it has copied everything, the next write transaction starts the WAL
 * over from its beginning, as after an automatic checkpoint; under a steady
 * stream of commits that moment may never come, so past RESTART_PAGES the
 * thread runs a RESTART checkpoint, which copies the rest and starts the WAL
 * over itself (a commit that meets it waits on the driver's timers, as for
 * any other holder of the lock): the WAL stays about as small as before. Durability is unchanged (synchronous = NORMAL: a
 * commit is written to the WAL, which the checkpoint syncs before it copies).
 *
 * Stopping hands checkpointing back to the connection (wal_autocheckpoint
 * restored), so a process that closes the thread and keeps writing never
 * grows its WAL without bound; closing the last connection checkpoints the
 * rest, as before.
 */

const log = logger("db", "checkpointer");

export const CHECKPOINT_EVERY_MS = 200;
/** WAL pages past which the thread starts the WAL over (RESTART) rather than only copying it: twice the automatic checkpoint's 1000. */
export const RESTART_PAGES = 2000;
const AUTOCHECKPOINT_PAGES = 1000;

const THREAD = `
const { parentPort, workerData } = require("node:worker_threads");
const SQLite = require(workerData.module);
const db = new SQLite(workerData.file, { fileMustExist: true });
db.pragma("busy_timeout = 0");
db.pragma("synchronous = NORMAL");
let stopped = false;
const tick = () => {
  if (stopped) return;
  try {
    let [r] = db.pragma("wal_checkpoint(PASSIVE)");
    let restarted = false;
    // Under a steady stream of commits the WAL may never be wholly copied at
    // the moment a write begins, so it is never started over and only grows.
    // Past restartPages, RESTART (busy_timeout 0: it gives up at once when a
    // write is under way) copies the rest and starts it over.
    if (r.log >= workerData.restartPages) {
      const [x] = db.pragma("wal_checkpoint(RESTART)");
      restarted = x.busy === 0;
      r = x;
    }
    parentPort.postMessage({ kind: "checkpoint", log: r.log, checkpointed: r.checkpointed, restarted });
  } catch (error) {
    // SQLITE_BUSY (another process's checkpoint or a schema change): the next tick tries again.
    parentPort.postMessage({ kind: "error", message: String(error && error.message || error) });
  }
  timer = setTimeout(tick, workerData.everyMs);
};
let timer = setTimeout(tick, workerData.everyMs);
parentPort.on("message", (m) => {
  if (m !== "stop") return;
  stopped = true;
  clearTimeout(timer);
  try { db.close(); } catch {}
  parentPort.postMessage({ kind: "stopped" });
  parentPort.close();
});
`;

/** Checkpoints done by checkpointer threads in this process (tests read them). */
export const checkpointStats = { checkpoints: 0, frames: 0, restarts: 0 };

export class SqliteCheckpointer {
  readonly #sqlite: SQLite.Database;
  readonly #worker: Worker;
  readonly #stopped: Promise<void>;
  #closed = false;

  /** Starts checkpointing `file` (the database `sqlite` has open, in WAL mode) on a thread, and stops `sqlite` from checkpointing itself. */
  constructor(sqlite: SQLite.Database, file: string, everyMs = CHECKPOINT_EVERY_MS) {
    this.#sqlite = sqlite;
    this.#worker = new Worker(THREAD, { eval: true, workerData: { file, everyMs, restartPages: RESTART_PAGES, module: fileURLToPath(import.meta.resolve("better-sqlite3")) }, resourceLimits: { maxYoungGenerationSizeMb: 2, maxOldGenerationSizeMb: 16 } });
    this.#worker.unref();
    let lastError = "";
    this.#worker.on("message", (m: { kind: string; log?: number; checkpointed?: number; restarted?: boolean; message?: string }) => {
      if (m.kind === "checkpoint") {
        checkpointStats.checkpoints++;
        if (m.restarted) checkpointStats.restarts++;
        checkpointStats.frames += Math.max(0, m.checkpointed ?? 0);
      } else if (m.kind === "error" && m.message !== lastError) {
        lastError = m.message ?? "";
        log.debug("A background checkpoint failed; the next one tries again: {error}", { error: m.message });
      }
    });
    this.#stopped = new Promise<void>((resolve) => {
      this.#worker.once("exit", () => resolve());
      this.#worker.once("error", (error) => {
        // Without its thread the connection checkpoints itself again.
        log.warn("The checkpoint thread failed; the connection checkpoints itself again: {error}", { error });
        this.#restore();
        resolve();
      });
    });
    sqlite.pragma("wal_autocheckpoint = 0");
  }

  #restore(): void {
    try {
      if (this.#sqlite.open) this.#sqlite.pragma(`wal_autocheckpoint = ${AUTOCHECKPOINT_PAGES}`);
    } catch { /* closed meanwhile */ }
  }

  /** Stops the thread (and its connection) and gives checkpointing back to the connection. */
  async close(): Promise<void> {
    if (this.#closed) return this.#stopped;
    this.#closed = true;
    this.#worker.postMessage("stop");
    const timeout = setTimeout(() => void this.#worker.terminate(), 5000);
    await this.#stopped;
    clearTimeout(timeout);
    this.#restore();
  }
}
