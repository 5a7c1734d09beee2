import "./quiet-bindings.ts";
import { readFileSync, writeFileSync } from "node:fs";
import { Keypair, LAMPORTS_PER_SOL, PublicKey, Transaction } from "@solana/web3.js";
import { createAssociatedTokenAccountIdempotentInstruction, createMintToCheckedInstruction, createTransferCheckedInstruction, getAssociatedTokenAddressSync, unpackMint } from "@solana/spl-token";
import { NetworkLedger } from "./network-ledger.ts";
import type { Ledger } from "./ledger.ts";

/**
 * What the CLI needs of a chain: it never runs the embedded ledger itself (the
 * serving process does), so it talks JSON-RPC to SOLANA_RPC_URL or to the
 * server's own /solana/rpc, like any wallet would.
 */

export class CliLedgerError extends Error {}

export interface CliLedger {
  readonly ledger: NetworkLedger;
  readonly url: string;
  readonly embedded: boolean;
}

export async function connectCliLedger(config: { solanaRpcUrl: string | null; origin: URL }): Promise<CliLedger> {
  const url = config.solanaRpcUrl ?? new URL("/solana/rpc", config.origin).href;
  let embedded = false;
  try {
    const res = await fetch(url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "muster_ledgerInfo" }), signal: AbortSignal.timeout(10_000) });
    const body = await res.json() as { result?: { kind?: string } };
    embedded = body.result?.kind === "embedded";
  } catch (e) {
    throw new CliLedgerError(`cannot reach the ledger at ${url} (${e instanceof Error ? e.message : String(e)}); is muster serve running, or SOLANA_RPC_URL right?`);
  }
  return { ledger: new NetworkLedger(url, { pollMs: 100 }), url, embedded };
}

/** A Solana CLI keypair file: a JSON array of the 64 secret-key bytes. */
export function readKeypairFile(file: string): Keypair {
  let bytes: unknown;
  try {
    bytes = JSON.parse(readFileSync(file, "utf8"));
  } catch (e) {
    throw new CliLedgerError(`cannot read a keypair from ${file}: ${(e as NodeJS.ErrnoException).code === "ENOENT" ? "no such file" : "not a JSON array of 64 bytes"}`);
  }
  if (!Array.isArray(bytes) || bytes.length !== 64 || bytes.some((b) => !Number.isInteger(b) || b < 0 || b > 255)) throw new CliLedgerError(`${file} is not a keypair file (a JSON array of 64 bytes)`);
  try {
    return Keypair.fromSecretKey(Uint8Array.from(bytes as number[]));
  } catch {
    throw new CliLedgerError(`${file} is not a valid keypair (its public half does not match)`);
  }
}

/** Writes a new keypair file, owner-only, never over an existing file. */
export function writeKeypairFile(file: string): Keypair {
  const key = Keypair.generate();
  try {
    writeFileSync(file, JSON.stringify(Array.from(key.secretKey)) + "\n", { mode: 0o600, flag: "wx" });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "EEXIST") throw new CliLedgerError(`${file} already exists; choose another --out (a keypair file is never overwritten)`);
    throw new CliLedgerError(`cannot write ${file}: ${(e as Error).message}`);
  }
  return key;
}

export function parseAddress(raw: string, what = "address"): PublicKey {
  try {
    const k = new PublicKey(raw.trim());
    return k;
  } catch {
    throw new CliLedgerError(`the ${what} is not a Solana address: ${raw.slice(0, 60)}`);
  }
}

