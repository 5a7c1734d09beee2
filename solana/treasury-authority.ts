import "./quiet-bindings.ts";
import { Keypair, Message, NONCE_ACCOUNT_LENGTH, NonceAccount, PublicKey, SystemProgram, Transaction, type Signer, type TransactionInstruction } from "@solana/web3.js";
import {
  MULTISIG_SIZE, MINT_SIZE, TOKEN_PROGRAM_ID, createAssociatedTokenAccountIdempotentInstruction, createInitializeMint2Instruction,
  createInitializeMultisigInstruction, createTransferCheckedInstruction, getAssociatedTokenAddressSync, unpackAccount, unpackMint,
} from "@solana/spl-token";
import * as ed from "@noble/ed25519";
import bs58 from "bs58";
import type { Kysely } from "kysely";
import type { DB } from "../src/db/schema.ts";
import { readBylaws } from "../src/bylaws/bylaws.ts";
import type { Outbox } from "../src/outbox.ts";
import { TreasuryError } from "../src/treasury/dues.ts";
import { type CosignedTransaction, getTransfer, getTreasury, insertPendingTransfer, recordTransferSignature, recordTransferSignatureIn, saveTreasury, type Treasury, type TreasuryTransfer, wantedSigners } from "../src/treasury/treasury.ts";
import { LedgerError, type Ledger } from "./ledger.ts";
import { treasuryKey } from "./badge-sync.ts";
import { logger } from "../src/logging.ts";

const log = logger("solana", "treasury");

/**
 * The union's treasury on-chain: its dues token account is owned by an SPL
 * Token multisig of the server's key and the officers' wallets. Built only
 * from the deployed Token program (multisig, ATA) and the System program
 * (durable nonces for transfers officers co-sign over hours).
 */

export interface TreasuryChainDeps {
  readonly db: Kysely<DB>;
  readonly ledger: Ledger;
  /** Tops up the server's key for fees and rent (the embedded ledger's faucet; nothing on a real cluster). */
  readonly fund?: (address: string) => Promise<void>;
  /** Make a test dues mint when the bylaws name none: the embedded ledger, also when reached over RPC by the CLI. */
  readonly testMint?: boolean;
}

/**
 * The one view of the union's treasury authority that all chain code signs
 * through (treasury transfers, crowdfund vaults and their settlement).
 * `address` owns the treasury's token account and every crowdfund vault; an
 * instruction moving their tokens names `address` as owner and
 * `multiSigners` as its signers. When `serverAlone` (the custodial default)
 * the server completes such a transaction by itself (`signAsServer`);
 * otherwise `multiSigners` are the server's key and the officers who must
 * co-sign (prepareCosigned), and the server's signature alone moves nothing.
 */
export interface TreasuryAuthority {
  readonly treasury: Treasury;
  readonly address: PublicKey;
  readonly signers: readonly PublicKey[];
  readonly threshold: number;
  readonly tokenProgram: PublicKey;
  /** The server's key: one of the signers, fee payer, nonce authority. Never leaves the server. */
  readonly serverKey: Keypair;
  /** Pays fees and rent: the server's key. */
  readonly feePayer: PublicKey;
  /** The server's key alone meets the threshold: the custodial default. */
  readonly serverAlone: boolean;
  /**
   * The signers a token instruction of `address` names: [the server's key]
   * when it signs alone, the server and the first threshold-1 officers'
   * wallets otherwise, none when `address` is a plain key.
   */
  readonly multiSigners: readonly PublicKey[];
  /** Signs with the server's key (and `extra` new accounts' keys): complete only when `serverAlone` or nothing of `address` moves. */
  signAsServer(tx: Transaction, extra?: readonly Keypair[]): void;
}

/** The union's treasury authority, creating the treasury on first use. */
export async function treasuryAuthority(deps: TreasuryChainDeps, unionId: string): Promise<TreasuryAuthority> {
  const treasury = await ensureTreasury(deps, unionId);
  const serverKey = await treasuryKey(deps.db, unionId);
  const server = serverKey.publicKey.toBase58();
  const serverAlone = treasury.threshold === 1 && treasury.signers.includes(server);
  const plainKey = treasury.authority === server;
  const officers = treasury.signers.filter((s) => s !== server);
  return {
    treasury,
    address: new PublicKey(treasury.authority),
    signers: treasury.signers.map((s) => new PublicKey(s)),
    threshold: treasury.threshold,
    tokenProgram: new PublicKey(treasury.tokenProgram),
    serverKey,
    feePayer: serverKey.publicKey,
    serverAlone,
    multiSigners: plainKey ? [] : [server, ...(serverAlone ? [] : officers.slice(0, treasury.threshold - 1))].map((s) => new PublicKey(s)),
    signAsServer(tx, extra = []) {
      tx.partialSign(serverKey, ...extra);
    },
  };
}

