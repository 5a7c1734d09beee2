import type { Kysely } from "kysely";
import type { DB } from "../db/schema.ts";
import { entriesOfAction } from "./chain.ts";

/** A chain head written on-chain: the transaction anyone can read to check the feed without this server. */
export interface ChainAnchor {
  readonly n: number;
  readonly head: string;
  readonly memo: string;
  readonly signature: string;
  readonly url: string | null;
  readonly anchoredAt: Date;
}

/**
 * The first on-chain anchor that covers the action's latest chain entry
 * (an anchor of entry n commits to every entry up to n), or null while none
 * has been written since it.
 */
export async function anchorOfAction(db: Kysely<DB>, unionId: string, actionId: string): Promise<ChainAnchor | null> {
  const entries = await entriesOfAction(db, actionId);
  const last = entries.at(-1);
  if (!last) return null;
  const r = await db.selectFrom("chain_anchors").selectAll().where("union_id", "=", unionId).where("n", ">=", last.n)
    .where("signature", "is not", null).orderBy("n").limit(1).executeTakeFirst();
  return r ? { n: Number(r.n), head: r.head, memo: r.memo, signature: r.signature!, url: r.explorer_url, anchoredAt: new Date(Number(r.anchored_at)) } : null;
}
