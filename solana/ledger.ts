/**
 * The one way Muster talks to a Solana chain. Two implementations: the
 * embedded ledger (litesvm in-process, state in the database) and the network
 * ledger (a Connection to SOLANA_RPC_URL). Addresses and signatures are
 * base58 strings; amounts are bigint base units.
 */

export type Commitment = "processed" | "confirmed" | "finalized";

export interface RecentBlockhash {
  readonly blockhash: string;
  /** The transaction is refused once the block height passes this. */
  readonly lastValidBlockHeight: number;
}

export interface SignatureStatus {
  readonly slot: number;
  /** The chain's TransactionError as JSON, null when the transaction succeeded. */
  readonly err: unknown;
  readonly confirmationStatus: Commitment;
}

export interface LedgerTransaction {
  readonly signature: string;
  readonly slot: number;
  /** Unix seconds. */
  readonly blockTime: number | null;
  /** The signed transaction as submitted; decode instructions from it, never from logs. */
  readonly raw: Uint8Array;
  readonly err: unknown;
}

export interface SignatureInfo {
  readonly signature: string;
  readonly slot: number;
  readonly err: unknown;
  readonly blockTime: number | null;
}

export interface LedgerAccount {
  readonly lamports: bigint;
  readonly owner: string;
  readonly data: Uint8Array;
  readonly executable: boolean;
}

export interface SubmitOptions {
  /** From the blockhash the transaction was signed with; past it the submit gives up. */
  readonly lastValidBlockHeight: number;
  /** How settled the transaction must be before submit resolves. */
  readonly commitment: Commitment;
}

export interface Ledger {
  readonly kind: "embedded" | "network";
  latestBlockhash(): Promise<RecentBlockhash>;
  /**
   * Submits signed bytes and resolves with the signature once the transaction
   * is seen at the commitment asked. Submitting the same bytes again (a retry
   * after a crash) finds the first submission by its signature and never
   * executes twice. Rejects with LedgerError: `failed` (executed with an
   * error, or refused before execution) or `expired` (the blockhash passed
   * without the transaction landing: safe to sign anew).
   */
  submit(raw: Uint8Array, options: SubmitOptions): Promise<string>;
  status(signature: string): Promise<SignatureStatus | null>;
  transaction(signature: string): Promise<LedgerTransaction | null>;
  /** Many at once, in the order asked (null for one not found): one read, not one per signature. */
  transactions(signatures: readonly string[]): Promise<(LedgerTransaction | null)[]>;
  /** Newest first, like getSignaturesForAddress. */
  signaturesFor(address: string, options?: { before?: string; until?: string; limit?: number }): Promise<SignatureInfo[]>;
  account(address: string): Promise<LedgerAccount | null>;
  minimumBalanceForRentExemption(size: number): Promise<bigint>;
  blockHeight(): Promise<number>;
}

export class LedgerError extends Error {
  override name = "LedgerError";
  readonly code: "failed" | "expired" | "invalid";
  readonly detail: unknown;
  constructor(code: "failed" | "expired" | "invalid", message: string, detail?: unknown) {
    super(message);
    this.code = code;
    this.detail = detail;
  }
}