/**
 * Creates the union's treasury once: the dues mint (the bylaws' duesMint; on
 * the embedded ledger without one, a test mint whose authority is the
 * server's key), the multisig (signers and threshold from the bylaws) and its
 * associated token account. The signed creation is stored before it is sent,
 * so a crash resends the same bytes and never makes a second treasury.
 */
export async function ensureTreasury(deps: TreasuryChainDeps, unionId: string): Promise<Treasury> {
  const existing = await getTreasury(deps.db, unionId);
  if (existing) return existing;
  const setup = await deps.db.selectFrom("treasury_setups").selectAll().where("union_id", "=", unionId).executeTakeFirst();
  if (setup) {
    const landed = await resend(deps.ledger, setup.raw, Number(setup.last_valid_block_height));
    if (landed) return finish(deps.db, unionId, JSON.parse(setup.treasury) as Treasury);
    await deps.db.deleteFrom("treasury_setups").where("union_id", "=", unionId).execute();
  }
  const key = await treasuryKey(deps.db, unionId);
  await deps.fund?.(key.publicKey.toBase58());
  const { signers, threshold } = await wantedSigners(deps.db, unionId, key.publicKey.toBase58());
  const { duesMint } = (await readBylaws(deps.db, unionId)).params;
  const instructions: TransactionInstruction[] = [];
  const extra: Keypair[] = [];
  let mint: PublicKey;
  let tokenProgram: PublicKey;
  let decimals: number;
  if (duesMint) {
    mint = new PublicKey(duesMint);
    const account = await deps.ledger.account(duesMint);
    if (!account) throw new TreasuryError("invalid", `the dues mint ${duesMint} does not exist on this ledger`);
    tokenProgram = new PublicKey(account.owner);
    decimals = unpackMint(mint, { data: Buffer.from(account.data), owner: tokenProgram, lamports: Number(account.lamports), executable: false }, tokenProgram).decimals;
  } else if (deps.testMint ?? deps.ledger.kind === "embedded") {
    const m = Keypair.generate();
    extra.push(m);
    mint = m.publicKey;
    tokenProgram = TOKEN_PROGRAM_ID;
    decimals = 6;
    instructions.push(
      SystemProgram.createAccount({ fromPubkey: key.publicKey, newAccountPubkey: mint, space: MINT_SIZE, lamports: Number(await deps.ledger.minimumBalanceForRentExemption(MINT_SIZE)), programId: tokenProgram }),
      createInitializeMint2Instruction(mint, decimals, key.publicKey, null, tokenProgram),
    );
  } else {
    throw new TreasuryError("invalid", "set the duesMint bylaw (such as USDC's mint) before creating a treasury on a network ledger");
  }
  // The multisig lives under the mint's token program: the program only
  // accepts a multisig it owns as the authority of its accounts.
  const multisig = Keypair.generate();
  extra.push(multisig);
  const tokenAccount = getAssociatedTokenAddressSync(mint, multisig.publicKey, true, tokenProgram);
  instructions.push(
    SystemProgram.createAccount({ fromPubkey: key.publicKey, newAccountPubkey: multisig.publicKey, space: MULTISIG_SIZE, lamports: Number(await deps.ledger.minimumBalanceForRentExemption(MULTISIG_SIZE)), programId: tokenProgram }),
    createInitializeMultisigInstruction(multisig.publicKey, signers.map((s) => new PublicKey(s)), threshold, tokenProgram),
    createAssociatedTokenAccountIdempotentInstruction(key.publicKey, tokenAccount, multisig.publicKey, mint, tokenProgram),
  );
  const treasury: Treasury = {
    unionId, mint: mint.toBase58(), tokenProgram: tokenProgram.toBase58(), decimals, authority: multisig.publicKey.toBase58(),
    tokenAccount: tokenAccount.toBase58(), threshold, signers,
  };
  const { blockhash, lastValidBlockHeight } = await deps.ledger.latestBlockhash();
  const tx = new Transaction({ feePayer: key.publicKey, blockhash, lastValidBlockHeight }).add(...instructions);
  tx.sign(key, ...extra);
  const raw = tx.serialize();
  const inserted = await deps.db.insertInto("treasury_setups").values({
    union_id: unionId, raw: Buffer.from(raw).toString("base64"), last_valid_block_height: lastValidBlockHeight, treasury: JSON.stringify(treasury), created_at: Date.now(),
  }).onConflict((oc) => oc.column("union_id").doNothing()).executeTakeFirst();
  // Another process is creating it: its bytes are the ones to land.
  if (Number(inserted.numInsertedOrUpdatedRows ?? 1n) === 0) return ensureTreasury(deps, unionId);
  // Another process may have sent these stored bytes first: found by signature, not an error.
  if (!await resend(deps.ledger, Buffer.from(raw).toString("base64"), lastValidBlockHeight)) {
    throw new LedgerError("failed", `the treasury creation of union ${unionId} did not execute; the next attempt signs it anew`);
  }
  return finish(deps.db, unionId, treasury);
}

