import { type Keypair, PublicKey, type Transaction } from "@solana/web3.js";
import type { Kysely } from "kysely";
import type { DB } from "../src/db/schema.ts";
import { getTreasury } from "../src/treasury/treasury.ts";
import { CrowdfundError } from "../src/crowdfunds/crowdfunds.ts";
import { treasuryKey } from "./badge-sync.ts";

/**
 * Who may move a vault's tokens, and how its transactions get signed. Every
 * vault's token-account authority is the union's treasury authority. Today
 * that is the one server-held treasury key, so `sign` signs at once; when
 * the treasury becomes an SPL multisig, `address` is the multisig account,
 * `multiSigners` its signing members (named in each token instruction), and
 * `sign` collects their signatures. Crowdfund code builds instructions from
 * these fields and calls `sign`, and never touches a key itself.
 */
export interface VaultAuthority {
  /** The token-account authority of every vault: the treasury authority. */
  readonly address: PublicKey;
  /** Signers a multisig authority names in token instructions; empty for a single key. */
  readonly multiSigners: readonly PublicKey[];
  /** Pays fees and rent (a server key even under a multisig). */
  readonly feePayer: PublicKey;
  /** Adds every signature the authority needs, plus the extra keypairs' (a new account's). */
  sign(tx: Transaction, extra?: readonly Keypair[]): Promise<void>;
}

/**
 * The one way crowdfund code obtains the union's treasury authority. Refuses
 * when the treasury names an authority this server cannot sign for alone
 * (a multisig, until its co-signing is wired here).
 */
export async function treasuryAuthority(db: Kysely<DB>, unionId: string): Promise<VaultAuthority> {
  const treasury = await getTreasury(db, unionId);
  if (!treasury) throw new CrowdfundError("conflict", "this union has no treasury yet");
  const key = await treasuryKey(db, unionId);
  const server = key.publicKey.toBase58();
  if (treasury.authority === server) {
    return { address: key.publicKey, multiSigners: [], feePayer: key.publicKey, async sign(tx, extra = []) { tx.sign(key, ...extra); } };
  }
  // The SPL multisig made by solana/treasury-authority.ts: the default
  // 1-of-1 (or any threshold of 1 that includes the server's key) is signed
  // by the server alone, naming its key as the multisig's signer.
  if (treasury.threshold === 1 && treasury.signers.includes(server)) {
    return { address: new PublicKey(treasury.authority), multiSigners: [key.publicKey], feePayer: key.publicKey, async sign(tx, extra = []) { tx.sign(key, ...extra); } };
  }
  throw new CrowdfundError("conflict", `the treasury needs ${treasury.threshold} signatures (officers co-sign); vault transactions under a co-signed treasury are not wired yet`);
}
