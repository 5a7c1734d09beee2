import type { Kysely } from "kysely";
import type { DB } from "../db/schema.ts";
import { IN_TREE, type Member, toMember } from "../members/members.ts";
import { recruitsOf } from "../members/tree.ts";

// Read-only shapes the console pages need, built from the members domain.

export interface TreeNode {
  readonly member: Member;
  /** Shown recruits; empty when this node is not expanded. */
  readonly children: readonly TreeNode[];
  /** Direct recruits after the shown ones (open the member to page through them). */
  readonly hidden: number;
  /** Whether this node's recruits were looked at (false at the depth limit). */
  readonly expanded: boolean;
}

/** How many recruits are shown per member at each depth below the root; the rest is counted. */
const WIDTH_AT_DEPTH = [50, 12];

/**
 * A few levels of the tree under `root`. For a union of any size this is at
 * most 1 + WIDTH_AT_DEPTH[0] small indexed queries; deeper levels appear as
 * subtree counts with a link to drill in.
 */
export async function loadTree(db: Kysely<DB>, root: Member, opts: { after?: string } = {}, depth = 0): Promise<TreeNode> {
  const width = WIDTH_AT_DEPTH[depth];
  if (width === undefined || root.subtreeSize === 0) return { member: root, children: [], hidden: 0, expanded: width !== undefined };
  const recruits = await recruitsOf(db, root.unionId, root.id, { limit: width + 1, after: depth === 0 ? opts.after : undefined });
  const shown = recruits.slice(0, width);
  const children = await Promise.all(shown.map((r) => loadTree(db, r, {}, depth + 1)));
  const hidden = recruits.length > width ? await countRecruits(db, root.unionId, root.id, shown.at(-1)!.id) : 0;
  return { member: root, children, hidden, expanded: true };
}

/** Direct recruits after `afterId` in recruitsOf's order (the ones not shown). */
async function countRecruits(db: Kysely<DB>, unionId: string, memberId: string, afterId: string): Promise<number> {
  const r = await db.selectFrom("members").select((eb) => eb.fn.countAll<number>().as("n"))
    .where("union_id", "=", unionId).where("sponsor_id", "=", memberId).where("state", "in", IN_TREE)
    .where("id", ">", afterId).executeTakeFirstOrThrow();
  return Number(r.n);
}

/** The tops of the tree: the leader, and anyone admitted while the union had no leader. */
export async function treeRoots(db: Kysely<DB>, unionId: string, limit = 20): Promise<Member[]> {
  const rows = await db.selectFrom("members").selectAll()
    .where("union_id", "=", unionId).where("sponsor_id", "is", null).where("state", "in", IN_TREE)
    .orderBy("created_at").limit(limit).execute();
  return rows.map(toMember).sort((a, b) => (a.role === "leader" ? 0 : 1) - (b.role === "leader" ? 0 : 1));
}

/** Handles for member ids (invite creators, sponsors). */
export async function handlesOf(db: Kysely<DB>, unionId: string, ids: readonly string[]): Promise<Map<string, string | null>> {
  const unique = [...new Set(ids)];
  if (unique.length === 0) return new Map();
  const rows = await db.selectFrom("members").select(["id", "handle"]).where("union_id", "=", unionId).where("id", "in", unique).execute();
  return new Map(rows.map((r) => [r.id, r.handle]));
}
