import "./quiet-bindings.ts";
import { Keypair, PublicKey, SystemProgram, Transaction, TransactionInstruction } from "@solana/web3.js";
import {
  ACCOUNT_SIZE, createInitializeAccount3Instruction, createTransferCheckedInstruction, getAssociatedTokenAddressSync, unpackAccount,
} from "@solana/spl-token";
import bs58 from "bs58";
import type { Kysely } from "kysely";
import type { DB } from "../src/db/schema.ts";
import { logger } from "../src/logging.ts";
import { type Crowdfund, dropVaultPlan, markVaultOpen, pledgeMemo, planVault, toCrowdfund } from "../src/crowdfunds/crowdfunds.ts";
import { getTreasury } from "../src/treasury/treasury.ts";
import { treasuryAuthority } from "./treasury-authority.ts";
import { type Commitment, type Ledger, LedgerError } from "./ledger.ts";
import { crashPoint } from "../src/crash-point.ts";

const log = logger("solana", "crowdfunds");
export const MEMO_PROGRAM = new PublicKey("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr");

export interface CrowdfundChainDeps {
  readonly db: Kysely<DB>;
  readonly ledger: Ledger;
  /** Tops up the fee payer on the embedded ledger; nothing on a real network. */
  readonly fund?: (address: string) => Promise<void>;
  /** Announces a crowdfund whose vault just opened (a call-to-action with its pledge link). */
  readonly announce?: (cf: Crowdfund) => Promise<unknown>;
}

/**
 * The stored signed bytes again: their signature when they executed (now or
 * before a crash), null when they did not and cannot (refused, or blockhash
 * passed): only then may the same work be signed anew.
 */
export async function landed(ledger: Ledger, raw: Uint8Array, lastValidBlockHeight: number, commitment: Commitment = "confirmed"): Promise<{ signature: string } | { error: LedgerError }> {
  try {
    return { signature: await ledger.submit(raw, { lastValidBlockHeight, commitment }) };
  } catch (e) {
    if (!(e instanceof LedgerError) || e.code === "invalid") throw e;
    const signature = bs58.encode(Transaction.from(raw).signature!);
    const status = await ledger.status(signature);
    if (status && status.err === null) return { signature };
    return { error: e };
  }
}

/**
 * Opens an approved crowdfund's vault: a token account of the treasury's
 * mint whose authority is the treasury authority, created at a fresh address
 * (a wallet's associated account is one per owner and mint; each crowdfund
 * needs its own). The signed creation is stored before it is sent; after a
 * crash the same bytes are sent again.
 */
export async function openVault(deps: CrowdfundChainDeps, crowdfundId: string): Promise<"open" | "pending"> {
  for (let attempt = 0; attempt < 3; attempt++) {
    const row = await deps.db.selectFrom("crowdfunds").selectAll().where("id", "=", crowdfundId).executeTakeFirstOrThrow();
    if (row.state !== "approved") return row.state === "open" ? "open" : "pending";
    if (row.vault_raw) {
      const outcome = await landed(deps.ledger, Buffer.from(row.vault_raw, "base64"), Number(row.vault_last_valid_block_height));
      if ("signature" in outcome) return finishOpen(deps, crowdfundId, outcome.signature);
      log.warn("The stored vault creation for crowdfund {id} did not land ({code}); signing anew", { id: crowdfundId, code: outcome.error.code });
      await dropVaultPlan(deps.db, crowdfundId, row.vault_raw);
      continue;
    }
    const treasury = await getTreasury(deps.db, row.union_id);
    if (!treasury) throw new Error(`union ${row.union_id} has no treasury`);
    const authority = await treasuryAuthority(deps, row.union_id);
    await deps.fund?.(authority.feePayer.toBase58());
    const vault = Keypair.generate();
    const reference = Keypair.generate().publicKey;
    const program = new PublicKey(treasury.tokenProgram);
    const rent = await deps.ledger.minimumBalanceForRentExemption(ACCOUNT_SIZE);
    const { blockhash, lastValidBlockHeight } = await deps.ledger.latestBlockhash();
    const tx = new Transaction({ feePayer: authority.feePayer, blockhash, lastValidBlockHeight }).add(
      SystemProgram.createAccount({ fromPubkey: authority.feePayer, newAccountPubkey: vault.publicKey, space: ACCOUNT_SIZE, lamports: Number(rent), programId: program }),
      createInitializeAccount3Instruction(vault.publicKey, new PublicKey(treasury.mint), authority.address, program),
    );
    // Creating a vault moves nothing of the treasury: the server's key (fee payer) and the new account sign, whatever the threshold.
    authority.signAsServer(tx, [vault]);
    const raw = tx.serialize();
    // Another worker stored its creation first: send that one (next turn), never a second vault.
    if (!await planVault(deps.db, crowdfundId, { vault: vault.publicKey.toBase58(), reference: reference.toBase58(), raw: Buffer.from(raw).toString("base64"), lastValidBlockHeight })) continue;
    const outcome = await landed(deps.ledger, raw, lastValidBlockHeight);
    if ("error" in outcome) throw outcome.error;
    return finishOpen(deps, crowdfundId, outcome.signature);
  }
  return "pending";
}

