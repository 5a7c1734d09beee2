import { createHash } from "node:crypto";
import { CompiledQuery, type DatabaseConnection, Kysely, type QueryResult } from "kysely";
import { Deferred, Pipeline, type PipelinedStatement } from "../src/db/pipeline.ts";
import type { DB } from "../src/db/schema.ts";

/** Thrown into a join of a group that does more than the group can run together: the group rolls back (join-commit.ts runs each alone). */
export class GroupAbort extends Error {
  constructor(why: string) {
    super(`the joins' group cannot run this together: ${why}`);
  }
}

type Pending = { statements: PipelinedStatement[]; resolve: (r: QueryResult<unknown>) => void; reject: (e: unknown) => void; sent?: number };

/** The transaction's own connection (Kysely gives it to one consumer at a time; runGroup is the only one while it runs). */
function connectionOfTransaction(trx: Kysely<DB>): Promise<DatabaseConnection> {
  return trx.getExecutor().provideConnection(async (connection) => connection);
}

/** A row lock (SELECT ... FOR [NO KEY] UPDATE / SHARE / KEY SHARE), which a transaction holding it already takes again as a no-op. */
const ROW_LOCK = /^select [^;]* for (no key update|update|share|key share)$/;
const sameValues = (a: readonly unknown[], b: readonly unknown[]) => a.length === b.length && a.every((v, i) => v === b[i]);

/**
 * The flush's statements in the joins' order, less a join's row lock that a
 * join before it in the same flush already took (the same text and values:
 * the union's lock, which every join of the group takes before its reads).
 * In one transaction the second lock of a row is a no-op, and its rows are
 * not read (only a join's last statement answers it). Each Pending's `sent`
 * says how many of its statements are in the flush.
 */
function withoutRepeatedLocks(batch: Pending[]): PipelinedStatement[] {
  const all: PipelinedStatement[] = [];
  const locks: PipelinedStatement[] = [];
  for (const p of batch) {
    let sent = 0;
    for (const [k, s] of p.statements.entries()) {
      const last = k === p.statements.length - 1;
      if (!last && ROW_LOCK.test(s.text)) {
        if (locks.some((l) => l.text === s.text && l.name === s.name && sameValues(l.values, s.values))) continue;
        locks.push(s);
      }
      all.push(s);
      sent++;
    }
    p.sent = sent;
  }
  return all;
}

/**
 * Runs several joins' work in one PostgreSQL transaction (`trx`) at once,
 * with their round trips shared: each join runs against a Kysely of its own
 * whose queries are held here; what a join sends to go with the next
 * statement (sendWithNext: the Follow's record, its key, its writes) is
 * handed to the transaction at once, and a join's one query that waits for
 * its answer (the union's lock and the join's reads, lockThenReadAll) is
 * held until every join of the group either waits for such an answer or has
 * finished. Then all of them go out in one pipeline, in the joins' order,
 * each with its own snapshot taken once the statement before it finished
 * (the first lock waits for other transactions; each later join's lock is
 * the transaction's own). Whatever the joins leave to be sent after that
 * goes out with the COMMIT. The group's joins thus cost two round trips in
 * all, where each alone costs two.
 *
 * A join's reads run before the writes of the joins ahead of it in its
 * group (those go with the COMMIT). That is the same as each join alone
 * only for joins that touch different rows: different followers (two joins
 * of one follower would both insert a member, which fails the COMMIT) of one
 * union whose union row, leader and bylaws they only read. A join that asks a
 * second query for an answer (any path but an open union's newcomer) is
 * stopped with GroupAbort, and so is the group; the caller rolls it back
 * and runs each join alone, as it would have without the group.
 *
 * Settles with each join's outcome (as Promise.allSettled) once all settled;
 * whether the transaction commits is the caller's.
 */
