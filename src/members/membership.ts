import { recordAllySponsor } from "../relationships/backlinks.ts";
import { type CompiledQuery, type Kysely, sql } from "kysely";
import { prepared } from "../db/prepared.ts";
import type { DB, UnionsTable } from "../db/schema.ts";
import { syncBadgeIn } from "../treasury/badges.ts";
import { getUnionById, normaliseHandle, toUnion, type Union, UnionError } from "../unions/unions.ts";
import { type CachedActor, REMOTE_ACTOR_COLUMNS, remoteActorFromRow } from "../actors/remote-actors.ts";
import { lockThenReadAll, WriteBatch } from "../db/batch.ts";
import { claimInvite, consumeInvite, getInviteByCode, insertInvite, type JoinClaim, newInviteRow, openClaimQuery, placesHeld, revokeInvitesOf } from "./invites.ts";
import {
  type By,
  findMemberByActor,
  getLeader,
  getMember,
  leaderQuery,
  lockUnion,
  lockUnionQuery,
  type Member,
  MemberError,
  type MemberRole,
  type MembershipDeps,
  type MemberRow,
  type MemberState,
  requireOfficer,
  storedFollowId,
  toMember,
} from "./members.ts";
import { ancestorsAdjustment, attach, detach } from "./tree.ts";
import { newMemberId } from "./member-id.ts";

/** A remote account asking to join, as the federation layer saw it. */
export interface Applicant {
  readonly actorId: string;
  /** `@user@host`, matched against invite claims and the leader's handle. */
  readonly handle: string | null;
}

export type JoinOutcome = "accepted" | "pending" | "rejected" | "already_member";

export interface JoinResult {
  readonly outcome: JoinOutcome;
  readonly member: Member;
}

type Emit = () => void;

export interface JoinOptions {
  /**
   * Runs first in the join's transaction, before the union is locked: the
   * caller's own writes that must commit with the join or not at all (the
   * inbox's record of the Follow, the follower's cached account). They may
   * touch only the follower's own rows (never the union's or a member's),
   * and the join reads what they left. Throwing rolls the join back.
   * On PostgreSQL it may instead send its statements with the lock
   * (src/db/pipeline.ts, sendWithNext: one round trip for all) and return
   * a check of their results, run once the lock and the read came back and
   * before anything is decided or written; throwing there rolls back too.
   */
  readonly first?: (trx: Kysely<DB>) => Promise<void | (() => Promise<void>)>;
  /**
   * Runs the join's transaction instead of a transaction of its own (the
   * follow's fast path: a transaction shared with other joins of the union,
   * federation/join-commit.ts). Must settle only once the join's writes are
   * committed, or have failed and written nothing. It may run the work again
   * after a rollback.
   */
  readonly inTransaction?: <T>(work: (trx: Kysely<DB>) => Promise<T>, unionId?: string) => Promise<T>;
  /** The applicant's account as just fetched, which first() stores in remote_actors: used instead of reading it back. */
  readonly applicantActor?: CachedActor;
}

/**
 * A Follow of the union arrived: the request to join. Matched, in order, to
 * the leader's reserved place, to an invite the applicant claimed, and
 * otherwise decided by the union's join policy. Safe to repeat: a second
 * Follow from a member re-sends the Accept and changes nothing else.
 */
