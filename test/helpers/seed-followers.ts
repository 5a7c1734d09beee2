import { randomUUID } from "node:crypto";
import { CompiledQuery, type Kysely, PostgresAdapter } from "kysely";
import type { DB } from "../../src/db/schema.ts";

/** Where follower i lives: its server's origin, and whether that server offers a shared inbox. */
export type FollowerHome = (i: number) => { readonly origin: string; readonly shared: boolean };

/**
 * Inserts `count` active members of a union with their cached actors, as if
 * each had joined (follower i is `${origin}/users/m${i}`), sponsored by the
 * union's leader: the tree's shape does not matter to a fan-out. One
 * transaction, 2,000 rows a statement (members bind 16 parameters a row and
 * SQLite takes 32,766 a statement), each statement's text written once
 * and its values passed flat: building Kysely's query tree for 32,000
 * values a statement was most of the time, as a commit per small batch had
 * been before.
 */
export async function seedFollowers(db: Kysely<DB>, unionId: string, count: number, home: FollowerHome, onProgress?: (done: number) => void): Promise<void> {
  const root = await db.selectFrom("members").select("id").where("union_id", "=", unionId).where("role", "=", "leader").executeTakeFirstOrThrow();
  const now = Date.now();
  const BATCH = 2000;
  const postgres = db.getExecutor().adapter instanceof PostgresAdapter;
  const insert = (table: string, columns: readonly string[], rows: number) => {
    let n = 0;
    const tuple = () => `(${columns.map(() => (postgres ? `$${++n}` : "?")).join(", ")})`;
    return `insert into ${table} (${columns.map((c) => `"${c}"`).join(", ")}) values ${Array.from({ length: rows }, tuple).join(", ")}`;
  };
  const texts = new Map<string, string>();
  const statement = (table: string, columns: readonly string[], rows: number) => {
    const k = `${table} ${rows}`;
    let t = texts.get(k);
    if (t === undefined) texts.set(k, (t = insert(table, columns, rows)));
    return t;
  };
  await db.transaction().execute(async (trx) => {
    for (let from = 0; from < count; from += BATCH) {
      const rows = Math.min(count, from + BATCH) - from;
      const actors: unknown[] = [];
      const members: unknown[] = [];
      for (let i = from; i < from + rows; i++) {
        const { origin, shared } = home(i);
        const name = `m${i}`;
        const id = `${origin}/users/${name}`;
        const handle = `@${name}@${new URL(origin).host}`;
        actors.push(id, "Person", handle, name, `${id}/inbox`, shared ? `${origin}/inbox` : null, now);
        members.push(randomUUID(), unionId, id, handle, "active", "member", null, root.id, 0, `${id}#follow`, null, now, null, null, null, now);
      }
      await trx.executeQuery(CompiledQuery.raw(statement("remote_actors", ACTOR_COLUMNS, rows), actors));
      await trx.executeQuery(CompiledQuery.raw(statement("members", MEMBER_COLUMNS, rows), members));
      onProgress?.(from + rows);
    }
  });
  await db.updateTable("members").set({ subtree_size: count }).where("id", "=", root.id).execute();
}

const ACTOR_COLUMNS = ["id", "type", "handle", "name", "inbox", "shared_inbox", "fetched_at"] as const;
const MEMBER_COLUMNS = ["id", "union_id", "actor_id", "handle", "state", "role", "portfolio", "sponsor_id", "subtree_size", "follow_id", "invite_id", "joined_at", "left_at", "left_reason", "removed_by", "created_at"] as const;