/**
 * The ledger lane's `treasury.create`, queued with the union itself. A slow
 * or failing ledger throws, and the lane retries; every retry resumes the
 * stored creation (ensureTreasury), so it never makes a second treasury. A
 * treasury that cannot be made as configured (a network ledger without the
 * duesMint bylaw, or a threshold nobody can meet) is not retried: it is made
 * on first use once the bylaws allow, as `muster treasury create` says.
 */
export async function createTreasuryJob(deps: TreasuryChainDeps, unionId: string): Promise<Treasury | null> {
  try {
    const t = await ensureTreasury(deps, unionId);
    log.info("The treasury of union {unionId} is {authority} ({threshold} of {signers})", { unionId, authority: t.authority, threshold: t.threshold, signers: t.signers.length });
    return t;
  } catch (e) {
    if (!(e instanceof TreasuryError) || e.code !== "invalid") throw e;
    log.warn("The treasury of union {unionId} was not created: {reason}", { unionId, reason: e.message });
    return null;
  }
}

async function finish(db: Kysely<DB>, unionId: string, treasury: Treasury): Promise<Treasury> {
  const saved = await saveTreasury(db, treasury);
  await db.deleteFrom("treasury_setups").where("union_id", "=", unionId).execute();
  return saved;
}

/** The treasury's token balance, read from the chain. */
export async function treasuryBalance(ledger: Ledger, treasury: Treasury): Promise<bigint> {
  const account = await ledger.account(treasury.tokenAccount);
  if (!account) return 0n;
  const program = new PublicKey(treasury.tokenProgram);
  return unpackAccount(new PublicKey(treasury.tokenAccount), { data: Buffer.from(account.data), owner: program, lamports: Number(account.lamports), executable: false }, program).amount;
}

/**
 * A transfer out of the treasury to `to`'s token account. With the server
 * alone able to sign (the custodial default) it is signed and sent now.
 * Otherwise the transaction is fixed with a durable nonce (prepareCosigned)
 * so officers may sign over hours; it names the server's key and
 * `cosigners` (default: the first threshold-1 officers' wallets), all of
 * whom must sign. The server signs at once.
 */
export async function prepareTransfer(deps: TreasuryChainDeps & { outbox: Outbox }, unionId: string, t: { to: string; amount: bigint; cosigners?: readonly string[]; memo?: string }): Promise<TreasuryTransfer> {
  const built = await buildTransfer(deps, unionId, t);
  const id = await deps.db.transaction().execute((trx) => storeTransferIn(trx, deps.outbox, unionId, built));
  return (await getTransfer(deps.db, unionId, id))!;
}

/** A transfer built and signed by the server (prepareTransfer), not yet recorded. */
export interface BuiltTransfer {
  readonly to: string;
  readonly amount: bigint;
  readonly memo: string | null;
  readonly server: string;
  readonly tx: CosignedTransaction;
}

/**
 * Records a built transfer with the server's signature in the caller's
 * database transaction; with the server alone required it is ready, and its
 * submission is queued in the same transaction.
 */
