import { Connection, Keypair, LAMPORTS_PER_SOL, PublicKey } from "@solana/web3.js";
import { createAssociatedTokenAccountIdempotent, createMint, mintTo, TOKEN_PROGRAM_ID } from "@solana/spl-token";
import type { Kysely } from "kysely";
import type { DB } from "../../src/db/schema.ts";
import { saveTreasury, type Treasury } from "../../src/treasury/treasury.ts";
import { treasuryKey } from "../../solana/badge-sync.ts";

export interface TestTreasury {
  readonly treasury: Treasury;
  readonly mint: PublicKey;
  /** Pays fees and holds the dues mint's authority, to hand out test tokens. */
  readonly faucet: Keypair;
  /** A wallet with SOL and `tokens` dues tokens. */
  wallet(tokens: bigint): Promise<Keypair>;
}

/**
 * A union's treasury on a ledger reached through `connection`: a dues mint
 * (6 decimals) and the treasury key's token account, recorded as the
 * union's treasury. The treasury key is the union's own (badge-sync.ts).
 */
export async function setUpTreasury(connection: Connection, db: Kysely<DB>, unionId: string): Promise<TestTreasury> {
  const faucet = Keypair.generate();
  await connection.requestAirdrop(faucet.publicKey, 100 * LAMPORTS_PER_SOL);
  const key = await treasuryKey(db, unionId);
  await connection.requestAirdrop(key.publicKey, 10 * LAMPORTS_PER_SOL);
  const mint = await createMint(connection, faucet, faucet.publicKey, null, 6);
  const account = await createAssociatedTokenAccountIdempotent(connection, faucet, mint, key.publicKey);
  const treasury = await saveTreasury(db, {
    unionId, mint: mint.toBase58(), tokenProgram: TOKEN_PROGRAM_ID.toBase58(), decimals: 6,
    authority: key.publicKey.toBase58(), tokenAccount: account.toBase58(), threshold: 1, signers: [key.publicKey.toBase58()],
  });
  return {
    treasury, mint, faucet,
    async wallet(tokens) {
      const w = Keypair.generate();
      await connection.requestAirdrop(w.publicKey, LAMPORTS_PER_SOL);
      const ata = await createAssociatedTokenAccountIdempotent(connection, faucet, mint, w.publicKey);
      if (tokens > 0n) await mintTo(connection, faucet, mint, ata, faucet, tokens);
      return w;
    },
  };
}

/** A web3.js Connection to a server's /solana/rpc, subscriptions on the same path; close() stops its socket. */
export function rpcConnection(origin: URL): { connection: Connection; close(): void } {
  const url = new URL("/solana/rpc", origin).href;
  const connection = new Connection(url, { commitment: "confirmed", wsEndpoint: url.replace(/^http/, "ws"), disableRetryOnRateLimit: true });
  return {
    connection,
    close() {
      // web3.js reconnects its subscription socket forever and offers no close().
      const socket = (connection as unknown as { _rpcWebSocket: { setAutoReconnect(on: boolean): void; close(): void } })._rpcWebSocket;
      socket.setAutoReconnect(false);
      socket.close();
    },
  };
}
