import "./quiet-bindings.ts";
import { randomBytes } from "node:crypto";
import { Message, PublicKey, Transaction, TransactionInstruction } from "@solana/web3.js";
import {
  createAssociatedTokenAccountIdempotentInstruction, createCloseAccountInstruction, createTransferCheckedInstruction, getAssociatedTokenAddressSync, unpackAccount,
} from "@solana/spl-token";
import bs58 from "bs58";
import { logger } from "../src/logging.ts";
import { type Crowdfund, CrowdfundError, getCrowdfund } from "../src/crowdfunds/crowdfunds.ts";
import {
  addRefunds, claimSettlement, confirmSettlementTx, lateDeposits, markRefundFailed, refundsOf, isDue, markSettlementTxFailed, planSettlement, type Refund, refundBatches, replaceSettlementTx,
  type SettlementPlan, type SettlementTx, type SettlementTxKind, settlementTransactions, type SignedSettlementTx,
} from "../src/crowdfunds/settlement.ts";
import { getTransfer, getTreasury, type Treasury } from "../src/treasury/treasury.ts";
import { prepareCosigned, submitTransfer, treasuryAuthority, type TreasuryAuthority } from "./treasury-authority.ts";
import { scanPledges } from "./crowdfund-pledges.ts";
import { crashPoint } from "../src/crash-point.ts";
import { type CrowdfundChainDeps, landed, MEMO_PROGRAM } from "./crowdfund-vault.ts";

const log = logger("solana", "crowdfunds");

export class SettlementFailed extends CrowdfundError {
  override name = "SettlementFailed";
}

export interface SettleResult {
  readonly crowdfund: Crowdfund;
  /** not_due: open and before its deadline (and not forced). */
  readonly outcome: "not_due" | "settled" | "refunded" | "pending";
  readonly transactions: readonly SettlementTx[];
}

interface Context {
  readonly cf: Crowdfund;
  readonly treasury: Treasury;
  readonly authority: TreasuryAuthority;
}

/** The instructions of one settlement transaction, from its kind and what it moves. */
function instructions(c: Context, kind: SettlementTxKind, what: { refunds?: readonly Refund[]; payout?: bigint; cut?: bigint }): TransactionInstruction[] {
  const program = new PublicKey(c.treasury.tokenProgram);
  const mint = new PublicKey(c.treasury.mint);
  const vault = new PublicKey(c.cf.vault!);
  const auth = c.authority.address;
  const signers = [...c.authority.multiSigners];
  const transfer = (to: PublicKey, amount: bigint) => createTransferCheckedInstruction(vault, mint, to, auth, amount, c.treasury.decimals, signers, program);
  const close = createCloseAccountInstruction(vault, c.authority.feePayer, auth, signers, program);
  const treasuryAccount = new PublicKey(c.treasury.tokenAccount);
  if (kind === "refund") return (what.refunds ?? []).map((r) => transfer(r.held ? treasuryAccount : new PublicKey(r.source), r.amount));
  if (kind === "close") return [close];
  // The payout: beneficiary and union's cut in one transaction with the close,
  // so either all of it happens or none (a failing cut leaves the vault whole).
  const beneficiary = new PublicKey(c.cf.beneficiary);
  const beneficiaryAccount = getAssociatedTokenAddressSync(mint, beneficiary, true, program);
  const out = [createAssociatedTokenAccountIdempotentInstruction(c.authority.feePayer, beneficiaryAccount, beneficiary, mint, program)];
  if ((what.payout ?? 0n) > 0n) out.push(transfer(beneficiaryAccount, what.payout!));
  if ((what.cut ?? 0n) > 0n) out.push(transfer(treasuryAccount, what.cut!));
  out.push(close);
  return out;
}

