import { createHash, randomBytes, randomUUID } from "node:crypto";
import type { Kysely } from "kysely";
import type { DB } from "../db/schema.ts";
import { findMemberByHandle, getMember, type Member, type MemberRow, toMember } from "../members/members.ts";
import type { Outbox } from "../outbox.ts";
import { normaliseHandle } from "../unions/unions.ts";
import { checkLimit, hitLimits, type Limit, pruneHits, recordHit } from "./rate-limit.ts";
import { DomainError } from "../domain-error.ts";

// Passwordless sign-in for members: a one-time code goes to the member's own
// fediverse account as a direct message (a `login.link` outbox intent), and
// the code is exchanged for a session. Codes and tokens are random, stored
// only as SHA-256 hashes, and a session is honoured only while its member is
// still an active member.

/** A sign-in link works once, within this time. */
export const LOGIN_CODE_LIFETIME_MS = 15 * 60_000;
/** A session lasts this long from sign-in, unless signed out or the membership ends. */
export const SESSION_LIFETIME_MS = 14 * 24 * 3600_000;

export const LOGIN_WINDOW_MS = 15 * 60_000;
/** Sign-in messages one account can be sent per window: enough for a typo or a lost message, too few to spam it. */
export const LOGIN_PER_HANDLE = 3;
/** Sign-in requests one client address may make per window, whatever handles it names. */
export const LOGIN_PER_IP = 20;
/** Wrong, used or expired codes one client address may present per window. */
export const FAILED_CODES_PER_IP = 10;

export interface SessionDeps {
  readonly db: Kysely<DB>;
  readonly outbox: Outbox;
}

export class SessionError extends DomainError<"invalid"> {
  override name = "SessionError";
}

/** Which limit refused a request: the account named, or the client's address. */
export type LimitScope = "handle" | "ip";

export type LoginRequest =
  /** The same answer whether or not the handle is a member: nothing is revealed. */
  | { readonly status: "accepted"; readonly handle: string }
  | { readonly status: "limited"; readonly scope: LimitScope; readonly retryAfterMs: number };

export interface LoginRequestInput {
  readonly unionId: string;
  /** As typed: `@user@host` or `user@host`. */
  readonly handle: string;
  /** The client's address, already reduced to what should share a limit (see clientBucket). */
  readonly client: string;
  /** The sign-in URL that carries a code. */
  readonly linkFor: (code: string) => string;
  readonly now?: number;
}

function sha256(s: string): string {
  return createHash("sha256").update(s).digest("hex");
}

function newSecret(): string {
  return randomBytes(32).toString("base64url");
}

/**
 * Someone asks for a sign-in link for a handle. Only an active member with a
 * known account is sent one; the answer is the same either way. The code and
 * the direct message that carries it are committed in one transaction.
 */
export async function requestLogin(deps: SessionDeps, input: LoginRequestInput): Promise<LoginRequest> {
  const now = input.now ?? Date.now();
  let handle: string;
  try {
    handle = normaliseHandle(input.handle);
  } catch (e) {
    throw new SessionError("invalid", (e as Error).message);
  }
  const limits: Limit[] = [
    { bucket: `login:ip:${input.client}`, max: LOGIN_PER_IP, windowMs: LOGIN_WINDOW_MS },
    { bucket: `login:handle:${handle}`, max: LOGIN_PER_HANDLE, windowMs: LOGIN_WINDOW_MS },
  ];
  const limited = await hitLimits(deps.db, limits, now);
  if (!limited.ok) {
    return { status: "limited", scope: limited.limit === limits[0] ? "ip" : "handle", retryAfterMs: limited.retryAfterMs };
  }
  await pruneExpired(deps.db, now);

  const member = await findMemberByHandle(deps.db, input.unionId, handle);
  if (member?.state === "active" && member.actorId) {
    const code = newSecret();
    const expiresAt = now + LOGIN_CODE_LIFETIME_MS;
    await deps.db.transaction().execute(async (trx) => {
      await trx.insertInto("login_codes").values({
        id: randomUUID(),
        code_hash: sha256(code),
        union_id: input.unionId,
        member_id: member.id,
        created_at: now,
        expires_at: expiresAt,
        used_at: null,
      }).execute();
      await deps.outbox.add(trx, { kind: "login.link", unionId: input.unionId, actorId: member.actorId!, url: input.linkFor(code), expiresAt });
    });
  }
  return { status: "accepted", handle };
}

export type CodeProblem = "unknown" | "used" | "expired" | "not_member";

export type CodeCheck =
  | { readonly ok: true; readonly member: Member; readonly expiresAt: Date }
  | { readonly ok: false; readonly problem: CodeProblem };

/** What a sign-in link would do, without using it (the confirmation page). */
export async function checkLoginCode(db: Kysely<DB>, unionId: string, code: string, now = Date.now()): Promise<CodeCheck> {
  const row = await db.selectFrom("login_codes").selectAll().where("code_hash", "=", sha256(code)).where("union_id", "=", unionId).executeTakeFirst();
  if (!row) return { ok: false, problem: "unknown" };
  if (row.used_at !== null) return { ok: false, problem: "used" };
  if (Number(row.expires_at) <= now) return { ok: false, problem: "expired" };
  const member = await getMember(db, unionId, row.member_id);
  if (member?.state !== "active") return { ok: false, problem: "not_member" };
  return { ok: true, member, expiresAt: new Date(Number(row.expires_at)) };
}

export interface Session {
  readonly id: string;
  readonly unionId: string;
  readonly memberId: string;
  readonly createdAt: Date;
  readonly expiresAt: Date;
}

