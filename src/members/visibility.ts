import type { Kysely } from "kysely";
import type { DB } from "../db/schema.ts";
import type { Union } from "../unions/unions.ts";

/** Who is asking to see the member list: a fediverse actor that signed the request, if any. */
export interface Viewer {
  readonly actorId?: string;
}

/**
 * The union's visibility setting decides who sees its members and tree:
 * `public` everyone; `members` a request signed by any account on a server
 * that hosts a current member (servers sign fetches with an instance or user
 * key, not always the member's own); `officers` a request signed by the
 * leader or an officer.
 */
export async function canSeeMembers(db: Kysely<DB>, union: Union, viewer: Viewer): Promise<boolean> {
  if (union.membersVisibility === "public") return true;
  if (!viewer.actorId) return false;
  if (union.membersVisibility === "officers") {
    const officer = await db.selectFrom("members").select("id")
      .where("union_id", "=", union.id).where("actor_id", "=", viewer.actorId)
      .where("state", "=", "active").where("role", "in", ["leader", "officer"]).executeTakeFirst();
    return officer !== undefined;
  }
  const origin = new URL(viewer.actorId).origin;
  // Actor ids on the signer's origin sort between `origin/` and `origin0`
  // ('0' follows '/'), so this is an index range scan, not a LIKE.
  const sameServer = await db.selectFrom("members").select("id")
    .where("union_id", "=", union.id).where("state", "=", "active")
    .where("actor_id", ">=", `${origin}/`).where("actor_id", "<", `${origin}0`)
    .limit(1).executeTakeFirst();
  return sameServer !== undefined;
}
