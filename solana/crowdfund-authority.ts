import type { Keypair, PublicKey, Transaction } from "@solana/web3.js";
import { CrowdfundError } from "../src/crowdfunds/crowdfunds.ts";
import { treasuryAuthority as unionTreasuryAuthority, type TreasuryChainDeps } from "./treasury-authority.ts";

/**
 * Who may move a vault's tokens, and how its transactions get signed. Every
 * vault's token-account authority is the union's treasury authority (the
 * SPL multisig of solana/treasury-authority.ts, or a plain key for a
 * treasury recorded that way). Crowdfund code builds instructions from these
 * fields and calls `sign`; it never touches a key itself, so officers'
 * co-signing can be added here alone.
 */
export interface VaultAuthority {
  /** The token-account authority of every vault: the treasury authority. */
  readonly address: PublicKey;
  /** Signers named in token instructions when `address` is a multisig; empty for a plain key. */
  readonly multiSigners: readonly PublicKey[];
  /** Pays fees and rent: the server's key. */
  readonly feePayer: PublicKey;
  /** Adds every signature the authority needs, plus the extra keypairs' (a new account's). */
  sign(tx: Transaction, extra?: readonly Keypair[]): Promise<void>;
}

/**
 * The one way crowdfund code obtains the union's treasury authority.
 * Refuses while the multisig needs officers' signatures besides the
 * server's: vault transactions are not yet offered to officers to co-sign.
 */
export async function treasuryAuthority(deps: TreasuryChainDeps, unionId: string): Promise<VaultAuthority> {
  const a = await unionTreasuryAuthority(deps, unionId);
  if (!a.serverAlone) {
    throw new CrowdfundError("conflict", `the treasury needs ${a.threshold} of ${a.signers.length} signatures; officers' co-signing of vault transactions is not wired yet`);
  }
  const plainKey = a.address.equals(a.serverKey.publicKey);
  return {
    address: a.address,
    multiSigners: plainKey ? [] : [a.serverKey.publicKey],
    feePayer: a.serverKey.publicKey,
    async sign(tx, extra = []) {
      tx.sign(a.serverKey, ...extra);
    },
  };
}
