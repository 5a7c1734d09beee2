import { type Kysely, PostgresAdapter, type Selectable, sql } from "kysely";
import type { DB, MembersTable, UnionsTable } from "../db/schema.ts";
import { prepared } from "../db/prepared.ts";
import { DomainError } from "../domain-error.ts";
import type { DomainDeps } from "../domain-deps.ts";
import { originOf } from "../actors/remote-actors.ts";

export type MemberState = "reserved" | "pending" | "active" | "left" | "removed" | "expelled" | "rejected" | "deleted";
export type MemberRole = "leader" | "officer" | "member";

/** States in which a member holds a place in the tree. */
export const IN_TREE: readonly MemberState[] = ["reserved", "active"];

export interface Member {
  readonly id: string;
  readonly unionId: string;
  readonly actorId: string | null;
  readonly handle: string | null;
  readonly state: MemberState;
  readonly role: MemberRole;
  readonly portfolio: string | null;
  readonly sponsorId: string | null;
  readonly subtreeSize: number;
  readonly followId: string | null;
  readonly inviteId: string | null;
  readonly joinedAt: Date | null;
  readonly leftAt: Date | null;
  readonly leftReason: string | null;
}

/** Who performs an officer action: the operator (CLI) or a member (web console). */
export type By = { readonly kind: "operator" } | { readonly kind: "member"; readonly memberId: string };
export const OPERATOR: By = { kind: "operator" };

export class MemberError extends DomainError<"invalid" | "not_found" | "conflict" | "forbidden"> {
  override name = "MemberError";
}

export type MembershipDeps = DomainDeps;

export type MemberRow = Selectable<MembersTable>;

/**
 * The stored form of a member's Follow id: a path when the Follow is on the
 * member's actor's origin, as Mastodon's (`https://host/<uuid>`), Pleroma's
 * and GoToSocial's are; about 30 bytes a member (issue 16, migration 0058).
 * Anything else is stored as it came. A Follow id is an absolute URL, so a
 * stored value starting with "/" can be nothing but this form; rows written
 * before read as they were. Every write of `members.follow_id` goes through
 * this with the `actor_id` the row has after the write.
 */
export function storedFollowId(actorId: string | null, followId: string | null): string | null {
  if (followId === null || actorId === null) return followId;
  const origin = originOf(actorId);
  return origin !== null && followId.startsWith(`${origin}/`) ? followId.slice(origin.length) : followId;
}

/** The Follow id of a stored `follow_id` (see storedFollowId); migration 0058's SQL and federation/pruning.ts compute the same. */
export function followIdOf(actorId: string | null, stored: string | null): string | null {
  if (stored === null || !stored.startsWith("/")) return stored;
  return `${(actorId !== null ? originOf(actorId) : null) ?? ""}${stored}`;
}

export function toMember(row: MemberRow): Member {
  return {
    id: row.id,
    unionId: row.union_id,
    actorId: row.actor_id,
    handle: row.handle,
    state: row.state as MemberState,
    role: row.role as MemberRole,
    portfolio: row.portfolio,
    sponsorId: row.sponsor_id,
    subtreeSize: Number(row.subtree_size),
    followId: followIdOf(row.actor_id, row.follow_id),
    inviteId: row.invite_id,
    joinedAt: row.joined_at === null ? null : new Date(Number(row.joined_at)),
    leftAt: row.left_at === null ? null : new Date(Number(row.left_at)),
    leftReason: row.left_reason,
  };
}

// Compiled once (src/db/prepared.ts): a join reads its member five times (the join, its Accept and welcome, their gates).
const memberById = prepared<[unionId: string, memberId: string], Selectable<MembersTable>>((db, unionId, memberId) =>
  db.selectFrom("members").selectAll().where("union_id", "=", unionId).where("id", "=", memberId));

export async function getMember(db: Kysely<DB>, unionId: string, memberId: string): Promise<Member | undefined> {
  const row = (await memberById(db, unionId, memberId)).rows[0];
  return row && toMember(row);
}

export async function findMemberByActor(db: Kysely<DB>, unionId: string, actorId: string): Promise<Member | undefined> {
  const row = await db.selectFrom("members").selectAll().where("union_id", "=", unionId).where("actor_id", "=", actorId).executeTakeFirst();
  return row && toMember(row);
}

/**
 * Finds a member by handle (`@user@host`, host case-insensitive). Current
 * members win over past ones, since a handle can be reused after a departure.
 */
export async function findMemberByHandle(db: Kysely<DB>, unionId: string, handle: string): Promise<Member | undefined> {
  const rows = await db.selectFrom("members").selectAll().where("union_id", "=", unionId).where("handle", "=", handle).execute();
  const rank = (s: string) => (s === "active" ? 0 : s === "reserved" ? 1 : s === "pending" ? 2 : 3);
  rows.sort((a, b) => rank(a.state) - rank(b.state) || Number(b.created_at) - Number(a.created_at));
  return rows[0] && toMember(rows[0]);
}

export async function getLeader(db: Kysely<DB>, unionId: string): Promise<Member | undefined> {
  const row = await leaderQuery(db, unionId).executeTakeFirst();
  return row && toMember(row);
}

/** getLeader's statement, not run. */
export function leaderQuery(db: Kysely<DB>, unionId: string) {
  return db.selectFrom("members").selectAll().where("union_id", "=", unionId).where("role", "=", "leader").where("role", "<>", sql.lit("member")).where("state", "in", IN_TREE);
}

