import "./quiet-bindings.ts";
import { PublicKey, TransactionInstruction, VersionedTransaction } from "@solana/web3.js";
import {
  decodeInstruction, isTransferCheckedInstruction, isTransferInstruction, TOKEN_2022_PROGRAM_ID, TOKEN_PROGRAM_ID, unpackAccount,
} from "@solana/spl-token";
import type { Kysely } from "kysely";
import type { DB } from "../src/db/schema.ts";
import type { Crowdfund } from "../src/crowdfunds/crowdfunds.ts";
import { knownPledgeSignatures, type RecordedPledge, recordPledge, type SeenPledge } from "../src/crowdfunds/pledges.ts";
import type { Ledger, LedgerTransaction } from "./ledger.ts";
import { crashPoint } from "../src/crash-point.ts";

const MEMO_PROGRAMS = new Set(["MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr", "Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMNo"]);

/**
 * Reads a pledge out of a transaction's signed bytes (never its logs): the
 * first token transfer into the crowdfund's vault or carrying its reference
 * key, its source account and the memo. Null for anything else (the vault's
 * creation, its settlement, a failed transaction).
 */
export async function pledgeIn(ledger: Ledger, cf: Crowdfund, tx: LedgerTransaction): Promise<SeenPledge | null> {
  if (tx.err !== null || !cf.vault) return null;
  const message = VersionedTransaction.deserialize(tx.raw).message;
  const keys = message.staticAccountKeys;
  let memo: string | null = null;
  let found: { destination: PublicKey; source: PublicKey; owner: PublicKey; amount: bigint; mint: PublicKey | null } | null = null;
  for (const compiled of message.compiledInstructions) {
    const programId = keys[compiled.programIdIndex]!;
    if (MEMO_PROGRAMS.has(programId.toBase58())) {
      memo ??= Buffer.from(compiled.data).toString("utf8");
      continue;
    }
    if (found || !(programId.equals(TOKEN_PROGRAM_ID) || programId.equals(TOKEN_2022_PROGRAM_ID))) continue;
    const ix = new TransactionInstruction({
      programId, data: Buffer.from(compiled.data),
      keys: compiled.accountKeyIndexes.map((i) => ({ pubkey: keys[i]!, isSigner: message.isAccountSigner(i), isWritable: message.isAccountWritable(i) })),
    });
    let d;
    try {
      d = decodeInstruction(ix, programId);
    } catch {
      continue;
    }
    if (!isTransferCheckedInstruction(d) && !isTransferInstruction(d)) continue;
    const extra = d.keys.multiSigners.filter((k) => !k.isSigner).map((k) => k.pubkey.toBase58());
    const intoVault = d.keys.destination.pubkey.toBase58() === cf.vault;
    if (!intoVault && !(cf.reference && extra.includes(cf.reference))) continue;
    found = {
      destination: d.keys.destination.pubkey, source: d.keys.source.pubkey, owner: d.keys.owner.pubkey, amount: d.data.amount,
      mint: isTransferCheckedInstruction(d) ? d.keys.mint.pubkey : null,
    };
  }
  if (!found) return null;
  let mint = found.mint;
  if (!mint) {
    // A plain transfer names no mint: the destination account's is the one moved.
    const account = await ledger.account(found.destination.toBase58());
    if (!account) return null;
    const owner = new PublicKey(account.owner);
    mint = unpackAccount(found.destination, { ...account, lamports: Number(account.lamports), owner, data: Buffer.from(account.data) }, owner).mint;
  }
  return {
    signature: tx.signature, crowdfundId: cf.id, wallet: found.owner.toBase58(), source: found.source.toBase58(), destination: found.destination.toBase58(),
    mint: mint.toBase58(), amount: found.amount, memo, pledgedAt: (tx.blockTime ?? 0) * 1000,
  };
}

/** Every signature touching the address, oldest first. */
async function history(ledger: Ledger, address: string): Promise<string[]> {
  const out: string[] = [];
  let before: string | undefined;
  for (;;) {
    const page = await ledger.signaturesFor(address, { before, limit: 1000 });
    out.push(...page.filter((s) => s.err === null).map((s) => s.signature));
    if (page.length < 1000) break;
    before = page.at(-1)!.signature;
  }
  return out.reverse();
}

/**
 * Records every pledge into the vault (or naming the crowdfund's reference)
 * not yet recorded, oldest first. Safe to run again, after a crash between
 * seeing and recording, or in two places at once: recording is keyed by
 * signature.
 */
export async function scanPledges(ledger: Ledger, db: Kysely<DB>, cf: Crowdfund): Promise<RecordedPledge[]> {
  if (!cf.vault) return [];
  const signatures = [...new Set([...await history(ledger, cf.vault), ...(cf.reference ? await history(ledger, cf.reference) : [])])];
  const known = await knownPledgeSignatures(db, cf.id);
  const settlement = new Set((await db.selectFrom("crowdfund_transactions").select("signature").where("crowdfund_id", "=", cf.id).execute()).map((r) => r.signature));
  const out: RecordedPledge[] = [];
  for (const signature of signatures) {
    if (known.has(signature) || settlement.has(signature) || signature === cf.vaultSignature) continue;
    const r = await recordSignature(ledger, db, cf, signature);
    if (r) out.push(r);
  }
  return out;
}

/** Records the pledge in one transaction, found by its signature (the pledging CLI, a wallet callback). */
export async function recordSignature(ledger: Ledger, db: Kysely<DB>, cf: Crowdfund, signature: string): Promise<RecordedPledge | null> {
  const tx = await ledger.transaction(signature);
  if (!tx) return null;
  const seen = await pledgeIn(ledger, cf, tx);
  if (!seen) return null;
  crashPoint("pledge-seen");
  return recordPledge(db, seen);
}
