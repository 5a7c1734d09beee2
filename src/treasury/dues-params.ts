import type { Kysely } from "kysely";
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

export const NO_DUES: DuesParams = { duesAmount: 0n, duesMint: null, duesPeriodDays: 30, duesGraceDays: 7 };

/**
 * Until the bylaws module (issue 14) lands, a union has no dues: the
 * default every union starts with. Re-point this at readBylaws(db, unionId).params
 * when it does; domain code receives a DuesParamsSource and never calls this directly.
 */
export const duesParamsFromBylaws: DuesParamsSource = async () => NO_DUES;