export async function runGroup<T>(trx: Kysely<DB>, works: readonly ((db: Kysely<DB>) => Promise<T>)[]): Promise<PromiseSettledResult<T>[]> {
  const n = works.length;
  const pending = new Map<number, Pending>();
  const asked = new Set<number>();
  /** What the joins send with the next statement once their reads were asked (their writes): merged and handed once all settled (mergeWrites). */
  const held: Deferred[] = [];
  let settled = 0;
  let aborted: GroupAbort | undefined;
  let flushing = false;
  // Hand-overs to the transaction in order (each waits for the one before: a connection runs one query at a time).
  // Straight to the transaction's connection, taken once: nothing else uses `trx` while the group runs, and
  // Kysely's Transaction made an executor, a connection provider's turn and several promises for each of the
  // group's statements (about a fifth of what the web process allocated a join, issue 16).
  const connection = connectionOfTransaction(trx);
  let handing: Promise<unknown> = Promise.resolve();
  const hand = <R>(q: CompiledQuery<R>): Promise<QueryResult<R>> => {
    const r = handing.then(async () => (await connection).executeQuery<R>(q));
    handing = r.catch(() => {});
    return r;
  };

  function abort(why: string): void {
    aborted ??= new GroupAbort(why);
    for (const [, p] of pending) p.reject(aborted);
    pending.clear();
  }

  function maybeFlush(): void {
    if (flushing || pending.size === 0 || pending.size + settled < n) return;
    flushing = true;
    const batch = [...pending].sort((a, b) => a[0] - b[0]).map(([, p]) => p);
    pending.clear();
    void flush(batch).finally(() => {
      flushing = false;
      maybeFlush();
    });
  }

  async function flush(batch: Pending[]): Promise<void> {
    // Every statement but the last travels as a deferred one; the last carries them all (one pipeline, database.ts).
    const all = withoutRepeatedLocks(batch);
    const deferred = all.slice(0, -1).map((s) => new Deferred(s));
    const last = all[all.length - 1]!;
    for (const d of deferred) void hand({ ...CompiledQuery.raw(""), sql: d as unknown as string });
    let carried: { ok: true; value: QueryResult<unknown> } | { ok: false; error: unknown };
    try {
      const sql = (last.name === undefined ? last.text : { name: last.name, text: last.text, toString: () => last.text }) as unknown as string;
      carried = { ok: true, value: await hand({ ...CompiledQuery.raw(""), sql, parameters: last.values }) };
    } catch (error) {
      carried = { ok: false, error };
    }
    let at = 0;
    for (const p of batch) {
      at += p.sent ?? p.statements.length;
      const i = at - 1;
      if (i === all.length - 1) {
        if (carried.ok) p.resolve(carried.value);
        else p.reject(carried.error);
        continue;
      }
      const r = await deferred[i]!.result.then((value) => ({ ok: true as const, value }), (error: unknown) => ({ ok: false as const, error }));
      if (r.ok) p.resolve(asKysely(r.value));
      else p.reject(r.error);
    }
  }

  const connectionOf = (i: number): DatabaseConnection => ({
    executeQuery: async <R>(q: CompiledQuery): Promise<QueryResult<R>> => {
      if (aborted) throw aborted;
      if (q.sql as unknown instanceof Deferred) {
        // Before its reads (the Follow's record, the key: first()), at once, as alone; after them (its writes), held.
        if (!asked.has(i)) return await hand(q) as QueryResult<R>;
        held.push(q.sql as unknown as Deferred);
        return { rows: [] } as QueryResult<R>;
      }
      if (asked.has(i)) {
        abort("a join asked a second query for an answer");
        throw aborted;
      }
      asked.add(i);
      return new Promise<QueryResult<R>>((resolve, reject) => {
        pending.set(i, { statements: statementsOf(q), resolve: resolve as (r: QueryResult<unknown>) => void, reject });
        maybeFlush();
      });
    },
    streamQuery: () => {
      throw new GroupAbort("a join streamed a query");
    },
  });

  const results = works.map((work, i) => {
    const executor = trx.getExecutor().withConnectionProvider({ provideConnection: (consume) => consume(connectionOf(i)) });
    const db = new Kysely<DB>({ config: {} as never, driver: {} as never, dialect: {} as never, executor } as never);
    return work(db).finally(() => {
      settled++;
      maybeFlush();
    });
  });
  const outcomes = await Promise.allSettled(results);
  if (aborted || outcomes.some((o) => o.status === "rejected")) {
    // Rolled back by the caller: the held writes are never sent.
    const why = aborted ?? new GroupAbort("a join of the group failed");
    for (const d of held) d.reject(why);
  } else {
    for (const d of mergeWrites(held)) void hand({ ...CompiledQuery.raw(""), sql: d as unknown as string });
  }
  await handing;
  if (aborted) throw aborted;
  return outcomes;
}

/** A pg result as Kysely's PostgreSQL driver gives it. */
function asKysely(r: QueryResult<unknown>): QueryResult<unknown> {
  const { command, rowCount, rows } = r as unknown as { command?: string; rowCount?: number | null; rows?: unknown[] };
  return {
    numAffectedRows: command === "INSERT" || command === "UPDATE" || command === "DELETE" || command === "MERGE" ? BigInt(rowCount ?? 0) : undefined,
    rows: rows ?? [],
  } as QueryResult<unknown>;
}