export async function requestToJoin(deps: MembershipDeps, unionId: string, applicant: Applicant, followId: string, opts: JoinOptions = {}): Promise<JoinResult> {
  const handle = applicant.handle ? safeHandle(applicant.handle) : null;
  const emits: Emit[] = [];
  const inTransaction = opts.inTransaction ?? (<T>(work: (trx: Kysely<DB>) => Promise<T>) => deps.db.transaction().execute(work));
  const result = await inTransaction(async (trx): Promise<JoinResult> => {
    // A group commit may run this again after a rollback (join-commit.ts): only the last run's events are emitted.
    emits.length = 0;
    // The caller's own writes (the Follow's record, the follower's account and key) touch only the
    // follower's rows and decide nothing here, so they go before the union's lock: every round trip
    // under the lock is one that every other join of the union waits for (issue 16).
    // What first() sent with the lock (src/db/pipeline.ts, sendWithNext) it checks once that ran, before anything is decided.
    const checkFirst = await opts.first?.(trx);
    const now = Date.now();
    // The lock, then everything the join decides on (the union as locked, the latest committed row),
    // in one round trip on PostgreSQL (src/db/batch.ts), after first() so the follower's account is
    // read as first() left it.
    const read: Partial<Record<"actor", Record<string, unknown>[]>> & Record<"union" | "existing" | "leader" | "claim" | "bylaws", Record<string, unknown>[]> = await lockThenReadAll(trx, lockUnionQuery(trx, unionId), {
      // Compiled once (prepared.ts): Kysely's building and compiling of these six reads cost more than SQLite's running them.
      union: readUnionRow.compiled(trx, unionId),
      existing: readMemberByActor.compiled(trx, unionId, applicant.actorId),
      leader: readLeader.compiled(trx, unionId),
      claim: readOpenClaim.compiled(trx, unionId, handle ?? "", now),
      // Not when the caller gives it: it was just fetched and stored by first().
      ...(opts.applicantActor === undefined ? { actor: readRemoteActorRow.compiled(trx, applicant.actorId) } : {}),
      bylaws: readLatestBylaws.compiled(trx, unionId),
    } as Record<"union" | "existing" | "leader" | "claim" | "bylaws", CompiledQuery<unknown>>);
    if (checkFirst) await checkFirst();
    const unionRow = read.union[0] as UnionsTable | undefined;
    if (!unionRow) throw new UnionError("not_found", "no such union");
    const union = toUnion(unionRow);
    const existing = read.existing[0] && toMember(read.existing[0] as MemberRow);

    if (existing?.state === "active") {
      // A repeated or re-sent Follow: the member's server may have lost our Accept. One round trip.
      const batch = new WriteBatch();
      batch.push(trx.updateTable("members").set({ follow_id: storedFollowId(applicant.actorId, followId) }).where("id", "=", existing.id));
      await deps.outbox.add(trx, { kind: "follow.accept", unionId, memberId: existing.id }, { batch });
      await batch.flush(trx);
      return { outcome: "already_member", member: { ...existing, followId } };
    }
    if (existing?.state === "expelled") {
      await trx.updateTable("members").set({ follow_id: storedFollowId(applicant.actorId, followId) }).where("id", "=", existing.id).execute();
      await deps.outbox.add(trx, { kind: "follow.reject", unionId, memberId: existing.id });
      return { outcome: "rejected", member: existing };
    }

    const leader = read.leader[0] && toMember(read.leader[0] as MemberRow);
    if (leader && leader.state === "reserved" && handle && leader.handle === handle) {
      await trx.updateTable("members").set({ actor_id: applicant.actorId, state: "active", follow_id: storedFollowId(applicant.actorId, followId), joined_at: now })
        .where("id", "=", leader.id).execute();
      // A stale row for the same account (e.g. it followed before being named leader) gives way.
      if (existing) await trx.deleteFrom("members").where("id", "=", existing.id).execute();
      // The leader's welcome carries an invite too: the first thing a new union needs is members.
      const union = (await getUnionById(trx, unionId))!;
      await deps.outbox.add(trx, { kind: "member.join", unionId, memberId: leader.id, inviteCode: await ownInviteCode(trx, union, leader.id) });
      emits.push(() => deps.events.emit("member.joined", { unionId, memberId: leader.id, sponsorId: null, via: "leader" }));
      return { outcome: "accepted", member: (await getMember(trx, unionId, leader.id))! };
    }

    const claim = handle ? read.claim[0] as { id: string; invite_id: string } | undefined : undefined;
    if (!existing && !claim && union.joinPolicy === "open") {
      // The common join (a newcomer, an open union, no invite claimed): its writes in one round trip.
      const actor = opts.applicantActor ?? (read.actor?.[0] && remoteActorFromRow(read.actor[0] as never));
      const bylawsVersion = read.bylaws[0] === undefined ? undefined : Number(read.bylaws[0].version);
      return admitNewcomer(deps, trx, union, applicant.actorId, handle, followId, leader?.id ?? null, now, { actor, bylawsVersion, sponsorIsRoot: leader !== undefined && leader.sponsorId === null }, emits);
    }

    const row = existing ?? await insertApplicant(trx, unionId, applicant.actorId, handle, followId, now);
    if (existing) {
      await trx.updateTable("members").set({ follow_id: storedFollowId(applicant.actorId, followId), handle: handle ?? existing.handle, state: "pending", left_at: null, left_reason: null, removed_by: null })
        .where("id", "=", existing.id).execute();
    }

    if (claim && await consumeInvite(trx, claim.invite_id, now)) {
      await trx.updateTable("join_claims").set({ used_at: now }).where("id", "=", claim.id).execute();
      const invite = (await trx.selectFrom("invites").select(["id", "created_by"]).where("id", "=", claim.invite_id).executeTakeFirstOrThrow());
      return admit(deps, trx, union, row.id, await sponsorFor(trx, unionId, invite.created_by), "invite", invite.id, emits);
    }

    switch (union.joinPolicy) {
      case "open":
        // The leader read above, under the same lock.
        return admit(deps, trx, union, row.id, leader?.id ?? null, "open", null, emits);
      case "approval":
        if (existing?.state !== "pending") emits.push(() => deps.events.emit("member.pending", { unionId, memberId: row.id }));
        return { outcome: "pending", member: (await getMember(trx, unionId, row.id))! };
      case "invite":
        await trx.updateTable("members").set({ state: "rejected", left_at: now, left_reason: "invite only" }).where("id", "=", row.id).execute();
        await deps.outbox.add(trx, { kind: "follow.reject", unionId, memberId: row.id });
        emits.push(() => deps.events.emit("member.rejected", { unionId, memberId: row.id }));
        return { outcome: "rejected", member: (await getMember(trx, unionId, row.id))! };
    }
  }, unionId);
  for (const e of emits) e();
  return result;
}

