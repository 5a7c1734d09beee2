import { CompiledQuery, type Kysely } from "kysely";
import type { DB } from "../src/db/schema.ts";
import { runGroup } from "./join-group.ts";

/** At most this many joins share one transaction, so the queue's claims and settles waiting for the write lock are not held back long. */
export const JOINS_PER_COMMIT = 32;

const SAVEPOINT = CompiledQuery.raw("savepoint join_commit");
const RELEASE = CompiledQuery.raw("release join_commit");
const ROLLBACK_TO = CompiledQuery.raw("rollback to join_commit");
/** Thrown to roll back a transaction whose first join failed (its own error is given to it). */
const FIRST_FAILED = new Error("the first join of the transaction failed");

/**
 * Group commit for the follow's fast path on SQLite: the joins that arrive
 * while another one holds the write lock share one transaction, each in its
 * own savepoint, and one COMMIT (about 0.45 ms of CPU, and one WAL write of
 * the pages they share) instead of one each.
 *
 * - A join's work failing (a repeat, a Follow Fedify's path holds, any
 *   error) rolls back its savepoint only: the others in the transaction
 *   keep their writes. The first join of a transaction runs without one
 *   (a join alone costs what it did before): if it fails, the transaction
 *   is rolled back and the next join starts a new one.
 * - Every join's outcome, success or failure, is given only after the
 *   transaction committed: a 202 still means the join is durable, and a
 *   repeat is not answered before the join it repeats is committed.
 * - If the transaction itself fails (the COMMIT, a savepoint that cannot be
 *   rolled back), every join in it fails with that error and none of them
 *   was written. If it cannot even begin (another process held the lock past
 *   the busy wait), the joins waiting for it fail with that error, as each
 *   alone would have, instead of waiting for the next try.
 *
 * Joins are taken in arrival order. The first one starts the transaction
 * after one turn of the event loop (setImmediate: the I/O callbacks of the
 * turn in which it arrived run first), and those that arrived in that turn
 * join it, up to JOINS_PER_COMMIT. Waiting for the transaction to hold the
 * lock was not enough: on SQLite a join's statements run synchronously
 * between microtasks, so no other request could arrive while one ran, and
 * each join had its own COMMIT (1.05 commits per join at 300 joins/s).
 */
