import { type Kysely, PostgresAdapter } from "kysely";
import type { DB } from "../db/schema.ts";
import type { MembersVisibility, Union } from "../unions/unions.ts";
import type { Member } from "./members.ts";

/**
 * Who is asking to see who belongs to a union. Over federation all Muster
 * knows is the actor whose key signed the fetch (none when unsigned); on the
 * web, the member signed in to this union (by a link sent to them by DM).
 */
export type Viewer =
  | { readonly via: "federation"; readonly actorId?: string }
  | { readonly via: "web"; readonly member?: Member };

/**
 * The one place the roster setting is read. Bylaws will own it later: move
 * the source here and every read follows.
 */
export function membersVisibility(union: Union): MembersVisibility {
  return union.membersVisibility;
}

/**
 * What each setting shows, and to whom, word for word as the CLI, the
 * console, the setup and join pages say it. "members" is wide on purpose of
 * the protocol, not by choice: servers sign fetches with an instance or any
 * user's key, so a fetch is matched to a member's server, not to the member.
 */
export const VISIBILITY_TEXT: Record<MembersVisibility, string> = {
  public: "Anyone: the member list, the sponsor tree and the officers are public, over the fediverse and on the web.",
  members: "Any account on a server that hosts a member: over the fediverse, a fetch signed by any account on such a server (on a large server, that is everyone on it) sees the member list and the tree; on the web, members who sign in see them.",
  "signed-in": "Members who sign in on the web see the member list and the tree; over the fediverse, only the leader's and officers' own accounts can fetch them.",
  officers: "The leader and officers only, over the fediverse and on the web.",
};

/** The choices in the order they open up, strictest first, for forms and help. */
export const VISIBILITY_CHOICES: readonly MembersVisibility[] = ["officers", "signed-in", "members", "public"];

/**
 * The rule every read that reveals membership goes through: rosters,
 * followers and their counts, moderators, the tree.
 */
export async function canSeeMembers(db: Kysely<DB>, union: Union, viewer: Viewer): Promise<boolean> {
  const setting = membersVisibility(union);
  if (setting === "public") return true;
  if (viewer.via === "web") return signedInMaySee(union, viewer.member);
  if (!viewer.actorId) return false;
  if (setting === "members") return hostsMember(db, union.id, viewer.actorId);
  return isOfficerActor(db, union.id, viewer.actorId);
}

/** The web half of the rule, for a member already signed in (pages decide whether to offer the link with it). */
export function signedInMaySee(union: Union, m: Member | undefined): boolean {
  const setting = membersVisibility(union);
  if (setting === "public") return true;
  // A session belongs to one union; the member must be active in this one.
  if (!m || m.unionId !== union.id || m.state !== "active") return false;
  return setting === "officers" ? m.role === "leader" || m.role === "officer" : true;
}

async function isOfficerActor(db: Kysely<DB>, unionId: string, actorId: string): Promise<boolean> {
  const officer = await db.selectFrom("members").select("id")
    .where("union_id", "=", unionId).where("actor_id", "=", actorId)
    .where("state", "=", "active").where("role", "in", ["leader", "officer"]).executeTakeFirst();
  return officer !== undefined;
}

/** Any account on the signer's server: servers sign fetches with an instance key, not always the member's own. */
async function hostsMember(db: Kysely<DB>, unionId: string, actorId: string): Promise<boolean> {
  let origin: string;
  try {
    origin = new URL(actorId).origin;
  } catch {
    return false;
  }
  // PostgreSQL keeps the active members of each union per origin (migration
  // 0074: its members have no btree over actor URLs to scan).
  if (db.getExecutor().adapter instanceof PostgresAdapter) {
    const row = await db.selectFrom("member_origins").select("members")
      .where("union_id", "=", unionId).where("origin", "=", origin).where("members", ">", 0).executeTakeFirst();
    return row !== undefined;
  }
  // Actor ids on the signer's origin sort between `origin/` and `origin0`
  // ('0' follows '/'), so this is an index range scan, not a LIKE.
  const sameServer = await db.selectFrom("members").select("id")
    .where("union_id", "=", unionId).where("state", "=", "active")
    .where("actor_id", ">=", `${origin}/`).where("actor_id", "<", `${origin}0`)
    .limit(1).executeTakeFirst();
  return sameServer !== undefined;
}
