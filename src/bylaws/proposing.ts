import type { Kysely } from "kysely";
import type { DB } from "../db/schema.ts";
import { getMember, type Member } from "../members/members.ts";
import { PROPOSAL_KINDS } from "./params.ts";
import { type DelegationScope, delegationsOf } from "./proposals.ts";
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

export interface DelegationState {
  /** Whether the bylaws in force allow delegating (delegation=opt_in). */
  readonly allowed: boolean;
  /** The member's delegations now, all-proposals first. */
  readonly current: readonly { readonly scope: DelegationScope; readonly delegate: Member }[];
  /** Who the form offers first: the member's own sponsor, when they are an active member. */
  readonly suggested: Member | undefined;
}

/** A member's delegations and the delegate the form suggests (their sponsor). */
export async function delegationState(db: Kysely<DB>, unionId: string, member: Member): Promise<DelegationState> {
  const { params } = await readBylaws(db, unionId);
  const mine = await delegationsOf(db, unionId, member.id);
  const current: { scope: DelegationScope; delegate: Member }[] = [];
  for (const d of mine) {
    const delegate = await getMember(db, unionId, d.delegateId);
    if (delegate) current.push({ scope: d.scope, delegate });
  }
  const order = (s: DelegationScope) => (s === "all" ? -1 : PROPOSAL_KINDS.indexOf(s));
  current.sort((a, b) => order(a.scope) - order(b.scope));
  const sponsor = member.sponsorId ? await getMember(db, unionId, member.sponsorId) : undefined;
  return { allowed: params.delegation === "opt_in", current, suggested: sponsor?.state === "active" ? sponsor : undefined };
}
