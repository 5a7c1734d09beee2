import {
  Connection, Keypair, LAMPORTS_PER_SOL, PublicKey, sendAndConfirmTransaction, SystemProgram, Transaction, type TransactionInstruction,
} from "@solana/web3.js";
import {
  createAssociatedTokenAccountIdempotentInstruction, createInitializeMint2Instruction, createMintToInstruction, getAssociatedTokenAddressSync, MINT_SIZE,
  TOKEN_PROGRAM_ID,
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

/** What a test treasury needs of a ledger: reached through web3.js, or an embedded ledger called directly. */
interface Chain {
  airdrop(to: PublicKey, lamports: bigint): Promise<void>;
  send(signers: Keypair[], ...ixs: TransactionInstruction[]): Promise<void>;
  rentExempt(size: number): Promise<number>;
}

function overConnection(connection: Connection): Chain {
  return {
    airdrop: async (to, lamports) => {
      await connection.requestAirdrop(to, Number(lamports));
    },
    send: async (signers, ...ixs) => {
      await sendAndConfirmTransaction(connection, new Transaction().add(...ixs), signers, { commitment: "confirmed" });
    },
    rentExempt: (size) => connection.getMinimumBalanceForRentExemption(size),
  };
}

function onLedger(ledger: EmbeddedLedger): Chain {
  return {
    airdrop: async (to, lamports) => {
      await ledger.airdrop(to.toBase58(), lamports);
    },
    send: async (signers, ...ixs) => {
      const { blockhash, lastValidBlockHeight } = await ledger.latestBlockhash();
      const tx = new Transaction({ feePayer: signers[0]!.publicKey, blockhash, lastValidBlockHeight }).add(...ixs);
      tx.sign(...signers);
      await ledger.submit(tx.serialize(), { lastValidBlockHeight, commitment: "confirmed" });
    },
    rentExempt: async (size) => Number(await ledger.minimumBalanceForRentExemption(size)),
  };
}

const SOL = BigInt(LAMPORTS_PER_SOL);

/** Wallets with SOL and dues tokens, minted by `mintAuthority`; `faucet` pays the fees. */
function walletMaker(chain: Chain, mint: PublicKey, faucet: Keypair, mintAuthority: Keypair): TestTreasury["wallet"] {
  return async (tokens) => {
    const w = Keypair.generate();
    await chain.airdrop(w.publicKey, SOL);
    const ata = getAssociatedTokenAddressSync(mint, w.publicKey);
    const minting = tokens > 0n ? [createMintToInstruction(mint, ata, mintAuthority.publicKey, tokens)] : [];
    const signers = tokens > 0n && mintAuthority !== faucet ? [faucet, mintAuthority] : [faucet];
    await chain.send(signers, createAssociatedTokenAccountIdempotentInstruction(faucet.publicKey, ata, w.publicKey, mint), ...minting);
    return w;
  };
}

async function treasuryOn(chain: Chain, db: Kysely<DB>, unionId: string): Promise<TestTreasury> {
  const faucet = Keypair.generate();
  await chain.airdrop(faucet.publicKey, 100n * SOL);
  const key = await treasuryKey(db, unionId);
  await chain.airdrop(key.publicKey, 10n * SOL);
  const mintKey = Keypair.generate();
  const mint = mintKey.publicKey;
  await chain.send([faucet, mintKey],
    SystemProgram.createAccount({ fromPubkey: faucet.publicKey, newAccountPubkey: mint, space: MINT_SIZE, lamports: await chain.rentExempt(MINT_SIZE), programId: TOKEN_PROGRAM_ID }),
    createInitializeMint2Instruction(mint, 6, faucet.publicKey, null));
  const account = getAssociatedTokenAddressSync(mint, key.publicKey);
  await chain.send([faucet], createAssociatedTokenAccountIdempotentInstruction(faucet.publicKey, account, key.publicKey, mint));
  // A server's ledger lane may already have made the union's own treasury (it is queued with the union): this one replaces it.
  await db.deleteFrom("treasuries").where("union_id", "=", unionId).execute();
  const treasury = await saveTreasury(db, {
    unionId, mint: mint.toBase58(), tokenProgram: TOKEN_PROGRAM_ID.toBase58(), decimals: 6,
    authority: key.publicKey.toBase58(), tokenAccount: account.toBase58(), threshold: 1, signers: [key.publicKey.toBase58()],
  });
  return { treasury, mint, faucet, wallet: walletMaker(chain, mint, faucet, faucet) };
}

/**
 * A union's treasury on a ledger reached through `connection`: a dues mint
 * (6 decimals) and the treasury key's token account, recorded as the
 * union's treasury. The treasury key is the union's own (badge-sync.ts).
 */
export function setUpTreasury(connection: Connection, db: Kysely<DB>, unionId: string): Promise<TestTreasury> {
  return treasuryOn(overConnection(connection), db, unionId);
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
export function setUpTreasuryOn(ledger: EmbeddedLedger, db: Kysely<DB>, unionId: string): Promise<TestTreasury> {
  return treasuryOn(onLedger(ledger), db, unionId);
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
  return { treasury, mint, faucet, wallet: walletMaker(overConnection(connection), mint, faucet, key) };
}