async function sign(deps: CrowdfundChainDeps, c: Context, kind: SettlementTxKind, ixs: TransactionInstruction[], pledges: readonly string[], amount: bigint): Promise<SignedSettlementTx> {
  // The memo names the work for anyone reading the chain, and its nonce makes a
  // re-signing differ from the bytes that did not execute even under the
  // same blockhash (a chain refuses a signature it has processed, failed or not).
  const text = `muster crowdfund ${c.cf.id} ${kind} ${randomBytes(4).toString("hex")}`;
  const memo = new TransactionInstruction({ programId: MEMO_PROGRAM, keys: [], data: Buffer.from(text) });
  if (!c.authority.serverAlone) {
    // Officers must sign too: a durable nonce keeps it valid for as long as that takes.
    const required = c.authority.multiSigners.map((k) => k.toBase58());
    const cosign = await prepareCosigned(deps, c.authority, [...ixs, memo], required);
    const message = Message.from(Buffer.from(cosign.message, "base64"));
    const tx = Transaction.populate(message, message.accountKeys.slice(0, message.header.numRequiredSignatures).map((k) => (k.equals(c.authority.feePayer) ? cosign.serverSignature : bs58.encode(new Uint8Array(64)))));
    const destination = kind === "payout" ? c.cf.beneficiary : kind === "refund" ? `${pledges.length} pledgers` : c.authority.feePayer.toBase58();
    return {
      kind, raw: tx.serialize({ requireAllSignatures: false, verifySignatures: false }).toString("base64"), signature: cosign.serverSignature,
      lastValidBlockHeight: Number.MAX_SAFE_INTEGER, pledges, amount, cosign: { ...cosign, destination, memo: `crowdfund #${c.cf.seq} ${kind}` },
    };
  }
  const { blockhash, lastValidBlockHeight } = await deps.ledger.latestBlockhash();
  const tx = new Transaction({ feePayer: c.authority.feePayer, blockhash, lastValidBlockHeight }).add(...ixs, memo);
  c.authority.signAsServer(tx);
  const raw = tx.serialize();
  return { kind, raw: Buffer.from(raw).toString("base64"), signature: bs58.encode(tx.signature!), lastValidBlockHeight, pledges, amount };
}

/** Signs the whole settlement: refund batches first (so the vault holds exactly what the payout moves), then the payout or the close. */
async function signPlan(deps: CrowdfundChainDeps, c: Context, plan: SettlementPlan): Promise<SignedSettlementTx[]> {
  const out: SignedSettlementTx[] = [];
  for (const batch of refundBatches(plan.refunds)) {
    out.push(await sign(deps, c, "refund", instructions(c, "refund", { refunds: batch }), batch.map((r) => r.pledge), batch.reduce((s, r) => s + r.amount, 0n)));
  }
  if (plan.outcome === "succeeded") out.push(await sign(deps, c, "payout", instructions(c, "payout", { payout: plan.payout, cut: plan.cut }), [], plan.total));
  else out.push(await sign(deps, c, "close", instructions(c, "close", {}), [], 0n));
  return out;
}

/** Freshly signed bytes for a stored transaction known not to have executed. */
async function resign(deps: CrowdfundChainDeps, c: Context, t: SettlementTx): Promise<SignedSettlementTx> {
  if (t.kind === "refund") {
    const refunds = await refundsOf(deps.db, c.cf.id, t.pledges);
    return sign(deps, c, "refund", instructions(c, "refund", { refunds }), t.pledges, t.amount);
  }
  if (t.kind === "payout") return sign(deps, c, "payout", instructions(c, "payout", { payout: c.cf.total! - c.cf.cut!, cut: c.cf.cut! }), [], t.amount);
  return sign(deps, c, "close", instructions(c, "close", {}), [], 0n);
}

/**
 * Settles a crowdfund at its deadline (or now, with `force`): scans the
 * vault for pledges not yet recorded, decides from the recorded pledges,
 * signs every transaction and commits decision and bytes together (once,
 * whichever worker gets there first), then submits them in order. Running it
 * again, in another worker or after a crash, resumes: each stored
 * transaction is sent again byte for byte and found by its signature; only a
 * transaction the chain shows never executed is signed anew.
 */
export async function settleCrowdfund(deps: CrowdfundChainDeps, cf: Crowdfund, opts: { force?: boolean; now?: number } = {}): Promise<SettleResult> {
  cf = await claimDueSettlement(deps, cf, opts);
  if (cf.state === "succeeded" || cf.state === "failed") await driveSettlement(deps, cf);
  const after = (await getCrowdfund(deps.db, cf.unionId, cf.id))!;
  const transactions = await settlementTransactions(deps.db, cf.id);
  const outcome = after.state === "settled" ? "settled" : after.state === "refunded" ? "refunded" : after.state === "open" ? "not_due" : "pending";
  return { crowdfund: after, outcome, transactions };
}

/**
 * The decision half of a settlement: scan, plan, sign, and commit the
 * decision with the signed bytes. Nothing is sent. Returns the crowdfund as
 * it stands after (unchanged when not due, or claimed by another worker).
 */
