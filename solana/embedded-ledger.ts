import "./quiet-bindings.ts";
import { randomBytes } from "node:crypto";
import { type Kysely, type Selectable, sql } from "kysely";
import { LiteSVM } from "litesvm";
import { Keypair, NonceAccount, PublicKey, SystemProgram, Transaction, VersionedTransaction } from "@solana/web3.js";
import { TOKEN_2022_PROGRAM_ID, TOKEN_PROGRAM_ID, unpackAccount, unpackMint } from "@solana/spl-token";
import bs58 from "bs58";
import type { DB, LedgerTransactionsTable } from "../src/db/schema.ts";
import { formatUnits } from "./amounts.ts";
import { rpcError } from "./litesvm-errors.ts";
import { X87SafeLiteSVM } from "./litesvm-x87.ts";
import {
  type Ledger, type LedgerAccount, LedgerError, type LedgerTransaction, type RecentBlockhash, type SignatureInfo, type SignatureStatus,
  type SubmitOptions,
} from "./ledger.ts";

/** Solana's slot time and blockhash lifetime, which clients budget for. */
export const SLOT_MS = 400;
const BLOCKHASH_VALID_SLOTS = 150;
/** A new blockhash at most this often; each one is a database write. */
const ROTATE_AFTER_SLOTS = 2;
const LAMPORTS_PER_SIGNATURE = 5000n;
// Kept under 2^53 lamports: litesvm reports lamports as JS numbers.
const FAUCET_FLOOR = 100_000_000_000_000n;
const SVM_AIRDROP_LAMPORTS = 4_000_000_000_000_000n;

const SYSVAR_OWNER = "Sysvar1111111111111111111111111111111111111";

export interface TokenBalance {
  readonly accountIndex: number;
  readonly mint: string;
  readonly owner: string;
  readonly programId: string;
  readonly uiTokenAmount: { amount: string; decimals: number; uiAmount: number | null; uiAmountString: string };
}

/** What the embedded ledger stored about one transaction, in RPC terms. */
export interface StoredTransaction extends LedgerTransaction {
  readonly logs: string[];
  readonly fee: bigint;
  readonly unitsConsumed: bigint;
  readonly preBalances: bigint[];
  readonly postBalances: bigint[];
  readonly preTokenBalances: TokenBalance[];
  readonly postTokenBalances: TokenBalance[];
}

export interface SimulationResult {
  readonly err: unknown;
  readonly logs: string[];
  readonly unitsConsumed: bigint;
}

export interface EmbeddedLedgerOptions {
  /** Wall clock in ms; tests move it to expire blockhashes. */
  readonly now?: () => number;
}

/**
 * A Solana chain in this process: litesvm runs the real SPL Token,
 * Token-2022, Associated Token Account and Memo programs, and every account,
 * processed signature and signed transaction is kept in the database, so the
 * ledger is as strict across restarts as a real chain. litesvm itself
 * forgets its history and restarts its blockhash chain on every start, which
 * would let a transaction signed before a restart run again; this class keeps
 * the index of processed signatures and issues and checks blockhashes itself.
 * One process owns an embedded ledger: sends are serialised in memory.
 */
export class EmbeddedLedger implements Ledger {
  readonly kind = "embedded" as const;
  readonly #db: Kysely<DB>;
  readonly #now: () => number;
  readonly #genesisMs: number;
  readonly #faucet: Keypair;
  #svm: LiteSVM;
  /** litesvm's own blockhash chain: durable nonces derive from it. */
  #nonceRotations: number;
  #blockhash: { blockhash: string; slot: number };
  #lock: Promise<unknown> = Promise.resolve();
  readonly #listeners = new Set<(signature: string, slot: number, err: unknown) => void>();

  private constructor(db: Kysely<DB>, now: () => number, genesisMs: number, faucet: Keypair, nonceRotations: number, svm: LiteSVM, blockhash: { blockhash: string; slot: number }) {
    this.#db = db;
    this.#now = now;
    this.#genesisMs = genesisMs;
    this.#faucet = faucet;
    this.#nonceRotations = nonceRotations;
    this.#svm = svm;
    this.#blockhash = blockhash;
  }

