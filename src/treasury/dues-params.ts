import type { Kysely } from "kysely";
import { readBylaws } from "../bylaws/bylaws.ts";
import type { DB } from "../db/schema.ts";

/** The bylaw parameters dues depend on (names as in the bylaws API). */
export interface DuesParams {
  /** Base units of the dues mint per period; 0n means the union has no dues. */
  readonly duesAmount: bigint;
  readonly duesMint: string | null;
  readonly duesPeriodDays: number;
  readonly duesGraceDays: number;
}

export type DuesParamsSource = (db: Kysely<DB>, unionId: string) => Promise<DuesParams>;

/**
 * The dues rules in force are the union's bylaws: a passed amendment (or an
 * operator override) changes what counts as paid from then on. Domain code
 * receives a DuesParamsSource so tests can pin a rule without a vote.
 */
export const duesParamsFromBylaws: DuesParamsSource = async (db, unionId) => {
  const { duesAmount, duesMint, duesPeriodDays, duesGraceDays } = (await readBylaws(db, unionId)).params;
  return { duesAmount, duesMint, duesPeriodDays, duesGraceDays };
};