// The common join's reads and writes, compiled once (src/db/prepared.ts; named statements on PostgreSQL).
const readUnionRow = prepared<[unionId: string], UnionsTable>((db, unionId) => db.selectFrom("unions").selectAll().where("id", "=", unionId));
const readMemberByActor = prepared<[unionId: string, actorId: string], MemberRow>((db, unionId, actorId) =>
  db.selectFrom("members").selectAll().where("union_id", "=", unionId).where("actor_id", "=", actorId));
const readLeader = prepared<[unionId: string], MemberRow>((db, unionId) => leaderQuery(db, unionId));
const readOpenClaim = prepared<[unionId: string, handle: string, now: number], unknown>((db, unionId, handle, now) => openClaimQuery(db, unionId, handle, now));
const readRemoteActorRow = prepared<[actorId: string], unknown>((db, actorId) => db.selectFrom("remote_actors").select(REMOTE_ACTOR_COLUMNS).where("id", "=", actorId));
const readLatestBylaws = prepared<[unionId: string], { version: number }>((db, unionId) =>
  db.selectFrom("bylaws_versions").select("version").where("union_id", "=", unionId).orderBy("version", "desc").limit(1));

/** ancestorsAdjustment(rootId, 1) for a member with no sponsor: its chain is itself. */
const rootGains = prepared<[rootId: string], never>((db, rootId) =>
  db.updateTable("members").set((eb) => ({ subtree_size: eb("subtree_size", "+", 1) })).where("id", "=", rootId) as never);

/** admitNewcomer's member row: active, a plain member, no descendants, no invite used. */
const insertNewcomer = prepared<[id: string, unionId: string, actorId: string, handle: string | null, sponsorId: string | null, followId: string | null, now: number], never>(
  (db, id, union_id, actor_id, handle, sponsor_id, follow_id, now) =>
    db.insertInto("members").values({ id, union_id, actor_id, handle, state: "active", role: "member", sponsor_id, subtree_size: 0, follow_id, invite_id: null, joined_at: now, created_at: now }) as never);

