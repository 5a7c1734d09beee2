import { CompiledQuery } from "kysely";

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

  constructor(statements: readonly PipelinedStatement[]) {
    this.statements = statements;
  }

  /** For logs and counters: the statements' texts. */
  toString(): string {
    return this.statements.map((s) => s.text).join(";\n");
  }
}

/** A Pipeline as Kysely's PostgreSQL driver hands it to the client (the `sql` it passes through unchanged). */
export function pipelinedQuery(statements: readonly PipelinedStatement[]): CompiledQuery<unknown> {
  return { ...CompiledQuery.raw(""), sql: new Pipeline(statements) as unknown as string };
}

/**
 * Whether pg.Client#query's first argument is a pipeline's statement after
 * its first (the pool's client marks each with its index, `pipelined`):
 * it shares the first one's round trip. For counters of round trips.
 */
export function sharesRoundTrip(queryArg: unknown): boolean {
  return ((queryArg as { pipelined?: number } | null)?.pipelined ?? 0) > 0;
}