export type SignIn =
  | { readonly ok: true; readonly token: string; readonly session: Session; readonly member: Member }
  | { readonly ok: false; readonly problem: CodeProblem }
  | { readonly ok: false; readonly problem: "limited"; readonly retryAfterMs: number };

/**
 * Exchanges a sign-in code for a session. The code is taken by one
 * conditional update, so two clicks (or two tabs) cannot both use it; a code
 * is used up even if the membership has since ended. Failed attempts count
 * against the client's address.
 */
export async function signInWithCode(db: Kysely<DB>, unionId: string, code: string, client: string, now = Date.now()): Promise<SignIn> {
  const failLimit: Limit = { bucket: `login-code:ip:${client}`, max: FAILED_CODES_PER_IP, windowMs: LOGIN_WINDOW_MS };
  const allowed = await checkLimit(db, failLimit, now);
  if (!allowed.ok) return { ok: false, problem: "limited", retryAfterMs: allowed.retryAfterMs };
  const hash = sha256(code);
  const result = await db.transaction().execute(async (trx): Promise<SignIn> => {
    const taken = await trx.updateTable("login_codes").set({ used_at: now })
      .where("code_hash", "=", hash).where("union_id", "=", unionId)
      .where("used_at", "is", null).where("expires_at", ">", now)
      .executeTakeFirst();
    const row = await trx.selectFrom("login_codes").selectAll().where("code_hash", "=", hash).where("union_id", "=", unionId).executeTakeFirst();
    if (Number(taken.numUpdatedRows) !== 1 || !row) {
      return { ok: false, problem: !row ? "unknown" : row.used_at === null && Number(row.expires_at) <= now ? "expired" : "used" };
    }
    const member = await getMember(trx, unionId, row.member_id);
    if (member?.state !== "active") return { ok: false, problem: "not_member" };
    const token = newSecret();
    const session = { id: randomUUID(), union_id: unionId, member_id: member.id, created_at: now, expires_at: now + SESSION_LIFETIME_MS, revoked_at: null };
    await trx.insertInto("sessions").values({ ...session, token_hash: sha256(token) }).execute();
    return {
      ok: true,
      token,
      member,
      session: { id: session.id, unionId, memberId: member.id, createdAt: new Date(now), expiresAt: new Date(session.expires_at) },
    };
  });
  if (!result.ok) await recordHit(db, failLimit.bucket, now);
  return result;
}

/**
 * The session a cookie's token names, with its member, if it is still good:
 * not expired, not signed out, for this union, and its member still active
 * (a member who left or was removed is signed out everywhere at once).
 */
export async function sessionFor(db: Kysely<DB>, unionId: string, token: string, now = Date.now()): Promise<{ session: Session; member: Member } | undefined> {
  if (!token) return undefined;
  const row = await db.selectFrom("sessions as s")
    .innerJoin("members as m", "m.id", "s.member_id")
    .selectAll("m")
    .select(["s.id as session_id", "s.created_at as session_created_at", "s.expires_at as session_expires_at"])
    .where("s.token_hash", "=", sha256(token))
    .where("s.union_id", "=", unionId)
    .where("s.revoked_at", "is", null)
    .where("s.expires_at", ">", now)
    .where("m.union_id", "=", unionId)
    .where("m.state", "=", "active")
    .executeTakeFirst();
  if (!row) return undefined;
  const { session_id, session_created_at, session_expires_at, ...member } = row;
  return {
    session: { id: session_id, unionId, memberId: member.id, createdAt: new Date(Number(session_created_at)), expiresAt: new Date(Number(session_expires_at)) },
    member: toMember(member as MemberRow),
  };
}

/** Signs out: the token stops working at once, in every process. */
export async function endSession(db: Kysely<DB>, token: string, now = Date.now()): Promise<void> {
  if (!token) return;
  await db.updateTable("sessions").set({ revoked_at: now }).where("token_hash", "=", sha256(token)).where("revoked_at", "is", null).execute();
}

/** Ends every session of a member (e.g. "sign out everywhere"). */
export async function endMemberSessions(db: Kysely<DB>, unionId: string, memberId: string, now = Date.now()): Promise<void> {
  await db.updateTable("sessions").set({ revoked_at: now })
    .where("union_id", "=", unionId).where("member_id", "=", memberId).where("revoked_at", "is", null).execute();
}

const KEEP_MS = 24 * 3600_000;

/** Deletes codes, sessions and rate-limit hits that can no longer matter. Cheap: every delete is an index range. */
export async function pruneExpired(db: Kysely<DB>, now = Date.now()): Promise<void> {
  await db.deleteFrom("login_codes").where("expires_at", "<", now - KEEP_MS).execute();
  await db.deleteFrom("sessions").where("expires_at", "<", now - KEEP_MS).execute();
  await pruneHits(db, LOGIN_WINDOW_MS, now);
}

/**
 * The part of a client address that shares one rate limit: the address
 * itself for IPv4, its /64 for IPv6 (one subscriber usually holds a whole /64).
 */
export function clientBucket(address: string | undefined): string {
  if (!address) return "unknown";
  const a = address.trim().toLowerCase();
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(a);
  if (mapped) return mapped[1]!;
  if (!a.includes(":")) return a;
  const [head = "", tail] = a.split("%")[0]!.split("::");
  const h = head ? head.split(":") : [];
  const t = tail === undefined ? [] : tail ? tail.split(":") : [];
  const groups = tail === undefined ? h : [...h, ...Array(Math.max(0, 8 - h.length - t.length)).fill("0"), ...t];
  return `${groups.slice(0, 4).map((g) => g.replace(/^0+(?=.)/, "")).join(":")}::/64`;
}
