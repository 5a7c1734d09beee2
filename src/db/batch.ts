import { type Compilable, CompiledQuery, type Kysely, PostgresAdapter } from "kysely";
import { named } from "./named-statement.ts";
import { pipelinedQuery, type PipelinedStatement, sendWithNext } from "./pipeline.ts";
import type { DB } from "./schema.ts";

/**
 * Fewer round trips to PostgreSQL inside a short, hot transaction (a join,
 * under its union's lock). On a loaded machine each statement's round trip
 * costs a socket write, a wake-up of the server's backend and one of this
 * process, and everything behind the lock waits for all of them; a join
 * was about 30 statements. On SQLite (in process) nothing is gained, and
 * both helpers run the statements one by one, as before.
 *
 * On PostgreSQL the statements go out pipelined (src/db/pipeline.ts), each
 * a named statement with its values bound: parsed once per connection and
 * planned once after a few runs. They were one several-statement simple
 * query with the values written in as literals, parsed and planned on every
 * run: with the queue's, half of PostgreSQL's CPU per join (issue 16).
 */

const isPostgres = (db: Kysely<DB>) => db.getExecutor().adapter instanceof PostgresAdapter;

function compiledOf(q: Compilable<unknown> | CompiledQuery<unknown>): CompiledQuery<unknown> {
  return "compile" in q ? q.compile() : q;
}

const PLACEHOLDER = /\$(\d+)/g;

/** A compiled PostgreSQL statement as one of a pipeline's, named. */
function pipelined(db: Kysely<DB>, q: CompiledQuery<unknown>): PipelinedStatement {
  const config = named(db, q).sql as unknown as { name: string; text: string };
  return { name: config.name, text: config.text, values: q.parameters };
}

/**
 * Statements whose results nobody reads, kept in order and sent together:
 * on PostgreSQL one pipeline (each statement with its own snapshot and in
 * order, exactly as if sent one by one, in the caller's transaction); on
 * SQLite one by one. `after` runs once they ran.
 */
export class WriteBatch {
  readonly #queries: CompiledQuery<unknown>[] = [];
  readonly #after: (() => void)[] = [];

  push(q: Compilable<unknown> | CompiledQuery<unknown>): void {
    this.#queries.push(compiledOf(q));
  }

  after(f: () => void): void {
    this.#after.push(f);
  }

  get size(): number {
    return this.#queries.length;
  }

  /**
   * `withNext` (PostgreSQL, the transaction's last writes): the statements are
   * not waited for but go out with the transaction's next statement, its
   * COMMIT (src/db/pipeline.ts, sendWithNext): one round trip for both, and
   * a failure among them fails the commit, which rolls back. `after` then
   * runs once they ran.
   */
  async flush(trx: Kysely<DB>, options?: { readonly withNext?: boolean }): Promise<void> {
    const queries = this.#queries.splice(0);
    const after = this.#after.splice(0);
    if (options?.withNext === true && queries.length > 0 && isPostgres(trx)) {
      const sent: Promise<unknown>[] = [];
      for (const q of queries) sent.push((await sendWithNext(trx, q)).result);
      if (after.length > 0) void Promise.all(sent).then(() => { for (const f of after) f(); }, () => {});
      return;
    }
    if (queries.length > 0 && !isPostgres(trx)) {
      for (const q of queries) await trx.executeQuery(q);
    } else if (queries.length === 1) {
      await trx.executeQuery(named(trx, queries[0]!));
    } else if (queries.length > 1) {
      await trx.executeQuery(pipelinedQuery(queries.map((q) => pipelined(trx, q))));
    }
    for (const f of after) f();
  }
}

/**
 * Several SELECTs answered in one round trip on PostgreSQL: each becomes a
 * scalar subquery aggregating its rows to JSON, in one statement (one
 * snapshot). Column values come back as JSON gives them: numbers for
 * integer columns of any size (fine for epoch milliseconds and counts),
 * which callers convert with Number() as they do for pg's bigint strings.
 * On SQLite the queries run one after another.
 */
export async function readAll<K extends string>(db: Kysely<DB>, queries: Record<K, Compilable<unknown> | CompiledQuery<unknown>>): Promise<Record<K, Record<string, unknown>[]>> {
  const keys = Object.keys(queries) as K[];
  const compiled = keys.map((k) => compiledOf(queries[k]));
  const out = {} as Record<K, Record<string, unknown>[]>;
  if (!isPostgres(db) || keys.length === 1) {
    for (const [i, k] of keys.entries()) out[k] = (await db.executeQuery(compiled[i]!)).rows as Record<string, unknown>[];
    return out;
  }
  const { rows } = await db.executeQuery<Record<string, unknown>>(named(db, combinedRead(compiled)));
  return fromCombined(keys, rows[0]!);
}

/**
 * A lock statement, then readAll's queries, in one round trip on PostgreSQL:
 * a pipeline of two statements, the read after the lock, so it runs with
 * its own snapshot taken once the lock is granted (READ COMMITTED: the
 * server binds the read only after the lock's statement finished) and sees
 * everything committed by the lock's previous holder, exactly as if sent
 * after it. Under a hot lock this saves the holder's wake-up between the
 * two: every transaction waiting for the lock waits for it. On SQLite the
 * lock statement runs, then the reads, one by one. Whatever the lock
 * statement returns is not kept (read it among the queries). No lock
 * (undefined: SQLite's unions, lockUnionQuery) is readAll.
 */
export async function lockThenReadAll<K extends string>(db: Kysely<DB>, lock: Compilable<unknown> | CompiledQuery<unknown> | undefined, queries: Record<K, Compilable<unknown> | CompiledQuery<unknown>>): Promise<Record<K, Record<string, unknown>[]>> {
  if (lock === undefined) return readAll(db, queries);
  if (!isPostgres(db)) {
    await db.executeQuery(compiledOf(lock));
    return readAll(db, queries);
  }
  const keys = Object.keys(queries) as K[];
  const read = combinedRead(keys.map((k) => compiledOf(queries[k])));
  // One pipeline, two statements; the pool's client answers with the last one's rows (database.ts).
  const { rows } = await db.executeQuery<Record<string, unknown>>(pipelinedQuery([pipelined(db, compiledOf(lock)), pipelined(db, read)]));
  return fromCombined(keys, rows[0]!);
}

/** readAll's queries as one PostgreSQL statement: each a scalar subquery aggregating its rows to JSON. */
function combinedRead(compiled: readonly CompiledQuery<unknown>[]): CompiledQuery<unknown> {
  const parameters: unknown[] = [];
  const parts = compiled.map((q, i) => {
    const offset = parameters.length;
    parameters.push(...q.parameters);
    const text = q.sql.replace(PLACEHOLDER, (_, n: string) => {
      const j = Number(n);
      if (j < 1 || j > q.parameters.length) throw new RangeError(`readAll: no parameter $${n}`);
      return `$${j + offset}`;
    });
    return `(select coalesce(json_agg(x), '[]'::json) from (${text}) as x) as "r${i}"`;
  });
  return CompiledQuery.raw(`select ${parts.join(", ")}`, parameters);
}

function fromCombined<K extends string>(keys: readonly K[], row: Record<string, unknown>): Record<K, Record<string, unknown>[]> {
  const out = {} as Record<K, Record<string, unknown>[]>;
  for (const [i, k] of keys.entries()) {
    const v = row[`r${i}`];
    out[k] = (typeof v === "string" ? JSON.parse(v) : v) as Record<string, unknown>[];
  }
  return out;
}

/** For tests: whether statements of this database are batched (PostgreSQL). */
export const batches = isPostgres;
