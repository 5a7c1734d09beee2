import "./quiet-bindings.ts";
import { Keypair, PublicKey, Transaction, TransactionInstruction } from "@solana/web3.js";
import { createTransferCheckedInstruction, getAssociatedTokenAddressSync, unpackAccount, unpackMint } from "@solana/spl-token";
import type { Kysely } from "kysely";
import type { DB } from "../src/db/schema.ts";
import type { DuesParamsSource } from "../src/treasury/dues-params.ts";
import { getTreasury } from "../src/treasury/treasury.ts";
import { formatUnits } from "./amounts.ts";
import type { Ledger } from "./ledger.ts";

export const MEMO_PROGRAM_ID = new PublicKey("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr");

/** Why a dues transaction cannot be built: the HTTP status and a sentence for the payer. */
export class PayRequestError extends Error {
  override name = "PayRequestError";
  readonly status: 400 | 404 | 409;
  constructor(status: 400 | 404 | 409, message: string) {
    super(message);
    this.status = status;
  }
}

/** What a member owes and where it goes: the union's dues rule and treasury, resolved. */
export interface DuesTerms {
  readonly amount: bigint;
  readonly mint: string;
  readonly decimals: number;
  readonly tokenProgram: string;
  /** The treasury's token account. */
  readonly destination: string;
  /** "5 tokens" as a person reads it. */
  readonly display: string;
}

/** The union's dues terms, or a 409 saying why it takes no dues payment now. */
export async function duesTerms(db: Kysely<DB>, ledger: Ledger, duesParams: DuesParamsSource, unionId: string): Promise<DuesTerms> {
  const params = await duesParams(db, unionId);
  if (params.duesAmount === 0n) throw new PayRequestError(409, "this union has no dues: every active member is in good standing");
  const treasury = await getTreasury(db, unionId);
  if (!treasury) throw new PayRequestError(409, "this union has no treasury yet, so it cannot take dues");
  const mint = params.duesMint ?? treasury.mint;
  let decimals = treasury.decimals;
  if (mint !== treasury.mint) {
    // The bylaws name another mint than the treasury's: its decimals are on-chain.
    const account = await ledger.account(mint);
    if (!account) throw new PayRequestError(409, `the dues mint ${mint} does not exist on this ledger`);
    decimals = unpackMint(new PublicKey(mint), { ...account, lamports: Number(account.lamports), owner: new PublicKey(account.owner), data: Buffer.from(account.data) }, new PublicKey(account.owner)).decimals;
  }
  return { amount: params.duesAmount, mint, decimals, tokenProgram: treasury.tokenProgram, destination: treasury.tokenAccount, display: `${formatUnits(params.duesAmount, decimals)} tokens` };
}

/** A base58 wallet address a payer can sign with (on the Ed25519 curve), or a 400. */
export function parsePayerAccount(account: unknown): PublicKey {
  if (typeof account !== "string" || account.length === 0) throw new PayRequestError(400, "account must be the paying wallet's address (base58)");
  let key: PublicKey;
  try {
    key = new PublicKey(account.trim());
  } catch {
    throw new PayRequestError(400, `account is not a Solana address: ${account.slice(0, 60)}`);
  }
  if (!PublicKey.isOnCurve(key.toBytes())) throw new PayRequestError(400, "account is a program address, which cannot sign a payment");
  return key;
}

export interface DuesTransaction {
  readonly transaction: Transaction;
  /** The Solana Pay reference: a fresh key no other transaction names, read-only on the transfer. */
  readonly reference: string;
  readonly terms: DuesTerms;
}

/**
 * The unsigned dues payment of one member from `payer`'s wallet: a
 * transferChecked of the dues amount from the payer's associated token
 * account to the treasury's, carrying a fresh reference key, and a Memo with
 * the member's actor id (what the scanner matches the payment by). The
 * payer's token account and balance are checked first, so a wallet that
 * cannot pay hears why instead of signing a transaction that fails.
 */
export async function buildDuesTransaction(ledger: Ledger, terms: DuesTerms, payer: PublicKey, memberActorId: string): Promise<DuesTransaction> {
  const mint = new PublicKey(terms.mint);
  const program = new PublicKey(terms.tokenProgram);
  const source = getAssociatedTokenAddressSync(mint, payer, false, program);
  const account = await ledger.account(source.toBase58());
  if (!account) throw new PayRequestError(400, `the wallet ${payer.toBase58()} has no token account for the dues mint ${terms.mint}`);
  const held = unpackAccount(source, { ...account, lamports: Number(account.lamports), owner: new PublicKey(account.owner), data: Buffer.from(account.data) }, program).amount;
  if (held < terms.amount) throw new PayRequestError(400, `the wallet holds ${formatUnits(held, terms.decimals)} of the ${formatUnits(terms.amount, terms.decimals)} tokens the dues take`);
  const reference = Keypair.generate().publicKey;
  const transfer = createTransferCheckedInstruction(source, mint, new PublicKey(terms.destination), payer, terms.amount, terms.decimals, [], program);
  transfer.keys.push({ pubkey: reference, isSigner: false, isWritable: false });
  const memo = new TransactionInstruction({ programId: MEMO_PROGRAM_ID, keys: [], data: Buffer.from(memberActorId, "utf8") });
  const { blockhash, lastValidBlockHeight } = await ledger.latestBlockhash();
  const transaction = new Transaction({ feePayer: payer, blockhash, lastValidBlockHeight }).add(transfer, memo);
  return { transaction, reference: reference.toBase58(), terms };
}

/** The Solana Pay transaction-request link for a request URL (`solana:` + the URL-encoded https link). */
export function solanaPayLink(url: URL): string {
  return `solana:${encodeURIComponent(url.href)}`;
}
