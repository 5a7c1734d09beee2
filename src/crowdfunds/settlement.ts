import type { Kysely, Selectable } from "kysely";
import type { CrowdfundTransactionsTable, DB } from "../db/schema.ts";
import { type Crowdfund, CrowdfundError, splitTotal, toCrowdfund } from "./crowdfunds.ts";
import { listPledges } from "./pledges.ts";
import { type CosignedTransaction, insertPendingTransfer } from "../treasury/treasury.ts";

/** Refunds per transaction: 15 transfers stay well inside a transaction's 1,232 bytes and compute budget. */
export const REFUNDS_PER_TRANSACTION = 15;

export interface Refund {
  readonly pledge: string;
  readonly source: string;
  readonly amount: bigint;
  /**
   * The source cannot take it back (closed, frozen, another mint): the
   * tokens go to the union's treasury account instead, held for the pledger,
   * so the vault still empties and closes.
   */
  readonly held?: boolean;
}

/** What the settlement of one crowdfund does, decided from the recorded pledges. */
export interface SettlementPlan {
  readonly outcome: "succeeded" | "failed";
  /** Matched pledges. */
  readonly total: bigint;
  /** The union's cut (floor of total × bps / 10,000), 0 when the goal was missed. */
  readonly cut: bigint;
  /** What the beneficiary receives: total − cut, or 0. */
  readonly payout: bigint;
  /** Returned to the token account each came from: every pledge when the goal was missed; unmatched deposits always. */
  readonly refunds: readonly Refund[];
}

export type SettlementTxKind = "refund" | "payout" | "close";

/** A signed transaction of the settlement, ready to store before its first submit. */
export interface SignedSettlementTx {
  readonly kind: SettlementTxKind;
  readonly raw: string;
  readonly signature: string;
  readonly lastValidBlockHeight: number;
  /** Pledge signatures a refund batch returns. */
  readonly pledges: readonly string[];
  readonly amount: bigint;
  /**
   * Set when the treasury needs officers' signatures: `raw` then holds only
   * the server's signature, and the transaction waits as a co-signed
   * treasury transaction (recorded with the decision) until every named
   * signer has signed. `destination` and `memo` describe it to them.
   */
  readonly cosign?: CosignedTransaction & { readonly destination: string; readonly memo: string };
}

export interface SettlementTx extends Omit<SignedSettlementTx, "cosign"> {
  readonly id: number;
  readonly crowdfundId: string;
  readonly state: "signed" | "confirmed" | "failed";
  readonly confirmedAt: Date | null;
  /** The co-signed treasury transaction carrying it (treasury_transfers), when officers sign. */
  readonly transferId: number | null;
}

function toTx(r: Selectable<CrowdfundTransactionsTable>): SettlementTx {
  return {
    id: Number(r.id), crowdfundId: r.crowdfund_id, kind: r.kind as SettlementTxKind, raw: r.raw, signature: r.signature,
    lastValidBlockHeight: Number(r.last_valid_block_height), pledges: JSON.parse(r.pledges) as string[], amount: BigInt(r.amount),
    state: r.state as SettlementTx["state"], confirmedAt: r.confirmed_at === null ? null : new Date(Number(r.confirmed_at)),
    transferId: r.transfer_id === null ? null : Number(r.transfer_id),
  };
}

/** Whether the crowdfund is due: open and past its deadline (or forced by an operator). */
export function isDue(cf: Crowdfund, now: number, force = false): boolean {
  return cf.state === "open" && (force || cf.deadline.getTime() <= now);
}

/**
 * The settlement from the pledges recorded (the caller scans the chain
 * first): goal reached, the beneficiary is paid the total minus the cut;
 * missed, every matched pledge is refunded. Deposits that were refused but
 * landed in the vault are returned either way, so the vault can close empty.
 */
export async function planSettlement(db: Kysely<DB>, cf: Crowdfund): Promise<SettlementPlan> {
  if (cf.cutBps === null) throw new CrowdfundError("conflict", `crowdfund #${cf.seq} was never approved`);
  const pledges = await listPledges(db, cf.id);
  const matched = pledges.filter((p) => p.status === "matched");
  const total = matched.reduce((s, p) => s + p.amount, 0n);
  const refused = pledges.filter((p) => p.status === "unmatched" && p.inVault && p.amount > 0n);
  const toRefund = (ps: typeof pledges) => ps.map((p) => ({ pledge: p.signature, source: p.source, amount: p.amount }));
  if (total >= cf.goal) {
    const { cut, beneficiary } = splitTotal(total, cf.cutBps);
    return { outcome: "succeeded", total, cut, payout: beneficiary, refunds: toRefund(refused) };
  }
  return { outcome: "failed", total, cut: 0n, payout: 0n, refunds: toRefund([...matched, ...refused]) };
}

