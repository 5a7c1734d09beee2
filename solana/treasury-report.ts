import "./quiet-bindings.ts";
import { PublicKey, TransactionInstruction, VersionedTransaction } from "@solana/web3.js";
import {
  decodeInstruction, isTransferCheckedInstruction, isTransferInstruction, TOKEN_2022_PROGRAM_ID, TOKEN_PROGRAM_ID, unpackAccount,
} from "@solana/spl-token";
import type { Kysely } from "kysely";
import type { DB } from "../src/db/schema.ts";
import { getTreasury } from "../src/treasury/treasury.ts";
import { roleBadgeMints } from "./role-badges.ts";
import { badgeMintOf } from "./badge-sync.ts";
import type { Ledger } from "./ledger.ts";

/** One movement of tokens into or out of the treasury's token account, read from a transaction's signed bytes. */
export interface TreasuryFlow {
  readonly signature: string;
  readonly direction: "in" | "out";
  readonly amount: bigint;
  /** The wallet that authorised an inflow, or the token account an outflow went to. */
  readonly counterparty: string;
  /** Unix seconds, from the chain. */
  readonly blockTime: number | null;
  /** What the server recorded it as: "dues" (credited), "unmatched" (with its reason), or "other". */
  readonly kind: "dues" | "unmatched" | "other";
  readonly reason: string | null;
  /** The member a dues payment was credited to. */
  readonly memberId: string | null;
}

export interface TreasuryReport {
  readonly address: string;
  readonly tokenAccount: string;
  readonly mint: string;
  readonly tokenProgram: string;
  readonly decimals: number;
  readonly authority: string;
  readonly threshold: number;
  readonly signers: readonly string[];
  /** Read from the chain now, not from the database. */
  readonly balance: bigint;
  readonly badgeMint: string | null;
  /** The leader's and officers' badge mints, once made. */
  readonly roleBadgeMints: Partial<Record<"leader" | "officer", string>>;
  readonly flows: TreasuryFlow[];
  /** More transactions exist than `flows` covers (the newest are shown). */
  readonly truncated: boolean;
}

const TOKEN_PROGRAMS = [TOKEN_PROGRAM_ID, TOKEN_2022_PROGRAM_ID];

/** Every token transfer in a transaction that moves tokens into or out of `account`. */
export function transfersTouching(raw: Uint8Array, account: string): { direction: "in" | "out"; amount: bigint; counterparty: string }[] {
  const message = VersionedTransaction.deserialize(raw).message;
  const keys = message.staticAccountKeys;
  const out: { direction: "in" | "out"; amount: bigint; counterparty: string }[] = [];
  message.compiledInstructions.forEach((compiled) => {
    const programId = keys[compiled.programIdIndex]!;
    if (!TOKEN_PROGRAMS.some((p) => p.equals(programId))) return;
    const ix = new TransactionInstruction({
      programId, data: Buffer.from(compiled.data),
      keys: compiled.accountKeyIndexes.map((i) => ({ pubkey: keys[i]!, isSigner: message.isAccountSigner(i), isWritable: message.isAccountWritable(i) })),
    });
    let decoded;
    try {
      decoded = decodeInstruction(ix, programId);
    } catch {
      return;
    }
    if (!isTransferCheckedInstruction(decoded) && !isTransferInstruction(decoded)) return;
    const { source, destination, owner } = decoded.keys;
    if (destination.pubkey.toBase58() === account) out.push({ direction: "in", amount: decoded.data.amount, counterparty: owner.pubkey.toBase58() });
    else if (source.pubkey.toBase58() === account) out.push({ direction: "out", amount: decoded.data.amount, counterparty: destination.pubkey.toBase58() });
  });
  return out;
}

/**
 * The union's treasury as the chain shows it: the balance read from the
 * token account, and every inflow and outflow of its newest `limit`
 * transactions decoded from their signed bytes, each labelled with what the
 * server recorded for its signature. Null when the union has no treasury.
 */
export async function treasuryReport(db: Kysely<DB>, ledger: Ledger, unionId: string, limit = 200): Promise<TreasuryReport | null> {
  const t = await getTreasury(db, unionId);
  if (!t) return null;
  const account = await ledger.account(t.tokenAccount);
  let balance = 0n;
  if (account) {
    const owner = new PublicKey(account.owner);
    balance = unpackAccount(new PublicKey(t.tokenAccount), { ...account, lamports: Number(account.lamports), owner, data: Buffer.from(account.data) }, owner).amount;
  }
  const signatures = await ledger.signaturesFor(t.tokenAccount, { limit: limit + 1 });
  const shown = signatures.slice(0, limit).filter((s) => s.err === null);
  const recorded = new Map((shown.length === 0 ? [] : await db.selectFrom("dues_payments").select(["signature", "status", "reason", "member_id"])
    .where("union_id", "=", unionId).where("signature", "in", shown.map((s) => s.signature)).execute()).map((r) => [r.signature, r]));
  const flows: TreasuryFlow[] = [];
  for (const s of shown) {
    const tx = await ledger.transaction(s.signature);
    if (!tx || tx.err !== null) continue;
    for (const f of transfersTouching(tx.raw, t.tokenAccount)) {
      const r = f.direction === "in" ? recorded.get(s.signature) : undefined;
      flows.push({
        signature: s.signature, direction: f.direction, amount: f.amount, counterparty: f.counterparty, blockTime: tx.blockTime,
        kind: r ? (r.status === "credited" ? "dues" : "unmatched") : "other", reason: r?.reason ?? null, memberId: r?.status === "credited" ? r.member_id : null,
      });
    }
  }
  return {
    address: t.tokenAccount, tokenAccount: t.tokenAccount, mint: t.mint, tokenProgram: t.tokenProgram, decimals: t.decimals,
    authority: t.authority, threshold: t.threshold, signers: t.signers, balance, badgeMint: await badgeMintOf(db, unionId),
    roleBadgeMints: await roleBadgeMints({ db }, unionId), flows, truncated: signatures.length > limit,
  };
}

/**
 * Where anyone can check a transaction: the Solana Explorer, on the
 * cluster named by the RPC URL, or pointed at this server's own RPC
 * endpoint (a custom cluster) for the embedded ledger.
 */
export function explorerUrl(kind: "tx" | "address", id: string, rpcUrl: string | null, origin: URL): string {
  const base = `https://explorer.solana.com/${kind}/${id}`;
  if (rpcUrl === null) return `${base}?cluster=custom&customUrl=${encodeURIComponent(new URL("/solana/rpc", origin).href)}`;
  if (/mainnet/.test(rpcUrl)) return base;
  if (/devnet/.test(rpcUrl)) return `${base}?cluster=devnet`;
  if (/testnet/.test(rpcUrl)) return `${base}?cluster=testnet`;
  return `${base}?cluster=custom&customUrl=${encodeURIComponent(rpcUrl)}`;
}
