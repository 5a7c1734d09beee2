import type { Recipient } from "@fedify/vocab";
import type { Kysely } from "kysely";
import type { DB } from "../src/db/schema.ts";

const PAGE = 500;

/**
 * The union's followers are its active members, paged by member id; each
 * carries its inbox and shared inbox so Fedify can fan out by shared inbox.
 */
export async function followersPage(db: Kysely<DB>, unionId: string, cursor: string | null) {
  const rows = await db.selectFrom("members as m")
    .leftJoin("remote_actors as a", "a.id", "m.actor_id")
    .select(["m.id", "m.actor_id", "a.inbox", "a.shared_inbox"])
    .where("m.union_id", "=", unionId)
    .where("m.state", "=", "active")
    .where("m.actor_id", "is not", null)
    .$if(cursor !== null && cursor !== "", (q) => q.where("m.id", ">", cursor!))
    .orderBy("m.id")
    .$if(cursor !== null, (q) => q.limit(PAGE))
    .execute();
  const items: Recipient[] = rows.map((r) => ({
    id: new URL(r.actor_id!),
    inboxId: r.inbox ? new URL(r.inbox) : null,
    endpoints: r.shared_inbox ? { sharedInbox: new URL(r.shared_inbox) } : null,
  }));
  const nextCursor = cursor !== null && rows.length === PAGE ? rows[rows.length - 1]!.id : null;
  return { items, nextCursor };
}

export async function countFollowers(db: Kysely<DB>, unionId: string): Promise<number> {
  const r = await db.selectFrom("members").select((eb) => eb.fn.countAll<number>().as("n"))
    .where("union_id", "=", unionId).where("state", "=", "active").where("actor_id", "is not", null).executeTakeFirstOrThrow();
  return Number(r.n);
}