export function joinCommit(db: Kysely<DB>, max = JOINS_PER_COMMIT, options?: { readonly savepoints?: boolean }) {
  type Job = { work: (trx: Kysely<DB>) => Promise<unknown>; resolve: (v: unknown) => void; reject: (e: unknown) => void; key?: string | undefined };
  const waiting: Job[] = [];
  let draining = false;
  const savepoints = options?.savepoints ?? true;
  /** Keys whose joins are being run now (drainKey): another key's joins run beside them, in a transaction of their own. */
  const drainingKeys = new Set<string | undefined>();

  /**
   * Without savepoints (PostgreSQL, `savepoints: false`): the joins of one
   * key (their union) waiting when a transaction starts, up to `max`, run
   * together in it, their round trips shared (join-group.ts): one for all
   * their reads under the union's lock, one for all their writes with the
   * COMMIT, where each alone costs two. Joins given a key share a
   * transaction only with joins of the same key: a transaction holds one
   * union's lock, never two in an order another transaction could take the
   * other way round; each key's joins run group after group, beside other
   * keys' (each group its own transaction and connection).
   * A failure cannot be told apart from another join's of the group
   * (pipelined statements after a failed one fail too), and a join's work
   * may not fit the group (join-group.ts stops it), so there is no savepoint:
   * - a join alone runs in a transaction of its own, and is told its outcome;
   * - a group in which anything fails, the COMMIT included, is rolled back,
   *   and each of its joins runs again alone, in a transaction of its own
   *   (its failure is then its own); all their outcomes are given once every
   *   one of them ran.
   * A join's work must therefore be safe to run again after a rollback
   * (requestToJoin's is: nothing of it outlives a rolled-back transaction).
   */
  async function drainKey(key: string | undefined): Promise<void> {
    try {
      while (waiting.some((j) => j.key === key)) await runKeyGroup(key);
    } finally {
      drainingKeys.delete(key);
    }
  }

  /** One group of the key's waiting joins (drainKey). */
  async function runKeyGroup(key: string | undefined): Promise<void> {
    const group: Job[] = [];
    for (let i = 0; i < waiting.length && group.length < max;) {
      if (waiting[i]!.key === key) group.push(waiting.splice(i, 1)[0]!);
      else i++;
    }
    if (group.length === 1) {
      const job = group[0]!;
      await db.transaction().execute(job.work).then(job.resolve, job.reject);
      return;
    }
    let outcomes: PromiseSettledResult<unknown>[] | undefined;
    try {
      await db.transaction().execute(async (trx) => {
        outcomes = await runGroup(trx, group.map((job) => job.work));
        if (outcomes.some((o) => o.status === "rejected")) throw FIRST_FAILED;
      });
    } catch {
      outcomes = undefined;
    }
    if (outcomes !== undefined) {
      for (const [i, job] of group.entries()) job.resolve((outcomes[i] as PromiseFulfilledResult<unknown>).value);
    } else {
      const alone: { job: Job; ok: boolean; value: unknown }[] = [];
      for (const job of group) {
        try {
          alone.push({ job, ok: true, value: await db.transaction().execute(job.work) });
        } catch (e) {
          alone.push({ job, ok: false, value: e });
        }
      }
      for (const { job, ok, value } of alone) (ok ? job.resolve : job.reject)(value);
    }
    // Those that came while this one ran, or its answers were given: after another turn.
    if (waiting.some((j) => j.key === key)) await new Promise((r) => setImmediate(r));
  }

  async function drain(): Promise<void> {
    draining = true;
    try {
      while (waiting.length > 0) {
        const done: { job: Job; ok: boolean; value: unknown }[] = [];
        try {
          await db.transaction().execute(async (trx) => {
            // Taken once the transaction holds the write lock: joins that arrived while it waited for it come along.
            while (done.length < max && waiting.length > 0) {
              const job = waiting.shift()!;
              // The first needs no savepoint: if it fails, nothing else is in the transaction yet, and all of it rolls back.
              const first = done.length === 0;
              if (!first) await trx.executeQuery(SAVEPOINT);
              try {
                const value = await job.work(trx);
                if (!first) await trx.executeQuery(RELEASE);
                done.push({ job, ok: true, value });
              } catch (error) {
                done.push({ job, ok: false, value: error });
                if (first) throw FIRST_FAILED;
                // If this throws, SQLite has rolled back the whole transaction: every join in it fails below.
                await trx.executeQuery(ROLLBACK_TO);
                await trx.executeQuery(RELEASE);
              }
            }
          });
        } catch (error) {
          if (error === FIRST_FAILED) done[0]!.job.reject(done[0]!.value);
          // Not even begun (another process held the lock past the busy wait): the joins waiting for it fail as a join alone would have.
          else if (done.length === 0) for (const job of waiting.splice(0, max)) job.reject(error);
          else for (const { job } of done) job.reject(error);
          continue;
        }
        for (const { job, ok, value } of done) (ok ? job.resolve : job.reject)(value);
        // Those that came while this one ran (it waited for the connection) or its answers were given: after another turn.
        if (waiting.length > 0) await new Promise((r) => setImmediate(r));
      }
    } finally {
      draining = false;
    }
  }

  /** Runs `work` in a shared transaction (a savepoint of it, unless `savepoints: false`); settles once that transaction committed (or failed). `key`: see the groups without savepoints (drainKey). */
  return function inTransaction<T>(work: (trx: Kysely<DB>) => Promise<T>, key?: string): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      waiting.push({ work, resolve: resolve as (v: unknown) => void, reject, key });
      if (!savepoints) {
        if (!drainingKeys.has(key)) {
          drainingKeys.add(key);
          setImmediate(() => void drainKey(key));
        }
      } else if (!draining) {
        draining = true;
        setImmediate(() => void drain());
      }
    });
  };
}

export type JoinCommit = ReturnType<typeof joinCommit>;
