import type { Kysely, Selectable } from "kysely";
import type { DB, TreasuryMovesTable } from "../db/schema.ts";
import { TreasuryError } from "./dues.ts";
import type { Treasury } from "./treasury.ts";

/**
 * Moving a union's treasury to a new multisig: an SPL multisig's signers and
 * threshold are fixed when it is made, so new officers or a new
 * treasuryThreshold bylaw take effect by moving the whole balance to a new
 * multisig, co-signed as the old one requires. Each move is kept for the
 * transparency page.
 */

export interface TreasuryMove {
  readonly id: number;
  readonly unionId: string;
  readonly from: { readonly authority: string; readonly tokenAccount: string; readonly threshold: number; readonly signers: readonly string[] };
  readonly to: { readonly authority: string; readonly tokenAccount: string; readonly threshold: number; readonly signers: readonly string[] };
  /** The co-signed transaction moving the balance (treasury_transfers); null until prepared, or when there was nothing to move. */
  readonly transferId: number | null;
  readonly amount: bigint | null;
  /** setup (the new multisig is being made), signing (the move awaits signatures), executed, failed. */
  readonly state: "setup" | "signing" | "executed" | "failed";
  readonly signature: string | null;
  readonly createdAt: Date;
  readonly updatedAt: Date;
}

function toMove(r: Selectable<TreasuryMovesTable>): TreasuryMove {
  return {
    id: Number(r.id), unionId: r.union_id,
    from: { authority: r.from_authority, tokenAccount: r.from_token_account, threshold: Number(r.from_threshold), signers: JSON.parse(r.from_signers) as string[] },
    to: { authority: r.to_authority, tokenAccount: r.to_token_account, threshold: Number(r.to_threshold), signers: JSON.parse(r.to_signers) as string[] },
    transferId: r.transfer_id === null ? null : Number(r.transfer_id), amount: r.amount === null ? null : BigInt(r.amount),
    state: r.state as TreasuryMove["state"], signature: r.signature, createdAt: new Date(Number(r.created_at)), updatedAt: new Date(Number(r.updated_at)),
  };
}

export async function listMoves(db: Kysely<DB>, unionId: string): Promise<TreasuryMove[]> {
  return (await db.selectFrom("treasury_moves").selectAll().where("union_id", "=", unionId).orderBy("id").execute()).map(toMove);
}

/** The move not yet executed, if any: one at a time per union. */
/**
 * Every authority the union's treasury has had: the current one and each a
 * move left behind. Transfers they sign are the treasury's own (a move's
 * balance, a vault's cut), never a member's dues.
 */
export async function treasuryAuthorities(db: Kysely<DB>, unionId: string): Promise<Set<string>> {
  const current = await db.selectFrom("treasuries").select("authority").where("union_id", "=", unionId).executeTakeFirst();
  const moved = await db.selectFrom("treasury_moves").select("from_authority").where("union_id", "=", unionId).execute();
  return new Set([...(current ? [current.authority] : []), ...moved.map((m) => m.from_authority)]);
}

export async function openMove(db: Kysely<DB>, unionId: string): Promise<TreasuryMove | undefined> {
  const r = await db.selectFrom("treasury_moves").selectAll().where("union_id", "=", unionId).where("state", "in", ["setup", "signing"]).executeTakeFirst();
  return r && toMove(r);
}

export async function moveByTransfer(db: Kysely<DB>, transferId: number): Promise<TreasuryMove | undefined> {
  const r = await db.selectFrom("treasury_moves").selectAll().where("transfer_id", "=", transferId).executeTakeFirst();
  return r && toMove(r);
}

/**
 * Why the treasury cannot move now, or null. Crowdfund vaults are owned by
 * the treasury's authority and settled by it, and a prepared transfer names
 * it: both would be stranded by a new authority.
 */
