import { type Kysely, sql } from "kysely";
import type { DB } from "../db/schema.ts";
import type { Union } from "../unions/unions.ts";
import { inboxUrl } from "../actors/remote-actors.ts";
import { IN_TREE, type Member, type MemberRole, toMember } from "./members.ts";
import { canSeeMembers, type Viewer } from "./visibility.ts";
import { refreshStatistics } from "../db/statistics.ts";

// Every read that shows who belongs to a union goes through here, and each
// asks canSeeMembers first: federation/ and src/http/ render what these
// return and never query the member tables for it themselves.

/** Why a read was refused: nobody identified (sign first), or the wrong somebody. */
export type Refused = { readonly ok: false; readonly refused: "unidentified" | "forbidden" };

export interface Membership {
  readonly memberId: string;
  readonly actorId: string | null;
  readonly handle: string | null;
  readonly role: MemberRole;
  readonly portfolio: string | null;
  readonly joinedAt: Date | null;
  readonly sponsorActorId: string | null;
  /** A member of an allied union who sponsored them in, and that union (cross-union backlink). */
  readonly allySponsor: { readonly actorId: string; readonly unionActorId: string | null } | null;
  readonly sponsorHandle: string | null;
}

export interface RosterPage {
  readonly ok: true;
  readonly total: number;
  /** The handle searched for, as used (trimmed, without a leading @), if any. */
  readonly search?: string | undefined;
  /** With a search: how many members match it. */
  readonly matched?: number | undefined;
  readonly items: readonly Membership[];
  /** The cursor of the next page, if there is one. */
  readonly next: string | undefined;
}

async function gate(db: Kysely<DB>, union: Union, viewer: Viewer): Promise<Refused | undefined> {
  if (await canSeeMembers(db, union, viewer)) return undefined;
  const identified = viewer.via === "web" ? viewer.member !== undefined : viewer.actorId !== undefined;
  return { ok: false, refused: identified ? "forbidden" : "unidentified" };
}

/** Whether this viewer may see the union's members; a shortcut for gates that render elsewhere (Fedify's authorize). */
export async function mayReadRoster(db: Kysely<DB>, union: Union, viewer: Viewer): Promise<boolean> {
  return canSeeMembers(db, union, viewer);
}

/** The longest handle search accepted; a handle is user@host, so longer finds nothing anyway. */
export const MAX_HANDLE_QUERY = 200;

/** A LIKE pattern matching `text` anywhere, with LIKE's own wildcards taken literally (used with `escape '\\'`). */
function containsPattern(text: string): string {
  return `%${text.toLowerCase().replace(/[\\%_]/g, (ch) => `\\${ch}`)}%`;
}

/**
 * Active members with their sponsors, by member id after `after`; `total` counts them all.
 * With `handle`, only members whose handle contains it (any case); `matched` then counts those.
 */
export async function readRoster(db: Kysely<DB>, union: Union, viewer: Viewer, opts: { after?: string; limit: number; handle?: string }): Promise<Refused | RosterPage> {
  const refused = await gate(db, union, viewer);
  if (refused) return refused;
  const search = opts.handle?.trim().replace(/^@/, "").slice(0, MAX_HANDLE_QUERY) || undefined;
  const pattern = search === undefined ? undefined : containsPattern(search);
  const [total, matched, rows] = await Promise.all([
    countActive(db, union.id),
    pattern === undefined ? Promise.resolve(undefined) : db.selectFrom("members as m")
      .select((eb) => eb.fn.countAll<number | string>().as("n"))
      .where("m.union_id", "=", union.id).where("m.state", "=", "active")
      .where(sql<boolean>`lower(m.handle) like ${pattern} escape '\\'`)
      .executeTakeFirstOrThrow().then((r) => Number(r.n)),
    db.selectFrom("members as m")
      .leftJoin("members as s", "s.id", "m.sponsor_id")
      .select(["m.id", "m.actor_id", "m.handle", "m.role", "m.portfolio", "m.joined_at", "s.actor_id as sponsor_actor_id", "s.handle as sponsor_handle", "m.ally_sponsor_actor_id", "m.ally_sponsor_union"])
      .where("m.union_id", "=", union.id).where("m.state", "=", "active")
      .$if(!!opts.after, (q) => q.where("m.id", ">", opts.after!))
      .$if(pattern !== undefined, (q) => q.where(sql<boolean>`lower(m.handle) like ${pattern} escape '\\'`))
      .orderBy("m.id").limit(opts.limit).execute(),
  ]);
  return {
    ok: true,
    total,
    search,
    matched,
    items: rows.map((r) => ({
      memberId: r.id,
      actorId: r.actor_id,
      handle: r.handle,
      role: r.role as MemberRole,
      portfolio: r.portfolio,
      joinedAt: r.joined_at === null ? null : new Date(Number(r.joined_at)),
      sponsorActorId: r.sponsor_actor_id,
      sponsorHandle: r.sponsor_handle,
      allySponsor: r.ally_sponsor_actor_id ? { actorId: r.ally_sponsor_actor_id, unionActorId: r.ally_sponsor_union } : null,
    })),
    next: rows.length === opts.limit ? rows[rows.length - 1]!.id : undefined,
  };
}

