import { CompiledQuery, type Kysely, type QueryResult } from "kysely";
import { named } from "./named-statement.ts";
import type { DB } from "./schema.ts";

/** One statement of a Pipeline, as pg's query config takes it (a name makes it a prepared statement). */
export interface PipelinedStatement {
  readonly text: string;
  readonly values: readonly unknown[];
  readonly name?: string;
}

/**
 * Statements written to one PostgreSQL connection at once and answered in
 * order (the extended protocol's pipelining: each its own Sync, so each runs
 * as if sent alone after the one before, with its own snapshot): one round
 * trip for all, and each can be a named statement, parsed once per
 * connection, where a several-statement simple query (src/db/batch.ts
 * before) was parsed and planned on every run with its values written in.
 * The pool's client (database.ts) runs it and answers with the last
 * statement's result; the first failure is thrown, and the statements after
 * it fail too inside a transaction (it is aborted), so a caller's
 * transaction rolls back as it would have.
 */
export class Pipeline {
  readonly statements: readonly PipelinedStatement[];
  /** The statement whose result answers the pipeline (its index); the last one's when undefined. */
  readonly answer: number | undefined;

  constructor(statements: readonly PipelinedStatement[], answer?: number) {
    this.statements = statements;
    this.answer = answer;
  }

  /** For logs and counters: the statements' texts. */
  toString(): string {
    return this.statements.map((s) => s.text).join(";\n");
  }
}

/** A Pipeline as Kysely's PostgreSQL driver hands it to the client (the `sql` it passes through unchanged); `answer` as Pipeline's. */
export function pipelinedQuery(statements: readonly PipelinedStatement[], answer?: number): CompiledQuery<unknown> {
  return { ...CompiledQuery.raw(""), sql: new Pipeline(statements, answer) as unknown as string };
}

/**
 * Whether pg.Client#query's first argument is a pipeline's statement after
 * its first (the pool's client marks each with its index, `pipelined`):
 * it shares the first one's round trip. For counters of round trips.
 */
export function sharesRoundTrip(queryArg: unknown): boolean {
  return ((queryArg as { pipelined?: number } | null)?.pipelined ?? 0) > 0;
}

/**
 * A statement sent with the next one on its connection, inside a
 * transaction: the pool's client (database.ts) answers it at once (no rows)
 * and writes it in one pipeline with the transaction's next statement, as it
 * does a BEGIN. `result` settles when it has run. Outside a transaction it
 * runs at once. Its failure fails the statement it travels with (the first
 * failure of a pipeline is thrown), so the transaction rolls back as if it
 * had been sent alone; `result` rejects too, and is marked handled.
 */
export class Deferred {
  readonly statement: PipelinedStatement;
  readonly result: Promise<QueryResult<unknown>>;
  readonly #settle: { resolve(r: QueryResult<unknown>): void; reject(e: unknown): void };

  constructor(statement: PipelinedStatement) {
    this.statement = statement;
    let settle!: { resolve(r: QueryResult<unknown>): void; reject(e: unknown): void };
    this.result = new Promise((resolve, reject) => (settle = { resolve, reject }));
    this.result.catch(() => {});
    this.#settle = settle;
  }

  resolve(r: QueryResult<unknown>): void {
    this.#settle.resolve(r);
  }

  reject(e: unknown): void {
    this.#settle.reject(e);
  }

  toString(): string {
    return this.statement.text;
  }
}

/**
 * Queues `query` (compiled, PostgreSQL) to go out with the transaction's next
 * statement (see Deferred), named. Resolves at once; `result` once it ran
 * (so never await it before the transaction's next statement is sent).
 */
export async function sendWithNext<R>(trx: Kysely<DB>, query: CompiledQuery<R>): Promise<{ readonly result: Promise<QueryResult<R>> }> {
  const config = named(trx, query).sql as unknown as { name: string; text: string };
  const deferred = new Deferred({ name: config.name, text: config.text, values: query.parameters });
  await trx.executeQuery({ ...CompiledQuery.raw(""), sql: deferred as unknown as string });
  return { result: deferred.result as Promise<QueryResult<R>> };
}