/** ownInviteCode()'s row for a newcomer (newInviteRow with no expiry, welcome). */
const insertOwnInvite = prepared<[id: string, unionId: string, code: string, createdBy: string | null, maxUses: number | null, createdAt: number], never>(
  (db, id, union_id, code, created_by, max_uses, created_at) =>
    db.insertInto("invites").values({ id, union_id, code, created_by, max_uses, uses: 0, expires_at: null, revoked_at: null, created_at, welcome: 1 }) as never);

/**
 * A newcomer admitted by an open union's policy, as insertApplicant then
 * admit would leave them (active under the leader, their own invite, the
 * Accept and welcome queued), written in one batch: one round trip on
 * PostgreSQL instead of about fifteen, all under the union's lock. The
 * member id is made here, so nothing of theirs can exist yet: no invites
 * (placesHeld is 0), no wallet or badge (syncBadgeIn would find neither).
 */
async function admitNewcomer(
  deps: MembershipDeps,
  trx: Kysely<DB>,
  union: Union,
  actorId: string,
  handle: string | null,
  followId: string,
  sponsorId: string | null,
  now: number,
  known: { actor: CachedActor | undefined; bylawsVersion: number | undefined; sponsorIsRoot?: boolean },
  emits: Emit[],
): Promise<JoinResult> {
  const batch = new WriteBatch();
  const row = {
    id: newMemberId(now),
    union_id: union.id,
    actor_id: actorId,
    handle,
    state: "active",
    role: "member",
    sponsor_id: sponsorId,
    subtree_size: 0,
    follow_id: storedFollowId(actorId, followId),
    invite_id: null,
    joined_at: now,
    created_at: now,
  };
  batch.push(insertNewcomer.compiled(trx, row.id, row.union_id, row.actor_id, row.handle, row.sponsor_id, row.follow_id, now));
  // attach(): a fresh member has no descendants; its sponsor chain gains one.
  // A sponsor at the root (the leader, most joins) is its own whole chain: one row, no recursive walk.
  if (sponsorId !== null) batch.push(known.sponsorIsRoot ? rootGains.compiled(trx, sponsorId) : ancestorsAdjustment(sponsorId, 1).compile(trx));
  // ownInviteCode(): a member's own invite, for as many places as the union's limit.
  let inviteCode: string | null = null;
  if (union.memberInviteLimit > 0) {
    const invite = newInviteRow(union.id, { createdBy: row.id, maxUses: union.memberInviteLimit, expiresInMs: null, welcome: true });
    batch.push(insertOwnInvite.compiled(trx, invite.id, invite.union_id, invite.code, invite.created_by, invite.max_uses, invite.created_at));
    inviteCode = invite.code;
  }
  const member = toMember({ ...row, portfolio: null, left_at: null, left_reason: null, removed_by: null, ally_sponsor_actor_id: null, ally_sponsor_union: null });
  await deps.outbox.add(trx, { kind: "member.join", unionId: union.id, memberId: member.id, inviteCode }, {
    batch,
    known: { union, member, actor: known.actor, bylawsVersion: known.bylawsVersion },
  });
  // The join's last writes: on PostgreSQL they go out with its COMMIT (one round trip less under the union's lock).
  await batch.flush(trx, { withNext: true });
  emits.push(() => deps.events.emit("member.joined", { unionId: union.id, memberId: member.id, sponsorId, via: "open" }));
  return { outcome: "accepted", member };
}

/**
 * A newcomer names their account on an invite page. If their Follow already
 * arrived and is waiting for approval, the invite admits them at once;
 * otherwise the claim waits for their Follow.
 */
