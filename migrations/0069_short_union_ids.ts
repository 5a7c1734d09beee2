import { randomFillSync } from "node:crypto";
import { type Kysely, sql } from "kysely";
import { isPostgres } from "./dialect.ts";

// Storage at a million members (issue 16): a union created before 13-character
// union ids (src/unions/union-id.ts) keeps its 36-character UUID, and every
// member row and four of its indexes repeat it (about 135 bytes a member on
// SQLite, more on PostgreSQL). This gives each such union a 13-character id.
//
// A union id is a key inside this server only: outside, a union is its actor
// URL, made of its slug (no URL, ActivityPub id, key id or on-chain data is
// made of the union id; the key pair's owner is `union:<id>`, stored here).
// Every place the database holds it moves to the new id, found from the
// catalog rather than from a list, so that a table added since is not missed:
// - every column named union_id, by equality;
// - every other text column of every table, where the old id occurs inside the
//   value (queue messages and their ordering keys, the key pair's owner, job
//   names, rate-limit buckets), by replacing it.
// The one thing left alone on purpose: a union whose old id occurs right after
// a "/" or a "=" anywhere (inside a URL's path or query: possibly an id another
// server holds) keeps its UUID. None is made so; the check makes sure.
//
// The new id is inserted as a copy of the union's row (the old row's slug is
// moved aside first), the rows that name the union move over, and the old row
// goes: every foreign key holds at every step. The triggers of those tables
// are held off while union_id moves (fanout_targets moves with every other
// union_id column, so its counts stay as they were). union_rekeys keeps old
// and new ids (down puts the old ones back; an operator can map an id seen in
// an old log).
//
// PostgreSQL rewrites each table's union_id column (ALTER COLUMN ... USING):
// an UPDATE would leave every old row version behind, members and its indexes
// about doubled until VACUUM FULL. SQLite updates in place: the rows shrink,
// their pages keep the slack until a VACUUM.

const ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz";