/** The leader first, then officers by when they joined: the union's moderators. */
export async function readModerators(db: Kysely<DB>, union: Union, viewer: Viewer): Promise<Refused | { ok: true; actorIds: string[] }> {
  const refused = await gate(db, union, viewer);
  if (refused) return refused;
  const rows = await db.selectFrom("members").select(["actor_id", "role"])
    .where("union_id", "=", union.id).where("state", "=", "active").where("role", "in", ["leader", "officer"]).where("role", "<>", sql.lit("member"))
    .where("actor_id", "is not", null).orderBy("joined_at").execute();
  rows.sort((a, b) => Number(b.role === "leader") - Number(a.role === "leader"));
  return { ok: true, actorIds: rows.map((r) => r.actor_id!) };
}

/** The tops of the sponsor tree (the leader, and anyone admitted while there was none), for a viewer who may see it. */
export async function readTreeRoots(db: Kysely<DB>, union: Union, viewer: Viewer, limit = 20): Promise<Refused | { ok: true; roots: Member[] }> {
  const refused = await gate(db, union, viewer);
  if (refused) return refused;
  const rows = await db.selectFrom("members").selectAll()
    .where("union_id", "=", union.id).where("sponsor_id", "is", null).where("state", "in", IN_TREE)
    .orderBy("created_at").limit(limit).execute();
  return { ok: true, roots: rows.map(toMember).sort((a, b) => (a.role === "leader" ? 0 : 1) - (b.role === "leader" ? 0 : 1)) };
}

/** One member as the top of a subtree to show, for a viewer who may see the tree. */
export async function readSubtreeRoot(db: Kysely<DB>, union: Union, viewer: Viewer, memberId: string): Promise<Refused | { ok: true; root: Member | undefined }> {
  const refused = await gate(db, union, viewer);
  if (refused) return refused;
  const row = await db.selectFrom("members").selectAll()
    .where("union_id", "=", union.id).where("id", "=", memberId).where("state", "in", IN_TREE).executeTakeFirst();
  return { ok: true, root: row && toMember(row) };
}

/** How many followers (active members with an actor) a viewer who may see them is told there are. */
export async function readFollowerCount(db: Kysely<DB>, union: Union, viewer: Viewer): Promise<Refused | { ok: true; count: number }> {
  const refused = await gate(db, union, viewer);
  return refused ?? { ok: true, count: await countFollowers(db, union.id) };
}

export interface Recipient {
  readonly actorId: string;
  readonly inbox: string | null;
  readonly sharedInbox: string | null;
}

/**
 * The union's own fan-out list: every active member's inbox, paged by
 * member id. For delivery only: this is the union writing to its members,
 * so no viewer applies; an HTTP read of the same collection must pass
 * mayReadRoster first (federation/ does so with Fedify's authorize).
 */
