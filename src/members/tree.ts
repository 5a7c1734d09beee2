import { possessive } from "../english.ts";
import { randomUUID } from "node:crypto";
import { type Kysely, sql } from "kysely";
import type { DB } from "../db/schema.ts";
import { type By, getMember, IN_TREE, lockUnion, type Member, MemberError, type MembershipDeps, requireOfficer, toMember } from "./members.ts";

// Recursion guard: a sponsor chain can never be this long unless the data is
// corrupt, and a runaway recursive query must not take the database down.
const MAX_DEPTH = 100_000;

/** Ids from `memberId` up to the root, nearest first (the member itself included). */
async function chainIds(db: Kysely<DB>, memberId: string): Promise<string[]> {
  const r = await sql<{ id: string; n: number }>`
    with recursive chain(id, sponsor_id, n) as (
      select id, sponsor_id, 0 from members where id = ${memberId}
      union all
      select m.id, m.sponsor_id, c.n + 1 from members m join chain c on m.id = c.sponsor_id where c.n < ${MAX_DEPTH}
    )
    select id, n from chain order by n`.execute(db);
  return r.rows.map((x) => x.id);
}

/** The member's sponsor chain up to the leader: [member, sponsor, ..., root]. */
export async function sponsorChain(db: Kysely<DB>, memberId: string): Promise<Member[]> {
  const ids = await chainIds(db, memberId);
  if (ids.length === 0) return [];
  const rows = await db.selectFrom("members").selectAll().where("id", "in", ids).execute();
  const byId = new Map(rows.map((r) => [r.id, r]));
  return ids.map((id) => toMember(byId.get(id)!));
}

export async function depthOf(db: Kysely<DB>, memberId: string): Promise<number> {
  return (await chainIds(db, memberId)).length - 1;
}

/** Direct recruits currently in the tree, oldest first, paged. */
export async function recruitsOf(db: Kysely<DB>, unionId: string, memberId: string, opts: { limit?: number; after?: string } = {}): Promise<Member[]> {
  const rows = await db.selectFrom("members").selectAll()
    .where("union_id", "=", unionId)
    .where("sponsor_id", "=", memberId)
    .where("state", "in", IN_TREE)
    .$if(opts.after !== undefined, (q) => q.where("id", ">", opts.after!))
    .orderBy("id")
    .limit(opts.limit ?? 100)
    .execute();
  return rows.map(toMember);
}

/** Adds `delta` to the subtree counts of `fromId` and every ancestor of it. */
async function adjustAncestors(trx: Kysely<DB>, fromId: string | null, delta: number): Promise<void> {
  if (fromId === null || delta === 0) return;
  await ancestorsAdjustment(fromId, delta).execute(trx);
}

/** adjustAncestors' statement, not run: for a caller that batches it (src/db/batch.ts). */
export function ancestorsAdjustment(fromId: string, delta: number) {
  return sql`
    with recursive chain(id, sponsor_id, n) as (
      select id, sponsor_id, 0 from members where id = ${fromId}
      union all
      select m.id, m.sponsor_id, c.n + 1 from members m join chain c on m.id = c.sponsor_id where c.n < ${MAX_DEPTH}
    )
    update members set subtree_size = subtree_size + ${delta} where id in (select id from chain)`;
}

/** Puts a member into the tree under `sponsorId` (a fresh join: no descendants yet). */
export async function attach(trx: Kysely<DB>, memberId: string, sponsorId: string | null): Promise<void> {
  await trx.updateTable("members").set({ sponsor_id: sponsorId, subtree_size: 0 }).where("id", "=", memberId).execute();
  await adjustAncestors(trx, sponsorId, 1);
}

/** Recruits moved per statement when a member leaves (detach): what one leave holds in memory at once. */
export const DETACH_CHUNK = 2000;

/**
 * Takes a member out of the tree. Their recruits move up to the member's own
 * sponsor (each move recorded), so nobody falls out of the tree with them.
 * Only the member, its recruits and its ancestor chain are written. Returns
 * how many recruits moved.
 *
 * A member may have recruited most of a big union (an organiser who shared
 * their invite widely): the recruits move DETACH_CHUNK at a time, each chunk
 * one UPDATE … RETURNING of the ids it moved and one INSERT of their moves,
 * so memory stays bounded however many there are. It is still one
 * transaction: the tree never shows a recruit without a sponsor. A moved
 * recruit no longer has this sponsor, so each chunk takes the next ones.
 */
export async function detach(trx: Kysely<DB>, member: Member, reason: string, now: number): Promise<number> {
  let moved = 0;
  for (;;) {
    const chunk = await trx.updateTable("members").set({ sponsor_id: member.sponsorId })
      .where("id", "in", (eb) => eb.selectFrom("members").select("id")
        .where("union_id", "=", member.unionId).where("sponsor_id", "=", member.id).where("state", "in", IN_TREE).limit(DETACH_CHUNK))
      .returning("id").execute();
    if (chunk.length > 0) {
      await trx.insertInto("member_moves").values(chunk.map((r) => ({
        id: randomUUID(),
        union_id: member.unionId,
        member_id: r.id,
        from_sponsor_id: member.id,
        to_sponsor_id: member.sponsorId,
        reason,
        at: now,
      }))).execute();
    }
    moved += chunk.length;
    if (chunk.length < DETACH_CHUNK) break;
  }
  await adjustAncestors(trx, member.sponsorId, -1);
  await trx.updateTable("members").set({ subtree_size: 0 }).where("id", "=", member.id).execute();
  return moved;
}