export async function storeTransferIn(trx: Kysely<DB>, outbox: Outbox, unionId: string, b: BuiltTransfer): Promise<number> {
  const id = await insertPendingTransfer(trx, unionId, { destination: b.to, amount: b.amount, memo: b.memo, ...b.tx, signatures: {} });
  await recordTransferSignatureIn(trx, outbox, unionId, id, b.server, b.tx.serverSignature);
  return id;
}

/** prepareTransfer's chain half: checks, builds the durable-nonce transaction and signs it as the server. */
export async function buildTransfer(deps: TreasuryChainDeps, unionId: string, t: { to: string; amount: bigint; cosigners?: readonly string[]; memo?: string }): Promise<BuiltTransfer> {
  if (t.amount <= 0n || t.amount > 18_446_744_073_709_551_615n) throw new TreasuryError("invalid", "the amount must be a whole number of base units above 0");
  let to: PublicKey;
  try {
    to = new PublicKey(t.to);
  } catch {
    throw new TreasuryError("invalid", `not a Solana address: ${t.to.slice(0, 60)}`);
  }
  const auth = await treasuryAuthority(deps, unionId);
  const server = auth.serverKey.publicKey.toBase58();
  const officers = auth.treasury.signers.filter((s) => s !== server);
  const cosigners = t.cosigners ? [...new Set(t.cosigners)] : officers.slice(0, auth.threshold - 1);
  for (const c of cosigners) if (!officers.includes(c)) throw new TreasuryError("invalid", `${c} is not one of the treasury's signers`);
  if (cosigners.length + 1 < auth.threshold) throw new TreasuryError("invalid", `the treasury needs ${auth.threshold} signatures; name ${auth.threshold - 1} co-signers`);
  const required = [server, ...cosigners];
  const mint = new PublicKey(auth.treasury.mint);
  const destination = getAssociatedTokenAddressSync(mint, to, true, auth.tokenProgram);
  const moves = [
    createAssociatedTokenAccountIdempotentInstruction(auth.serverKey.publicKey, destination, to, mint, auth.tokenProgram),
    createTransferCheckedInstruction(new PublicKey(auth.treasury.tokenAccount), mint, destination, auth.address, t.amount, auth.treasury.decimals, required.map((s) => new PublicKey(s)), auth.tokenProgram),
  ];
  const tx = await prepareCosigned(deps, auth, moves, required);
  return { to: to.toBase58(), amount: t.amount, memo: t.memo ?? null, server, tx };
}

/**
 * Fixes `instructions` for signers who sign over hours or days: the
 * transaction uses a durable nonce (an account of its own, authority the
 * server's key, made now) instead of a blockhash that expires in about a
 * minute. The nonce's value is consumed when the transaction executes, so
 * the same bytes can never run twice. The server pays the fee, so its
 * signature, made here, is the transaction's id. `required` lists every key
 * that must sign; the server's first.
 */
export async function prepareCosigned(deps: TreasuryChainDeps, auth: TreasuryAuthority, instructions: readonly TransactionInstruction[], required: readonly string[]): Promise<CosignedTransaction> {
  await deps.fund?.(auth.feePayer.toBase58());
  const nonce = Keypair.generate();
  const rent = await deps.ledger.minimumBalanceForRentExemption(NONCE_ACCOUNT_LENGTH);
  const recent = await deps.ledger.latestBlockhash();
  const create = new Transaction({ feePayer: auth.serverKey.publicKey, ...recent })
    .add(SystemProgram.createNonceAccount({ fromPubkey: auth.serverKey.publicKey, noncePubkey: nonce.publicKey, authorizedPubkey: auth.serverKey.publicKey, lamports: Number(rent) }));
  create.sign(auth.serverKey, nonce);
  await deps.ledger.submit(create.serialize(), { lastValidBlockHeight: recent.lastValidBlockHeight, commitment: "confirmed" });
  const nonceAccount = await deps.ledger.account(nonce.publicKey.toBase58());
  const nonceValue = NonceAccount.fromAccountData(Buffer.from(nonceAccount!.data)).nonce;
  const tx = new Transaction({
    feePayer: auth.serverKey.publicKey,
    nonceInfo: { nonce: nonceValue, nonceInstruction: SystemProgram.nonceAdvance({ noncePubkey: nonce.publicKey, authorizedPubkey: auth.serverKey.publicKey }) },
  }).add(...instructions);
  const message = tx.compileMessage().serialize();
  const serverSignature = bs58.encode(await ed.signAsync(message, auth.serverKey.secretKey.slice(0, 32)));
  return { message: Buffer.from(message).toString("base64"), nonceAccount: nonce.publicKey.toBase58(), required: [...required], serverSignature };
}

