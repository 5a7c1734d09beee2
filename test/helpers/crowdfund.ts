import { Keypair, PublicKey, SystemProgram, Transaction, type TransactionInstruction } from "@solana/web3.js";
import {
  createAssociatedTokenAccountIdempotentInstruction, createInitializeMint2Instruction, createMintToCheckedInstruction, getAssociatedTokenAddressSync,
  MINT_SIZE, TOKEN_PROGRAM_ID, unpackAccount,
} from "@solana/spl-token";
import type { Kysely } from "kysely";
import type { DB } from "../../src/db/schema.ts";
import { saveTreasury } from "../../src/treasury/treasury.ts";
import { treasuryKey } from "../../solana/badge-sync.ts";
import type { EmbeddedLedger } from "../../solana/embedded-ledger.ts";
import type { Ledger } from "../../solana/ledger.ts";

export const DECIMALS = 6;

/** Signs with the payer (and extra keys) and submits through the Ledger interface. */
export async function send(ledger: Ledger, payer: Keypair, ixs: TransactionInstruction[], extra: Keypair[] = []): Promise<string> {
  const { blockhash, lastValidBlockHeight } = await ledger.latestBlockhash();
  const tx = new Transaction({ feePayer: payer.publicKey, blockhash, lastValidBlockHeight }).add(...ixs);
  tx.sign(payer, ...extra);
  return ledger.submit(tx.serialize(), { lastValidBlockHeight, commitment: "confirmed" });
}

export interface TestTreasury {
  readonly mint: PublicKey;
  readonly mintAuthority: Keypair;
  readonly key: Keypair;
  readonly account: PublicKey;
}

/**
 * A union's treasury on the embedded ledger as the treasury work will create
 * it: a dues mint (a test mint here), the treasury key as authority and its
 * associated token account.
 */
export async function setupTreasury(ledger: EmbeddedLedger, db: Kysely<DB>, unionId: string): Promise<TestTreasury> {
  const key = await treasuryKey(db, unionId);
  await ledger.airdrop(key.publicKey.toBase58(), 10_000_000_000n);
  const mintAuthority = Keypair.generate();
  await ledger.airdrop(mintAuthority.publicKey.toBase58(), 10_000_000_000n);
  const mint = await createTestMint(ledger, mintAuthority);
  const account = getAssociatedTokenAddressSync(mint, key.publicKey, true);
  await send(ledger, key, [createAssociatedTokenAccountIdempotentInstruction(key.publicKey, account, key.publicKey, mint)]);
  await saveTreasury(db, {
    unionId, mint: mint.toBase58(), tokenProgram: TOKEN_PROGRAM_ID.toBase58(), decimals: DECIMALS, authority: key.publicKey.toBase58(),
    tokenAccount: account.toBase58(), threshold: 1, signers: [key.publicKey.toBase58()],
  });
  return { mint, mintAuthority, key, account };
}

export async function createTestMint(ledger: EmbeddedLedger, authority: Keypair): Promise<PublicKey> {
  const mint = Keypair.generate();
  const rent = await ledger.minimumBalanceForRentExemption(MINT_SIZE);
  await send(ledger, authority, [
    SystemProgram.createAccount({ fromPubkey: authority.publicKey, newAccountPubkey: mint.publicKey, space: MINT_SIZE, lamports: Number(rent), programId: TOKEN_PROGRAM_ID }),
    createInitializeMint2Instruction(mint.publicKey, DECIMALS, authority.publicKey, null),
  ], [mint]);
  return mint.publicKey;
}

/** A member's wallet with SOL for fees and `tokens` of the mint in its associated account. */
export async function fundedWallet(ledger: EmbeddedLedger, mint: PublicKey, mintAuthority: Keypair, tokens: bigint, wallet = Keypair.generate()): Promise<{ wallet: Keypair; account: PublicKey }> {
  await ledger.airdrop(wallet.publicKey.toBase58(), 1_000_000_000n);
  const account = getAssociatedTokenAddressSync(mint, wallet.publicKey, true);
  await send(ledger, mintAuthority, [
    createAssociatedTokenAccountIdempotentInstruction(mintAuthority.publicKey, account, wallet.publicKey, mint),
    createMintToCheckedInstruction(mint, account, mintAuthority.publicKey, tokens, DECIMALS),
  ]);
  return { wallet, account };
}

/** A token account's balance, 0n when it does not exist. */
export async function tokenBalance(ledger: Ledger, account: PublicKey | string): Promise<bigint> {
  const address = typeof account === "string" ? new PublicKey(account) : account;
  const info = await ledger.account(address.toBase58());
  if (!info) return 0n;
  const owner = new PublicKey(info.owner);
  return unpackAccount(address, { data: Buffer.from(info.data), owner, lamports: Number(info.lamports), executable: false }, owner).amount;
}
