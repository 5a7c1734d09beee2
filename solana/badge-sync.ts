import "./quiet-bindings.ts";
import { Keypair, Transaction } from "@solana/web3.js";
import bs58 from "bs58";
import type { Kysely } from "kysely";
import type { DB } from "../src/db/schema.ts";
import { logger } from "../src/logging.ts";
import { wantedBadge } from "../src/treasury/badges.ts";
import { getUnionById } from "../src/unions/unions.ts";
import type { OutboxIntent } from "../src/outbox.ts";
import { openSecret, sealSecret } from "../src/secrets/stored-keys.ts";
import type { EmbeddedLedger } from "./embedded-ledger.ts";
import { badgeBalance, signBurnBadge, signCreateBadgeMint, signMintBadge, type SignedTransaction } from "./badges.ts";
import { LedgerError, type Ledger } from "./ledger.ts";

const log = logger("solana", "badges");

export interface BadgeSyncDeps {
  readonly db: Kysely<DB>;
  readonly ledger: Ledger;
  /** The union's public page (badge metadata uri). */
  readonly origin: URL;
  /** Tops up the treasury key for fees and rent; the embedded ledger's faucet, or nothing on a real network (the operator funds it). */
  readonly fund?: (address: string) => Promise<void>;
}

/** The union's treasury key, created on first use. The secret never leaves this module's callers. */
export async function treasuryKey(db: Kysely<DB>, unionId: string): Promise<Keypair> {
  const row = await db.selectFrom("treasury_keys").select("secret_key").where("union_id", "=", unionId).executeTakeFirst();
  if (row) return Keypair.fromSecretKey(Buffer.from(openSecret(db, row.secret_key), "base64"));
  const key = Keypair.generate();
  await db.insertInto("treasury_keys").values({ union_id: unionId, public_key: key.publicKey.toBase58(), secret_key: sealSecret(db, Buffer.from(key.secretKey).toString("base64")), created_at: Date.now() })
    .onConflict((oc) => oc.column("union_id").doNothing()).execute();
  // A concurrent creator may have won: the stored key is the key.
  const stored = await db.selectFrom("treasury_keys").select("secret_key").where("union_id", "=", unionId).executeTakeFirstOrThrow();
  return Keypair.fromSecretKey(Buffer.from(openSecret(db, stored.secret_key), "base64"));
}

/**
 * Makes the chain match the member's standing: one badge in their linked
 * wallet while active, none otherwise (burned by the permanent delegate).
 * Safe to run any number of times: it reads the balance first, and a signed
 * transaction is stored before it is submitted and resubmitted byte for byte
 * after a crash, so nothing is minted twice.
 */
export async function syncBadge(deps: BadgeSyncDeps, unionId: string, memberId: string): Promise<{ balance: bigint; wallet: string | null }> {
  const union = await getUnionById(deps.db, unionId);
  if (!union) return { balance: 0n, wallet: null };
  const want = await wantedBadge(deps.db, unionId, memberId);
  const readPrior = () => deps.db.selectFrom("badges").selectAll().where("union_id", "=", unionId).where("member_id", "=", memberId).executeTakeFirst();
  let prior = await readPrior();
  if (!want.wanted && !prior) return { balance: 0n, wallet: want.wallet };
  const key = await treasuryKey(deps.db, unionId);
  await deps.fund?.(key.publicKey.toBase58());
  const mint = await ensureMint(deps, unionId, key, { name: `${union.name} member`, symbol: "MEMBER", uri: new URL(`/u/${union.slug}`, deps.origin).href });

  const badgeRow = (patch: { wallet: string; state: string; signature?: string | null; tx?: SignedTransaction | null }) => {
    const values = {
      wallet: patch.wallet, state: patch.state, signature: patch.signature ?? null,
      raw: patch.tx ? Buffer.from(patch.tx.raw).toString("base64") : null, last_valid_block_height: patch.tx?.lastValidBlockHeight ?? null, updated_at: Date.now(),
    };
    return deps.db.insertInto("badges").values({ union_id: unionId, member_id: memberId, ...values })
      .onConflict((oc) => oc.columns(["union_id", "member_id"]).doUpdateSet(values)).execute();
  };
  // A transaction signed before a crash: its fate decides before anything new is signed.
  if (prior?.raw) {
    const signature = await resubmit(deps.ledger, prior.raw, Number(prior.last_valid_block_height));
    await badgeRow({ wallet: prior.wallet, state: signature ? prior.state.replace("pending_", "") : "unsent", signature });
    prior = await readPrior();
  }
  // A badge in a wallet the member no longer uses (or no longer should hold) is burned.
  const burnFrom = prior && (!want.wanted || prior.wallet !== want.wallet) ? prior.wallet : null;
  if (burnFrom) {
    const held = await badgeBalance(deps.ledger, mint, burnFrom);
    if (held > 0n) {
      const tx = await signBurnBadge(deps.ledger, key, mint, burnFrom, held);
      await badgeRow({ wallet: burnFrom, state: "pending_burn", tx });
      const signature = await deps.ledger.submit(tx.raw, { lastValidBlockHeight: tx.lastValidBlockHeight, commitment: "confirmed" });
      await badgeRow({ wallet: burnFrom, state: "burned", signature });
      log.info("Burned the badge of member {memberId} in union {unionId}", { memberId, unionId });
    } else {
      await badgeRow({ wallet: burnFrom, state: "burned", signature: prior?.signature ?? null });
    }
  }
  if (!want.wanted || !want.wallet) return { balance: 0n, wallet: want.wallet };
  const balance = await badgeBalance(deps.ledger, mint, want.wallet);
  if (balance >= 1n) {
    await badgeRow({ wallet: want.wallet, state: "minted", signature: prior?.wallet === want.wallet ? prior.signature : null });
    return { balance, wallet: want.wallet };
  }
  const tx = await signMintBadge(deps.ledger, key, mint, want.wallet);
  await badgeRow({ wallet: want.wallet, state: "pending_mint", tx });
  const signature = await deps.ledger.submit(tx.raw, { lastValidBlockHeight: tx.lastValidBlockHeight, commitment: "confirmed" });
  await badgeRow({ wallet: want.wallet, state: "minted", signature });
  log.info("Minted a badge for member {memberId} in union {unionId}", { memberId, unionId });
  return { balance: 1n, wallet: want.wallet };
}