export async function claimInviteForApplicant(deps: MembershipDeps, unionId: string, code: string, rawHandle: string): Promise<{ claim?: JoinClaim; admitted?: Member }> {
  const handle = safeHandle(rawHandle);
  const emits: Emit[] = [];
  const result = await deps.db.transaction().execute(async (trx): Promise<{ claim?: JoinClaim; admitted?: Member }> => {
    await lockUnion(trx, unionId);
    const current = await trx.selectFrom("members").selectAll().where("union_id", "=", unionId).where("handle", "=", handle)
      .where("state", "in", ["active", "pending", "reserved"]).executeTakeFirst();
    if (current?.state === "active") throw new MemberError("conflict", `${handle} is already a member`);
    if (current?.state === "reserved") throw new MemberError("conflict", `${handle} is the union's leader: follow the union to take your place`);
    if (current?.state !== "pending") return { claim: await claimInvite({ db: trx }, unionId, code, handle) };
    const invite = await getInviteByCode(trx, unionId, code);
    if (!invite || !(await consumeInvite(trx, invite.id, Date.now()))) throw new MemberError("invalid", "this invite can no longer be used");
    const union = (await getUnionById(trx, unionId))!;
    return { admitted: (await admit(deps, trx, union, current.id, await sponsorFor(trx, unionId, invite.createdBy), "invite", invite.id, emits)).member };
  });
  for (const e of emits) e();
  return result;
}

/** An officer admits a pending applicant; the approving officer becomes their sponsor. */
export async function approveMember(deps: MembershipDeps, unionId: string, memberId: string, by: By): Promise<Member> {
  const emits: Emit[] = [];
  const member = await deps.db.transaction().execute(async (trx) => {
    await lockUnion(trx, unionId);
    const officer = await requireOfficer(trx, unionId, by);
    const m = await getMember(trx, unionId, memberId);
    if (!m) throw new MemberError("not_found", "no such member");
    if (m.state === "active") return m;
    if (m.state !== "pending") throw new MemberError("invalid", `only pending requests can be approved; this one is ${m.state}`);
    const sponsorId = officer?.id ?? (await getLeader(trx, unionId))?.id ?? null;
    const union = (await getUnionById(trx, unionId))!;
    return (await admit(deps, trx, union, m.id, sponsorId, "approval", null, emits)).member;
  });
  for (const e of emits) e();
  return member;
}

export async function rejectMember(deps: MembershipDeps, unionId: string, memberId: string, by: By, reason: string | null = null): Promise<Member> {
  const member = await deps.db.transaction().execute(async (trx) => {
    await lockUnion(trx, unionId);
    const officer = await requireOfficer(trx, unionId, by);
    const m = await getMember(trx, unionId, memberId);
    if (!m) throw new MemberError("not_found", "no such member");
    if (m.state !== "pending") throw new MemberError("invalid", `only pending requests can be rejected; this one is ${m.state}`);
    await trx.updateTable("members").set({ state: "rejected", left_at: Date.now(), left_reason: reason, removed_by: officer?.id ?? "operator" })
      .where("id", "=", m.id).execute();
    await deps.outbox.add(trx, { kind: "follow.reject", unionId, memberId: m.id });
    return (await getMember(trx, unionId, m.id))!;
  });
  deps.events.emit("member.rejected", { unionId, memberId });
  return member;
}

export type Departure = "left" | "deleted";

/**
 * The member left on their own: Undo(Follow), a Block, or their account was
 * deleted. Nothing is sent back: their server already stopped following.
 * `followId`, when given, must be the Follow we accepted: an Undo of some
 * other Follow does not end this membership.
 */
export async function leaveUnion(deps: MembershipDeps, unionId: string, actorId: string, how: Departure, followId?: string): Promise<Member | undefined> {
  let moved = 0;
  const member = await deps.db.transaction().execute(async (trx) => {
    await lockUnion(trx, unionId);
    const m = await findMemberByActor(trx, unionId, actorId);
    if (!m || (m.state !== "active" && m.state !== "pending")) return undefined;
    if (followId && m.followId && followId !== m.followId) return undefined;
    moved = await endMembership(trx, m, how, how === "deleted" ? "account deleted" : null, null);
    await deps.outbox.withdrawWelcome?.(trx, unionId, m.id);
    await syncBadgeIn(trx, deps.outbox, unionId, m.id);
    return (await getMember(trx, unionId, m.id))!;
  });
  if (member) deps.events.emit("member.left", { unionId, memberId: member.id, state: member.state, reason: member.leftReason, recruitsMoved: moved });
  return member;
}

