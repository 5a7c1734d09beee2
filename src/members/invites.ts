import { randomBytes, randomUUID } from "node:crypto";
import type { Kysely, Selectable } from "kysely";
import type { DB, InvitesTable } from "../db/schema.ts";
import { getUnionById, normaliseHandle, UnionError } from "../unions/unions.ts";
import { type By, getLeader, getMember, IN_TREE, lockUnion, MemberError, type MembershipDeps } from "./members.ts";

export interface Invite {
  readonly id: string;
  readonly unionId: string;
  readonly code: string;
  /** The sponsor of whoever joins with it; null: top of the tree. */
  readonly createdBy: string | null;
  readonly maxUses: number | null;
  readonly uses: number;
  readonly expiresAt: Date | null;
  readonly revokedAt: Date | null;
  readonly createdAt: Date;
  /** Handed over on joining; the member's own invites take places from it. */
  readonly welcome: boolean;
}

export type InviteStatus = "valid" | "expired" | "revoked" | "used_up";

export function inviteStatus(invite: Invite, now = Date.now()): InviteStatus {
  if (invite.revokedAt) return "revoked";
  if (invite.expiresAt && invite.expiresAt.getTime() <= now) return "expired";
  if (invite.maxUses !== null && invite.uses >= invite.maxUses) return "used_up";
  return "valid";
}

const STATUS_TEXT: Record<Exclude<InviteStatus, "valid">, string> = {
  expired: "this invite has expired",
  revoked: "this invite was withdrawn",
  used_up: "this invite has been used as many times as it allows",
};

function toInvite(r: Omit<Selectable<InvitesTable>, "ally_sponsor_actor_id" | "ally_sponsor_union">): Invite {
  return {
    id: r.id,
    unionId: r.union_id,
    code: r.code,
    createdBy: r.created_by,
    maxUses: r.max_uses === null ? null : Number(r.max_uses),
    uses: Number(r.uses),
    expiresAt: r.expires_at === null ? null : new Date(Number(r.expires_at)),
    revokedAt: r.revoked_at === null ? null : new Date(Number(r.revoked_at)),
    createdAt: new Date(Number(r.created_at)),
    welcome: Number(r.welcome) === 1,
  };
}

export interface NewInvite {
  /** Whose recruits the newcomers become; the operator's invites sponsor under the leader. */
  readonly by: By;
  /** Omitted: one use for members, unlimited for officers and the operator. */
  readonly maxUses?: number | null;
  readonly expiresInMs?: number | null;
  /** The invite handed over on joining; the member's own invites may take its unused places. */
  readonly welcome?: boolean;
}

/**
 * Officers (and the operator) invite without limit. An ordinary member's
 * invites are capped by the union's invite limit, counted in places: the
 * sum of their unrevoked invites' uses, so one invite cannot be unbounded.
 */
export async function createInvite(deps: Pick<MembershipDeps, "db">, unionId: string, input: NewInvite): Promise<Invite> {
  return deps.db.transaction().execute((trx) => createInviteWith(trx, unionId, input));
}

/** createInvite inside a transaction the caller holds. */
export async function createInviteWith(trx: Kysely<DB>, unionId: string, input: NewInvite): Promise<Invite> {
  if (input.maxUses !== undefined && input.maxUses !== null && (!Number.isInteger(input.maxUses) || input.maxUses < 1 || input.maxUses > 1_000_000)) {
    throw new MemberError("invalid", `uses must be a whole number from 1 to 1000000; got ${input.maxUses}`);
  }
  if (input.expiresInMs !== undefined && input.expiresInMs !== null && !(input.expiresInMs > 0)) {
    throw new MemberError("invalid", "an invite's lifetime must be positive");
  }
  {
    await lockUnion(trx, unionId);
    const union = await getUnionById(trx, unionId);
    if (!union) throw new UnionError("not_found", "no such union");
    let createdBy: string | null;
    let maxUses = input.maxUses ?? null;
    if (input.by.kind === "operator") {
      createdBy = (await getLeader(trx, unionId))?.id ?? null;
    } else {
      const m = await getMember(trx, unionId, input.by.memberId);
      if (!m || !IN_TREE.includes(m.state)) throw new MemberError("forbidden", "only members can invite");
      createdBy = m.id;
      if (m.role === "member") {
        maxUses ??= 1;
        const used = await placesHeld(trx, unionId, m.id);
        const over = used + maxUses - union.memberInviteLimit;
        if (over > 0 && over > await welcomePlaces(trx, unionId, m.id)) {
          throw new MemberError("forbidden", `members may have invites open for ${union.memberInviteLimit} people at a time; ${m.handle ?? "this member"} has ${used} open`);
        }
        if (over > 0) await takeFromWelcome(trx, unionId, m.id, over);
      }
    }
    return insertInvite(trx, unionId, { createdBy, maxUses, expiresInMs: input.expiresInMs ?? null, welcome: input.welcome ?? false });
  }
}

