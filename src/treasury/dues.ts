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
  return (await recordDuesPayments(deps, [payment]))[0]!;
}

const BATCH = 200;

/**
 * recordDuesPayment for many payments in one database transaction per 200:
 * the treasury and the dues rule are read once per union, members once per
 * batch, and the rows inserted together. The scan records its payments this
 * way: one round trip per payment was what made detection slow on
 * PostgreSQL. Results are in the order given.
 */
export async function recordDuesPayments(deps: DuesDeps, payments: readonly SeenPayment[]): Promise<RecordedPayment[]> {
  for (const payment of payments) {
    if (!/^[1-9A-HJ-NP-Za-km-z]{64,88}$/.test(payment.signature)) throw new TreasuryError("invalid", `not a transaction signature: ${payment.signature.slice(0, 100)}`);
    if (payment.amount < 0n || payment.amount > 0xffffffffffffffffn) throw new TreasuryError("invalid", "amount must be a u64");
  }
  const out: RecordedPayment[] = [];
  for (let i = 0; i < payments.length; i += BATCH) out.push(...await recordBatch(deps, payments.slice(i, i + BATCH)));
  return out;
}

async function recordBatch(deps: DuesDeps, payments: readonly SeenPayment[]): Promise<RecordedPayment[]> {
  return deps.db.transaction().execute(async (trx) => {
    const signatures = [...new Set(payments.map((p) => p.signature))];
    const known = new Map((await trx.selectFrom("dues_payments").selectAll().where("signature", "in", signatures).execute()).map((r) => [r.signature, r]));
    const fresh = new Map<string, DuesPaymentsTable>();
    const now = Date.now();
    for (const unionId of new Set(payments.map((p) => p.unionId))) {
      const mine = payments.filter((p) => p.unionId === unionId && !known.has(p.signature));
      if (mine.length === 0) continue;
      const treasury = await trx.selectFrom("treasuries").select(["mint", "token_account"]).where("union_id", "=", unionId).executeTakeFirst();
      if (!treasury) throw new TreasuryError("not_found", `union ${unionId} has no treasury`);
      const params = await deps.duesParams(trx, unionId);
      const actors = [...new Set(mine.flatMap((p) => (p.memo === null ? [] : [p.memo.trim()])))];
      const members = new Map(actors.length === 0 ? [] : (await trx.selectFrom("members").select(["id", "state", "actor_id"])
        .where("union_id", "=", unionId).where("actor_id", "in", actors).execute()).map((m) => [m.actor_id!, m]));
      for (const payment of mine) {
        if (fresh.has(payment.signature)) continue;
        const member = payment.memo === null ? undefined : members.get(payment.memo.trim());
        const reason = mismatch(payment, treasury, params, member);
        fresh.set(payment.signature, {
          signature: payment.signature, union_id: unionId, member_id: member?.id ?? null, payer: payment.payer, mint: payment.mint,
          amount: payment.amount.toString(), reference: payment.reference, status: reason === null ? "credited" : "unmatched", reason,
          paid_at: payment.paidAt, recorded_at: now,
        });
      }
    }
    const inserted = new Set<string>();
    if (fresh.size > 0) {
      // Two recorders racing on one signature: the loser reads the winner's row below.
      const rows = await trx.insertInto("dues_payments").values([...fresh.values()]).onConflict((oc) => oc.column("signature").doNothing())
        .returning("signature").execute();
      for (const r of rows) inserted.add(r.signature);
      const lost = [...fresh.keys()].filter((s) => !inserted.has(s));
      if (lost.length) for (const r of await trx.selectFrom("dues_payments").selectAll().where("signature", "in", lost).execute()) known.set(r.signature, r);
      // The issued references these payments carried are settled: the scan stops looking them up.
      const references = [...fresh.values()].filter((r) => r.reference !== null && inserted.has(r.signature)).map((r) => r.reference!);
      if (references.length > 0) {
        await trx.updateTable("dues_references").set((eb) => ({
          state: "paid",
          signature: eb.selectFrom("dues_payments").select((sub) => sub.fn.min("dues_payments.signature").as("s"))
            .whereRef("dues_payments.reference", "=", "dues_references.reference"),
        })).where("reference", "in", references).where("state", "=", "issued").execute();
      }
    }
    const seen = new Set<string>();
    return payments.map((p) => {
      const first = inserted.has(p.signature) && !seen.has(p.signature);
      seen.add(p.signature);
      return first ? fromRow(fresh.get(p.signature)!, true) : fromRow(known.get(p.signature) ?? fresh.get(p.signature)!, false);
    });
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
  return standingFrom(params, member, payments, now);
}

/**
 * memberStanding's rule on what it read, so the scheduled recomputation can
 * read a page of members' payments at once and apply the same rule.
 * `payments` are the member's credited payments ordered by paid_at, then signature.
 */
export function standingFrom(params: DuesParams, member: { readonly state: string; readonly joined_at: number | null }, payments: readonly { readonly amount: string; readonly paid_at: number }[], now: number): MemberStanding {
  if (member.state !== "active") return { standing: "lapsed", paidThrough: null };
  if (params.duesAmount === 0n) return { standing: "good", paidThrough: null };
  const period = params.duesPeriodDays * DAY_MS;
  let paidThrough: number | null = null;
  for (const p of payments) {
    const periods = BigInt(p.amount) / params.duesAmount;
    paidThrough = Math.max(paidThrough ?? 0, Number(p.paid_at)) + Number(periods) * period;
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