/** Every union this actor belongs to (for account deletion, which is not per union). */
export async function unionsOfActor(db: Kysely<DB>, actorId: string): Promise<string[]> {
  return (await membershipsOfActor(db, actorId)).map((m) => m.unionId);
}

/** The unions this actor belongs to with each membership's state (active or pending): one read answers both "a member anywhere?" and "active in this union?". */
export async function membershipsOfActor(db: Kysely<DB>, actorId: string): Promise<{ unionId: string; state: "active" | "pending" }[]> {
  const rows = await db.selectFrom("members").select(["union_id", "state"]).where("actor_id", "=", actorId).where("state", "in", ["active", "pending"]).execute();
  return rows.map((r) => ({ unionId: r.union_id, state: r.state as "active" | "pending" }));
}

/**
 * An officer removes a member (or, with `expel`, bars them from rejoining by a
 * plain Follow). Their server is told with a Reject(Follow), so it unfollows.
 */
export async function removeMember(deps: MembershipDeps, unionId: string, memberId: string, by: By, opts: { reason: string; expel?: boolean }): Promise<Member> {
  const reason = opts.reason.trim();
  if (!reason) throw new MemberError("invalid", "a removal needs a reason; it is recorded");
  let moved = 0;
  const member = await deps.db.transaction().execute(async (trx) => {
    await lockUnion(trx, unionId);
    const officer = await requireOfficer(trx, unionId, by);
    const m = await getMember(trx, unionId, memberId);
    if (!m || (m.state !== "active" && m.state !== "pending")) throw new MemberError("not_found", "no such current member");
    if (m.role === "leader") throw new MemberError("forbidden", "the leader cannot be removed");
    if (m.role === "officer" && officer && officer.role !== "leader") throw new MemberError("forbidden", "only the leader can remove an officer");
    moved = await endMembership(trx, m, opts.expel ? "expelled" : "removed", reason, officer?.id ?? "operator");
    await deps.outbox.withdrawWelcome?.(trx, unionId, m.id);
    await syncBadgeIn(trx, deps.outbox, unionId, m.id);
    await deps.outbox.add(trx, { kind: "follow.reject", unionId, memberId: m.id });
    return (await getMember(trx, unionId, m.id))!;
  });
  deps.events.emit("member.left", { unionId, memberId, state: member.state, reason, recruitsMoved: moved });
  return member;
}

async function endMembership(trx: Kysely<DB>, m: Member, state: MemberState, reason: string | null, removedBy: string | null): Promise<number> {
  const now = Date.now();
  await revokeInvitesOf(trx, m.unionId, m.id, now);
  if (m.role === "leader") {
    // The root stays: the leader's place goes back to reserved, keeping its
    // recruits, and the leader's account (or a successor named by handle)
    // takes it back by following again.
    await trx.updateTable("members").set({ state: "reserved", actor_id: null, follow_id: null, left_at: now, left_reason: reason ?? state })
      .where("id", "=", m.id).execute();
    return 0;
  }
  const moved = m.state === "active" ? await detach(trx, m, `sponsor_${state}`, now) : 0;
  // Leaving ends any office: a returning member starts as a member.
  await trx.updateTable("members").set({
    state,
    left_at: now,
    left_reason: reason,
    removed_by: removedBy,
    role: "member",
    portfolio: null,
  }).where("id", "=", m.id).execute();
  return moved;
}

/**
 * The member's account moved to a new actor (a Move, or a Follow from an
 * account that names the old one in alsoKnownAs while the old one points to
 * it with movedTo; the federation layer checks both sides). The member keeps
 * their place in the tree, recruits and office under the new actor.
 */