/**
 * Writes an invite whose checks the caller has made (createInviteWith's, or
 * a join's own-invite, which holds the union's lock and has counted the
 * member's places already).
 */
export async function insertInvite(trx: Kysely<DB>, unionId: string, o: { createdBy: string | null; maxUses: number | null; expiresInMs: number | null; welcome: boolean }): Promise<Invite> {
  const row = newInviteRow(unionId, o);
  await trx.insertInto("invites").values(row).execute();
  return toInvite(row);
}

/** The row insertInvite writes (for a caller that batches the insert, src/db/batch.ts). */
export function newInviteRow(unionId: string, o: { createdBy: string | null; maxUses: number | null; expiresInMs: number | null; welcome: boolean }) {
  const now = Date.now();
  return {
    id: randomUUID(),
    union_id: unionId,
    code: randomBytes(12).toString("base64url"),
    created_by: o.createdBy,
    max_uses: o.maxUses,
    uses: 0,
    expires_at: o.expiresInMs ? now + o.expiresInMs : null,
    revoked_at: null,
    created_at: now,
    welcome: o.welcome ? 1 : 0,
  };
}

/** Unused places of a member's open welcome invites: what their own invites may take. */
export async function welcomePlaces(db: Kysely<DB>, unionId: string, memberId: string, now = Date.now()): Promise<number> {
  let free = 0;
  for (const i of await openWelcomeInvites(db, unionId, memberId, now)) free += Number(i.max_uses) - Number(i.uses);
  return free;
}

function openWelcomeInvites(db: Kysely<DB>, unionId: string, memberId: string, now: number) {
  return db.selectFrom("invites").selectAll().where("union_id", "=", unionId).where("created_by", "=", memberId)
    .where("welcome", "=", 1).where("revoked_at", "is", null).where("max_uses", "is not", null)
    .where((eb) => eb.or([eb("expires_at", "is", null), eb("expires_at", ">", now)]))
    .orderBy("created_at").execute();
}

/**
 * Shrinks a member's welcome invite by `places` unused places, so a link
 * they already shared keeps working for the people still to come, minus
 * those now given to their new invite. One left with no place is revoked.
 */
async function takeFromWelcome(trx: Kysely<DB>, unionId: string, memberId: string, places: number): Promise<void> {
  const now = Date.now();
  let left = places;
  for (const i of await openWelcomeInvites(trx, unionId, memberId, now)) {
    if (left <= 0) break;
    const unused = Number(i.max_uses) - Number(i.uses);
    const take = Math.min(unused, left);
    if (take <= 0) continue;
    left -= take;
    const maxUses = Number(i.max_uses) - take;
    await trx.updateTable("invites").set(maxUses > 0 ? { max_uses: maxUses } : { max_uses: 0, revoked_at: now })
      .where("id", "=", i.id).execute();
  }
}

/**
 * Places a member's invites still hold open: the unused uses of their
 * invites that are neither revoked nor expired. The limit caps how many
 * newcomers a member can have on the way at once, not for ever.
 */
export async function placesHeld(db: Kysely<DB>, unionId: string, memberId: string, now = Date.now()): Promise<number> {
  const r = await db.selectFrom("invites").select((eb) => eb.fn.sum<number>(eb("max_uses", "-", eb.ref("uses"))).as("n"))
    .where("union_id", "=", unionId).where("created_by", "=", memberId).where("revoked_at", "is", null)
    .where("max_uses", "is not", null)
    .where((eb) => eb.or([eb("expires_at", "is", null), eb("expires_at", ">", now)]))
    .executeTakeFirst();
  return Number(r?.n ?? 0);
}

/** A member who leaves or is removed can no longer bring anyone in. */
export async function revokeInvitesOf(trx: Kysely<DB>, unionId: string, memberId: string, now: number): Promise<void> {
  await trx.updateTable("invites").set({ revoked_at: now }).where("union_id", "=", unionId).where("created_by", "=", memberId).where("revoked_at", "is", null).execute();
}