/** The union's badge mint address, created on-chain on first use. */
export async function ensureMint(deps: BadgeSyncDeps, unionId: string, key: Keypair, spec: { name: string; symbol: string; uri: string }): Promise<string> {
  const row = await deps.db.selectFrom("badge_mints").selectAll().where("union_id", "=", unionId).executeTakeFirst();
  if (row?.signature) return row.mint;
  if (row?.raw) {
    const signature = await resubmit(deps.ledger, row.raw, Number(row.last_valid_block_height));
    if (signature) {
      await deps.db.updateTable("badge_mints").set({ signature, raw: null, last_valid_block_height: null }).where("union_id", "=", unionId).execute();
      return row.mint;
    }
    await deps.db.deleteFrom("badge_mints").where("union_id", "=", unionId).execute();
  }
  const mint = Keypair.generate();
  const tx = await signCreateBadgeMint(deps.ledger, key, mint, spec);
  await deps.db.insertInto("badge_mints").values({
    union_id: unionId, mint: mint.publicKey.toBase58(), signature: null, raw: Buffer.from(tx.raw).toString("base64"), last_valid_block_height: tx.lastValidBlockHeight, created_at: Date.now(),
  }).execute();
  const signature = await deps.ledger.submit(tx.raw, { lastValidBlockHeight: tx.lastValidBlockHeight, commitment: "confirmed" });
  await deps.db.updateTable("badge_mints").set({ signature, raw: null, last_valid_block_height: null }).where("union_id", "=", unionId).execute();
  return mint.publicKey.toBase58();
}

export async function badgeMintOf(db: Kysely<DB>, unionId: string): Promise<string | null> {
  const row = await db.selectFrom("badge_mints").select(["mint", "signature"]).where("union_id", "=", unionId).executeTakeFirst();
  return row?.signature ? row.mint : null;
}

/**
 * The stored bytes again: their signature when they landed (now or before),
 * null when they did not and cannot (blockhash passed, or refused): then a
 * fresh transaction is signed after re-reading the chain.
 */
export async function resubmit(ledger: Ledger, raw: string, lastValidBlockHeight: number, what = "badge"): Promise<string | null> {
  const bytes = Buffer.from(raw, "base64");
  try {
    return await ledger.submit(bytes, { lastValidBlockHeight, commitment: "confirmed" });
  } catch (e) {
    if (!(e instanceof LedgerError)) throw e;
    const signature = Transaction.from(bytes).signature;
    const status = signature ? await ledger.status(bs58.encode(signature)) : null;
    if (status && status.err === null) return bs58.encode(signature!);
    log.warn("A stored {what} transaction did not land ({code}); signing anew", { what, code: e.code });
    return null;
  }
}

export { handleLedgerIntent } from "./ledger-lane.ts";

/** Keeps the treasury key able to pay fees and rent on the embedded ledger (test money from its faucet). */
export function faucetFunding(ledger: EmbeddedLedger): (address: string) => Promise<void> {
  return async (address) => {
    const account = await ledger.account(address);
    if ((account?.lamports ?? 0n) < 100_000_000n) await ledger.airdrop(address, 1_000_000_000n);
  };
}