/** The message a signer signs for a pending transfer (what a wallet's signMessage or `muster treasury sign` signs). */
export async function transferMessage(db: Kysely<DB>, unionId: string, id: number): Promise<Uint8Array> {
  const r = await db.selectFrom("treasury_transfers").select("message").where("union_id", "=", unionId).where("id", "=", id).executeTakeFirst();
  if (!r) throw new TreasuryError("not_found", `no treasury transfer #${id} in this union`);
  return Buffer.from(r.message, "base64");
}

/** Checks a signer's Ed25519 signature of the transfer's message, then records it. */
export async function addTransferSignature(deps: { db: Kysely<DB>; outbox: Outbox }, unionId: string, id: number, signer: string, signature: string): Promise<TreasuryTransfer> {
  const message = await transferMessage(deps.db, unionId, id);
  let ok = false;
  try {
    ok = await ed.verifyAsync(bs58.decode(signature), message, new PublicKey(signer).toBytes());
  } catch {
    ok = false;
  }
  if (!ok) throw new TreasuryError("invalid", `the signature is not ${signer}'s signature of transfer #${id}`);
  return recordTransferSignature(deps, unionId, id, signer, signature);
}

/** Signs a transfer's message with a keypair the caller holds (the CLI's --keypair), as a wallet would. */
export async function signTransferMessage(message: Uint8Array, key: Keypair): Promise<string> {
  return bs58.encode(await ed.signAsync(message, key.secretKey.slice(0, 32)));
}

/**
 * Submits a fully signed transfer (the ledger lane's `treasury.transfer`).
 * The signed bytes are deterministic, so a retry after a crash sends the same
 * transaction, which the chain runs at most once (its nonce is consumed).
 */
export async function submitTransfer(deps: TreasuryChainDeps, unionId: string, id: number): Promise<TreasuryTransfer> {
  const r = await deps.db.selectFrom("treasury_transfers").selectAll().where("union_id", "=", unionId).where("id", "=", id).executeTakeFirst();
  if (!r) throw new TreasuryError("not_found", `no treasury transfer #${id} in this union`);
  if (r.state !== "ready") return (await getTransfer(deps.db, unionId, id))!;
  const message = Message.from(Buffer.from(r.message, "base64"));
  const signatures = JSON.parse(r.signatures) as Record<string, string>;
  const tx = Transaction.populate(message, message.accountKeys.slice(0, message.header.numRequiredSignatures).map((k) => signatures[k.toBase58()] ?? bs58.encode(new Uint8Array(64))));
  const raw = tx.serialize();
  const signature = bs58.encode(tx.signature!);
  let state: "executed" | "failed" = "executed";
  let reason: string | null = null;
  try {
    await deps.ledger.submit(raw, { lastValidBlockHeight: Number.MAX_SAFE_INTEGER, commitment: "finalized" });
  } catch (e) {
    if (!(e instanceof LedgerError)) throw e;
    const status = await deps.ledger.status(signature);
    if (!status || status.err !== null) {
      state = "failed";
      reason = e.message.slice(0, 500);
    }
  }
  await deps.db.updateTable("treasury_transfers").set({ state, signature, reason, updated_at: Date.now() }).where("id", "=", id).where("state", "=", "ready").execute();
  return (await getTransfer(deps.db, unionId, id))!;
}

/** Sends stored signed bytes (base64) again: true when they executed, now or before; found by signature when already processed. */
export function resendStored(ledger: Ledger, raw: string, lastValidBlockHeight: number): Promise<boolean> {
  return resend(ledger, raw, lastValidBlockHeight);
}

async function resend(ledger: Ledger, raw: string, lastValidBlockHeight: number): Promise<boolean> {
  const bytes = Buffer.from(raw, "base64");
  try {
    await ledger.submit(bytes, { lastValidBlockHeight, commitment: "confirmed" });
    return true;
  } catch (e) {
    if (!(e instanceof LedgerError)) throw e;
    const signature = Transaction.from(bytes).signature;
    const status = signature ? await ledger.status(bs58.encode(signature)) : null;
    return Boolean(status && status.err === null);
  }
}