/**
 * An officer moves a member (with their whole subtree) under another sponsor.
 * Refused if the new sponsor is the member or one of its descendants: the
 * tree must stay a tree.
 */
export async function moveMember(deps: MembershipDeps, unionId: string, memberId: string, newSponsorId: string, by: By): Promise<Member> {
  const moved = await deps.db.transaction().execute(async (trx) => {
    await lockUnion(trx, unionId);
    await requireOfficer(trx, unionId, by);
    const member = await getMember(trx, unionId, memberId);
    const sponsor = await getMember(trx, unionId, newSponsorId);
    if (!member || member.state !== "active") throw new MemberError("not_found", "no such active member");
    if (!sponsor || !IN_TREE.includes(sponsor.state)) throw new MemberError("not_found", "the new sponsor is not a member");
    if (member.role === "leader") throw new MemberError("invalid", "the leader is the root of the tree and has no sponsor");
    if (member.sponsorId === sponsor.id) return member;
    const chain = await chainIds(trx, sponsor.id);
    if (chain.includes(member.id)) {
      throw new MemberError("conflict", `${sponsor.handle ?? sponsor.id} is in ${possessive(member.handle ?? member.id)} own subtree: moving there would make a cycle`);
    }
    const weight = member.subtreeSize + 1;
    await adjustAncestors(trx, member.sponsorId, -weight);
    await trx.updateTable("members").set({ sponsor_id: sponsor.id }).where("id", "=", member.id).execute();
    await adjustAncestors(trx, sponsor.id, weight);
    await trx.insertInto("member_moves").values({
      id: randomUUID(), union_id: unionId, member_id: member.id, from_sponsor_id: member.sponsorId, to_sponsor_id: sponsor.id,
      reason: "moved_by_officer", at: Date.now(),
    }).execute();
    return (await getMember(trx, unionId, member.id))!;
  });
  deps.events.emit("member.moved", { unionId, memberId, sponsorId: newSponsorId });
  return moved;
}

export interface MemberMove {
  readonly memberId: string;
  readonly fromSponsorId: string | null;
  readonly toSponsorId: string | null;
  readonly reason: string;
  readonly at: Date;
}

export async function movesOf(db: Kysely<DB>, unionId: string, memberId: string): Promise<MemberMove[]> {
  const rows = await db.selectFrom("member_moves").selectAll().where("union_id", "=", unionId).where("member_id", "=", memberId).orderBy("at").execute();
  return rows.map((r) => ({ memberId: r.member_id, fromSponsorId: r.from_sponsor_id, toSponsorId: r.to_sponsor_id, reason: r.reason, at: new Date(Number(r.at)) }));
}

/**
 * Makes `memberId` the root of its union's tree: it leaves its sponsor (with
 * its whole subtree), and every other root of the union (the old root, and
 * anyone admitted while there was no leader) goes under it. Nobody else's
 * sponsor changes, and the tree stays a tree: the new root's subtree cannot
 * hold a root it did not have before. Both moves are recorded in
 * member_moves, so the old links stay readable (`movesOf`). In the caller's
 * transaction, with the union locked.
 */
export async function makeRoot(trx: Kysely<DB>, unionId: string, memberId: string, reasons: { root: string; oldRoot: string }, now: number): Promise<string[]> {
  const m = await getMember(trx, unionId, memberId);
  if (!m || !IN_TREE.includes(m.state)) throw new MemberError("not_found", "only a member in the tree can be its root");
  const moves: { member_id: string; from_sponsor_id: string | null; to_sponsor_id: string | null; reason: string }[] = [];
  if (m.sponsorId !== null) {
    await adjustAncestors(trx, m.sponsorId, -(m.subtreeSize + 1));
    await trx.updateTable("members").set({ sponsor_id: null }).where("id", "=", m.id).execute();
    moves.push({ member_id: m.id, from_sponsor_id: m.sponsorId, to_sponsor_id: null, reason: reasons.root });
  }
  const others = await trx.selectFrom("members").select(["id", "subtree_size"])
    .where("union_id", "=", unionId).where("sponsor_id", "is", null).where("state", "in", IN_TREE).where("id", "!=", m.id).execute();
  for (const r of others) {
    await trx.updateTable("members").set({ sponsor_id: m.id }).where("id", "=", r.id).execute();
    await adjustAncestors(trx, m.id, Number(r.subtree_size) + 1);
    moves.push({ member_id: r.id, from_sponsor_id: null, to_sponsor_id: m.id, reason: reasons.oldRoot });
  }
  if (moves.length > 0) {
    await trx.insertInto("member_moves").values(moves.map((x) => ({ id: randomUUID(), union_id: unionId, at: now, ...x }))).execute();
  }
  return others.map((r) => r.id);
}