export async function deliveryRecipients(db: Kysely<DB>, unionId: string, cursor: string | null, pageSize: number, onlyCommittedTo?: string): Promise<{ items: Recipient[]; next: string | null }> {
  const rows = await db.selectFrom("members as m")
    .leftJoin("remote_actors as a", "a.id", "m.actor_id")
    .select(["m.id", "m.actor_id", "a.inbox", "a.shared_inbox"])
    .where("m.union_id", "=", unionId)
    .where("m.state", "=", "active")
    .where("m.actor_id", "is not", null)
    .$if(onlyCommittedTo !== undefined, (q) => q.where((eb) => eb.exists(eb.selectFrom("action_responses as r").select("r.id")
      .whereRef("r.member_id", "=", "m.id").where("r.action_id", "=", onlyCommittedTo!)
      .where("r.undone_at", "is", null).where("r.kind", "in", ["commit", "done"]))))
    .$if(cursor !== null && cursor !== "", (q) => q.where("m.id", ">", cursor!))
    .orderBy("m.id")
    .$if(cursor !== null, (q) => q.limit(pageSize))
    .execute();
  return {
    items: rows.map((r) => ({ actorId: r.actor_id!, inbox: inboxUrl(r.actor_id!, r.inbox), sharedInbox: inboxUrl(r.actor_id!, r.shared_inbox) })),
    next: cursor !== null && rows.length === pageSize ? rows[rows.length - 1]!.id : null,
  };
}

/**
 * For delivery only: the active members who committed to (or did) one
 * call-to-action, paged like deliveryRecipients. A progress reply goes to
 * them alone, so the rest of the union is not pinged again.
 */
export function committedRecipients(db: Kysely<DB>, unionId: string, actionId: string, cursor: string | null, pageSize: number): Promise<{ items: Recipient[]; next: string | null }> {
  return deliveryRecipients(db, unionId, cursor ?? "", pageSize, actionId);
}

/** For delivery bookkeeping only (see deliveryRecipients); reads for others go through readFollowerCount. */
export async function countFollowers(db: Kysely<DB>, unionId: string): Promise<number> {
  const r = await db.selectFrom("members").select((eb) => eb.fn.countAll<number>().as("n"))
    .where("union_id", "=", unionId).where("state", "=", "active").where("actor_id", "is not", null).executeTakeFirstOrThrow();
  return Number(r.n);
}

async function countActive(db: Kysely<DB>, unionId: string): Promise<number> {
  const r = await db.selectFrom("members").select((eb) => eb.fn.countAll<number>().as("n"))
    .where("union_id", "=", unionId).where("state", "=", "active").executeTakeFirstOrThrow();
  return Number(r.n);
}

/**
 * Before a fan-out reads deliveryTargets' pages, on PostgreSQL: analyzes
 * fanout_targets when its statistics are missing or more than a tenth of its
 * rows have changed since (its triggers fill it as members join, and
 * autovacuum may be slow or off, as on CI). Unanalyzed after 10^5 members
 * joined, the planner expected a few hundred rows for a page's range and read
 * every row of the union past the cursor, sorted them and kept 500: each page
 * of a fan-out to 10^5 personal inboxes scanned what was left of the roster,
 * 8 % of PostgreSQL's samples. Returns whether it analyzed.
 */
export async function refreshTargetStatistics(db: Kysely<DB>): Promise<boolean> {
  return (await refreshStatistics(db, ["fanout_targets"])).length > 0;
}

/**
 * For delivery only (see deliveryRecipients): the distinct inboxes the
 * union's active members are reached at, a shared inbox once for all its
 * members, paged by `fanout_targets.id` (migration 0054, kept by triggers).
 * A fan-out reads a row per delivery instead of one per member: 2·10^4 rows
 * for 10^6 members on 2·10^4 servers.
 */
export async function deliveryTargets(db: Kysely<DB>, unionId: string, after: number, pageSize: number): Promise<{ items: { inbox: string; shared: boolean }[]; next: number | null }> {
  const rows = await db.selectFrom("fanout_targets").select(["id", "inbox", "shared"])
    .where("union_id", "=", unionId).where("id", ">", after)
    .orderBy("id").limit(pageSize).execute();
  return { items: rows.map((r) => ({ inbox: r.inbox, shared: Number(r.shared) === 1 })), next: rows.length === pageSize ? Number(rows[rows.length - 1]!.id) : null };
}
