import "./quiet-bindings.ts";
import { Keypair, PublicKey, SystemProgram, Transaction, type TransactionInstruction } from "@solana/web3.js";
import {
  ExtensionType, TOKEN_2022_PROGRAM_ID, TYPE_SIZE, LENGTH_SIZE, createAssociatedTokenAccountIdempotentInstruction,
  createBurnCheckedInstruction, createInitializeMetadataPointerInstruction, createInitializeMintInstruction,
  createInitializeNonTransferableMintInstruction, createInitializePermanentDelegateInstruction, createMintToCheckedInstruction,
  getAssociatedTokenAddressSync, getMintLen, unpackAccount,
} from "@solana/spl-token";
import { createInitializeInstruction, pack, type TokenMetadata } from "@solana/spl-token-metadata";
import type { Ledger } from "./ledger.ts";

/**
 * Soulbound member badges: a Token-2022 mint per union, decimals 0, with
 * NonTransferable (a member cannot sell or give their badge away),
 * PermanentDelegate (the union's treasury key burns it when the membership
 * ends, whoever holds the account) and the metadata kept in the mint itself
 * (MetadataPointer to the mint + TokenMetadata). Built only from the deployed
 * Token-2022 and Associated Token Account programs.
 */

export interface BadgeMintSpec {
  readonly name: string;
  readonly symbol: string;
  /** The union's public page: where a wallet's "more" link goes. */
  readonly uri: string;
}

export interface SignedTransaction {
  readonly raw: Uint8Array;
  readonly lastValidBlockHeight: number;
}

/** The creation of a union's badge mint, signed by the treasury key (payer and every authority) and the new mint's key. */
export async function signCreateBadgeMint(ledger: Ledger, treasury: Keypair, mint: Keypair, spec: BadgeMintSpec): Promise<SignedTransaction> {
  const metadata: TokenMetadata = {
    updateAuthority: treasury.publicKey, mint: mint.publicKey, name: spec.name.slice(0, 64), symbol: spec.symbol.slice(0, 10), uri: spec.uri, additionalMetadata: [],
  };
  const mintLen = getMintLen([ExtensionType.NonTransferable, ExtensionType.PermanentDelegate, ExtensionType.MetadataPointer]);
  // The metadata is written after the mint is initialised and the program
  // reallocates for it; the account must already hold rent for its final size.
  const metadataLen = TYPE_SIZE + LENGTH_SIZE + pack(metadata).length;
  const lamports = await ledger.minimumBalanceForRentExemption(mintLen + metadataLen);
  const p = TOKEN_2022_PROGRAM_ID;
  return sign(ledger, treasury, [mint], [
    SystemProgram.createAccount({ fromPubkey: treasury.publicKey, newAccountPubkey: mint.publicKey, space: mintLen, lamports: Number(lamports), programId: p }),
    createInitializeNonTransferableMintInstruction(mint.publicKey, p),
    createInitializePermanentDelegateInstruction(mint.publicKey, treasury.publicKey, p),
    createInitializeMetadataPointerInstruction(mint.publicKey, treasury.publicKey, mint.publicKey, p),
    createInitializeMintInstruction(mint.publicKey, 0, treasury.publicKey, null, p),
    createInitializeInstruction({
      programId: p, metadata: mint.publicKey, updateAuthority: treasury.publicKey, mint: mint.publicKey, mintAuthority: treasury.publicKey,
      name: metadata.name, symbol: metadata.symbol, uri: metadata.uri,
    }),
  ]);
}

/** The wallet's badge account (its associated token account for the mint). */
export function badgeAccount(mint: string, wallet: string): string {
  return getAssociatedTokenAddressSync(new PublicKey(mint), new PublicKey(wallet), true, TOKEN_2022_PROGRAM_ID).toBase58();
}

/** How many badges the wallet holds (0 when it has no badge account). */
export async function badgeBalance(ledger: Ledger, mint: string, wallet: string): Promise<bigint> {
  const address = badgeAccount(mint, wallet);
  const account = await ledger.account(address);
  if (!account || account.owner !== TOKEN_2022_PROGRAM_ID.toBase58()) return 0n;
  const decoded = unpackAccount(new PublicKey(address), { data: Buffer.from(account.data), owner: TOKEN_2022_PROGRAM_ID, lamports: Number(account.lamports), executable: false }, TOKEN_2022_PROGRAM_ID);
  return decoded.isInitialized ? decoded.amount : 0n;
}

/** Creates the wallet's badge account if needed and mints it one badge. */
export async function signMintBadge(ledger: Ledger, treasury: Keypair, mint: string, wallet: string): Promise<SignedTransaction> {
  const m = new PublicKey(mint);
  const owner = new PublicKey(wallet);
  const account = new PublicKey(badgeAccount(mint, wallet));
  return sign(ledger, treasury, [], [
    createAssociatedTokenAccountIdempotentInstruction(treasury.publicKey, account, owner, m, TOKEN_2022_PROGRAM_ID),
    createMintToCheckedInstruction(m, account, treasury.publicKey, 1n, 0, [], TOKEN_2022_PROGRAM_ID),
  ]);
}

/** Burns what the wallet holds with the permanent delegate's authority: the member's signature is not needed. */
export async function signBurnBadge(ledger: Ledger, treasury: Keypair, mint: string, wallet: string, amount: bigint): Promise<SignedTransaction> {
  return sign(ledger, treasury, [], [
    createBurnCheckedInstruction(new PublicKey(badgeAccount(mint, wallet)), new PublicKey(mint), treasury.publicKey, amount, 0, [], TOKEN_2022_PROGRAM_ID),
  ]);
}

async function sign(ledger: Ledger, payer: Keypair, extra: Keypair[], instructions: TransactionInstruction[]): Promise<SignedTransaction> {
  const { blockhash, lastValidBlockHeight } = await ledger.latestBlockhash();
  const tx = new Transaction({ feePayer: payer.publicKey, blockhash, lastValidBlockHeight }).add(...instructions);
  tx.sign(payer, ...extra);
  return { raw: tx.serialize(), lastValidBlockHeight };
}

