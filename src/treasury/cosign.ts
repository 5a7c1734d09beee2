import * as ed from "@noble/ed25519";
import bs58 from "bs58";
import type { Kysely } from "kysely";
import type { DB } from "../db/schema.ts";
import { getMember } from "../members/members.ts";
import type { Outbox } from "../outbox.ts";
import { TreasuryError } from "./dues.ts";
import { listTransfers, recordTransferSignature, type TreasuryTransfer } from "./treasury.ts";
import { decodeSignature, walletOf } from "./wallet-proof.ts";

/**
 * Officers co-signing treasury transactions from their own wallets (the
 * console's button; `muster treasury sign` is the same with a keypair file).
 * A signature counts only from the wallet the officer proved is theirs, and
 * only when it is that wallet's Ed25519 signature of the stored message: the
 * server never signs for an officer.
 */

export interface CosignView {
  /** The officer's proven wallet, null when they have proved none (they cannot co-sign). */
  readonly wallet: string | null;
  /** Transactions still collecting signatures, and the ten latest others. */
  readonly transfers: readonly TreasuryTransfer[];
}

export async function cosignView(db: Kysely<DB>, unionId: string, memberId: string): Promise<CosignView> {
  const linked = await walletOf(db, unionId, memberId);
  const all = await listTransfers(db, unionId);
  const open = all.filter((t) => t.state === "pending" || t.state === "ready");
  const done = all.filter((t) => t.state !== "pending" && t.state !== "ready").slice(-10).reverse();
  return { wallet: linked?.proof ? linked.wallet : null, transfers: [...open, ...done] };
}

/** The message the officer's wallet signs for transaction `id`, refused unless it names their proven wallet. */
export async function messageToCosign(db: Kysely<DB>, unionId: string, memberId: string, id: number): Promise<{ message: Uint8Array; wallet: string }> {
  const wallet = await officerWallet(db, unionId, memberId);
  const r = await db.selectFrom("treasury_transfers").select(["message", "required", "state"]).where("union_id", "=", unionId).where("id", "=", id).executeTakeFirst();
  if (!r) throw new TreasuryError("not_found", `no treasury transaction #${id} in this union`);
  if (!(JSON.parse(r.required) as string[]).includes(wallet)) throw new TreasuryError("invalid", `transaction #${id} does not name your wallet ${wallet} as a signer`);
  return { message: Buffer.from(r.message, "base64"), wallet };
}

/** Checks the officer's wallet signature of transaction `id` and records it (submitted once all named signers have signed). */
export async function cosignAsOfficer(deps: { db: Kysely<DB>; outbox: Outbox }, unionId: string, memberId: string, id: number, signature: string): Promise<TreasuryTransfer> {
  const { message, wallet } = await messageToCosign(deps.db, unionId, memberId, id);
  let ok = false;
  let bytes: Uint8Array;
  try {
    bytes = decodeSignature(signature);
    ok = bytes.length === 64 && await ed.verifyAsync(bytes, message, bs58.decode(wallet));
  } catch {
    ok = false;
  }
  if (!ok) throw new TreasuryError("invalid", `that is not your wallet ${wallet}'s signature of transaction #${id}`);
  return recordTransferSignature(deps, unionId, id, wallet, bs58.encode(bytes!));
}

async function officerWallet(db: Kysely<DB>, unionId: string, memberId: string): Promise<string> {
  const member = await getMember(db, unionId, memberId);
  if (!member || member.state !== "active" || (member.role !== "leader" && member.role !== "officer")) {
    throw new TreasuryError("invalid", "only the leader and officers co-sign treasury transactions");
  }
  const linked = await walletOf(db, unionId, memberId);
  if (!linked?.proof) throw new TreasuryError("invalid", "link your wallet with proof on your member page first: only a proven wallet co-signs");
  return linked.wallet;
}