export async function getInviteByCode(db: Kysely<DB>, unionId: string, code: string): Promise<Invite | undefined> {
  const r = await db.selectFrom("invites").selectAll().where("union_id", "=", unionId).where("code", "=", code).executeTakeFirst();
  return r && toInvite(r);
}

export async function listInvites(db: Kysely<DB>, unionId: string, opts: { createdBy?: string } = {}): Promise<Invite[]> {
  const rows = await db.selectFrom("invites").selectAll().where("union_id", "=", unionId)
    .$if(opts.createdBy !== undefined, (q) => q.where("created_by", "=", opts.createdBy!))
    .orderBy("created_at", "desc").execute();
  return rows.map(toInvite);
}

export async function revokeInvite(deps: Pick<MembershipDeps, "db">, unionId: string, code: string): Promise<void> {
  await deps.db.updateTable("invites").set({ revoked_at: Date.now() })
    .where("union_id", "=", unionId).where("code", "=", code).where("revoked_at", "is", null).execute();
}

/** Why an invite cannot be used now, as a sentence for the newcomer; undefined if it can. */
export function inviteProblem(invite: Invite | undefined, now = Date.now()): string | undefined {
  if (!invite) return "there is no such invite";
  const status = inviteStatus(invite, now);
  return status === "valid" ? undefined : STATUS_TEXT[status];
}

/**
 * Takes one use of the invite, atomically: two newcomers racing for the last
 * use cannot both get it.
 */
export async function consumeInvite(trx: Kysely<DB>, inviteId: string, now: number): Promise<boolean> {
  const r = await trx.updateTable("invites").set((eb) => ({ uses: eb("uses", "+", 1) }))
    .where("id", "=", inviteId)
    .where("revoked_at", "is", null)
    .where((eb) => eb.or([eb("expires_at", "is", null), eb("expires_at", ">", now)]))
    .where((eb) => eb.or([eb("max_uses", "is", null), eb("uses", "<", eb.ref("max_uses"))]))
    .executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

export const CLAIM_LIFETIME_MS = 24 * 3600_000;

export interface JoinClaim {
  readonly id: string;
  readonly handle: string;
  readonly expiresAt: Date;
}

/**
 * A newcomer opened the invite link and named their account. Their Follow,
 * which carries no invite code, is matched to the invite through this claim.
 */
export async function claimInvite(deps: Pick<MembershipDeps, "db">, unionId: string, code: string, rawHandle: string): Promise<JoinClaim> {
  const handle = (() => {
    try {
      return normaliseHandle(rawHandle);
    } catch (e) {
      throw new MemberError("invalid", (e as Error).message);
    }
  })();
  const invite = await getInviteByCode(deps.db, unionId, code);
  const problem = inviteProblem(invite);
  if (problem) throw new MemberError("invalid", problem);
  const now = Date.now();
  const claim = { id: randomUUID(), union_id: unionId, invite_id: invite!.id, handle, created_at: now, expires_at: now + CLAIM_LIFETIME_MS, used_at: null };
  await deps.db.insertInto("join_claims").values(claim).execute();
  return { id: claim.id, handle, expiresAt: new Date(claim.expires_at) };
}

/** The newest open claim for a handle, if any. */
export async function openClaimFor(db: Kysely<DB>, unionId: string, handle: string, now: number) {
  return openClaimQuery(db, unionId, handle, now).executeTakeFirst();
}

/** openClaimFor's statement, not run (the newest open claim is its first row). */
export function openClaimQuery(db: Kysely<DB>, unionId: string, handle: string, now: number) {
  return db.selectFrom("join_claims").selectAll()
    .where("union_id", "=", unionId).where("handle", "=", handle).where("used_at", "is", null).where("expires_at", ">", now)
    .orderBy("created_at", "desc");
}

/** A spent or lapsed join claim is kept a day (for a late Follow's log line), then deleted. */
const CLAIM_KEEP_MS = 24 * 3600_000;

/** Deletes join claims that expired more than a day ago, used or not; returns how many. */
export async function pruneJoinClaims(db: Kysely<DB>, now = Date.now()): Promise<number> {
  const r = await db.deleteFrom("join_claims").where("expires_at", "<", now - CLAIM_KEEP_MS).executeTakeFirst();
  return Number(r.numDeletedRows);
}