/** Refunds in batches of REFUNDS_PER_TRANSACTION. */
export function refundBatches(refunds: readonly Refund[], size = REFUNDS_PER_TRANSACTION): Refund[][] {
  const out: Refund[][] = [];
  for (let i = 0; i < refunds.length; i += size) out.push(refunds.slice(i, i + size));
  return out;
}

/**
 * Commits the decision and its signed transactions together, once: the
 * conditional update from `open` lets one worker (of any number running the
 * job) claim it; the others get false and leave it. Nothing is submitted
 * before this commits, so every submitted byte is on disk first.
 */
export async function claimSettlement(db: Kysely<DB>, crowdfundId: string, plan: SettlementPlan, txs: readonly SignedSettlementTx[]): Promise<boolean> {
  return db.transaction().execute(async (trx) => {
    const r = await trx.updateTable("crowdfunds").set({
      state: plan.outcome, total: plan.total.toString(), cut: plan.cut.toString(),
    }).where("id", "=", crowdfundId).where("state", "=", "open").executeTakeFirst();
    if (Number(r.numUpdatedRows) !== 1) return false;
    const now = Date.now();
    const { union_id: unionId } = await trx.selectFrom("crowdfunds").select("union_id").where("id", "=", crowdfundId).executeTakeFirstOrThrow();
    for (const t of txs) {
      await trx.insertInto("crowdfund_transactions").values({
        crowdfund_id: crowdfundId, kind: t.kind, raw: t.raw, last_valid_block_height: t.lastValidBlockHeight, signature: t.signature,
        state: "signed", pledges: JSON.stringify(t.pledges), amount: t.amount.toString(), created_at: now, confirmed_at: null,
        transfer_id: await cosignRequest(trx, unionId, t),
      }).execute();
    }
    // Nothing to send (no pledges at all, goal missed): the crowdfund is done.
    if (txs.length === 0) await finishIfDone(trx, crowdfundId, now);
    return true;
  });
}

export async function settlementTransactions(db: Kysely<DB>, crowdfundId: string): Promise<SettlementTx[]> {
  return (await db.selectFrom("crowdfund_transactions").selectAll().where("crowdfund_id", "=", crowdfundId).orderBy("id").execute()).map(toTx);
}

/** The chain confirmed this transaction: its refunds are recorded, and the crowdfund is done once all are. */
export async function confirmSettlementTx(db: Kysely<DB>, txId: number): Promise<void> {
  await db.transaction().execute(async (trx) => {
    const row = await trx.selectFrom("crowdfund_transactions").selectAll().where("id", "=", txId).executeTakeFirstOrThrow();
    if (row.state === "confirmed") return;
    const now = Date.now();
    await trx.updateTable("crowdfund_transactions").set({ state: "confirmed", confirmed_at: now }).where("id", "=", txId).execute();
    const pledges = JSON.parse(row.pledges) as string[];
    if (pledges.length > 0) {
      await trx.updateTable("crowdfund_pledges").set({ refund_signature: row.signature }).where("signature", "in", pledges).execute();
    }
    await finishIfDone(trx, row.crowdfund_id, now);
  });
}

async function finishIfDone(trx: Kysely<DB>, crowdfundId: string, now: number): Promise<void> {
  const open = await trx.selectFrom("crowdfund_transactions").select("id").where("crowdfund_id", "=", crowdfundId).where("state", "!=", "confirmed").executeTakeFirst();
  if (open) return;
  const cf = toCrowdfund(await trx.selectFrom("crowdfunds").selectAll().where("id", "=", crowdfundId).executeTakeFirstOrThrow());
  const to = cf.state === "succeeded" ? "settled" : cf.state === "failed" ? "refunded" : null;
  if (to) await trx.updateTable("crowdfunds").set({ state: to, settled_at: now }).where("id", "=", crowdfundId).where("state", "=", cf.state).execute();
}

/** A transaction that did not execute: kept with state failed until a fresh signing replaces it. */
export async function markSettlementTxFailed(db: Kysely<DB>, txId: number): Promise<void> {
  await db.updateTable("crowdfund_transactions").set({ state: "failed" }).where("id", "=", txId).where("state", "!=", "confirmed").execute();
}

/** The co-signing request of a transaction officers must sign, with the server's signature already in it. */
async function cosignRequest(trx: Kysely<DB>, unionId: string, t: SignedSettlementTx): Promise<number | null> {
  if (!t.cosign) return null;
  const { destination, memo, ...c } = t.cosign;
  return insertPendingTransfer(trx, unionId, { ...c, destination, memo, amount: t.amount, signatures: { [c.required[0]!]: c.serverSignature } });
}