/** A compiled query's statements, as a pipeline's (a Pipeline's own, or one named or plain statement). */
function statementsOf(q: CompiledQuery): PipelinedStatement[] {
  const sql = q.sql as unknown;
  if (sql instanceof Pipeline) return [...sql.statements];
  if (typeof sql === "string") return [{ text: sql, values: q.parameters }];
  const config = sql as { name?: string; text: string };
  return [{ text: config.text, values: q.parameters, ...(config.name === undefined ? {} : { name: config.name }) }];
}

const UPDATE_GAINS = /^update "members" set "subtree_size" = "subtree_size" \+ \$1 where "id" = \$2$/;
const INSERT = /^(insert into "[a-z_]+" \([^()]*\) values )(.*)$/s;

type InsertParts = { head: string; tuples: string[]; tail: string };
/** insertParts of the texts seen (a handful: prepared statements' texts), so each is cut once. */
const partsOf = new Map<string, InsertParts | null>();
const TEXTS_HELD = 256;
function insertPartsHeld(text: string): InsertParts | undefined {
  let parts = partsOf.get(text);
  if (parts === undefined) {
    if (partsOf.size >= TEXTS_HELD) partsOf.clear();
    partsOf.set(text, parts = insertParts(text) ?? null);
  }
  return parts ?? undefined;
}

/** An INSERT's text cut around its VALUES tuples (balanced parentheses, no literal strings), or undefined. */
function insertParts(text: string): InsertParts | undefined {
  const m = INSERT.exec(text);
  if (!m || text.includes("'") || / on conflict /i.test(text)) return undefined;
  const rest = m[2]!;
  const tuples: string[] = [];
  let at = 0;
  for (;;) {
    if (rest[at] !== "(") return undefined;
    let depth = 0;
    let end = at;
    for (; end < rest.length; end++) {
      if (rest[end] === "(") depth++;
      else if (rest[end] === ")" && --depth === 0) break;
    }
    if (end >= rest.length) return undefined;
    tuples.push(rest.slice(at, end + 1));
    at = end + 1;
    if (rest.startsWith(", (", at)) at += 2;
    else break;
  }
  const tail = rest.slice(at);
  if (tail !== "" && !tail.startsWith(" returning ")) return undefined;
  return { head: m[1]!, tuples, tail };
}

const PARAM = /\$(\d+)/g;
const paramsIn = (text: string): number[] => [...text.matchAll(PARAM)].map((m) => Number(m[1]));

/**
 * The group's writes as fewer statements (issue 16: N joins sent N member
 * inserts, N invite inserts, N queue inserts and N updates of the one
 * leader row, N versions of it): INSERTs of one text become one multi-row
 * INSERT (their rows in the joins' order; only when the parameters outside
 * the rows, such as a RETURNING's notification, are the same; in runs of
 * 2^k statements, so the texts are few and prepared once), and the
 * root sponsor's `subtree_size + k` updates of one row one update adding
 * their sum. Each merged statement takes the place of the first it merges;
 * the rest keep their order. Merged or moved writes touch different rows
 * (each join its own new member, invite and messages) or only add to a
 * counter, so the outcome is each join's as if sent alone; a failure fails
 * the COMMIT as before (the group then runs each join alone). Each join's
 * Deferred settles with its merged statement's result (nobody reads rows).
 */
export function mergeWrites(writes: readonly Deferred[]): Deferred[] {
  type Group = { kind: "insert" | "gains"; members: Deferred[] };
  const groups = new Map<string, Group>();
  const order: (Group | Deferred)[] = [];
  for (const d of writes) {
    const { text, values } = d.statement;
    let key: string | undefined;
    let kind: Group["kind"] | undefined;
    if (UPDATE_GAINS.test(text) && typeof values[0] === "number") {
      key = `gains\u0000${String(values[1])}`;
      kind = "gains";
    } else {
      const parts = insertPartsHeld(text);
      if (parts) {
        const outside = outsideOf(parts);
        key = `insert\u0000${text}\u0000${JSON.stringify(outside.map((j) => values[j - 1]))}`;
        kind = "insert";
      }
    }
    if (key === undefined || kind === undefined) {
      order.push(d);
      continue;
    }
    let g = groups.get(key);
    if (!g) {
      g = { kind, members: [] };
      groups.set(key, g);
      order.push(g);
    }
    g.members.push(d);
  }
  return order.flatMap((g) => {
    if (g instanceof Deferred) return [g];
    // INSERTs in chunks of 32, 16, 8, 4, 2, 1 statements: a handful of texts per kind, each prepared once per
    // connection and then reused, where one text per group size was mostly new to its connection (parsed, planned anew).
    const chunks = g.kind === "gains" ? [g.members] : powersOfTwo(g.members);
    return chunks.map((members) => {
      if (members.length === 1) return members[0]!;
      const merged = new Deferred(g.kind === "gains" ? gainsOf(members) : insertOf(members));
      merged.result.then((r) => { for (const d of members) d.resolve(r); }, (e: unknown) => { for (const d of members) d.reject(e); });
      return merged;
    });
  });
}