  static async open(db: Kysely<DB>, options: EmbeddedLedgerOptions = {}): Promise<EmbeddedLedger> {
    const now = options.now ?? Date.now;
    const state = new Map((await db.selectFrom("ledger_state").selectAll().execute()).map((r) => [r.key, r.value]));
    const genesisMs = Number(state.get("genesis_ms") ?? now());
    const faucet = state.has("faucet") ? Keypair.fromSecretKey(Buffer.from(state.get("faucet")!, "base64")) : Keypair.generate();
    // One more rotation than before the restart, so no nonce value repeats.
    const nonceRotations = Number(state.get("nonce_rotations") ?? 0) + 1;
    await db.transaction().execute(async (trx) => {
      for (const [key, value] of [["genesis_ms", String(genesisMs)], ["faucet", Buffer.from(faucet.secretKey).toString("base64")], ["nonce_rotations", String(nonceRotations)]] as const) {
        await trx.insertInto("ledger_state").values({ key, value }).onConflict((oc) => oc.column("key").doUpdateSet({ value })).execute();
      }
    });
    const svm = await loadSvm(db, nonceRotations);
    const latest = await db.selectFrom("ledger_blockhashes").select(["blockhash", "slot"]).orderBy("slot", "desc").limit(1).executeTakeFirst();
    const ledger = new EmbeddedLedger(db, now, genesisMs, faucet, nonceRotations, svm, latest ?? { blockhash: "", slot: -1 });
    if (!latest) await ledger.#serial(() => ledger.#rotate());
    ledger.#topUpFaucet();
    return ledger;
  }

