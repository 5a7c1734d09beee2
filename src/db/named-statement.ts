import { createHash } from "node:crypto";
import { type CompiledQuery, type Kysely, PostgresAdapter, type QueryResult } from "kysely";
import { pipelinedQuery } from "./pipeline.ts";
import type { DB } from "./schema.ts";

/**
 * On PostgreSQL, the statement as a named (server-side prepared) one: each
 * connection parses it once and, after a few runs, plans it once, instead of
 * for every run. The queue's claim and settle are the statements PostgreSQL
 * runs most (each an UPDATE or DELETE with subqueries), and for them parsing
 * and planning cost more of the backend's CPU than running them.
 *
 * The name is a hash of the text, so two texts never share one (node-postgres
 * refuses that), and the same text on another connection is prepared there
 * on its first use. Kysely's PostgreSQL driver hands the compiled `sql` to
 * pg's `client.query(sql, parameters)` unchanged, and pg takes a query
 * config ({ name, text }) there as well as a string. On SQLite the query is
 * returned as it is.
 *
 * Every statement built with prepared() (src/db/prepared.ts) runs named: the
 * hot paths' statements, a join's among them (its union read, its
 * follower's account, the gate its Accept and welcome ask). The names are
 * bounded by those texts: a few dozen, each prepared on a connection once.
 */
export function named<R>(db: Kysely<DB>, query: CompiledQuery<R>): CompiledQuery<R> {
  if (!(db.getExecutor().adapter instanceof PostgresAdapter)) return query;
  let config = configs.get(query.sql);
  if (config === undefined) {
    // A handful of texts in all; bounded anyway.
    if (configs.size >= 256) configs.clear();
    const text = query.sql;
    config = { name: `muster_${createHash("sha256").update(text).digest("hex").slice(0, 24)}`, text, toString: () => text };
    configs.set(text, config);
  }
  return { ...query, sql: config as unknown as string };
}

const configs = new Map<string, { readonly name: string; readonly text: string; toString(): string }>();

/** Runs `query` named (see named). */
export function executeNamed<R>(db: Kysely<DB>, query: CompiledQuery<R>): Promise<QueryResult<R>> {
  return db.executeQuery(named(db, query));
}

/** What makes the next statement of a transaction use its generic plan (executeGenericPlanned). */
const GENERIC_PLAN = { name: "muster_generic_plan", text: "select set_config('plan_cache_mode', 'force_generic_plan', true)", values: [] };

/**
 * On PostgreSQL, runs `query` named (see named) with its generic plan, in a
 * transaction of its own (never inside a caller's): BEGIN, the setting
 * (for this transaction only), the statement and COMMIT written in one
 * pipeline (src/db/pipeline.ts), one round trip as `query` alone was,
 * answered with the statement's result. For a statement PostgreSQL would plan anew on every run: it
 * plans the first five runs of a prepared statement on each connection for
 * their values, and keeps doing so while that looks cheaper than its
 * generic plan. The queue's claim (kysely-message-queue.ts) was planned on
 * every run that way (0 generic plans of 12 with a backlog, 350-400 us of
 * planning beside 490 us of running in the workers benchmark), to the same
 * plan as its generic one. A failure of the statement rolls the
 * transaction back (PostgreSQL answers the COMMIT of a failed transaction
 * with a rollback) and is thrown. On SQLite the query runs as it is.
 */
export function executeGenericPlanned<R>(db: Kysely<DB>, query: CompiledQuery<R>): Promise<QueryResult<R>> {
  if (!(db.getExecutor().adapter instanceof PostgresAdapter)) return db.executeQuery(query);
  // Its own BEGIN and COMMIT would end a caller's transaction.
  if (db.isTransaction) return Promise.reject(new TypeError("executeGenericPlanned runs its statement in a transaction of its own, not in a caller's"));
  const { name, text } = named(db, query).sql as unknown as { name: string; text: string };
  return db.executeQuery(pipelinedQuery([{ text: "begin", values: [] }, GENERIC_PLAN, { name, text, values: query.parameters }, { text: "commit", values: [] }], 2)) as Promise<QueryResult<R>>;
}
