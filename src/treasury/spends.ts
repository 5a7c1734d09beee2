import type { Kysely } from "kysely";
import type { DB } from "../db/schema.ts";
import type { Outbox } from "../outbox.ts";
import { getTransfer, getTreasury, type TreasuryTransfer } from "./treasury.ts";
import { readBylaws } from "../bylaws/bylaws.ts";

// A passed spend proposal is carried out by the treasury: queued when the
// vote closes (in the same database transaction as the outcome), then the
// ledger lane either pays it with one treasury transfer, linked here so a
// retried job never pays twice, or records why it cannot (the refusal is
// kept, never retried: the members decide again with a new proposal).

/** What became of a passed spend. `transfer` is the treasury transfer paying it, once made. */
export interface SpendExecution {
  readonly proposalId: string;
  readonly number: number;
  /** As approved: base units, and the recipient as proposed. */
  readonly amount: bigint;
  readonly recipient: string;
  /** queued (the ledger lane has not got to it), refused (reason), or the transfer's own state. */
  readonly state: "queued" | "refused" | TreasuryTransfer["state"];
  readonly reason: string | null;
  readonly transfer: TreasuryTransfer | null;
}

/** The memo of the transfer that pays spend proposal #number: names the proposal for officers and auditors. */
export function spendMemo(number: number, purpose: string | undefined): string {
  return `muster spend #${number}${purpose ? `: ${purpose.slice(0, 120)}` : ""}`;
}

/** Queues a passed spend's execution in the closing transaction; a second call for the proposal changes nothing. */
export async function queueSpendIn(trx: Kysely<DB>, outbox: Outbox, p: { id: string; unionId: string; number: number }): Promise<void> {
  const now = Date.now();
  const r = await trx.insertInto("treasury_spends").values({ proposal_id: p.id, union_id: p.unionId, number: p.number, state: "queued", transfer_id: null, reason: null, created_at: now, updated_at: now })
    .onConflict((oc) => oc.column("proposal_id").doNothing()).executeTakeFirst();
  if (Number(r.numInsertedOrUpdatedRows ?? 1n) === 0) return;
  await outbox.add(trx, { kind: "treasury.spend", unionId: p.unionId, proposalId: p.id });
}

/** Records why a queued spend cannot be carried out; false when it was already paid or refused. */
export async function refuseSpend(db: Kysely<DB>, unionId: string, proposalId: string, reason: string): Promise<boolean> {
  const r = await db.updateTable("treasury_spends").set({ state: "refused", reason: reason.slice(0, 500), updated_at: Date.now() })
    .where("union_id", "=", unionId).where("proposal_id", "=", proposalId).where("state", "=", "queued").executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

/**
 * Links the transfer paying a queued spend, in the transaction that records
 * the transfer; false when another attempt linked (or refused) it first, and
 * the caller must then roll back its transfer.
 */
export async function linkSpendIn(trx: Kysely<DB>, unionId: string, proposalId: string, transferId: number): Promise<boolean> {
  const r = await trx.updateTable("treasury_spends").set({ state: "transfer", transfer_id: transferId, updated_at: Date.now() })
    .where("union_id", "=", unionId).where("proposal_id", "=", proposalId).where("state", "=", "queued").executeTakeFirst();
  return Number(r.numUpdatedRows) === 1;
}

/** What became of a passed spend proposal; undefined when it was never queued (not a passed spend). */
export async function spendExecution(db: Kysely<DB>, unionId: string, proposalId: string): Promise<SpendExecution | undefined> {
  const r = await db.selectFrom("treasury_spends").selectAll().where("union_id", "=", unionId).where("proposal_id", "=", proposalId).executeTakeFirst();
  if (!r) return undefined;
  const transfer = r.transfer_id === null ? null : (await getTransfer(db, unionId, Number(r.transfer_id))) ?? null;
  const state = transfer ? transfer.state : r.state === "refused" ? "refused" : "queued";
  const p = await db.selectFrom("proposals").select("change").where("id", "=", proposalId).executeTakeFirstOrThrow();
  const c = JSON.parse(p.change) as { amount: string; recipient: string };
  return { proposalId: r.proposal_id, number: Number(r.number), amount: BigInt(c.amount), recipient: c.recipient, state, reason: transfer ? transfer.reason : r.reason, transfer };
}

/** Every spend the treasury carried out or refused, by proposal number: for the transparency page. */
export async function listSpendExecutions(db: Kysely<DB>, unionId: string): Promise<SpendExecution[]> {
  const rows = await db.selectFrom("treasury_spends").select("proposal_id").where("union_id", "=", unionId).orderBy("number").execute();
  return (await Promise.all(rows.map((r) => spendExecution(db, unionId, r.proposal_id)))).filter((s): s is SpendExecution => s !== undefined);
}

/**
 * How many signatures the treasury needs beyond the server's (0: the server
 * sends alone). Read from the treasury when it exists, else from the bylaws
 * it will be created under.
 */
export async function officerSignaturesNeeded(db: Kysely<DB>, unionId: string): Promise<number> {
  const t = await getTreasury(db, unionId);
  const threshold = t ? t.threshold : (await readBylaws(db, unionId)).params.treasuryThreshold;
  return Math.max(0, threshold - 1);
}

/** One line on what the treasury does (or did) with a spend, for the result Note, `proposal show` and the page. */
export function describeSpendExecution(s: SpendExecution | undefined, officersNeeded: number): string {
  if (!s || s.state === "queued") {
    return officersNeeded === 0 ? "the treasury sends it" : `the treasury's transfer waits for ${officersNeeded} officer${officersNeeded === 1 ? "'s" : "s'"} signature${officersNeeded === 1 ? "" : "s"} before it is sent`;
  }
  const t = s.transfer;
  switch (s.state) {
    case "refused": return `the treasury did not send it: ${s.reason}`;
    case "pending": return `treasury transfer #${t!.id} waits for officers' signatures (${t!.signed.length} of ${t!.required.length} signed)`;
    case "ready": return `treasury transfer #${t!.id} is signed and being sent`;
    case "executed": return `treasury transfer #${t!.id} sent it (transaction ${t!.signature})`;
    case "failed": return `treasury transfer #${t!.id} failed: ${s.reason ?? "the ledger refused it"}`;
  }
}
