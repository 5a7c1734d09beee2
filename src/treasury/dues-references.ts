import type { Kysely } from "kysely";
import type { DB } from "../db/schema.ts";

/**
 * The Solana Pay reference keys the server hands out with each dues
 * transaction. A payment is matched by what it carries (memo, mint,
 * destination, amount), but a payment that went to the wrong account or in
 * the wrong token never touches the treasury: only its reference finds it.
 * The scheduled scan looks up each open reference until a payment carries it
 * or its transaction can no longer land.
 */

/** A dues transaction is built with a recent blockhash: after this long it can no longer execute. */
export const REFERENCE_LIFETIME_MS = 10 * 60_000;

export interface IssuedReference {
  readonly reference: string;
  readonly unionId: string;
  readonly memberId: string;
  readonly payer: string;
  readonly amount: bigint;
  readonly mint: string;
  readonly destination: string;
}

export async function issueDuesReference(db: Kysely<DB>, r: IssuedReference, now = Date.now()): Promise<void> {
  await db.insertInto("dues_references").values({
    reference: r.reference, union_id: r.unionId, member_id: r.memberId, payer: r.payer, amount: r.amount.toString(), mint: r.mint,
    destination: r.destination, issued_at: now, expires_at: now + REFERENCE_LIFETIME_MS, state: "issued", signature: null,
  }).execute();
}

/** References of the union no payment has carried yet and not closed, oldest first. */
export async function openReferences(db: Kysely<DB>, unionId: string, limit = 500): Promise<{ reference: string; expiresAt: number }[]> {
  const rows = await db.selectFrom("dues_references").select(["reference", "expires_at"])
    .where("union_id", "=", unionId).where("state", "=", "issued").orderBy("issued_at").limit(limit).execute();
  return rows.map((r) => ({ reference: r.reference, expiresAt: Number(r.expires_at) }));
}

/** Looked up after its transaction could no longer land, and nothing carried it: nothing to wait for. */
export async function expireReference(db: Kysely<DB>, reference: string): Promise<void> {
  await db.updateTable("dues_references").set({ state: "expired" }).where("reference", "=", reference).where("state", "=", "issued").execute();
}

/** The issued reference a payment carries, if this server issued it. */
export async function issuedReference(db: Kysely<DB>, reference: string) {
  return db.selectFrom("dues_references").selectAll().where("reference", "=", reference).executeTakeFirst();
}