export async function claimDueSettlement(deps: CrowdfundChainDeps, cf: Crowdfund, opts: { force?: boolean; now?: number } = {}): Promise<Crowdfund> {
  if (!isDue(cf, opts.now ?? Date.now(), opts.force)) return cf;
  await scanPledges(deps.ledger, deps.db, cf);
  const c = await context(deps, cf);
  await deps.fund?.(c.authority.feePayer.toBase58());
  const plan = await planSettlement(deps.db, cf);
  const txs = await signPlan(deps, c, plan);
  if (await claimSettlement(deps.db, cf.id, plan, txs)) {
    log.info("Crowdfund {id} {outcome}: total {total}, cut {cut}, {n} transactions signed{forced}", {
      id: cf.id, outcome: plan.outcome, total: plan.total.toString(), cut: plan.cut.toString(), n: txs.length, forced: opts.force ? " (forced by an operator)" : "",
    });
  }
  return (await getCrowdfund(deps.db, cf.unionId, cf.id))!;
}

/** The sending half: submits the stored transactions in order (resuming after a crash). */
export async function driveSettlement(deps: CrowdfundChainDeps, cf: Crowdfund): Promise<void> {
  await drive(deps, await context(deps, cf));
}

async function context(deps: CrowdfundChainDeps, cf: Crowdfund): Promise<Context> {
  const treasury = await getTreasury(deps.db, cf.unionId);
  if (!treasury) throw new CrowdfundError("conflict", "this union has no treasury");
  return { cf, treasury, authority: await treasuryAuthority(deps, cf.unionId) };
}

/**
 * Submits the stored transactions, refunds first (so the vault holds exactly
 * what the payout or close moves), stopping at the first that cannot execute
 * or still awaits officers' signatures. Two things that would otherwise block
 * a settlement until an operator acts are handled here when the server's key
 * moves the vault alone: deposits landing after the decision get a follow-up
 * refund, and a refund batch failing because a pledger's account cannot take
 * tokens back is signed again with that refund held by the treasury. Under a
 * co-signed treasury such follow-ups would need the officers' signatures too;
 * they are not built yet, so a late deposit there still blocks the close.
 */
async function drive(deps: CrowdfundChainDeps, c: Context, round = 0): Promise<void> {
  if (c.authority.serverAlone) await refundLateDeposits(deps, c);
  const stored = await settlementTransactions(deps.db, c.cf.id);
  const ordered = [...stored.filter((t) => t.kind === "refund"), ...stored.filter((t) => t.kind !== "refund")];
  for (const t of ordered) {
    if (t.state === "confirmed") continue;
    if (t.transferId !== null) {
      if (!await driveCosigned(deps, c, t)) return;
      continue;
    }
    if (t.state === "signed") {
      crashPoint("settlement-signed");
      // Payouts wait for finality on a real network; the embedded ledger is final at once.
      const outcome = await landed(deps.ledger, Buffer.from(t.raw, "base64"), t.lastValidBlockHeight, "finalized");
      if ("signature" in outcome) {
        crashPoint("settlement-sent");
        await confirmSettlementTx(deps.db, t.id);
        continue;
      }
      log.warn("Settlement transaction {signature} of crowdfund {id} did not execute ({code})", { signature: t.signature, id: c.cf.id, code: outcome.error.code });
    }
    if (t.kind === "refund") await holdUnrefundable(deps, c, t);
    // A deposit that landed since the last scan keeps the vault from closing: return it first, then try again.
    else if (round < 2 && await refundLateDeposits(deps, c)) return drive(deps, c, round + 1);
    // Known not to have executed: the same transfers, signed anew and stored before sending.
    const fresh = await resign(deps, c, t);
    await replaceSettlementTx(deps.db, t.id, fresh);
    const retry = await landed(deps.ledger, Buffer.from(fresh.raw, "base64"), fresh.lastValidBlockHeight, "finalized");
    if ("signature" in retry) {
      await confirmSettlementTx(deps.db, t.id);
      continue;
    }
    await markSettlementTxFailed(deps.db, t.id);
    throw new SettlementFailed("conflict", `the ${t.kind} transaction of crowdfund #${c.cf.seq} failed and moved nothing (${retry.error.message.slice(0, 300)}); the vault keeps the funds and the next run tries again`);
  }
}

/**
 * One settlement transaction officers co-sign: nothing is sent while any
 * named signer has not signed; once all have, it is submitted (here, in
 * order after the ones before it) and recorded once. A co-signed transaction
 * the chain refused is prepared anew and offered to the officers again.
 * Returns whether the next transaction may go.
 */
