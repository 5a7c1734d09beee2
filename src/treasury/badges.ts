import bs58 from "bs58";
import type { Kysely } from "kysely";
import type { DB } from "../db/schema.ts";
import { getMember, type By } from "../members/members.ts";
import type { Outbox } from "../outbox.ts";
import { TreasuryError } from "./dues.ts";

/**
 * Member badges, in domain terms: a member who is active and has linked a
 * wallet should hold one badge; anyone else should hold none. The chain work
 * that makes it so runs from a `badge.sync` intent recorded in the same
 * transaction as the change (solana/badge-sync.ts does it).
 */

/** A Solana address: base58 of 32 bytes. */
export function parseWalletAddress(address: string): string {
  const a = address.trim();
  let bytes: Uint8Array;
  try {
    bytes = bs58.decode(a);
  } catch {
    throw new TreasuryError("invalid", `not a Solana address (base58): ${a.slice(0, 60)}`);
  }
  if (bytes.length !== 32) throw new TreasuryError("invalid", `not a Solana address (32 bytes): ${a.slice(0, 60)}`);
  return a;
}

/**
 * Links the member's wallet (replacing an earlier one). Only the member
 * themself or the operator may do so: a badge must reach the member's own
 * wallet, never one an officer chose.
 */
export async function linkWallet(deps: { db: Kysely<DB>; outbox: Outbox }, unionId: string, memberId: string, address: string, by: By): Promise<void> {
  const wallet = parseWalletAddress(address);
  if (by.kind !== "operator" && !(by.kind === "member" && by.memberId === memberId)) {
    throw new TreasuryError("invalid", "only the member themself (or the operator) links a member's wallet");
  }
  await deps.db.transaction().execute(async (trx) => {
    const member = await getMember(trx, unionId, memberId);
    if (!member) throw new TreasuryError("not_found", `no member ${memberId} in this union`);
    const now = Date.now();
    // A link made this way carries no proof (src/treasury/wallet-proof.ts makes proven links).
    const values = { address: wallet, linked_at: now, proof_message: null, proof_signature: null };
    await trx.insertInto("member_wallets").values({ union_id: unionId, member_id: memberId, ...values })
      .onConflict((oc) => oc.columns(["union_id", "member_id"]).doUpdateSet(values)).execute();
    await deps.outbox.add(trx, { kind: "badge.sync", unionId, memberId });
  });
}

export async function memberWallet(db: Kysely<DB>, unionId: string, memberId: string): Promise<string | null> {
  const row = await db.selectFrom("member_wallets").select("address").where("union_id", "=", unionId).where("member_id", "=", memberId).executeTakeFirst();
  return row?.address ?? null;
}

/**
 * Called by membership changes inside their transaction: a member with a
 * wallet (or a badge) gets a `badge.sync`; others have nothing to sync.
 */
export async function syncBadgeIn(trx: Kysely<DB>, outbox: Outbox, unionId: string, memberId: string): Promise<void> {
  const wallet = await trx.selectFrom("member_wallets").select("member_id").where("union_id", "=", unionId).where("member_id", "=", memberId).executeTakeFirst();
  const badge = wallet ? undefined : await trx.selectFrom("badges").select("member_id").where("union_id", "=", unionId).where("member_id", "=", memberId).executeTakeFirst();
  if (wallet || badge) await outbox.add(trx, { kind: "badge.sync", unionId, memberId });
}

/** What the chain should show for this member: one badge in `wallet`, or none. */
export async function wantedBadge(db: Kysely<DB>, unionId: string, memberId: string): Promise<{ wallet: string | null; wanted: boolean }> {
  const member = await getMember(db, unionId, memberId);
  const wallet = await memberWallet(db, unionId, memberId);
  return { wallet, wanted: member?.state === "active" && wallet !== null };
}