export interface MemberListing extends Member {
  readonly sponsorActorId: string | null;
  readonly sponsorHandle: string | null;
  /** Distance from the root; null for members not in the tree. */
  readonly depth: number | null;
}

/**
 * Members with their sponsor and depth. Depth is walked up from just the
 * listed members (a few primary-key lookups each), never over the whole
 * tree, so a page costs the same at a million members as at ten.
 */
export async function listMembers(db: Kysely<DB>, unionId: string, opts: { states?: readonly MemberState[]; limit?: number; offset?: number } = {}): Promise<MemberListing[]> {
  const states = opts.states ?? ["reserved", "active", "pending"];
  const rows = await db.selectFrom("members as m")
    .leftJoin("members as s", "s.id", "m.sponsor_id")
    .selectAll("m")
    .select(["s.actor_id as sponsor_actor_id", "s.handle as sponsor_handle"])
    .where("m.union_id", "=", unionId)
    .where("m.state", "in", states)
    .orderBy("m.created_at").orderBy("m.id")
    .limit(opts.limit ?? 10_000)
    .offset(opts.offset ?? 0)
    .execute();
  const inTree = rows.filter((r) => r.state === "active" || r.state === "reserved").map((r) => r.id);
  const depthOf = new Map<string, number>();
  for (let i = 0; i < inTree.length; i += 500) {
    const ids = inTree.slice(i, i + 500);
    const r = await sql<{ start: string; depth: number }>`
      with recursive up(start, id, sponsor_id, n) as (
        select id, id, sponsor_id, 0 from members where id in (${sql.join(ids)})
        union all
        select up.start, m.id, m.sponsor_id, up.n + 1 from members m join up on m.id = up.sponsor_id where up.n < 100000
      )
      select start, max(n) as depth from up group by start`.execute(db);
    for (const x of r.rows) depthOf.set(x.start, Number(x.depth));
  }
  return rows.map((r) => ({
    ...toMember(r),
    sponsorActorId: r.sponsor_actor_id,
    sponsorHandle: r.sponsor_handle,
    depth: depthOf.get(r.id) ?? null,
  }));
}

export async function countMembers(db: Kysely<DB>, unionId: string, states: readonly MemberState[] = ["active"]): Promise<number> {
  const r = await db.selectFrom("members").select((eb) => eb.fn.countAll<number>().as("n"))
    .where("union_id", "=", unionId).where("state", "in", states).executeTakeFirstOrThrow();
  return Number(r.n);
}

/**
 * Serialises changes to one union's tree. Every change reads the tree and
 * then writes it (a sponsor's chain, a pending state, a cycle check); under
 * PostgreSQL's READ COMMITTED two such transactions would both act on what
 * they read, so each first locks the union's row. SQLite transactions
 * already hold the single write lock from BEGIN IMMEDIATE.
 *
 * On PostgreSQL the row is locked FOR NO KEY UPDATE, not FOR UPDATE: it
 * conflicts with itself, with lockChain's lock (the same mode), with
 * awaitChainWriters' FOR SHARE and with any UPDATE or DELETE of the row,
 * exactly as FOR UPDATE did among the union's writers; but not with the FOR
 * KEY SHARE that inserting any row referencing the union takes (a member,
 * an invite, a session, a proposal's row, ...). With FOR UPDATE every such
 * insert anywhere (another request's member row, a login's session) waited
 * for the join holding the lock, and each join waited for every open
 * transaction that had inserted one, so joins and everything else queued on
 * each other while a fan-out kept the machine busy (issue 16).
 */
export async function lockUnion(trx: Kysely<DB>, unionId: string): Promise<void> {
  if (trx.getExecutor().adapter instanceof PostgresAdapter) await lockUnionStatement(trx, unionId);
}

/**
 * lockUnion's statement, to send with others (src/db/batch.ts
 * lockThenReadAll). None on SQLite, as lockUnion: it has no row locks, and a
 * write transaction (BEGIN IMMEDIATE) already holds the only write lock.
 */
export function lockUnionQuery(db: Kysely<DB>, unionId: string) {
  return db.getExecutor().adapter instanceof PostgresAdapter ? lockUnionStatement.compiled(db, unionId) : undefined;
}
const lockUnionStatement = prepared<[unionId: string], { id: string }>((db, unionId) => db.selectFrom("unions").select("id").where("id", "=", unionId).forNoKeyUpdate());

/**
 * lockUnion, and the union's row in the same statement: on PostgreSQL a
 * row locked FOR NO KEY UPDATE is returned as it is once the lock is granted
 * (the latest committed version), so nothing needs reading it again.
 * Undefined when there is no such union.
 */
export async function lockUnionRow(trx: Kysely<DB>, unionId: string): Promise<UnionsTable | undefined> {
  const q = trx.selectFrom("unions").selectAll().where("id", "=", unionId);
  return trx.getExecutor().adapter instanceof PostgresAdapter ? q.forNoKeyUpdate().executeTakeFirst() : q.executeTakeFirst();
}

/** Checks that `by` may act as an officer of the union; returns the acting member, if any. */
export async function requireOfficer(db: Kysely<DB>, unionId: string, by: By): Promise<Member | undefined> {
  if (by.kind === "operator") return undefined;
  const m = await getMember(db, unionId, by.memberId);
  if (!m || m.state !== "active" || (m.role !== "officer" && m.role !== "leader")) {
    throw new MemberError("forbidden", "only the leader and officers may do this");
  }
  return m;
}