export async function migrateMember(deps: MembershipDeps, unionId: string, fromActorId: string, to: Applicant, followId: string | null): Promise<Member | undefined> {
  const migrated = await deps.db.transaction().execute(async (trx) => {
    await lockUnion(trx, unionId);
    const m = await findMemberByActor(trx, unionId, fromActorId);
    if (!m || (m.state !== "active" && m.state !== "pending")) return undefined;
    const clash = await findMemberByActor(trx, unionId, to.actorId);
    if (clash && (clash.state === "active" || clash.state === "pending")) {
      throw new MemberError("conflict", `${to.actorId} is already a member in its own right; the two places are not merged`);
    }
    if (clash) await trx.deleteFrom("members").where("id", "=", clash.id).execute();
    await trx.updateTable("members").set({
      actor_id: to.actorId,
      handle: to.handle ? safeHandle(to.handle) : m.handle,
      follow_id: storedFollowId(to.actorId, followId ?? m.followId),
    }).where("id", "=", m.id).execute();
    if (followId && m.state === "active") await deps.outbox.add(trx, { kind: "follow.accept", unionId, memberId: m.id });
    return (await getMember(trx, unionId, m.id))!;
  });
  if (migrated) deps.events.emit("member.migrated", { unionId, memberId: migrated.id, from: fromActorId, to: to.actorId });
  return migrated;
}

/** Makes an active member an officer with a portfolio, or changes the portfolio. Leader only (or the operator). */
export async function setOfficer(deps: MembershipDeps, unionId: string, memberId: string, by: By, portfolio: string | null): Promise<Member> {
  return changeRole(deps, unionId, memberId, by, "officer", portfolio);
}

export async function unsetOfficer(deps: MembershipDeps, unionId: string, memberId: string, by: By): Promise<Member> {
  return changeRole(deps, unionId, memberId, by, "member", null);
}

async function changeRole(deps: MembershipDeps, unionId: string, memberId: string, by: By, role: MemberRole, portfolio: string | null): Promise<Member> {
  if (portfolio !== null && (portfolio.trim().length === 0 || portfolio.length > 120)) {
    throw new MemberError("invalid", "a portfolio title is 1-120 characters");
  }
  const member = await deps.db.transaction().execute(async (trx) => {
    await lockUnion(trx, unionId);
    const acting = await requireOfficer(trx, unionId, by);
    if (acting && acting.role !== "leader") throw new MemberError("forbidden", "only the leader appoints and dismisses officers");
    const m = await getMember(trx, unionId, memberId);
    if (!m || m.state !== "active") throw new MemberError("not_found", "no such active member");
    if (m.role === "leader") {
      if (role === "member") throw new MemberError("invalid", "the leader cannot be dismissed as an officer");
      await trx.updateTable("members").set({ portfolio: portfolio?.trim() ?? null }).where("id", "=", m.id).execute();
    } else {
      await trx.updateTable("members").set({ role, portfolio: portfolio?.trim() ?? null }).where("id", "=", m.id).execute();
      // The officer's badge follows the role (minted, or burned by the permanent delegate).
      await syncBadgeIn(trx, deps.outbox, unionId, m.id);
    }
    return (await getMember(trx, unionId, m.id))!;
  });
  deps.events.emit("officer.changed", { unionId, memberId, role: member.role, portfolio: member.portfolio });
  return member;
}

/** The leader and officers, leader first. */
export async function listOfficers(db: Kysely<DB>, unionId: string): Promise<Member[]> {
  const rows = await db.selectFrom("members").selectAll().where("union_id", "=", unionId)
    .where("role", "in", ["leader", "officer"]).where("role", "<>", sql.lit("member")).where("state", "in", ["active", "reserved"])
    .orderBy("joined_at").execute();
  return rows.map(toMember).sort((a, b) => (a.role === "leader" ? -1 : 0) - (b.role === "leader" ? -1 : 0));
}