export async function moveRefusal(db: Kysely<DB>, unionId: string): Promise<string | null> {
  const vaults = await db.selectFrom("crowdfunds").select("seq").where("union_id", "=", unionId).where("state", "in", ["approved", "open", "succeeded", "failed"]).orderBy("seq").execute();
  if (vaults.length > 0) return `crowdfund${vaults.length > 1 ? "s" : ""} ${vaults.map((v) => `#${v.seq}`).join(", ")} ${vaults.length > 1 ? "are" : "is"} not settled yet: their vaults belong to the current authority`;
  const transfers = await db.selectFrom("treasury_transfers").select("id").where("union_id", "=", unionId).where("state", "in", ["pending", "ready"]).orderBy("id").execute();
  const moving = new Set((await db.selectFrom("treasury_moves").select("transfer_id").where("union_id", "=", unionId).execute()).map((m) => Number(m.transfer_id)));
  const others = transfers.filter((t) => !moving.has(Number(t.id)));
  if (others.length > 0) return `treasury transfer${others.length > 1 ? "s" : ""} ${others.map((t) => `#${t.id}`).join(", ")} ${others.length > 1 ? "are" : "is"} still awaiting signatures; finish or let them fail first`;
  return null;
}

/** Records the planned move with the signed creation of the new multisig, before it is sent. False when another move is open. */
export async function planMove(db: Kysely<DB>, from: Treasury, to: { authority: string; tokenAccount: string; threshold: number; signers: readonly string[] }, setup: { raw: string; lastValidBlockHeight: number }): Promise<boolean> {
  return db.transaction().execute(async (trx) => {
    if (await openMove(trx, from.unionId)) return false;
    const now = Date.now();
    await trx.insertInto("treasury_moves").values({
      union_id: from.unionId, from_authority: from.authority, from_token_account: from.tokenAccount, from_threshold: from.threshold, from_signers: JSON.stringify(from.signers),
      to_authority: to.authority, to_token_account: to.tokenAccount, to_threshold: to.threshold, to_signers: JSON.stringify(to.signers),
      setup_raw: setup.raw, setup_last_valid_block_height: setup.lastValidBlockHeight, transfer_id: null, amount: null, state: "setup", signature: null,
      created_at: now, updated_at: now,
    }).execute();
    return true;
  });
}

/** The new multisig exists; the move's transaction (if any balance) now awaits signatures. */
export async function moveSigning(db: Kysely<DB>, moveId: number, transferId: number, amount: bigint): Promise<void> {
  await db.updateTable("treasury_moves").set({ state: "signing", transfer_id: transferId, amount: amount.toString(), updated_at: Date.now() })
    .where("id", "=", moveId).where("state", "=", "setup").execute();
}

/**
 * The balance moved (or there was none): from now on the union's treasury is
 * the new multisig, in the same database transaction as the move's record.
 */
export async function finishMove(db: Kysely<DB>, moveId: number, signature: string | null, amount: bigint): Promise<TreasuryMove> {
  await db.transaction().execute(async (trx) => {
    const r = await trx.selectFrom("treasury_moves").selectAll().where("id", "=", moveId).executeTakeFirst();
    if (!r) throw new TreasuryError("not_found", `no treasury move #${moveId}`);
    if (r.state === "executed") return;
    await trx.updateTable("treasuries").set({ authority: r.to_authority, token_account: r.to_token_account, threshold: r.to_threshold, signers: r.to_signers })
      .where("union_id", "=", r.union_id).where("authority", "=", r.from_authority).execute();
    await trx.updateTable("treasury_moves").set({ state: "executed", signature, amount: amount.toString(), updated_at: Date.now() }).where("id", "=", moveId).execute();
  });
  return toMove(await db.selectFrom("treasury_moves").selectAll().where("id", "=", moveId).executeTakeFirstOrThrow());
}

export async function failMove(db: Kysely<DB>, moveId: number): Promise<void> {
  await db.updateTable("treasury_moves").set({ state: "failed", updated_at: Date.now() }).where("id", "=", moveId).where("state", "in", ["setup", "signing"]).execute();
}