/**
 * Replaces a transaction known not to have executed (refused, or its
 * blockhash passed, or its co-signed transaction failed) with freshly signed
 * bytes for the same transfers; stored before the first submit like the
 * original, and offered to officers again when they must sign.
 */
export async function replaceSettlementTx(db: Kysely<DB>, txId: number, tx: Pick<SignedSettlementTx, "raw" | "signature" | "lastValidBlockHeight" | "amount" | "cosign">): Promise<void> {
  await db.transaction().execute(async (trx) => {
    const row = await trx.selectFrom("crowdfund_transactions").innerJoin("crowdfunds", "crowdfunds.id", "crowdfund_transactions.crowdfund_id")
      .select(["crowdfunds.union_id", "crowdfund_transactions.state"]).where("crowdfund_transactions.id", "=", txId).executeTakeFirstOrThrow();
    if (row.state === "confirmed") return;
    await trx.updateTable("crowdfund_transactions").set({
      raw: tx.raw, signature: tx.signature, last_valid_block_height: tx.lastValidBlockHeight, state: "signed",
      transfer_id: await cosignRequest(trx, row.union_id, tx as SignedSettlementTx),
    }).where("id", "=", txId).where("state", "!=", "confirmed").execute();
  });
}

/** Open crowdfunds past their deadline, and settlements whose transactions are not all confirmed. */
export async function crowdfundsToSettle(db: Kysely<DB>, now = Date.now()): Promise<Crowdfund[]> {
  const rows = await db.selectFrom("crowdfunds").selectAll()
    .where((eb) => eb.or([eb.and([eb("state", "=", "open"), eb("deadline", "<=", now)]), eb("state", "in", ["succeeded", "failed"])]))
    .orderBy("deadline").execute();
  return rows.map(toCrowdfund);
}

/** The refunds a stored refund batch makes, from the pledges it names (a held one goes to the treasury). */
export async function refundsOf(db: Kysely<DB>, crowdfundId: string, pledgeSignatures: readonly string[]): Promise<Refund[]> {
  const bySignature = new Map((await listPledges(db, crowdfundId)).map((p) => [p.signature, p]));
  return pledgeSignatures.map((s) => {
    const p = bySignature.get(s);
    if (!p) throw new CrowdfundError("conflict", `a refund names pledge ${s}, which is not recorded`);
    return { pledge: s, source: p.source, amount: p.amount, held: p.refundFailure !== null };
  });
}

/**
 * Deposits that landed in the vault after the settlement was decided (so
 * none of its transactions returns them) and are not yet returned: they
 * would keep the vault from closing, so a follow-up refund sends them back.
 */
export async function lateDeposits(db: Kysely<DB>, crowdfundId: string): Promise<Refund[]> {
  const covered = new Set((await settlementTransactions(db, crowdfundId)).flatMap((t) => t.pledges));
  return (await listPledges(db, crowdfundId))
    .filter((p) => p.status === "unmatched" && p.inVault && p.amount > 0n && p.refundSignature === null && !covered.has(p.signature))
    .map((p) => ({ pledge: p.signature, source: p.source, amount: p.amount }));
}

/** Stores follow-up refunds, signed, before their first submit; only while the settlement is still running. */
export async function addRefunds(db: Kysely<DB>, crowdfundId: string, txs: readonly SignedSettlementTx[]): Promise<void> {
  await db.transaction().execute(async (trx) => {
    const cf = await trx.selectFrom("crowdfunds").select("state").where("id", "=", crowdfundId).executeTakeFirstOrThrow();
    if (cf.state !== "succeeded" && cf.state !== "failed") throw new CrowdfundError("conflict", `the crowdfund is ${cf.state}; its settlement is over`);
    const now = Date.now();
    for (const t of txs) {
      await trx.insertInto("crowdfund_transactions").values({
        crowdfund_id: crowdfundId, kind: t.kind, raw: t.raw, last_valid_block_height: t.lastValidBlockHeight, signature: t.signature,
        state: "signed", pledges: JSON.stringify(t.pledges), amount: t.amount.toString(), created_at: now, confirmed_at: null,
      }).execute();
    }
  });
}

/** This refund cannot reach its source: recorded with the reason (shown to officers); its tokens are held by the treasury. */
export async function markRefundFailed(db: Kysely<DB>, pledgeSignature: string, reason: string): Promise<void> {
  await db.updateTable("crowdfund_pledges").set({ refund_failure: reason.slice(0, 500) })
    .where("signature", "=", pledgeSignature).where("refund_signature", "is", null).execute();
}