async function insertApplicant(trx: Kysely<DB>, unionId: string, actorId: string, handle: string | null, followId: string, now: number): Promise<Member> {
  const row = {
    id: newMemberId(now),
    union_id: unionId,
    actor_id: actorId,
    handle,
    state: "pending",
    role: "member",
    subtree_size: 0,
    follow_id: storedFollowId(actorId, followId),
    created_at: now,
  };
  await trx.insertInto("members").values(row).execute();
  // What was written, without reading it back (every column the insert leaves out is null).
  return toMember({ ...row, sponsor_id: null, portfolio: null, invite_id: null, joined_at: null, left_at: null, left_reason: null, removed_by: null, ally_sponsor_actor_id: null, ally_sponsor_union: null });
}

/** Sponsor for someone admitted by an invite: its creator, or the leader if the creator is gone. */
async function sponsorFor(trx: Kysely<DB>, unionId: string, createdBy: string | null): Promise<string | null> {
  if (createdBy) {
    const c = await getMember(trx, unionId, createdBy);
    if (c && (c.state === "active" || c.state === "reserved")) return c.id;
    // The inviter left after inviting: the newcomer joins where the inviter's
    // recruits went, under the inviter's sponsor chain.
    if (c?.sponsorId) return sponsorFor(trx, unionId, c.sponsorId);
  }
  return (await getLeader(trx, unionId))?.id ?? null;
}

async function admit(
  deps: MembershipDeps,
  trx: Kysely<DB>,
  union: Union,
  memberId: string,
  sponsorId: string | null,
  via: "invite" | "approval" | "open",
  inviteId: string | null,
  emits: Emit[],
): Promise<JoinResult> {
  const now = Date.now();
  // Only a pending applicant can be admitted: the guard makes a second
  // admission (a race the union lock should already prevent) fail loudly.
  const r = await trx.updateTable("members").set({ state: "active", joined_at: now, invite_id: inviteId, left_at: null, left_reason: null, removed_by: null })
    .where("id", "=", memberId).where("state", "=", "pending").executeTakeFirst();
  if (Number(r.numUpdatedRows) !== 1) throw new MemberError("conflict", "this applicant is no longer pending");
  await attach(trx, memberId, sponsorId);
  // An ally invite: the ally's member who sponsored them is kept beside the tree.
  if (inviteId) await recordAllySponsor(trx, memberId, inviteId);
  const own = await ownInviteCode(trx, union, memberId);
  // The Accept and the welcome, in one intent.
  await deps.outbox.add(trx, { kind: "member.join", unionId: union.id, memberId, inviteCode: own });
  await syncBadgeIn(trx, deps.outbox, union.id, memberId);
  emits.push(() => deps.events.emit("member.joined", { unionId: union.id, memberId, sponsorId, via }));
  return { outcome: "accepted", member: (await getMember(trx, union.id, memberId))! };
}

/**
 * Every member gets an invite of their own to pass on, for as many places as
 * the union's limit leaves them; a returning member gets their still-valid one back.
 */
async function ownInviteCode(trx: Kysely<DB>, union: Union, memberId: string): Promise<string | null> {
  const now = Date.now();
  const mine = await trx.selectFrom("invites").selectAll().where("union_id", "=", union.id).where("created_by", "=", memberId)
    .where("revoked_at", "is", null).orderBy("created_at", "desc").execute();
  const usable = mine.find((i) => (i.expires_at === null || Number(i.expires_at) > now) && (i.max_uses === null || Number(i.uses) < Number(i.max_uses)));
  if (usable) return usable.code;
  const member = (await getMember(trx, union.id, memberId))!;
  const free = member.role === "member" ? union.memberInviteLimit - await placesHeld(trx, union.id, memberId) : union.memberInviteLimit;
  if (free <= 0) return null;
  // What createInviteWith checks is settled: the union is locked, the member is in the tree
  // (just admitted, or the leader taking their place) and `free` is within the limit.
  // Officers and the leader invite without limit; their link does too.
  return (await insertInvite(trx, union.id, { createdBy: memberId, maxUses: member.role === "member" ? free : null, expiresInMs: null, welcome: true })).code;
}

function safeHandle(raw: string): string {
  try {
    return normaliseHandle(raw);
  } catch (e) {
    throw new MemberError("invalid", (e as Error).message);
  }
}
