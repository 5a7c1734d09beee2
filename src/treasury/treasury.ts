import type { Kysely } from "kysely";
import type { DB } from "../db/schema.ts";
import { readBylaws } from "../bylaws/bylaws.ts";
import type { Outbox } from "../outbox.ts";
import { TreasuryError } from "./dues.ts";

/** Where a union's treasury lives on-chain, in chain-neutral terms (addresses are strings). */
export interface Treasury {
  readonly unionId: string;
  readonly mint: string;
  readonly tokenProgram: string;
  readonly decimals: number;
  /** The account that may move the treasury's tokens (an SPL multisig, or the server's key). */
  readonly authority: string;
  readonly tokenAccount: string;
  readonly threshold: number;
  readonly signers: readonly string[];
}

/** Records a union's treasury once; a second call for the union keeps the first. */
export async function saveTreasury(db: Kysely<DB>, t: Treasury): Promise<Treasury> {
  await db.insertInto("treasuries").values({
    union_id: t.unionId,
    mint: t.mint,
    token_program: t.tokenProgram,
    decimals: t.decimals,
    authority: t.authority,
    token_account: t.tokenAccount,
    threshold: t.threshold,
    signers: JSON.stringify(t.signers),
    created_at: Date.now(),
  }).onConflict((oc) => oc.column("union_id").doNothing()).execute();
  return (await getTreasury(db, t.unionId))!;
}

export async function getTreasury(db: Kysely<DB>, unionId: string): Promise<Treasury | undefined> {
  const r = await db.selectFrom("treasuries").selectAll().where("union_id", "=", unionId).executeTakeFirst();
  return r && {
    unionId: r.union_id, mint: r.mint, tokenProgram: r.token_program, decimals: r.decimals, authority: r.authority,
    tokenAccount: r.token_account, threshold: r.threshold, signers: JSON.parse(r.signers) as string[],
  };
}

/**
 * Who should sign for the union's treasury: the server's key plus the wallets
 * of active officers (and the leader), and how many signatures the bylaws ask
 * for. A threshold the signers cannot meet is refused rather than creating a
 * treasury nobody can move.
 */
export async function wantedSigners(db: Kysely<DB>, unionId: string, serverKey: string): Promise<{ signers: string[]; threshold: number }> {
  const { treasuryThreshold } = (await readBylaws(db, unionId)).params;
  const officers = await db.selectFrom("member_wallets").innerJoin("members", (j) => j.onRef("members.id", "=", "member_wallets.member_id").onRef("members.union_id", "=", "member_wallets.union_id"))
    .select(["member_wallets.address"]).where("member_wallets.union_id", "=", unionId).where("members.state", "=", "active")
    .where("members.role", "in", ["leader", "officer"])
    // Only a wallet the officer proved is theirs: an unproven link could be anyone's key.
    .where("member_wallets.proof_signature", "is not", null).orderBy("members.created_at").execute();
  const signers = [serverKey, ...new Set(officers.map((o) => o.address).filter((a) => a !== serverKey))].slice(0, 11);
  if (treasuryThreshold > signers.length) {
    throw new TreasuryError("invalid", `the bylaws ask for ${treasuryThreshold} treasury signatures but there are only ${signers.length} signers (the server's key and ${signers.length - 1} officers' proven wallets)`);
  }
  return { signers, threshold: treasuryThreshold };
}

export interface TreasuryTransfer {
  readonly id: number;
  readonly unionId: string;
  readonly destination: string;
  readonly amount: bigint;
  readonly memo: string | null;
  /** The signers the transaction names: every one must sign before it is submitted. */
  readonly required: readonly string[];
  readonly signed: readonly string[];
  /** pending (collecting signatures), ready (queued for submission), executed, failed. */
  readonly state: "pending" | "ready" | "executed" | "failed";
  readonly signature: string | null;
  readonly reason: string | null;
  readonly createdAt: number;
}

/**
 * A transaction out of the treasury's authority that several keys sign, in
 * chain-neutral terms: the message (base64) each signs, the durable nonce
 * account that keeps it valid for as long as signing takes, every signer it
 * names, and the server's signature (the transaction's id).
 */
export interface CosignedTransaction {
  readonly message: string;
  readonly nonceAccount: string;
  readonly required: readonly string[];
  readonly serverSignature: string;
}

