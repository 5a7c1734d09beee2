import type { Kysely } from "kysely";
import type { DB } from "../db/schema.ts";
import type { Member } from "../members/members.ts";
import { getTreasury } from "../treasury/treasury.ts";
import { readBylaws } from "./bylaws.ts";
import { formatUnits, parseUnits } from "./amounts.ts";

// What a member needs to know before opening a proposal: whether the bylaws
// let them, and in what unit a spend is counted. createProposal enforces the
// same rule; this only lets pages offer the form to those it will accept.

/** Whether the bylaws in force let this member open proposals. */
export async function mayPropose(db: Kysely<DB>, unionId: string, member: Member | undefined): Promise<boolean> {
  if (!member || member.unionId !== unionId || member.state !== "active") return false;
  const { params } = await readBylaws(db, unionId);
  return params.proposers === "members" || member.role === "leader" || member.role === "officer";
}

/**
 * The unit a spend is voted in: the dues mint of the bylaws in force, with
 * its decimal places when the union's treasury holds that mint (the only
 * place Muster learns a mint's decimals without asking a chain). Otherwise
 * amounts are whole base units.
 */
export interface SpendUnit {
  readonly mint: string | null;
  readonly decimals: number;
  /** Whether `decimals` is the mint's own (false: base units, decimals unknown). */
  readonly known: boolean;
}

export async function spendUnit(db: Kysely<DB>, unionId: string): Promise<SpendUnit> {
  const { params } = await readBylaws(db, unionId);
  const treasury = await getTreasury(db, unionId);
  if (params.duesMint && treasury && treasury.mint === params.duesMint) return { mint: params.duesMint, decimals: treasury.decimals, known: true };
  return { mint: params.duesMint, decimals: 0, known: false };
}

/** A typed amount ("12.5") in the spend unit, as u64 base units; refuses what the unit cannot hold exactly. */
export function spendAmount(unit: SpendUnit, text: string): bigint {
  return parseUnits(text, unit.decimals);
}

export function formatSpend(unit: SpendUnit, baseUnits: bigint): string {
  return unit.known ? formatUnits(baseUnits, unit.decimals) : `${baseUnits} base units`;
}