async function finishOpen(deps: CrowdfundChainDeps, crowdfundId: string, signature: string): Promise<"open"> {
  if (await markVaultOpen(deps.db, crowdfundId, signature)) {
    const row = await deps.db.selectFrom("crowdfunds").selectAll().where("id", "=", crowdfundId).executeTakeFirstOrThrow();
    log.info("Opened the vault {vault} of crowdfund {id}", { vault: row.vault, id: crowdfundId });
    // Dying here leaves it open but unannounced: the next pass of the jobs announces it (crowdfund-jobs.ts).
    crashPoint("vault-opened");
    await deps.announce?.(toCrowdfund(row));
  }
  return "open";
}

/** The vault's token balance read from the chain; null once it is closed. */
export async function vaultBalance(ledger: Ledger, vault: string): Promise<bigint | null> {
  const account = await ledger.account(vault);
  if (!account) return null;
  const owner = new PublicKey(account.owner);
  const decoded = unpackAccount(new PublicKey(vault), { data: Buffer.from(account.data), owner, lamports: Number(account.lamports), executable: false }, owner);
  return decoded.amount;
}

export interface PledgeSpec {
  readonly crowdfund: Crowdfund;
  /** The member's ActivityPub actor id, carried in the memo. */
  readonly actorId: string;
  readonly wallet: PublicKey;
  readonly amount: bigint;
  readonly decimals: number;
  readonly tokenProgram: PublicKey;
  /** Where the tokens come from; the wallet's associated account for the mint by default. */
  readonly source?: PublicKey;
}

/**
 * The transaction a wallet signs to pledge: a checked transfer from its
 * token account into the vault, carrying the crowdfund's reference key, and
 * a memo naming the crowdfund and the member.
 */
export async function pledgeTransaction(ledger: Ledger, spec: PledgeSpec): Promise<{ tx: Transaction; lastValidBlockHeight: number }> {
  const cf = spec.crowdfund;
  if (!cf.vault || !cf.mint || !cf.reference) throw new Error(`crowdfund #${cf.seq} has no vault yet`);
  const mint = new PublicKey(cf.mint);
  const source = spec.source ?? getAssociatedTokenAddressSync(mint, spec.wallet, true, spec.tokenProgram);
  const transfer = createTransferCheckedInstruction(source, mint, new PublicKey(cf.vault), spec.wallet, spec.amount, spec.decimals, [], spec.tokenProgram);
  transfer.keys.push({ pubkey: new PublicKey(cf.reference), isSigner: false, isWritable: false });
  const { blockhash, lastValidBlockHeight } = await ledger.latestBlockhash();
  const tx = new Transaction({ feePayer: spec.wallet, blockhash, lastValidBlockHeight })
    .add(transfer, new TransactionInstruction({ programId: MEMO_PROGRAM, keys: [], data: Buffer.from(pledgeMemo(cf.id, spec.actorId)) }));
  return { tx, lastValidBlockHeight };
}
