import type { Kysely, Selectable } from "kysely";
import type { CrowdfundPledgesTable, DB } from "../db/schema.ts";
import { CrowdfundError, type Crowdfund, parsePledgeMemo, toCrowdfund } from "./crowdfunds.ts";

/** A token transfer into a vault (or carrying a crowdfund's reference), as read from its signed bytes. */
export interface SeenPledge {
  readonly signature: string;
  /** The crowdfund whose vault or reference the transfer was found through. */
  readonly crowdfundId: string;
  /** The wallet that authorised the transfer. */
  readonly wallet: string;
  /** The token account the tokens came from: where a refund goes. */
  readonly source: string;
  readonly destination: string;
  readonly mint: string;
  readonly amount: bigint;
  readonly memo: string | null;
  /** When the chain says it happened, epoch ms. */
  readonly pledgedAt: number;
}

export interface Pledge {
  readonly signature: string;
  readonly crowdfundId: string;
  readonly memberId: string | null;
  readonly wallet: string;
  readonly source: string;
  readonly amount: bigint;
  readonly status: "matched" | "unmatched";
  readonly reason: string | null;
  /** The tokens sit in the vault (they are returned to `source` unless paid out). */
  readonly inVault: boolean;
  readonly refundSignature: string | null;
  /** Why the refund could not go back to `source`; its tokens went to the treasury, held for the pledger. */
  readonly refundFailure: string | null;
  readonly pledgedAt: Date;
}

export interface RecordedPledge extends Pledge {
  /** False when the signature had been recorded before: nothing changed. */
  readonly recorded: boolean;
}

const SIGNATURE = /^[1-9A-HJ-NP-Za-km-z]{64,88}$/;

export function toPledge(r: Selectable<CrowdfundPledgesTable>): Pledge {
  return {
    signature: r.signature, crowdfundId: r.crowdfund_id, memberId: r.member_id, wallet: r.wallet, source: r.source, amount: BigInt(r.amount),
    status: r.status as Pledge["status"], reason: r.reason, inVault: Number(r.in_vault) === 1, refundSignature: r.refund_signature,
    refundFailure: r.refund_failure ?? null, pledgedAt: new Date(Number(r.pledged_at)),
  };
}

/**
 * Records a pledge once per signature: a rescan, a second worker or the
 * pledging CLI seeing it again returns the first record. A transfer that does
 * not match (no or wrong memo, wrong mint or destination, not a member, after
 * the deadline) is kept unmatched with the reason and never counted; if its
 * tokens reached the vault they are returned at settlement.
 */
export async function recordPledge(db: Kysely<DB>, seen: SeenPledge): Promise<RecordedPledge> {
  if (!SIGNATURE.test(seen.signature)) throw new CrowdfundError("invalid", `not a transaction signature: ${seen.signature.slice(0, 100)}`);
  if (seen.amount < 0n || seen.amount > 0xffffffffffffffffn) throw new CrowdfundError("invalid", "amount must be a u64");
  return db.transaction().execute(async (trx) => {
    const existing = await trx.selectFrom("crowdfund_pledges").selectAll().where("signature", "=", seen.signature).executeTakeFirst();
    if (existing) return { ...toPledge(existing), recorded: false };
    const row = await trx.selectFrom("crowdfunds").selectAll().where("id", "=", seen.crowdfundId).executeTakeFirst();
    if (!row) throw new CrowdfundError("not_found", `no crowdfund ${seen.crowdfundId}`);
    const cf = toCrowdfund(row);
    const memo = parsePledgeMemo(seen.memo);
    const member = memo === null ? undefined : await trx.selectFrom("members").select(["id", "state"])
      .where("union_id", "=", cf.unionId).where("actor_id", "=", memo.actorId).executeTakeFirst();
    const inVault = seen.destination === cf.vault && seen.mint === cf.mint;
    const reason = await mismatch(trx, cf, seen, memo, member);
    const values: CrowdfundPledgesTable = {
      signature: seen.signature, union_id: cf.unionId, crowdfund_id: cf.id, member_id: member?.id ?? null, memo: seen.memo?.slice(0, 500) ?? null,
      wallet: seen.wallet, source: seen.source, destination: seen.destination, mint: seen.mint, amount: seen.amount.toString(),
      status: reason === null ? "matched" : "unmatched", reason, in_vault: inVault ? 1 : 0, refund_signature: null, refund_failure: null,
      pledged_at: seen.pledgedAt, recorded_at: Date.now(),
    };
    // Two recorders racing on one signature: the loser reads the winner's row.
    const inserted = await trx.insertInto("crowdfund_pledges").values(values).onConflict((oc) => oc.column("signature").doNothing()).executeTakeFirst();
    if (Number(inserted.numInsertedOrUpdatedRows ?? 0n) === 0) {
      return { ...toPledge(await trx.selectFrom("crowdfund_pledges").selectAll().where("signature", "=", seen.signature).executeTakeFirstOrThrow()), recorded: false };
    }
    return { ...toPledge(values), recorded: true };
  });
}

async function mismatch(
  trx: Kysely<DB>, cf: Crowdfund, seen: SeenPledge, memo: ReturnType<typeof parsePledgeMemo>, member: { id: string; state: string } | undefined,
): Promise<string | null> {
  if (seen.mint !== cf.mint) return `wrong mint: ${seen.mint}, not the crowdfund's ${cf.mint}`;
  if (seen.destination !== cf.vault) return `wrong destination: paid to ${seen.destination}, not the vault ${cf.vault}`;
  if (memo === null) return "no memo naming the crowdfund and the member";
  if (memo.crowdfundId !== cf.id) {
    const other = await trx.selectFrom("crowdfunds").select("seq").where("id", "=", memo.crowdfundId).where("union_id", "=", cf.unionId).executeTakeFirst();
    return other ? `the memo names crowdfund #${other.seq}, not #${cf.seq}` : `the memo names an unknown crowdfund ${memo.crowdfundId}`;
  }
  if (!member) return `no member of this union is ${memo.actorId.slice(0, 200)}`;
  if (member.state !== "active") return `the member is ${member.state}`;
  if (seen.amount === 0n) return "nothing pledged";
  // Landed between the settlement's decision and the vault's close: returned by a follow-up refund (settlement.ts lateDeposits).
  if (cf.state === "succeeded" || cf.state === "failed") return "pledged after the settlement was decided; returned to its source";
  if (cf.state !== "open") return `the crowdfund is ${cf.state}`;
  if (seen.pledgedAt > cf.deadline.getTime()) return "pledged after the deadline";
  return null;
}

export async function listPledges(db: Kysely<DB>, crowdfundId: string): Promise<Pledge[]> {
  return (await db.selectFrom("crowdfund_pledges").selectAll().where("crowdfund_id", "=", crowdfundId).orderBy("pledged_at").orderBy("signature").execute()).map(toPledge);
}

export async function knownPledgeSignatures(db: Kysely<DB>, crowdfundId: string): Promise<Set<string>> {
  return new Set((await db.selectFrom("crowdfund_pledges").select("signature").where("crowdfund_id", "=", crowdfundId).execute()).map((r) => r.signature));
}

/** The sum of matched pledges, exact. */
export async function pledgedTotal(db: Kysely<DB>, crowdfundId: string): Promise<bigint> {
  const rows = await db.selectFrom("crowdfund_pledges").select("amount").where("crowdfund_id", "=", crowdfundId).where("status", "=", "matched").execute();
  return rows.reduce((s, r) => s + BigInt(r.amount), 0n);
}