async function driveCosigned(deps: CrowdfundChainDeps, c: Context, t: SettlementTx): Promise<boolean> {
  let transfer = (await getTransfer(deps.db, c.cf.unionId, t.transferId!))!;
  if (transfer.state === "pending") return false;
  if (transfer.state === "ready") transfer = await submitTransfer(deps, c.cf.unionId, transfer.id);
  if (transfer.state === "executed") {
    await confirmSettlementTx(deps.db, t.id);
    return true;
  }
  if (transfer.state === "failed") {
    log.warn("The co-signed {kind} transaction of crowdfund {id} failed ({reason}); preparing it anew for the officers to sign", { kind: t.kind, id: c.cf.id, reason: transfer.reason });
    await replaceSettlementTx(deps.db, t.id, await resign(deps, c, t));
  }
  return false;
}

/**
 * The ledger lane's `treasury.transfer` for a co-signed transaction that is
 * part of a crowdfund's settlement: the settlement's transactions go in
 * order (a payout before the refunds of stray deposits could not close the
 * vault), so the crowdfund's settlement is driven rather than this one sent.
 * False when the transfer belongs to no settlement.
 */
export async function submitCosignedSettlement(deps: CrowdfundChainDeps, transferId: number): Promise<boolean> {
  const row = await deps.db.selectFrom("crowdfund_transactions").select("crowdfund_id").where("transfer_id", "=", transferId).executeTakeFirst();
  if (!row) return false;
  const cf = await deps.db.selectFrom("crowdfunds").select("union_id").where("id", "=", row.crowdfund_id).executeTakeFirstOrThrow();
  const crowdfund = (await getCrowdfund(deps.db, cf.union_id, row.crowdfund_id))!;
  await driveSettlement(deps, crowdfund);
  return true;
}

/**
 * Records and signs follow-up refunds for deposits that reached the vault
 * after the settlement was decided. Returns whether there were any.
 */
async function refundLateDeposits(deps: CrowdfundChainDeps, c: Context): Promise<boolean> {
  // Closed already: nothing more can land (a transfer into a closed account fails).
  if (!await deps.ledger.account(c.cf.vault!)) return false;
  await scanPledges(deps.ledger, deps.db, c.cf);
  const late = await lateDeposits(deps.db, c.cf.id);
  if (late.length === 0) return false;
  const txs: SignedSettlementTx[] = [];
  for (const batch of refundBatches(late)) {
    txs.push(await sign(deps, c, "refund", instructions(c, "refund", { refunds: batch }), batch.map((r) => r.pledge), batch.reduce((s, r) => s + r.amount, 0n)));
  }
  await addRefunds(deps.db, c.cf.id, txs);
  log.info("Crowdfund {id}: {n} deposits landed after the settlement was decided; refunding them", { id: c.cf.id, n: late.length });
  return true;
}

/** Why a token account cannot receive this mint's tokens now; null when it can. */
async function unrefundable(deps: CrowdfundChainDeps, c: Context, source: string): Promise<string | null> {
  const account = await deps.ledger.account(source);
  if (!account) return `the account the pledge came from (${source}) is closed`;
  const owner = new PublicKey(account.owner);
  try {
    const decoded = unpackAccount(new PublicKey(source), { data: Buffer.from(account.data), owner, lamports: Number(account.lamports), executable: false }, owner);
    if (decoded.mint.toBase58() !== c.treasury.mint) return `the account the pledge came from (${source}) now holds another mint`;
    if (decoded.isFrozen) return `the account the pledge came from (${source}) is frozen`;
  } catch {
    return `the account the pledge came from (${source}) is no longer a token account`;
  }
  return null;
}

/** Marks each refund of the batch that its source cannot take (the tokens go to the treasury instead on re-signing). */
async function holdUnrefundable(deps: CrowdfundChainDeps, c: Context, t: SettlementTx): Promise<void> {
  for (const r of await refundsOf(deps.db, c.cf.id, t.pledges)) {
    if (r.held) continue;
    const reason = await unrefundable(deps, c, r.source);
    if (!reason) continue;
    log.warn("Crowdfund {id}: refund of pledge {pledge} cannot be made ({reason}); held by the treasury", { id: c.cf.id, pledge: r.pledge, reason });
    await markRefundFailed(deps.db, r.pledge, `${reason}; ${r.amount} base units are held in the union's treasury for the pledger`);
  }
}
