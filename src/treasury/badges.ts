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

export type BadgeRole = "leader" | "officer";

/** The roles whose badge the member should hold in `wallet`: their role while active. */
export async function wantedRoleBadges(db: Kysely<DB>, unionId: string, memberId: string): Promise<{ wallet: string | null; roles: BadgeRole[] }> {
  const member = await getMember(db, unionId, memberId);
  const wallet = await memberWallet(db, unionId, memberId);
  const roles: BadgeRole[] = member?.state === "active" && (member.role === "leader" || member.role === "officer") ? [member.role] : [];
  return { wallet, roles };
}

/**
 * After a change of roles (an election, a recall, an appointment), inside
 * its transaction: a `badge.sync` for every member whose role badges may
 * now be wrong: officers and the leader with a wallet, and holders of a
 * role badge not burned.
 */
export async function syncRoleBadgesIn(trx: Kysely<DB>, outbox: Outbox, unionId: string): Promise<void> {
  const officers = await trx.selectFrom("members").innerJoin("member_wallets", (j) => j.onRef("member_wallets.member_id", "=", "members.id").onRef("member_wallets.union_id", "=", "members.union_id"))
    .select("members.id").where("members.union_id", "=", unionId).where("members.role", "in", ["leader", "officer"]).execute();
  const holders = await trx.selectFrom("role_badges").select("member_id").where("union_id", "=", unionId).where("state", "!=", "burned").execute();
  for (const id of new Set([...officers.map((o) => o.id), ...holders.map((h) => h.member_id)])) await outbox.add(trx, { kind: "badge.sync", unionId, memberId: id });
}

/** What the chain should show for this member: one badge in `wallet`, or none. */
export async function wantedBadge(db: Kysely<DB>, unionId: string, memberId: string): Promise<{ wallet: string | null; wanted: boolean }> {
  const member = await getMember(db, unionId, memberId);
  const wallet = await memberWallet(db, unionId, memberId);
  return { wallet, wanted: member?.state === "active" && wallet !== null };
}
