import { randomBytes } from "node:crypto";
import * as ed from "@noble/ed25519";
import bs58 from "bs58";
import type { Kysely } from "kysely";
import type { DB } from "../db/schema.ts";
import { getMember } from "../members/members.ts";
import type { Outbox } from "../outbox.ts";
import { parseWalletAddress } from "./badges.ts";
import { TreasuryError } from "./dues.ts";

/**
 * A member proves a wallet is theirs by signing a challenge with it (Ed25519,
 * the signature every Solana wallet makes with signMessage). The challenge
 * names the union, the member's actor id, a one-time nonce and an expiry, so
 * a signature cannot be replayed here, for another member, or elsewhere. The
 * signed text and signature are kept and published: anyone can check them
 * with the wallet's public key alone.
 */

export const CHALLENGE_TTL_MS = 10 * 60_000;
const HEADER = "Muster wallet link";

export interface WalletChallenge {
  readonly nonce: string;
  /** The exact text the wallet signs (UTF-8). */
  readonly message: string;
  readonly expiresAt: number;
}

export interface WalletProof {
  readonly wallet: string;
  readonly message: string;
  /** base58, as wallets return it. */
  readonly signature: string;
}

/** `union` is the union's actor URL; `actorId` the member's. */
export async function issueWalletChallenge(db: Kysely<DB>, unionId: string, memberId: string, names: { union: string; actorId: string }, now = Date.now()): Promise<WalletChallenge> {
  const member = await getMember(db, unionId, memberId);
  if (!member || !["active", "pending"].includes(member.state)) throw new TreasuryError("not_found", `no current member ${memberId} in this union`);
  const nonce = randomBytes(16).toString("hex");
  const expiresAt = now + CHALLENGE_TTL_MS;
  const message = [HEADER, `Union: ${names.union}`, `Member: ${names.actorId}`, `Nonce: ${nonce}`, `Expires: ${new Date(expiresAt).toISOString()}`].join("\n");
  await db.insertInto("wallet_challenges").values({ nonce, union_id: unionId, member_id: memberId, message, expires_at: expiresAt, used_at: null }).execute();
  return { nonce, message, expiresAt };
}

/** The fields of a challenge's text, or null when it is not one. */
export function parseChallenge(message: string): { union: string; actorId: string; nonce: string; expiresAt: number } | null {
  const m = /^Muster wallet link\nUnion: (\S+)\nMember: (\S+)\nNonce: ([0-9a-f]{32})\nExpires: (\S+)$/.exec(message);
  if (!m) return null;
  const expiresAt = Date.parse(m[4]!);
  return Number.isFinite(expiresAt) ? { union: m[1]!, actorId: m[2]!, nonce: m[3]!, expiresAt } : null;
}

/** Checks a proof on its own (what any server can do with the published fields). */
export async function verifyWalletProof(proof: WalletProof): Promise<boolean> {
  let signature: Uint8Array;
  try {
    signature = decodeSignature(proof.signature);
    return signature.length === 64 && await ed.verifyAsync(signature, new TextEncoder().encode(proof.message), bs58.decode(parseWalletAddress(proof.wallet)));
  } catch {
    return false;
  }
}

/**
 * Links the wallet after checking the signed challenge: the text is the one
 * issued (to this union), unexpired, not used before, and signed by the
 * wallet's key. The nonce is spent in the same transaction as the link, so a
 * replay is refused even when two arrive at once.
 */
export async function proveWallet(deps: { db: Kysely<DB>; outbox: Outbox }, unionId: string, proof: WalletProof, now = Date.now(), forMember?: string): Promise<{ memberId: string; wallet: string }> {
  const wallet = parseWalletAddress(proof.wallet);
  const fields = parseChallenge(proof.message);
  if (!fields) throw new TreasuryError("invalid", "the signed text is not a Muster wallet challenge");
  const challenge = await deps.db.selectFrom("wallet_challenges").selectAll().where("nonce", "=", fields.nonce).executeTakeFirst();
  if (!challenge || challenge.union_id !== unionId || challenge.message !== proof.message) throw new TreasuryError("invalid", "this challenge was not issued by this union");
  if (forMember !== undefined && challenge.member_id !== forMember) throw new TreasuryError("invalid", "this challenge was issued to another member");
  if (challenge.used_at !== null) throw new TreasuryError("invalid", "this challenge was already used; ask for a new one");
  if (Number(challenge.expires_at) < now) throw new TreasuryError("invalid", "this challenge has expired; ask for a new one");
  if (!(await verifyWalletProof({ ...proof, wallet }))) throw new TreasuryError("invalid", `the signature is not ${wallet}'s signature of the challenge`);
  const memberId = challenge.member_id;
  const signature = bs58.encode(decodeSignature(proof.signature));
  await deps.db.transaction().execute(async (trx) => {
    const spent = await trx.updateTable("wallet_challenges").set({ used_at: now }).where("nonce", "=", fields.nonce).where("used_at", "is", null).executeTakeFirst();
    if (Number(spent.numUpdatedRows) !== 1) throw new TreasuryError("invalid", "this challenge was already used; ask for a new one");
    const values = { address: wallet, linked_at: now, proof_message: proof.message, proof_signature: signature };
    await trx.insertInto("member_wallets").values({ union_id: unionId, member_id: memberId, ...values })
      .onConflict((oc) => oc.columns(["union_id", "member_id"]).doUpdateSet(values)).execute();
    await deps.outbox.add(trx, { kind: "badge.sync", unionId, memberId });
  });
  return { memberId, wallet };
}

/** The member's linked wallet and, when they proved it, the proof. */
export async function walletOf(db: Kysely<DB>, unionId: string, memberId: string): Promise<{ wallet: string; proof: WalletProof | null } | null> {
  const r = await db.selectFrom("member_wallets").selectAll().where("union_id", "=", unionId).where("member_id", "=", memberId).executeTakeFirst();
  if (!r) return null;
  return { wallet: r.address, proof: r.proof_message && r.proof_signature ? { wallet: r.address, message: r.proof_message, signature: r.proof_signature } : null };
}

/** Wallets return base58; some browser APIs give base64. 64 bytes either way. */
export function decodeSignature(s: string): Uint8Array {
  const t = s.trim();
  if (/^[1-9A-HJ-NP-Za-km-z]{80,90}$/.test(t)) return bs58.decode(t);
  const b = Buffer.from(t, "base64");
  if (b.length !== 64) throw new TreasuryError("invalid", "a signature is 64 bytes, in base58 or base64");
  return b;
}
