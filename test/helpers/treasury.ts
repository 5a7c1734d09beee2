import { Connection, Keypair, LAMPORTS_PER_SOL, PublicKey, SystemProgram, Transaction, type TransactionInstruction } from "@solana/web3.js";
import {
  createAssociatedTokenAccountIdempotent, createAssociatedTokenAccountIdempotentInstruction, createInitializeMint2Instruction, createMint,
  createMintToInstruction, getAssociatedTokenAddressSync, MINT_SIZE, mintTo, TOKEN_PROGRAM_ID,
} from "@solana/spl-token";
import type { EmbeddedLedger } from "../../solana/embedded-ledger.ts";
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
  // A server's ledger lane may already have made the union's own treasury (it is queued with the union): this one replaces it.
  await db.deleteFrom("treasuries").where("union_id", "=", unionId).execute();
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

/**
 * setUpTreasury straight on an embedded ledger, without a Connection: for
 * the benchmark, where web3.js's confirmation polls would outlive the run.
 */
export async function setUpTreasuryOn(ledger: EmbeddedLedger, db: Kysely<DB>, unionId: string): Promise<TestTreasury> {
  const faucet = Keypair.generate();
  await ledger.airdrop(faucet.publicKey.toBase58(), 100n * BigInt(LAMPORTS_PER_SOL));
  const key = await treasuryKey(db, unionId);
  await ledger.airdrop(key.publicKey.toBase58(), 10n * BigInt(LAMPORTS_PER_SOL));
  const send = async (signers: Keypair[], ...ixs: TransactionInstruction[]) => {
    const { blockhash, lastValidBlockHeight } = await ledger.latestBlockhash();
    const tx = new Transaction({ feePayer: signers[0]!.publicKey, blockhash, lastValidBlockHeight }).add(...ixs);
    tx.sign(...signers);
    await ledger.submit(tx.serialize(), { lastValidBlockHeight, commitment: "confirmed" });
  };
  const mintKey = Keypair.generate();
  const mint = mintKey.publicKey;
  await send([faucet, mintKey],
    SystemProgram.createAccount({ fromPubkey: faucet.publicKey, newAccountPubkey: mint, space: MINT_SIZE, lamports: Number(await ledger.minimumBalanceForRentExemption(MINT_SIZE)), programId: TOKEN_PROGRAM_ID }),
    createInitializeMint2Instruction(mint, 6, faucet.publicKey, null));
  const account = getAssociatedTokenAddressSync(mint, key.publicKey);
  await send([faucet], createAssociatedTokenAccountIdempotentInstruction(faucet.publicKey, account, key.publicKey, mint));
  // A server's ledger lane may already have made the union's own treasury (it is queued with the union): this one replaces it.
  await db.deleteFrom("treasuries").where("union_id", "=", unionId).execute();
  const treasury = await saveTreasury(db, {
    unionId, mint: mint.toBase58(), tokenProgram: TOKEN_PROGRAM_ID.toBase58(), decimals: 6,
    authority: key.publicKey.toBase58(), tokenAccount: account.toBase58(), threshold: 1, signers: [key.publicKey.toBase58()],
  });
  return {
    treasury, mint, faucet,
    async wallet(tokens) {
      const w = Keypair.generate();
      await ledger.airdrop(w.publicKey.toBase58(), BigInt(LAMPORTS_PER_SOL));
      const ata = getAssociatedTokenAddressSync(mint, w.publicKey);
      await send([faucet], createAssociatedTokenAccountIdempotentInstruction(faucet.publicKey, ata, w.publicKey, mint), ...(tokens > 0n ? [createMintToInstruction(mint, ata, faucet.publicKey, tokens)] : []));
      return w;
    },
  };
}

/**
 * The union's real treasury as the server creates it (solana/treasury-authority.ts: a test dues mint whose
 * authority is the server's key, an SPL multisig authority, its token account), reached through `connection`.
 */
export async function realTreasury(connection: Connection, ledger: EmbeddedLedger, db: Kysely<DB>, unionId: string): Promise<TestTreasury> {
  const { ensureTreasury } = await import("../../solana/treasury-authority.ts");
  const { faucetFunding } = await import("../../solana/badge-sync.ts");
  const treasury = await ensureTreasury({ db, ledger, fund: faucetFunding(ledger), testMint: true }, unionId);
  const key = await treasuryKey(db, unionId);
  const faucet = Keypair.generate();
  await connection.requestAirdrop(faucet.publicKey, 10 * LAMPORTS_PER_SOL);
  const mint = new PublicKey(treasury.mint);
  return {
    treasury, mint, faucet,
    async wallet(tokens) {
      const w = Keypair.generate();
      await connection.requestAirdrop(w.publicKey, LAMPORTS_PER_SOL);
      const ata = await createAssociatedTokenAccountIdempotent(connection, faucet, mint, w.publicKey);
      if (tokens > 0n) await mintTo(connection, faucet, mint, ata, key, tokens);
      return w;
    },
  };
}
