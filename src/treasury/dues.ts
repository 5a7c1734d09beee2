import type { Kysely } from "kysely";
import type { DB, DuesPaymentsTable } from "../db/schema.ts";
import type { DuesParams, DuesParamsSource } from "./dues-params.ts";
import { DomainError } from "../domain-error.ts";

export interface DuesDeps {
  readonly db: Kysely<DB>;
  readonly duesParams: DuesParamsSource;
}

/** A token transfer into (or meant for) a union's treasury, as seen on the chain. */
export interface SeenPayment {
  /** The transaction's signature: a payment is recorded once per signature. */
  readonly signature: string;
  readonly unionId: string;
  /** The wallet that authorised the transfer. */
  readonly payer: string;
  readonly mint: string;
  readonly destination: string;
  readonly amount: bigint;
  /** The Solana Pay reference key, when the transfer carried one. */
  readonly reference: string | null;
  /** The transaction's memo: the member's ActivityPub actor id. */
  readonly memo: string | null;
  /** When the chain says it happened, epoch ms. */
  readonly paidAt: number;
}

export type PaymentStatus = "credited" | "unmatched";

export interface RecordedPayment {
  readonly signature: string;
  readonly status: PaymentStatus;
  /** Why an unmatched payment was not credited. */
  readonly reason: string | null;
  readonly memberId: string | null;
  readonly amount: bigint;
  /** False when this signature had been recorded before (the call changed nothing). */
  readonly recorded: boolean;
}

export class TreasuryError extends DomainError<"not_found" | "invalid"> {
  override name = "TreasuryError";
}

/**
 * Records a dues payment seen on-chain, once per signature: seeing it again
 * (a rescan, a retried worker, two servers) returns the first record. A
 * payment that does not match the union's dues is kept as unmatched with the
 * reason, for officers to see, and never credited.
 */
export async function recordDuesPayment(deps: DuesDeps, payment: SeenPayment): Promise<RecordedPayment> {
  if (!/^[1-9A-HJ-NP-Za-km-z]{64,88}$/.test(payment.signature)) throw new TreasuryError("invalid", `not a transaction signature: ${payment.signature.slice(0, 100)}`);
  if (payment.amount < 0n || payment.amount > 0xffffffffffffffffn) throw new TreasuryError("invalid", "amount must be a u64");
  return deps.db.transaction().execute(async (trx) => {
    const existing = await trx.selectFrom("dues_payments").selectAll().where("signature", "=", payment.signature).executeTakeFirst();
    if (existing) return fromRow(existing, false);
    const treasury = await trx.selectFrom("treasuries").select(["mint", "token_account"]).where("union_id", "=", payment.unionId).executeTakeFirst();
    if (!treasury) throw new TreasuryError("not_found", `union ${payment.unionId} has no treasury`);
    const params = await deps.duesParams(trx, payment.unionId);
    const member = payment.memo === null ? undefined : await trx.selectFrom("members").select(["id", "state"])
      .where("union_id", "=", payment.unionId).where("actor_id", "=", payment.memo.trim()).executeTakeFirst();
    const reason = mismatch(payment, treasury, params, member);
    const row: DuesPaymentsTable = {
      signature: payment.signature,
      union_id: payment.unionId,
      member_id: member?.id ?? null,
      payer: payment.payer,
      mint: payment.mint,
      amount: payment.amount.toString(),
      reference: payment.reference,
      status: reason === null ? "credited" : "unmatched",
      reason,
      paid_at: payment.paidAt,
      recorded_at: Date.now(),
    };
    // Two recorders racing on one signature: the loser reads the winner's row.
    const inserted = await trx.insertInto("dues_payments").values(row).onConflict((oc) => oc.column("signature").doNothing()).executeTakeFirst();
    if (Number(inserted.numInsertedOrUpdatedRows ?? 0n) === 0) {
      return fromRow(await trx.selectFrom("dues_payments").selectAll().where("signature", "=", payment.signature).executeTakeFirstOrThrow(), false);
    }
    return fromRow(row, true);
  });
}

