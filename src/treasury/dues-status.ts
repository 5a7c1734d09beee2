import type { Kysely } from "kysely";
import type { DB } from "../db/schema.ts";
import type { DuesParamsSource } from "./dues-params.ts";
import { memberStanding, type Standing, unmatchedPayments } from "./dues.ts";

export interface MemberDuesStatus {
  readonly memberId: string;
  readonly handle: string | null;
  readonly actorId: string | null;
  readonly standing: Standing;
  /** Epoch ms the credited dues cover until. */
  readonly paidThrough: number | null;
  readonly lastPayment: { signature: string; amount: bigint; paidAt: number } | null;
}

export interface DuesStatus {
  readonly duesAmount: bigint;
  readonly periodDays: number;
  readonly graceDays: number;
  readonly members: MemberDuesStatus[];
  /** Payments never credited, with their reasons: for officers. */
  readonly unmatched: { signature: string; payer: string; amount: bigint; reason: string | null; paidAt: number }[];
}

/** Standing of the union's active members (or of one member) at `now`, with their last credited payment. */
export async function duesStatus(deps: { db: Kysely<DB>; duesParams: DuesParamsSource }, unionId: string, memberId?: string, now = Date.now()): Promise<DuesStatus> {
  const params = await deps.duesParams(deps.db, unionId);
  let q = deps.db.selectFrom("members").select(["id", "handle", "actor_id"]).where("union_id", "=", unionId);
  q = memberId ? q.where("id", "=", memberId) : q.where("state", "=", "active");
  const rows = await q.orderBy("handle").orderBy("id").execute();
  const members: MemberDuesStatus[] = [];
  for (const r of rows) {
    const s = await memberStanding(deps, unionId, r.id, now);
    const last = await deps.db.selectFrom("dues_payments").select(["signature", "amount", "paid_at"])
      .where("union_id", "=", unionId).where("member_id", "=", r.id).where("status", "=", "credited")
      .orderBy("paid_at", "desc").limit(1).executeTakeFirst();
    members.push({
      memberId: r.id, handle: r.handle, actorId: r.actor_id, standing: s.standing, paidThrough: s.paidThrough,
      lastPayment: last ? { signature: last.signature, amount: BigInt(last.amount), paidAt: Number(last.paid_at) } : null,
    });
  }
  const unmatched = (await unmatchedPayments(deps.db, unionId)).map((u) => ({ signature: u.signature, payer: u.payer, amount: BigInt(u.amount), reason: u.reason, paidAt: Number(u.paid_at) }));
  return { duesAmount: params.duesAmount, periodDays: params.duesPeriodDays, graceDays: params.duesGraceDays, members, unmatched };
}