/** `items` cut in order into runs whose lengths are powers of two, largest first (12: 8 + 4). */
function powersOfTwo<T>(items: readonly T[]): T[][] {
  const out: T[][] = [];
  let at = 0;
  while (at < items.length) {
    let size = 1;
    while (size * 2 <= items.length - at) size *= 2;
    out.push(items.slice(at, at + size));
    at += size;
  }
  return out;
}

function gainsOf(members: readonly Deferred[]): PipelinedStatement {
  const first = members[0]!.statement;
  const sum = members.reduce((s, d) => s + (d.statement.values[0] as number), 0);
  return { ...first, values: [sum, first.values[1]] };
}

/** The parameters of an INSERT outside its rows (in its head and tail), by number: held per text. */
const outsideHeld = new WeakMap<InsertParts, number[]>();
function outsideOf(parts: InsertParts): number[] {
  let outside = outsideHeld.get(parts);
  if (outside === undefined) outsideHeld.set(parts, outside = [...new Set(paramsIn(parts.head + parts.tail))].sort((a, b) => a - b));
  return outside;
}

/**
 * A merged INSERT of `n` statements of one text: its text and name, and where
 * each of its parameters comes from (which member's, which of its own).
 * The same for every group of that text and size: made once (insertOfText).
 */
type MergedInsert = { text: string; name: string; from: [member: number, parameter: number][] };
const mergedHeld = new Map<string, MergedInsert[]>();
function mergedInsert(text: string, n: number): MergedInsert {
  let bySize = mergedHeld.get(text);
  if (bySize === undefined) {
    if (mergedHeld.size >= TEXTS_HELD) mergedHeld.clear();
    mergedHeld.set(text, bySize = []);
  }
  let merged: MergedInsert | undefined = bySize[n];
  if (merged === undefined) {
    // The parameters' sources in place of their values: insertOfText numbers them as it numbers values.
    const numbers = [...new Set(paramsIn(text))];
    const symbolic = Array.from({ length: n }, (_, i) => ({ text, values: Array.from({ length: Math.max(0, ...numbers) }, (_, j) => [i, j] as [number, number]) }));
    const made = insertOfText(symbolic);
    bySize[n] = merged = { text: made.text, name: made.name!, from: made.values as [number, number][] };
  }
  return merged;
}

function insertOf(members: readonly Deferred[]): PipelinedStatement {
  const { text } = members[0]!.statement;
  // Members of one merge share the text (mergeWrites' key): else made as before.
  if (!members.every((d) => d.statement.text === text)) return insertOfText(members.map((d) => d.statement));
  const merged = mergedInsert(text, members.length);
  return { text: merged.text, values: merged.from.map(([i, j]) => members[i]!.statement.values[j]), name: merged.name };
}

function insertOfText(members: readonly { text: string; values: readonly unknown[] }[]): PipelinedStatement {
  const values: unknown[] = [];
  const renumber = (text: string, from: readonly unknown[], seen: Map<number, number>) => text.replace(PARAM, (_, n: string) => {
    const j = Number(n);
    let k = seen.get(j);
    if (k === undefined) {
      values.push(from[j - 1]);
      k = values.length;
      seen.set(j, k);
    }
    return `$${k}`;
  });
  const firstSeen = new Map<number, number>();
  const parts = insertParts(members[0]!.text)!;
  const head = renumber(parts.head, members[0]!.values, firstSeen);
  const tuples = members.flatMap((d, i) => {
    const seen = i === 0 ? firstSeen : new Map<number, number>();
    return insertParts(d.text)!.tuples.map((t) => renumber(t, d.values, seen));
  });
  const tail = renumber(parts.tail, members[0]!.values, firstSeen);
  const text = `${head}${tuples.join(", ")}${tail}`;
  // Named as prepared() names a statement (named-statement.ts): one text per kind and group size.
  return { text, values, name: `muster_${createHash("sha256").update(text).digest("hex").slice(0, 24)}` };
}
