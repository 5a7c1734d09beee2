import type { Compilable, CompiledQuery, Kysely, QueryResult } from "kysely";
import { named } from "./named-statement.ts";
import type { DB } from "./schema.ts";

/**
 * A query built and compiled once per database, then run with new values:
 * for statements on a hot path (the inbox's, thousands a second), where
 * Kysely's building and compiling cost more than SQLite's running them.
 * `build` receives one placeholder per argument and must pass each to the
 * builder as a value (never as an identifier or a raw fragment); the
 * compiled parameters that are placeholders are replaced in order.
 *
 * Run, it is a named statement on PostgreSQL (named-statement.ts): parsed
 * once per connection and, after a few runs, planned once, where parsing
 * and planning every run took half of PostgreSQL's CPU per join. `compiled`
 * gives the plain statement (a WriteBatch inlines its values).
 *
 * `shareParameters` (PostgreSQL): an argument the statement uses more than
 * once is sent once, as one `$n` that each use refers to, not as a parameter
 * per use (the follow's fast path: the follower's 256-byte key was sent three
 * times). Each use must give it the same type (PostgreSQL deduces one per
 * parameter). SQLite's `?` are positional: there it changes nothing.
 */
export function prepared<A extends readonly unknown[], R>(build: (db: Kysely<DB>, ...args: { [K in keyof A]: never }) => Compilable<R>, options: { readonly shareParameters?: boolean } = {}) {
  // By the dialect's adapter, which a transaction shares with its database: the SQL depends on the dialect only.
  const compiled = new WeakMap<object, { query: CompiledQuery<R>; slots: (number | undefined)[] }>();
  const compile = (db: Kysely<DB>, ...args: A): CompiledQuery<R> => {
    const dialect = db.getExecutor().adapter;
    let entry = compiled.get(dialect);
    if (!entry) {
      const marks = args.map((_, i) => `\u0000prepared:${i}\u0000`);
      const query = build(db, ...(marks as never)).compile();
      const slots = query.parameters.map((p) => {
        const i = typeof p === "string" ? marks.indexOf(p) : -1;
        return i >= 0 ? i : undefined;
      });
      if (new Set(slots.filter((s) => s !== undefined)).size !== args.length) throw new Error("prepared: every argument must appear as a parameter");
      entry = options.shareParameters && /\$1\b/.test(query.sql) ? shared(query, slots) : { query, slots };
      compiled.set(dialect, entry);
    }
    const { query, slots } = entry;
    const parameters = query.parameters.map((p, i) => (slots[i] === undefined ? p : args[slots[i]!]));
    return { ...query, parameters };
  };
  const run = async (db: Kysely<DB>, ...args: A): Promise<QueryResult<R>> => db.executeQuery<R>(named(db, compile(db, ...args)));
  /** The statement with these values, not run: for a WriteBatch (src/db/batch.ts). */
  run.compiled = compile;
  return run;
}

/**
 * `query` (PostgreSQL's `$n` placeholders) with each argument's parameter
 * once: its later uses refer to its first `$n`. Other parameters (constants
 * the builder was given) keep one each.
 */
function shared<R>(query: CompiledQuery<R>, slots: (number | undefined)[]): { query: CompiledQuery<R>; slots: (number | undefined)[] } {
  const parameters: unknown[] = [];
  const sharedSlots: (number | undefined)[] = [];
  const firstOfArg = new Map<number, number>();
  // For each old parameter (0-based), its new number (1-based).
  const renumbered = query.parameters.map((p, i) => {
    const slot = slots[i];
    const known = slot === undefined ? undefined : firstOfArg.get(slot);
    if (known !== undefined) return known;
    parameters.push(p);
    sharedSlots.push(slot);
    if (slot !== undefined) firstOfArg.set(slot, parameters.length);
    return parameters.length;
  });
  const sql = query.sql.replace(/\$(\d+)\b/g, (_, n: string) => {
    const to = renumbered[Number(n) - 1];
    if (to === undefined) throw new RangeError(`prepared: no parameter $${n}`);
    return `$${to}`;
  });
  return { query: { ...query, sql, parameters }, slots: sharedSlots };
}
