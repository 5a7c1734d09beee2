import "./quiet-bindings.ts";
import { type Commitment as Web3Commitment, Connection, PublicKey, VersionedTransaction } from "@solana/web3.js";
import bs58 from "bs58";
import { setTimeout as sleep } from "node:timers/promises";
import {
  type Commitment, type Ledger, type LedgerAccount, LedgerError, type LedgerTransaction, type RecentBlockhash, type SignatureInfo,
  type SignatureStatus, type SubmitOptions,
} from "./ledger.ts";

const RANK: Record<Commitment, number> = { processed: 0, confirmed: 1, finalized: 2 };

export interface NetworkLedgerOptions {
  /** How often a pending submission is looked up and its bytes sent again. */
  readonly pollMs?: number;
  readonly rebroadcastMs?: number;
  readonly wsEndpoint?: string;
}

/**
 * A real cluster (devnet, mainnet, a local validator) through a Connection.
 * Reads use an explicit commitment; a submission sends the same signed bytes
 * again until it is seen or its blockhash expires, and never signs anything.
 */
export class NetworkLedger implements Ledger {
  readonly kind = "network" as const;
  readonly connection: Connection;
  readonly #pollMs: number;
  readonly #rebroadcastMs: number;

  constructor(rpcUrl: string, options: NetworkLedgerOptions = {}) {
    this.connection = new Connection(rpcUrl, { commitment: "confirmed", wsEndpoint: options.wsEndpoint, disableRetryOnRateLimit: false });
    this.#pollMs = options.pollMs ?? 500;
    this.#rebroadcastMs = options.rebroadcastMs ?? 2000;
  }

  async latestBlockhash(): Promise<RecentBlockhash> {
    // Finalized: a blockhash from a block that could still be dropped would expire early.
    return this.connection.getLatestBlockhash("finalized");
  }

  async blockHeight(): Promise<number> {
    return this.connection.getBlockHeight("confirmed");
  }

  async submit(raw: Uint8Array, options: SubmitOptions): Promise<string> {
    const tx = VersionedTransaction.deserialize(raw);
    const signature = bs58.encode(tx.signatures[0]!);
    // A retry after a crash: the first submission may already have landed.
    const existing = await this.status(signature);
    if (existing) return this.#settle(signature, existing, options);
    try {
      await this.connection.sendRawTransaction(raw, { skipPreflight: false, preflightCommitment: "confirmed", maxRetries: 0 });
    } catch (error) {
      const seen = await this.status(signature);
      if (seen) return this.#settle(signature, seen, options);
      if (/BlockhashNotFound/.test(String(error)) && await this.blockHeight() > options.lastValidBlockHeight) {
        throw new LedgerError("expired", `transaction ${signature} expired before it landed; sign it anew`);
      }
      throw new LedgerError("failed", `transaction ${signature} was refused: ${error instanceof Error ? error.message : String(error)}`, error);
    }
    let lastSend = Date.now();
    for (;;) {
      const status = await this.status(signature);
      if (status && (status.err !== null || RANK[status.confirmationStatus] >= RANK[options.commitment])) return this.#settle(signature, status, options);
      if (!status && await this.blockHeight() > options.lastValidBlockHeight) {
        // Its blockhash is gone: it can never land now, unless it just did.
        const last = await this.status(signature);
        if (last) return this.#settle(signature, last, options);
        throw new LedgerError("expired", `transaction ${signature} expired before it landed; sign it anew`);
      }
      if (Date.now() - lastSend >= this.#rebroadcastMs) {
        await this.connection.sendRawTransaction(raw, { skipPreflight: true, maxRetries: 0 }).catch(() => {});
        lastSend = Date.now();
      }
      await sleep(this.#pollMs);
    }
  }

  async #settle(signature: string, status: SignatureStatus, options: SubmitOptions): Promise<string> {
    if (status.err !== null) throw new LedgerError("failed", `transaction ${signature} failed: ${JSON.stringify(status.err)}`, { err: status.err, logs: [] });
    let current = status;
    while (RANK[current.confirmationStatus] < RANK[options.commitment]) {
      await sleep(this.#pollMs);
      current = (await this.status(signature)) ?? current;
    }
    return signature;
  }

  async status(signature: string): Promise<SignatureStatus | null> {
    const { value } = await this.connection.getSignatureStatuses([signature], { searchTransactionHistory: true });
    const s = value[0];
    if (!s) return null;
    return { slot: s.slot, err: s.err, confirmationStatus: (s.confirmationStatus ?? (s.confirmations === null ? "finalized" : "processed")) as Commitment };
  }

  async transaction(signature: string, commitment: "confirmed" | "finalized" = "confirmed"): Promise<LedgerTransaction | null> {
    const response = await this.connection.getTransaction(signature, { commitment, maxSupportedTransactionVersion: 0 });
    if (!response) return null;
    // web3.js decodes the message; the signed bytes are rebuilt from it exactly.
    const raw = new VersionedTransaction(response.transaction.message, response.transaction.signatures.map((s) => bs58.decode(s))).serialize();
    return { signature, slot: response.slot, blockTime: response.blockTime ?? null, raw, err: response.meta?.err ?? null };
  }

  /** One JSON-RPC batch request (web3.js getTransactions) per call. */
  async transactions(signatures: readonly string[], commitment: "confirmed" | "finalized" = "confirmed"): Promise<(LedgerTransaction | null)[]> {
    if (signatures.length === 0) return [];
    const responses = await this.connection.getTransactions([...signatures], { commitment, maxSupportedTransactionVersion: 0 });
    return responses.map((response, i) => {
      if (!response) return null;
      const raw = new VersionedTransaction(response.transaction.message, response.transaction.signatures.map((s) => bs58.decode(s))).serialize();
      return { signature: signatures[i]!, slot: response.slot, blockTime: response.blockTime ?? null, raw, err: response.meta?.err ?? null };
    });
  }

  async signaturesFor(address: string, options: { before?: string; until?: string; limit?: number } = {}): Promise<SignatureInfo[]> {
    const list = await this.connection.getSignaturesForAddress(new PublicKey(address), options, "confirmed");
    return list.map((s) => ({ signature: s.signature, slot: s.slot, err: s.err, blockTime: s.blockTime ?? null }));
  }

  async account(address: string, commitment: Web3Commitment = "confirmed"): Promise<LedgerAccount | null> {
    const info = await this.connection.getAccountInfo(new PublicKey(address), commitment);
    return info && { lamports: BigInt(info.lamports), owner: info.owner.toBase58(), data: info.data, executable: info.executable };
  }

  async minimumBalanceForRentExemption(size: number): Promise<bigint> {
    return BigInt(await this.connection.getMinimumBalanceForRentExemption(size));
  }
}
