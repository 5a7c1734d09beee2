import type { Kysely } from "kysely";
import type { DB } from "../db/schema.ts";

/** Where a union's treasury lives on-chain, in chain-neutral terms (addresses are strings). */
export interface Treasury {
  readonly unionId: string;
  readonly mint: string;
  readonly tokenProgram: string;
  readonly decimals: number;
  /** The account that may move the treasury's tokens (an SPL multisig, or the server's key). */
  readonly authority: string;
  readonly tokenAccount: string;
  readonly threshold: number;
  readonly signers: readonly string[];
}

/** Records a union's treasury once; a second call for the union keeps the first. */
export async function saveTreasury(db: Kysely<DB>, t: Treasury): Promise<Treasury> {
  await db.insertInto("treasuries").values({
    union_id: t.unionId,
    mint: t.mint,
    token_program: t.tokenProgram,
    decimals: t.decimals,
    authority: t.authority,
    token_account: t.tokenAccount,
    threshold: t.threshold,
    signers: JSON.stringify(t.signers),
    created_at: Date.now(),
  }).onConflict((oc) => oc.column("union_id").doNothing()).execute();
  return (await getTreasury(db, t.unionId))!;
}

export async function getTreasury(db: Kysely<DB>, unionId: string): Promise<Treasury | undefined> {
  const r = await db.selectFrom("treasuries").selectAll().where("union_id", "=", unionId).executeTakeFirst();
  return r && {
    unionId: r.union_id, mint: r.mint, tokenProgram: r.token_program, decimals: r.decimals, authority: r.authority,
    tokenAccount: r.token_account, threshold: r.threshold, signers: JSON.parse(r.signers) as string[],
  };
}
