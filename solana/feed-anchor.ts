import { Transaction, TransactionInstruction } from "@solana/web3.js";
import bs58 from "bs58";
import type { Kysely } from "kysely";
import type { DB } from "../src/db/schema.ts";
import { localSchedule } from "../src/actions/scheduler.ts";
import { logger } from "../src/logging.ts";
import { treasuryKey } from "./badge-sync.ts";
import { LedgerError, type Ledger } from "./ledger.ts";
import { MEMO_PROGRAM_ID } from "./solana-pay.ts";

const log = logger("solana", "anchor");
/** A claimed day whose worker died before signing is taken over after this long. */
const STALE_CLAIM_MS = 10 * 60_000;

export interface AnchorDeps {
  readonly db: Kysely<DB>;
  readonly ledger: Ledger;
  /** Tops up the treasury key for the fee (embedded ledger's faucet); nothing on a real network. */
  readonly fund?: ((address: string) => Promise<void>) | undefined;
  /** Where a reader checks a transaction. */
  readonly explorerUrl?: ((signature: string) => string) | undefined;
}

/** The Memo text: the chain's length and its head hash, so a reader knows which entry the head is. */
export function anchorMemo(n: number, head: string): string {
  return `muster:actions:${n}:${head}`;
}

/**
 * Once a day per union (its local date), writes the head of its
 * call-to-action hash chain on-chain in a Memo signed by the treasury key,
 * if the chain has grown since the last anchor. The (union, day) row is
 * claimed first, so several workers anchor once; the signed bytes are stored
 * before the first submit, so a crash resends the same transaction.
 */
export async function anchorDue(deps: AnchorDeps, now = Date.now()): Promise<{ unionId: string; signature: string; n: number; head: string }[]> {
  const unions = await deps.db.selectFrom("unions").select(["id", "slug", "time_zone"]).execute();
  const done = [];
  for (const u of unions) {
    try {
      const r = await anchorUnion(deps, u.id, localSchedule(now, u.time_zone, "00:00").today, now);
      if (r) done.push({ unionId: u.id, ...r });
    } catch (error) {
      log.error("Anchoring the chain of {union} failed: {error}", { union: u.slug, error });
    }
  }
  return done;
}

async function anchorUnion(deps: AnchorDeps, unionId: string, day: string, now: number): Promise<{ signature: string; n: number; head: string } | null> {
  const { db } = deps;
  let row = await db.selectFrom("chain_anchors").selectAll().where("union_id", "=", unionId).where("day", "=", day).executeTakeFirst();
  if (row?.signature) return null;
  if (!row) {
    const head = await db.selectFrom("action_log").select(["n", "hash"]).where("union_id", "=", unionId).orderBy("n", "desc").limit(1).executeTakeFirst();
    if (!head) return null;
    const last = await db.selectFrom("chain_anchors").select("n").where("union_id", "=", unionId).where("signature", "is not", null).orderBy("n", "desc").limit(1).executeTakeFirst();
    if (last && Number(last.n) >= Number(head.n)) return null;
    const inserted = await db.insertInto("chain_anchors").values({
      union_id: unionId, day, n: Number(head.n), head: head.hash, memo: anchorMemo(Number(head.n), head.hash),
      signature: null, explorer_url: null, raw: null, last_valid_block_height: null, created_at: now, anchored_at: null,
    }).onConflict((oc) => oc.columns(["union_id", "day"]).doNothing()).executeTakeFirst();
    if (Number(inserted.numInsertedOrUpdatedRows ?? 0n) !== 1) return null;
    row = await db.selectFrom("chain_anchors").selectAll().where("union_id", "=", unionId).where("day", "=", day).executeTakeFirstOrThrow();
  } else if (!row.raw && now - Number(row.created_at) < STALE_CLAIM_MS) {
    // Another worker claimed the day moments ago and is signing.
    return null;
  }
  // Signed bytes from before a crash go out again first; only an expired or refused one is signed anew.
  if (row.raw) {
    const bytes = Buffer.from(row.raw, "base64");
    const signature = bs58.encode(Transaction.from(bytes).signature!);
    try {
      await deps.ledger.submit(bytes, { lastValidBlockHeight: Number(row.last_valid_block_height), commitment: "confirmed" });
      return finish(deps, unionId, day, signature, Number(row.n), row.head, now);
    } catch (e) {
      if (!(e instanceof LedgerError)) throw e;
      const status = await deps.ledger.status(signature);
      if (status && status.err === null) return finish(deps, unionId, day, signature, Number(row.n), row.head, now);
      log.warn("A stored anchor transaction did not land ({code}); signing anew", { code: e.code });
    }
  }
  const key = await treasuryKey(db, unionId);
  await deps.fund?.(key.publicKey.toBase58());
  const { blockhash, lastValidBlockHeight } = await deps.ledger.latestBlockhash();
  // The treasury key signs the memo itself (a Memo signer), not only the fee.
  const tx = new Transaction({ feePayer: key.publicKey, blockhash, lastValidBlockHeight })
    .add(new TransactionInstruction({ programId: MEMO_PROGRAM_ID, keys: [{ pubkey: key.publicKey, isSigner: true, isWritable: false }], data: Buffer.from(row.memo, "utf8") }));
  tx.sign(key);
  const raw = tx.serialize();
  await db.updateTable("chain_anchors").set({ raw: Buffer.from(raw).toString("base64"), last_valid_block_height: lastValidBlockHeight })
    .where("union_id", "=", unionId).where("day", "=", day).execute();
  const signature = await deps.ledger.submit(raw, { lastValidBlockHeight, commitment: "confirmed" });
  return finish(deps, unionId, day, signature, Number(row.n), row.head, now);
}

async function finish(deps: AnchorDeps, unionId: string, day: string, signature: string, n: number, head: string, now: number) {
  await deps.db.updateTable("chain_anchors").set({ signature, explorer_url: deps.explorerUrl?.(signature) ?? null, raw: null, anchored_at: now })
    .where("union_id", "=", unionId).where("day", "=", day).execute();
  log.info("Anchored call-to-action chain entry {n} of union {unionId} on-chain: {signature}", { n, unionId, signature });
  return { signature, n, head };
}
