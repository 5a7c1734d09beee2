import "./quiet-bindings.ts";
import { PublicKey, TransactionInstruction, VersionedTransaction } from "@solana/web3.js";
import {
  decodeInstruction, isTransferCheckedInstruction, isTransferInstruction, TOKEN_2022_PROGRAM_ID, TOKEN_PROGRAM_ID, unpackAccount,
} from "@solana/spl-token";
import type { DuesDeps, RecordedPayment, SeenPayment } from "../src/treasury/dues.ts";
import { recordDuesPayments } from "../src/treasury/dues.ts";
import type { Ledger, LedgerTransaction, SignatureInfo } from "./ledger.ts";

const MEMO_PROGRAMS = new Set(["MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr", "Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMNo"]);

/**
 * Reads a token payment out of a transaction's signed bytes (never its
 * logs): the transfer, its memo and its Solana Pay reference (an extra
 * read-only key on the transfer instruction). Null when the transaction
 * moved no tokens or failed.
 */
export async function paymentIn(ledger: Ledger, unionId: string, tx: LedgerTransaction): Promise<SeenPayment | null> {
  if (tx.err !== null) return null;
  const decoded = VersionedTransaction.deserialize(tx.raw);
  const message = decoded.message;
  const keys = message.staticAccountKeys;
  let memo: string | null = null;
  let transfer: { ix: TransactionInstruction; programId: PublicKey } | null = null;
  message.compiledInstructions.forEach((compiled) => {
    const programId = keys[compiled.programIdIndex]!;
    if (MEMO_PROGRAMS.has(programId.toBase58())) {
      memo = Buffer.from(compiled.data).toString("utf8");
      return;
    }
    if (!programId.equals(TOKEN_PROGRAM_ID) && !programId.equals(TOKEN_2022_PROGRAM_ID)) return;
    const ix = new TransactionInstruction({
      programId,
      data: Buffer.from(compiled.data),
      keys: compiled.accountKeyIndexes.map((i) => ({ pubkey: keys[i]!, isSigner: message.isAccountSigner(i), isWritable: message.isAccountWritable(i) })),
    });
    if (!transfer) transfer = { ix, programId };
  });
  if (!transfer) return null;
  const { ix, programId } = transfer as { ix: TransactionInstruction; programId: PublicKey };
  let decodedIx;
  try {
    decodedIx = decodeInstruction(ix, programId);
  } catch {
    return null;
  }
  let destination: PublicKey, mint: PublicKey, payer: PublicKey, amount: bigint, extra: PublicKey[];
  if (isTransferCheckedInstruction(decodedIx)) {
    destination = decodedIx.keys.destination.pubkey;
    mint = decodedIx.keys.mint.pubkey;
    payer = decodedIx.keys.owner.pubkey;
    amount = decodedIx.data.amount;
    extra = decodedIx.keys.multiSigners.filter((k) => !k.isSigner).map((k) => k.pubkey);
  } else if (isTransferInstruction(decodedIx)) {
    destination = decodedIx.keys.destination.pubkey;
    payer = decodedIx.keys.owner.pubkey;
    amount = decodedIx.data.amount;
    extra = decodedIx.keys.multiSigners.filter((k) => !k.isSigner).map((k) => k.pubkey);
    // A plain transfer names no mint: the destination account's is the one moved.
    const account = await ledger.account(destination.toBase58());
    if (!account) return null;
    const owner = new PublicKey(account.owner);
    mint = unpackAccount(destination, { ...account, lamports: Number(account.lamports), owner, data: Buffer.from(account.data) }, owner).mint;
  } else {
    return null;
  }
  return {
    signature: tx.signature,
    unionId,
    payer: payer.toBase58(),
    mint: mint.toBase58(),
    destination: destination.toBase58(),
    amount,
    reference: extra[0]?.toBase58() ?? null,
    memo,
    paidAt: (tx.blockTime ?? 0) * 1000,
  };
}

/**
 * The payments among these signatures (oldest first), read in one batch of
 * transactions: `into`, when given, keeps only transfers to that account
 * (the treasury's own payouts are not dues).
 */
export async function paymentsAmong(ledger: Ledger, unionId: string, signatures: readonly SignatureInfo[], into?: string): Promise<SeenPayment[]> {
  const wanted = signatures.filter((s) => s.err === null).map((s) => s.signature);
  const out: SeenPayment[] = [];
  for (const tx of await ledger.transactions(wanted)) {
    if (!tx) continue;
    const payment = await paymentIn(ledger, unionId, tx);
    if (payment && (into === undefined || payment.destination === into)) out.push(payment);
  }
  return out;
}

/**
 * Records every payment into `address` (the treasury's token account, or a
 * reference key) not yet recorded, oldest first. Safe to run again or in
 * two places at once: recording is keyed by signature.
 */
export async function scanDuesPayments(ledger: Ledger, deps: DuesDeps, unionId: string, address: string): Promise<RecordedPayment[]> {
  const signatures = [];
  let before: string | undefined;
  for (;;) {
    const page = await ledger.signaturesFor(address, { before, limit: 1000 });
    signatures.push(...page);
    if (page.length < 1000) break;
    before = page.at(-1)!.signature;
  }
  const known = new Set((await deps.db.selectFrom("dues_payments").select("signature").where("union_id", "=", unionId).execute()).map((r) => r.signature));
  const fresh = signatures.reverse().filter((s) => !known.has(s.signature));
  return recordDuesPayments(deps, await paymentsAmong(ledger, unionId, fresh));
}