/**
 * Records a transaction awaiting signatures (in the caller's database
 * transaction, so a settlement's decision and its co-signing requests are
 * committed together). `destination` and `amount` describe it for officers;
 * `signatures` already made (such as the server's) go in as given.
 */
export async function insertPendingTransfer(db: Kysely<DB>, unionId: string, t: CosignedTransaction & { destination: string; amount: bigint; memo: string | null; signatures: Record<string, string> }): Promise<number> {
  const now = Date.now();
  const row = await db.insertInto("treasury_transfers").values({
    union_id: unionId, destination: t.destination, amount: String(t.amount), memo: t.memo, nonce_account: t.nonceAccount,
    message: t.message, required: JSON.stringify(t.required), signatures: JSON.stringify(t.signatures), state: "pending", signature: null, reason: null,
    created_at: now, updated_at: now,
  }).returning("id").executeTakeFirstOrThrow();
  return Number(row.id);
}

export async function getTransfer(db: Kysely<DB>, unionId: string, id: number): Promise<TreasuryTransfer | undefined> {
  const r = await db.selectFrom("treasury_transfers").selectAll().where("union_id", "=", unionId).where("id", "=", id).executeTakeFirst();
  return r && toTransfer(r);
}

export async function listTransfers(db: Kysely<DB>, unionId: string): Promise<TreasuryTransfer[]> {
  return (await db.selectFrom("treasury_transfers").selectAll().where("union_id", "=", unionId).orderBy("id").execute()).map(toTransfer);
}

function toTransfer(r: { id: number; union_id: string; destination: string; amount: string; memo: string | null; required: string; signatures: string; state: string; signature: string | null; reason: string | null; created_at: number }): TreasuryTransfer {
  return {
    id: Number(r.id), unionId: r.union_id, destination: r.destination, amount: BigInt(r.amount), memo: r.memo,
    required: JSON.parse(r.required) as string[], signed: Object.keys(JSON.parse(r.signatures) as Record<string, string>),
    state: r.state as TreasuryTransfer["state"], signature: r.signature, reason: r.reason, createdAt: Number(r.created_at),
  };
}

/**
 * Records one signer's signature of a pending transfer (already checked
 * against the message by the caller). Idempotent: signing twice changes
 * nothing. When the last named signer has signed, the transfer becomes ready
 * and its submission is queued in the same transaction.
 */
export async function recordTransferSignature(deps: { db: Kysely<DB>; outbox: Outbox }, unionId: string, id: number, signer: string, signature: string): Promise<TreasuryTransfer> {
  await deps.db.transaction().execute((trx) => recordTransferSignatureIn(trx, deps.outbox, unionId, id, signer, signature));
  return (await getTransfer(deps.db, unionId, id))!;
}

/** recordTransferSignature in the caller's database transaction (a spend links its transfer in the same one). */
export async function recordTransferSignatureIn(trx: Kysely<DB>, outbox: Outbox, unionId: string, id: number, signer: string, signature: string): Promise<void> {
  const r = await trx.selectFrom("treasury_transfers").selectAll().where("union_id", "=", unionId).where("id", "=", id).executeTakeFirst();
  if (!r) throw new TreasuryError("not_found", `no treasury transfer #${id} in this union`);
  const required = JSON.parse(r.required) as string[];
  if (!required.includes(signer)) throw new TreasuryError("invalid", `${signer} is not one of the signers transfer #${id} names (${required.join(", ")})`);
  if (r.state !== "pending") {
    if ((JSON.parse(r.signatures) as Record<string, string>)[signer]) return;
    throw new TreasuryError("invalid", `transfer #${id} is ${r.state}; it takes no more signatures`);
  }
  const signatures = { ...(JSON.parse(r.signatures) as Record<string, string>), [signer]: signature };
  const ready = required.every((s) => signatures[s]);
  const res = await trx.updateTable("treasury_transfers").set({ signatures: JSON.stringify(signatures), state: ready ? "ready" : "pending", updated_at: Date.now() })
    .where("id", "=", id).where("signatures", "=", r.signatures).executeTakeFirst();
  if (Number(res.numUpdatedRows) !== 1) throw new TreasuryError("invalid", `transfer #${id} changed while signing; sign again`);
  if (ready) await outbox.add(trx, { kind: "treasury.transfer", unionId, transferId: id });
}