function mismatch(payment: SeenPayment, treasury: { mint: string; token_account: string }, params: DuesParams, member: { id: string; state: string } | undefined): string | null {
  if (payment.mint !== (params.duesMint ?? treasury.mint)) return `wrong mint: ${payment.mint}`;
  if (payment.destination !== treasury.token_account) return `wrong destination: paid to ${payment.destination}, not the treasury ${treasury.token_account}`;
  if (payment.memo === null) return "no memo naming the member";
  if (payment.reference === null) return "no payment reference";
  if (!member) return `no member of this union is ${payment.memo.slice(0, 200)}`;
  if (member.state !== "active") return `the member is ${member.state}`;
  if (params.duesAmount === 0n) return "this union has no dues";
  if (payment.amount < params.duesAmount) return `underpaid: ${payment.amount} of ${params.duesAmount}`;
  return null;
}

function fromRow(row: DuesPaymentsTable, recorded: boolean): RecordedPayment {
  return { signature: row.signature, status: row.status as PaymentStatus, reason: row.reason, memberId: row.member_id, amount: BigInt(row.amount), recorded };
}

export type Standing = "good" | "grace" | "lapsed";

export interface MemberStanding {
  readonly standing: Standing;
  /** Epoch ms the credited dues cover until; null with no dues or no payment. */
  readonly paidThrough: number | null;
}

const DAY_MS = 86_400_000;

/**
 * Good standing from the credited payments: each covers as many whole
 * periods as it pays for, starting when it was paid or when the previous
 * cover ends, whichever is later. A union without dues has every active
 * member in good standing; a new member starts in grace.
 */
export async function memberStanding(deps: DuesDeps, unionId: string, memberId: string, now = Date.now()): Promise<MemberStanding> {
  const member = await deps.db.selectFrom("members").select(["state", "joined_at"]).where("union_id", "=", unionId).where("id", "=", memberId).executeTakeFirst();
  if (!member) throw new TreasuryError("not_found", `no member ${memberId} in this union`);
  if (member.state !== "active") return { standing: "lapsed", paidThrough: null };
  const params = await deps.duesParams(deps.db, unionId);
  if (params.duesAmount === 0n) return { standing: "good", paidThrough: null };
  const payments = await deps.db.selectFrom("dues_payments").select(["amount", "paid_at"])
    .where("union_id", "=", unionId).where("member_id", "=", memberId).where("status", "=", "credited")
    .orderBy("paid_at").orderBy("signature").execute();
  const period = params.duesPeriodDays * DAY_MS;
  let paidThrough: number | null = null;
  for (const p of payments) {
    const periods = BigInt(p.amount) / params.duesAmount;
    paidThrough = Math.max(paidThrough ?? 0, p.paid_at) + Number(periods) * period;
  }
  const grace = params.duesGraceDays * DAY_MS;
  const cover = paidThrough ?? member.joined_at ?? now;
  if (now <= (paidThrough ?? -Infinity)) return { standing: "good", paidThrough };
  return { standing: now <= cover + grace ? "grace" : "lapsed", paidThrough };
}

/** Payments a union's officers should look at: never credited, each with its reason. */
export async function unmatchedPayments(db: Kysely<DB>, unionId: string, limit = 100) {
  return db.selectFrom("dues_payments").select(["signature", "payer", "mint", "amount", "reason", "paid_at"])
    .where("union_id", "=", unionId).where("status", "=", "unmatched").orderBy("paid_at", "desc").limit(limit).execute();
}

/** Sum of credited dues, exact: amounts are u64 strings summed as bigint. */
export async function creditedTotal(db: Kysely<DB>, unionId: string): Promise<bigint> {
  const rows = await db.selectFrom("dues_payments").select("amount").where("union_id", "=", unionId).where("status", "=", "credited").execute();
  return rows.reduce((sum, r) => sum + BigInt(r.amount), 0n);
}