/** A decimal amount ("1.5") in base units for `decimals`, exactly (no floating point). */
export function parseUnits(raw: string, decimals: number, what: string): bigint {
  const m = /^(\d+)(?:\.(\d+))?$/.exec(raw.trim());
  if (!m || (m[2] ?? "").length > decimals) throw new CliLedgerError(`${what} must be a positive number with at most ${decimals} decimals; got ${JSON.stringify(raw)}`);
  const units = BigInt(m[1]!) * 10n ** BigInt(decimals) + BigInt((m[2] ?? "").padEnd(decimals, "0") || "0");
  if (units <= 0n || units > 18_446_744_073_709_551_615n) throw new CliLedgerError(`${what} must be above 0 and fit in 64 bits; got ${JSON.stringify(raw)}`);
  return units;
}

export async function airdropSol(cli: CliLedger, to: PublicKey, lamports: bigint): Promise<string> {
  if (!cli.embedded) throw new CliLedgerError(`airdrops are for the embedded ledger only; ${cli.url} is a network ledger (use its faucet)`);
  const signature = await cli.ledger.connection.requestAirdrop(to, Number(lamports));
  await waitFor(cli.ledger, signature);
  return signature;
}

/** Mints test dues tokens (the union's test mint; its authority is the union's server key). */
export async function airdropTokens(cli: CliLedger, mintAuthority: Keypair, mint: PublicKey, tokenProgram: PublicKey, to: PublicKey, amount: bigint): Promise<string> {
  if (!cli.embedded) throw new CliLedgerError(`airdrops are for the embedded ledger only; ${cli.url} is a network ledger`);
  const info = await cli.ledger.account(mint.toBase58());
  if (!info) throw new CliLedgerError(`the dues mint ${mint.toBase58()} is not on this ledger`);
  const decimals = unpackMint(mint, { data: Buffer.from(info.data), owner: tokenProgram, lamports: Number(info.lamports), executable: false }, tokenProgram).decimals;
  const account = getAssociatedTokenAddressSync(mint, to, true, tokenProgram);
  return send(cli.ledger, mintAuthority, [mintAuthority], [
    createAssociatedTokenAccountIdempotentInstruction(mintAuthority.publicKey, account, to, mint, tokenProgram),
    createMintToCheckedInstruction(mint, account, mintAuthority.publicKey, amount, decimals, [], tokenProgram),
  ]);
}

/** A plain token transfer from the keypair's account for `mint` to `to`'s (created if needed). */
export async function transferTokens(cli: CliLedger, owner: Keypair, mint: PublicKey, to: PublicKey, amount: bigint): Promise<string> {
  const info = await cli.ledger.account(mint.toBase58());
  if (!info) throw new CliLedgerError(`no mint ${mint.toBase58()} on this ledger`);
  const program = new PublicKey(info.owner);
  let decimals: number;
  try {
    decimals = unpackMint(mint, { data: Buffer.from(info.data), owner: program, lamports: Number(info.lamports), executable: false }, program).decimals;
  } catch {
    throw new CliLedgerError(`${mint.toBase58()} is not a token mint`);
  }
  const from = getAssociatedTokenAddressSync(mint, owner.publicKey, true, program);
  const dest = getAssociatedTokenAddressSync(mint, to, true, program);
  return send(cli.ledger, owner, [owner], [
    createAssociatedTokenAccountIdempotentInstruction(owner.publicKey, dest, to, mint, program),
    createTransferCheckedInstruction(from, mint, dest, owner.publicKey, amount, decimals, [], program),
  ]);
}

async function send(ledger: Ledger, payer: Keypair, signers: Keypair[], instructions: Parameters<Transaction["add"]>): Promise<string> {
  const { blockhash, lastValidBlockHeight } = await ledger.latestBlockhash();
  const tx = new Transaction({ feePayer: payer.publicKey, blockhash, lastValidBlockHeight }).add(...instructions);
  tx.sign(...signers);
  return ledger.submit(tx.serialize(), { lastValidBlockHeight, commitment: "confirmed" });
}

async function waitFor(ledger: Ledger, signature: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    if (await ledger.status(signature)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new CliLedgerError(`airdrop ${signature} was not seen`);
}

export const SOL = BigInt(LAMPORTS_PER_SOL);