  /** Slots follow the wall clock from the ledger's first start, one per 400 ms. */
  slot(): number {
    return Math.max(0, Math.floor((this.#now() - this.#genesisMs) / SLOT_MS));
  }

  async blockHeight(): Promise<number> {
    return this.slot();
  }

  async latestBlockhash(): Promise<RecentBlockhash> {
    return this.#serial(async () => {
      if (this.slot() - this.#blockhash.slot >= ROTATE_AFTER_SLOTS) await this.#rotate();
      return { blockhash: this.#blockhash.blockhash, lastValidBlockHeight: this.#blockhash.slot + BLOCKHASH_VALID_SLOTS };
    });
  }

  async isBlockhashValid(blockhash: string): Promise<boolean> {
    const row = await this.#db.selectFrom("ledger_blockhashes").select("slot").where("blockhash", "=", blockhash).executeTakeFirst();
    return row !== undefined && row.slot + BLOCKHASH_VALID_SLOTS >= this.slot();
  }

  /**
   * Executes signed bytes. A known signature resolves at once (already
   * processed); a transaction that fails its checks or its execution is
   * refused as a preflight would and leaves no trace.
   */
  async submit(raw: Uint8Array, _options?: SubmitOptions): Promise<string> {
    const tx = decodeTransaction(raw);
    const signature = bs58.encode(tx.signatures[0]!);
    if (await this.#known(signature)) return signature;
    const result = await this.#serial(() => this.#execute(tx, raw, { recordFailure: false }));
    if (result.err !== null) throw new LedgerError("failed", `transaction ${signature} failed: ${JSON.stringify(result.err)}`, { err: result.err, logs: result.logs });
    return signature;
  }

  /**
   * sendTransaction with skipPreflight: a transaction that passes its checks
   * but fails in execution is recorded with its error, as a validator would
   * (it pays its fee there; litesvm charges none on failure).
   */
  async submitSkippingPreflight(raw: Uint8Array): Promise<string> {
    const tx = decodeTransaction(raw);
    const signature = bs58.encode(tx.signatures[0]!);
    if (await this.#known(signature)) return signature;
    const result = await this.#serial(() => this.#execute(tx, raw, { recordFailure: true }));
    if (result.err !== null && !result.recorded) {
      throw new LedgerError("failed", `transaction ${signature} was refused: ${JSON.stringify(result.err)}`, { err: result.err, logs: result.logs });
    }
    return signature;
  }

  async simulate(raw: Uint8Array): Promise<SimulationResult> {
    const tx = decodeTransaction(raw);
    const signature = bs58.encode(tx.signatures[0]!);
    if (await this.#known(signature)) return { err: "AlreadyProcessed", logs: [], unitsConsumed: 0n };
    return this.#serial(async () => {
      const refused = await this.#precheck(tx);
      if (refused) return { err: refused, logs: [], unitsConsumed: 0n };
      this.#setClock();
      const out = this.#svm.simulateTransaction(tx);
      if ("err" in out) return { err: rpcError(out), logs: out.meta().logs(), unitsConsumed: out.meta().computeUnitsConsumed() };
      const meta = out.meta();
      return { err: null, logs: meta.logs(), unitsConsumed: meta.computeUnitsConsumed() };
    });
  }

  /** Test SOL from the ledger's faucet, as a recorded transfer (embedded only). */
  async airdrop(address: string, lamports: bigint): Promise<string> {
    return this.#serial(async () => {
      this.#topUpFaucet();
      const tx = new Transaction({ feePayer: this.#faucet.publicKey, recentBlockhash: this.#blockhash.blockhash })
        .add(SystemProgram.transfer({ fromPubkey: this.#faucet.publicKey, toPubkey: new PublicKey(address), lamports }));
      tx.sign(this.#faucet);
      const raw = tx.serialize();
      const versioned = VersionedTransaction.deserialize(raw);
      const result = await this.#execute(versioned, raw, { recordFailure: false, blockhashChecked: true });
      if (result.err !== null) throw new LedgerError("failed", `airdrop failed: ${JSON.stringify(result.err)}`, result.err);
      return bs58.encode(versioned.signatures[0]!);
    });
  }

  async status(signature: string): Promise<SignatureStatus | null> {
    const row = await this.#db.selectFrom("ledger_transactions").select(["slot", "err"]).where("signature", "=", signature).executeTakeFirst();
    // One node, no forks: what executed is final.
    return row ? { slot: row.slot, err: row.err === null ? null : JSON.parse(row.err), confirmationStatus: "finalized" } : null;
  }

  async transaction(signature: string): Promise<StoredTransaction | null> {
    const row = await this.#db.selectFrom("ledger_transactions").selectAll().where("signature", "=", signature).executeTakeFirst();
    return row ? storedTransaction(row) : null;
  }

  async transactions(signatures: readonly string[]): Promise<(StoredTransaction | null)[]> {
    const found = new Map<string, StoredTransaction>();
    for (let i = 0; i < signatures.length; i += 500) {
      const chunk = signatures.slice(i, i + 500);
      for (const row of await this.#db.selectFrom("ledger_transactions").selectAll().where("signature", "in", chunk).execute()) found.set(row.signature, storedTransaction(row));
    }
    return signatures.map((s) => found.get(s) ?? null);
  }

  async signaturesFor(address: string, options: { before?: string; until?: string; limit?: number } = {}): Promise<SignatureInfo[]> {
    const limit = Math.min(Math.max(options.limit ?? 1000, 1), 1000);
    const idOf = async (signature: string | undefined) => signature === undefined
      ? undefined
      : (await this.#db.selectFrom("ledger_transactions").select("id").where("signature", "=", signature).executeTakeFirst())?.id ?? -1;
    const before = await idOf(options.before);
    const until = await idOf(options.until);
    let q = this.#db.selectFrom("ledger_address_signatures as a").innerJoin("ledger_transactions as t", "t.id", "a.tx_id")
      .select(["t.signature", "t.slot", "t.err", "t.block_time"]).where("a.address", "=", address);
    if (before !== undefined) q = q.where("a.tx_id", "<", before);
    if (until !== undefined) q = q.where("a.tx_id", ">", until);
    const rows = await q.orderBy("a.tx_id", "desc").limit(limit).execute();
    return rows.map((r) => ({ signature: r.signature, slot: r.slot, err: r.err === null ? null : JSON.parse(r.err), blockTime: r.block_time }));
  }

  async account(address: string): Promise<LedgerAccount | null> {
    const a = this.#svm.getAccount(new PublicKey(address));
    if (!a || a.lamports === 0) return null;
    return { lamports: BigInt(a.lamports), owner: a.owner.toBase58(), data: a.data, executable: a.executable };
  }

  async minimumBalanceForRentExemption(size: number): Promise<bigint> {
    return this.#svm.minimumBalanceForRentExemption(BigInt(size));
  }

  /** Token accounts of an owner, read from the stored accounts (litesvm has no owner index). */
  async tokenAccountsByOwner(owner: string, filter: { mint?: string; programId?: string }): Promise<{ address: string; account: LedgerAccount }[]> {
    const programs = filter.programId ? [filter.programId] : [TOKEN_PROGRAM_ID.toBase58(), TOKEN_2022_PROGRAM_ID.toBase58()];
    const rows = await this.#db.selectFrom("ledger_accounts").select("address").where("owner", "in", programs).execute();
    const out: { address: string; account: LedgerAccount }[] = [];
    for (const { address } of rows) {
      const key = new PublicKey(address);
      const info = this.#svm.getAccount(key);
      if (!info) continue;
      try {
        const token = unpackAccount(key, { ...info, data: Buffer.from(info.data) }, info.owner);
        if (token.owner.toBase58() !== owner || (filter.mint && token.mint.toBase58() !== filter.mint)) continue;
        out.push({ address, account: { lamports: BigInt(info.lamports), owner: info.owner.toBase58(), data: info.data, executable: false } });
      } catch {
        // A mint or multisig account under a token program, not a token account.
      }
    }
    return out;
  }

  /** Called after each transaction is stored; returns the unsubscribe function. */
  onProcessed(listener: (signature: string, slot: number, err: unknown) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  genesisHash(): string {
    return new PublicKey(Buffer.alloc(32, 7)).toBase58();
  }

  async #known(signature: string): Promise<boolean> {
    return (await this.#db.selectFrom("ledger_transactions").select("id").where("signature", "=", signature).executeTakeFirst()) !== undefined;
  }

  #serial<T>(work: () => Promise<T>): Promise<T> {
    const run = this.#lock.then(work, work);
    this.#lock = run.catch(() => {});
    return run;
  }

  async #rotate(): Promise<void> {
    const slot = this.slot();
    const blockhash = bs58.encode(randomBytes(32));
    await this.#db.transaction().execute(async (trx) => {
      await trx.insertInto("ledger_blockhashes").values({ blockhash, slot, n: 0 }).execute();
      await trx.deleteFrom("ledger_blockhashes").where("slot", "<", slot - 2 * BLOCKHASH_VALID_SLOTS).execute();
    });
    this.#blockhash = { blockhash, slot };
  }

  #setClock(): void {
    const clock = this.#svm.getClock();
    clock.slot = BigInt(this.slot());
    clock.unixTimestamp = BigInt(Math.floor(this.#now() / 1000));
    this.#svm.setClock(clock);
  }

  #topUpFaucet(): void {
    if ((this.#svm.getBalance(this.#faucet.publicKey) ?? 0n) < FAUCET_FLOOR) this.#svm.airdrop(this.#faucet.publicKey, FAUCET_FLOOR * 10n);
    if ((this.#svm.getBalance(this.#faucet.publicKey) ?? 0n) < FAUCET_FLOOR) throw new Error("the embedded ledger's faucet could not be funded");
  }

  /** Refusals a validator makes before executing, as RPC error JSON. */
  async #precheck(tx: VersionedTransaction): Promise<unknown> {
    if (tx.message.addressTableLookups.length > 0) return "UnsupportedVersion";
    const nonce = durableNonceAccount(tx);
    if (nonce) {
      const info = this.#svm.getAccount(nonce);
      if (!info || !info.owner.equals(SystemProgram.programId)) return "BlockhashNotFound";
      try {
        if (NonceAccount.fromAccountData(Buffer.from(info.data)).nonce !== tx.message.recentBlockhash) return "BlockhashNotFound";
      } catch {
        return "BlockhashNotFound";
      }
      return null;
    }
    return (await this.isBlockhashValid(tx.message.recentBlockhash)) ? null : "BlockhashNotFound";
  }

  async #execute(tx: VersionedTransaction, raw: Uint8Array, how: { recordFailure: boolean; blockhashChecked?: boolean }): Promise<{ err: unknown; logs: string[]; recorded: boolean }> {
    const signature = bs58.encode(tx.signatures[0]!);
    if (await this.#known(signature)) return { err: null, logs: [], recorded: true };
    if (!how.blockhashChecked) {
      const refused = await this.#precheck(tx);
      if (refused) return { err: refused, logs: [], recorded: false };
    }
    const keys = tx.message.staticAccountKeys;
    const nonce = durableNonceAccount(tx);
    if (nonce) {
      // AdvanceNonceAccount refuses to store the nonce it already holds: move
      // litesvm's blockhash, from which the next nonce value is derived.
      this.#svm.expireBlockhash();
      this.#nonceRotations += 1;
    }
    this.#setClock();
    const preBalances = keys.map((k) => this.#svm.getBalance(k) ?? 0n);
    const preTokenBalances = this.#tokenBalances(keys);
    const out = this.#svm.sendTransaction(tx);
    const failed = "err" in out;
    const err = failed ? rpcError(out) : null;
    const meta = failed ? out.meta() : out;
    const logs = meta.logs();
    // Only an instruction's failure is a landed transaction; the rest are
    // refusals (bad signature, fee payer without funds) that never land.
    const landed = !failed || (how.recordFailure && typeof err === "object" && err !== null && "InstructionError" in err);
    if (!landed) return { err, logs, recorded: false };
    const slot = this.slot();
    const row = {
      signature,
      slot,
      block_time: Math.floor(this.#now() / 1000),
      raw: Buffer.from(raw).toString("base64"),
      err: err === null ? null : JSON.stringify(err),
      logs: JSON.stringify(logs),
      fee: String(LAMPORTS_PER_SIGNATURE * BigInt(tx.signatures.length)),
      units: String(meta.computeUnitsConsumed()),
      pre_balances: JSON.stringify(preBalances.map(String)),
      post_balances: JSON.stringify(keys.map((k) => String(this.#svm.getBalance(k) ?? 0n))),
      pre_token_balances: JSON.stringify(preTokenBalances),
      post_token_balances: JSON.stringify(this.#tokenBalances(keys)),
    };
    try {
      await this.#db.transaction().execute(async (trx) => {
        const { id } = await trx.insertInto("ledger_transactions").values(row).returning("id").executeTakeFirstOrThrow();
        const addresses = [...new Set(keys.map((k) => k.toBase58()))];
        await trx.insertInto("ledger_address_signatures").values(addresses.map((address) => ({ address, tx_id: id }))).execute();
        for (const key of keys) await persistAccount(trx, this.#svm, key, slot);
        if (nonce) {
          await trx.updateTable("ledger_state").set({ value: String(this.#nonceRotations) }).where("key", "=", "nonce_rotations").execute();
        }
      });
    } catch (error) {
      // The chain in memory ran ahead of the database: go back to what was stored.
      this.#svm = await loadSvm(this.#db, Number((await this.#db.selectFrom("ledger_state").select("value").where("key", "=", "nonce_rotations").executeTakeFirst())?.value ?? 1));
      this.#topUpFaucet();
      throw error;
    }
    for (const listener of this.#listeners) listener(signature, slot, err);
    return { err, logs, recorded: true };
  }

  #tokenBalances(keys: PublicKey[]): TokenBalance[] {
    const out: TokenBalance[] = [];
    keys.forEach((key, accountIndex) => {
      const info = this.#svm.getAccount(key);
      if (!info || !(info.owner.equals(TOKEN_PROGRAM_ID) || info.owner.equals(TOKEN_2022_PROGRAM_ID))) return;
      try {
        const account = unpackAccount(key, { ...info, data: Buffer.from(info.data) }, info.owner);
        const mintInfo = this.#svm.getAccount(account.mint);
        const decimals = mintInfo ? unpackMint(account.mint, { ...mintInfo, data: Buffer.from(mintInfo.data) }, info.owner).decimals : 0;
        const uiAmountString = formatUnits(account.amount, decimals);
        out.push({
          accountIndex,
          mint: account.mint.toBase58(),
          owner: account.owner.toBase58(),
          programId: info.owner.toBase58(),
          uiTokenAmount: { amount: account.amount.toString(), decimals, uiAmount: Number(uiAmountString), uiAmountString },
        });
      } catch {
        // Not a token account (a mint, a multisig).
      }
    });
    return out;
  }
}

export function decodeTransaction(raw: Uint8Array): VersionedTransaction {
  try {
    const tx = VersionedTransaction.deserialize(raw);
    if (tx.signatures.length === 0) throw new Error("no signatures");
    return tx;
  } catch (error) {
    throw new LedgerError("invalid", `not a signed Solana transaction: ${error instanceof Error ? error.message : String(error)}`);
  }
}

/** The nonce account when the transaction starts with AdvanceNonceAccount. */
function durableNonceAccount(tx: VersionedTransaction): PublicKey | null {
  const first = tx.message.compiledInstructions[0];
  if (!first) return null;
  const program = tx.message.staticAccountKeys[first.programIdIndex];
  if (!program?.equals(SystemProgram.programId) || first.data.length < 4) return null;
  if (Buffer.from(first.data).readUInt32LE(0) !== 4) return null;
  const index = first.accountKeyIndexes[0];
  return index === undefined ? null : tx.message.staticAccountKeys[index] ?? null;
}

async function loadSvm(db: Kysely<DB>, nonceRotations: number): Promise<LiteSVM> {
  // Blockhashes are issued and checked by EmbeddedLedger (litesvm accepts
  // only its latest one and forgets them on restart).
  const svm = new X87SafeLiteSVM().withBlockhashCheck(false).withLamports(SVM_AIRDROP_LAMPORTS);
  for (let i = 0; i < nonceRotations; i++) svm.expireBlockhash();
  const rows = await db.selectFrom("ledger_accounts").selectAll().execute();
  for (const r of rows) {
    svm.setAccount(new PublicKey(r.address), {
      lamports: Number(r.lamports),
      owner: new PublicKey(r.owner),
      executable: r.executable === 1,
      rentEpoch: Number(r.rent_epoch),
      data: Buffer.from(r.data, "base64"),
    });
  }
  return svm;
}

async function persistAccount(trx: Kysely<DB>, svm: LiteSVM, key: PublicKey, slot: number): Promise<void> {
  const address = key.toBase58();
  const info = svm.getAccount(key);
  // Programs and sysvars come with litesvm; only state accounts are kept.
  if (info && (info.executable || info.owner.toBase58() === SYSVAR_OWNER)) return;
  if (!info || info.lamports === 0) {
    await trx.deleteFrom("ledger_accounts").where("address", "=", address).execute();
    return;
  }
  const row = {
    lamports: String(info.lamports),
    owner: info.owner.toBase58(),
    executable: 0,
    rent_epoch: String(info.rentEpoch ?? 0),
    data: Buffer.from(info.data).toString("base64"),
    updated_slot: slot,
  };
  await trx.insertInto("ledger_accounts").values({ address, ...row })
    .onConflict((oc) => oc.column("address").doUpdateSet(row)).execute();
}

/** Used by tests and the CLI to count what the ledger holds. */
export async function countLedgerTransactions(db: Kysely<DB>): Promise<number> {
  const { n } = await db.selectFrom("ledger_transactions").select(sql<number>`count(*)`.as("n")).executeTakeFirstOrThrow();
  return Number(n);
}

function storedTransaction(row: Selectable<LedgerTransactionsTable>): StoredTransaction {
  return {
    signature: row.signature,
    slot: row.slot,
    blockTime: row.block_time,
    raw: Buffer.from(row.raw, "base64"),
    err: row.err === null ? null : JSON.parse(row.err),
    logs: JSON.parse(row.logs),
    fee: BigInt(row.fee),
    unitsConsumed: BigInt(row.units),
    preBalances: (JSON.parse(row.pre_balances) as string[]).map(BigInt),
    postBalances: (JSON.parse(row.post_balances) as string[]).map(BigInt),
    preTokenBalances: JSON.parse(row.pre_token_balances),
    postTokenBalances: JSON.parse(row.post_token_balances),
  };
}