/** src/unions/union-id.ts newUnionId, as of this migration. */
function newUnionId(): string {
  const bytes = randomFillSync(Buffer.allocUnsafe(13));
  let id = "";
  for (const b of bytes) id += ALPHABET[b & 31];
  return id;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const SKIPPED_TABLES = new Set(["kysely_migration", "kysely_migration_lock", "union_rekeys"]);

interface Table {
  name: string;
  /** Has a column named union_id. */
  unionId: boolean;
  /** Text columns other than union_id. */
  text: string[];
}

async function tables(db: Kysely<any>): Promise<Table[]> {
  const out = new Map<string, Table>();
  const add = (table: string, column: string, text: boolean) => {
    if (SKIPPED_TABLES.has(table) || table.startsWith("sqlite_")) return;
    const t = out.get(table) ?? { name: table, unionId: false, text: [] };
    out.set(table, t);
    if (column === "union_id") t.unionId = true;
    else if (text) t.text.push(column);
  };
  if (isPostgres(db)) {
    const r = await sql<{ t: string; c: string; type: string }>`
      select c.table_name as t, c.column_name as c, c.data_type as type from information_schema.columns c
        join information_schema.tables t on t.table_schema = c.table_schema and t.table_name = c.table_name
      where c.table_schema = current_schema() and t.table_type = 'BASE TABLE' order by c.table_name, c.ordinal_position`.execute(db);
    for (const row of r.rows) add(row.t, row.c, ["text", "character varying", "character", "json", "jsonb"].includes(row.type));
  } else {
    const r = await sql<{ t: string; c: string; type: string }>`
      select m.name as t, p.name as c, p.type as type from sqlite_schema m join pragma_table_info(m.name) p
      where m.type = 'table' order by m.name, p.cid`.execute(db);
    // SQLite's affinity rules: a declared type with CHAR, CLOB or TEXT is text; no declared type holds text as given.
    for (const row of r.rows) add(row.t, row.c, row.type === "" || /CHAR|CLOB|TEXT/i.test(row.type));
  }
  return [...out.values()];
}

const id = (name: string) => sql.id(name);

/** Whether `old` occurs inside a URL's path or query anywhere (then the union keeps it). */
async function inUrl(db: Kysely<any>, all: Table[], old: string): Promise<string | undefined> {
  const patterns = [`%/${old}%`, `%=${old}%`];
  for (const t of all) {
    const columns = [...t.text, ...(t.unionId ? ["union_id"] : [])];
    if (columns.length === 0) continue;
    const cond = sql.join(columns.flatMap((c) => patterns.map((p) => sql`${id(c)} like ${p}`)), sql` or `);
    const hit = await sql<{ n: number }>`select 1 as n from ${id(t.name)} where ${cond} limit 1`.execute(db);
    if (hit.rows.length > 0) return t.name;
  }
  return undefined;
}

/**
 * The triggers of the tables that have a union_id, held off while it moves (SQLite: a trigger would fire on
 * the update; PostgreSQL: a trigger that names union_id forbids the column's rewrite). Each is dropped and
 * created again from its own text, word for word; the returned function creates them again.
 */
async function holdTriggers(db: Kysely<any>, all: Table[]): Promise<() => Promise<void>> {
  const withUnion = all.filter((t) => t.unionId).map((t) => t.name);
  if (isPostgres(db)) {
    const r = await sql<{ t: string; name: string; def: string; enabled: string }>`
      select c.relname as t, g.tgname as name, pg_get_triggerdef(g.oid) as def, g.tgenabled as enabled from pg_trigger g
        join pg_class c on c.oid = g.tgrelid join pg_namespace n on n.oid = c.relnamespace
      where n.nspname = current_schema() and not g.tgisinternal order by 1, 2`.execute(db);
    const held = r.rows.filter((x) => withUnion.includes(x.t));
    for (const x of held) await sql`drop trigger ${id(x.name)} on ${id(x.t)}`.execute(db);
    return async () => {
      for (const x of held) {
        await sql.raw(x.def).execute(db);
        if (x.enabled === "D") await sql`alter table ${id(x.t)} disable trigger ${id(x.name)}`.execute(db);
      }
    };
  }
  // SQLite cannot disable a trigger: drop it and create it again from its own text.
  const r = await sql<{ name: string; tbl: string; sql: string }>`select name, tbl_name as tbl, sql from sqlite_schema where type = 'trigger' order by name`.execute(db);
  const held = r.rows.filter((x) => withUnion.includes(x.tbl));
  for (const x of held) await sql`drop trigger ${id(x.name)}`.execute(db);
  return async () => {
    for (const x of held) await sql.raw(x.sql).execute(db);
  };
}

/**
 * Moves every row and value that names each union `from` to its `to` (a fresh id no union has): copies of the
 * union rows under the new ids, every union_id column, every other text value holding an old id, then the old
 * rows go.
 */
async function rekey(db: Kysely<any>, all: Table[], moves: readonly (readonly [from: string, to: string])[]): Promise<void> {
  for (const [from, to] of moves) {
    const row = await db.selectFrom("unions").selectAll().where("id", "=", from).executeTakeFirstOrThrow();
    // The copy takes the slug (unique): the old row's moves aside first.
    await db.updateTable("unions").set({ slug: `${row.slug}~${to}` }).where("id", "=", from).execute();
    await db.insertInto("unions").values({ ...row, id: to }).execute();
  }
  for (const t of all) {
    if (t.name === "unions") continue;
    if (t.unionId) {
      if (isPostgres(db)) {
        // Rewritten, not updated: an UPDATE of every member would leave the old row versions behind (members and
        // its indexes about doubled until VACUUM FULL); the rewrite keeps only the new rows and rebuilds the indexes.
        // The column's foreign key is checked again over the new values.
        const cases = sql.join(moves.map(([from, to]) => sql`when ${sql.lit(from)} then ${sql.lit(to)}`), sql` `);
        await sql`alter table ${id(t.name)} alter column union_id type text using (case union_id ${cases} else union_id end)`.execute(db);
      } else {
        for (const [from, to] of moves) await sql`update ${id(t.name)} set union_id = ${to} where union_id = ${from}`.execute(db);
      }
    }
    if (t.text.length > 0) {
      for (const [from, to] of moves) {
        const sets = sql.join(t.text.map((c) => sql`${id(c)} = replace(${id(c)}, ${from}, ${to})`));
        const cond = sql.join(t.text.map((c) => sql`${id(c)} like ${`%${from}%`}`), sql` or `);
        await sql`update ${id(t.name)} set ${sets} where ${cond}`.execute(db);
      }
    }
  }
  for (const [from] of moves) await db.deleteFrom("unions").where("id", "=", from).execute();
}

export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.createTable("union_rekeys")
    .addColumn("old_id", "text", (c) => c.primaryKey())
    .addColumn("new_id", "text", (c) => c.notNull().unique())
    .addColumn("rekeyed_at", "bigint", (c) => c.notNull())
    .execute();
  const unions = (await db.selectFrom("unions").select("id").execute()).map((u) => u.id as string).filter((u) => UUID.test(u));
  if (unions.length === 0) return;
  const all = await tables(db);
  const taken = new Set((await db.selectFrom("unions").select("id").execute()).map((u) => u.id as string));
  const moves: [string, string][] = [];
  for (const old of unions) {
    const where = await inUrl(db, all, old);
    if (where !== undefined) {
      console.warn(`migration 0069: union ${old} keeps its id: it occurs inside a URL in ${where}`);
      continue;
    }
    let to = newUnionId();
    while (taken.has(to)) to = newUnionId();
    taken.add(to);
    moves.push([old, to]);
  }
  if (moves.length === 0) return;
  const release = await holdTriggers(db, all);
  await rekey(db, all, moves);
  await release();
  const now = Date.now();
  for (const [old, to] of moves) await db.insertInto("union_rekeys").values({ old_id: old, new_id: to, rekeyed_at: now }).execute();
  console.warn(`migration 0069: ${moves.map(([old, to]) => `union ${old} is now ${to}`).join("; ")}`);
}

/** SQLite: the members' rows shrank in place; one VACUUM after the migration gives their pages back (src/db/migrate.ts). */
export async function sqliteVacuumWanted(db: Kysely<any>): Promise<boolean> {
  const row = await db.selectFrom("union_rekeys").select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirst();
  return Number(row?.n ?? 0) > 0;
}

export async function down(db: Kysely<any>): Promise<void> {
  const moves = await db.selectFrom("union_rekeys").select(["old_id", "new_id"]).execute();
  if (moves.length > 0) {
    const all = await tables(db);
    const release = await holdTriggers(db, all);
    await rekey(db, all, moves.map((m) => [m.new_id as string, m.old_id as string] as const));
    await release();
  }
  await db.schema.dropTable("union_rekeys").execute();
}
