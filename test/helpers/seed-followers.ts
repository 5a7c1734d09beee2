import { randomUUID } from "node:crypto";
import type { Insertable, Kysely } from "kysely";
import type { DB, MembersTable, RemoteActorsTable } from "../../src/db/schema.ts";

/** Where follower i lives: its server's origin, and whether that server offers a shared inbox. */
export type FollowerHome = (i: number) => { readonly origin: string; readonly shared: boolean };

/**
 * Inserts `count` active members of a union with their cached actors, as if
 * each had joined (follower i is `${origin}/users/m${i}`), sponsored by the
 * union's leader: the tree's shape does not matter to a fan-out. One
 * transaction, 2,000 rows a statement (members bind 16 parameters a row and
 * SQLite takes 32,766 a statement): 10^6 members with a commit per small
 * batch spent most of their time committing.
 */
export async function seedFollowers(db: Kysely<DB>, unionId: string, count: number, home: FollowerHome, onProgress?: (done: number) => void): Promise<void> {
  const root = await db.selectFrom("members").select("id").where("union_id", "=", unionId).where("role", "=", "leader").executeTakeFirstOrThrow();
  const now = Date.now();
  const BATCH = 2000;
  await db.transaction().execute(async (trx) => {
    for (let from = 0; from < count; from += BATCH) {
      const actors: Insertable<RemoteActorsTable>[] = [];
      const members: Insertable<MembersTable>[] = [];
      for (let i = from; i < Math.min(count, from + BATCH); i++) {
        const { origin, shared } = home(i);
        const name = `m${i}`;
        const id = `${origin}/users/${name}`;
        const handle = `@${name}@${new URL(origin).host}`;
        actors.push({
          id, type: "Person", handle, preferred_username: name, name, summary: null, url: null, avatar_url: null,
          inbox: `${id}/inbox`, shared_inbox: shared ? `${origin}/inbox` : null, fetched_at: now,
        });
        members.push({
          id: randomUUID(), union_id: unionId, actor_id: id, handle, state: "active", role: "member", portfolio: null,
          sponsor_id: root.id, subtree_size: 0, follow_id: `${id}#follow`, invite_id: null, joined_at: now,
          left_at: null, left_reason: null, removed_by: null, created_at: now,
        });
      }
      await trx.insertInto("remote_actors").values(actors).execute();
      await trx.insertInto("members").values(members).execute();
      onProgress?.(Math.min(count, from + BATCH));
    }
  });
  await db.updateTable("members").set({ subtree_size: count }).where("id", "=", root.id).execute();
}
