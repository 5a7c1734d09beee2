import "./quiet-bindings.ts";
import { Hono } from "hono";
import { Message, PublicKey, VersionedTransaction } from "@solana/web3.js";
import { unpackAccount, unpackMint } from "@solana/spl-token";
import bs58 from "bs58";
import { formatUnits } from "./amounts.ts";
import { decodeTransaction, type EmbeddedLedger, type StoredTransaction } from "./embedded-ledger.ts";
import { LedgerError, type LedgerAccount } from "./ledger.ts";

/**
 * The standard Solana JSON-RPC methods that @solana/web3.js Connection and
 * wallets use, served from the embedded ledger, so any Solana client (and
 * the network ledger, in tests) can talk to it. No WebSocket subscriptions:
 * clients poll getSignatureStatuses.
 */
export function solanaRpcApp(ledger: EmbeddedLedger, options: { maxBodyBytes?: number } = {}): Hono {
  const app = new Hono();
  const maxBodyBytes = options.maxBodyBytes ?? 1024 * 1024;
  app.post("/", async (c) => {
    const text = await c.req.text();
    if (text.length > maxBodyBytes) return c.json(failure(null, -32600, "request too large"), 413);
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      return c.json(failure(null, -32700, "Parse error"));
    }
    if (Array.isArray(body)) {
      if (body.length === 0 || body.length > 100) return c.json(failure(null, -32600, "a batch holds 1 to 100 requests"));
      const out = [];
      for (const one of body) out.push(await handle(ledger, one));
      return c.json(out);
    }
    return c.json(await handle(ledger, body));
  });
  return app;
}

interface RpcRequest {
  jsonrpc?: string;
  id?: unknown;
  method?: unknown;
  params?: unknown;
}

class RpcError extends Error {
  readonly code: number;
  readonly data: unknown;
  constructor(code: number, message: string, data?: unknown) {
    super(message);
    this.code = code;
    this.data = data;
  }
}

function failure(id: unknown, code: number, message: string, data?: unknown) {
  return { jsonrpc: "2.0", id: id ?? null, error: data === undefined ? { code, message } : { code, message, data } };
}

async function handle(ledger: EmbeddedLedger, request: unknown) {
  const r = (typeof request === "object" && request !== null ? request : {}) as RpcRequest;
  const id = r.id ?? null;
  if (typeof r.method !== "string") return failure(id, -32600, "Invalid request");
  const method = METHODS[r.method];
  if (!method) return failure(id, -32601, "Method not found");
  const params = Array.isArray(r.params) ? r.params : r.params === undefined ? [] : null;
  if (params === null) return failure(id, -32602, "params must be an array");
  try {
    return { jsonrpc: "2.0", id, result: await method(ledger, params) };
  } catch (error) {
    if (error instanceof RpcError) return failure(id, error.code, error.message, error.data);
    if (error instanceof LedgerError && error.code === "invalid") return failure(id, -32602, error.message);
    if (error instanceof Error && /Invalid public key|Non-base58|invalid/i.test(error.message)) return failure(id, -32602, `Invalid param: ${error.message}`);
    throw error;
  }
}

type Method = (ledger: EmbeddedLedger, params: unknown[]) => Promise<unknown>;

const context = (ledger: EmbeddedLedger) => ({ apiVersion: "2.2.0", slot: ledger.slot() });

function address(value: unknown): string {
  if (typeof value !== "string") throw new RpcError(-32602, "Invalid param: expected a base58 address");
  try {
    return new PublicKey(value).toBase58();
  } catch {
    throw new RpcError(-32602, `Invalid param: WrongSize or not base58: ${value.slice(0, 64)}`);
  }
}

function config(value: unknown): Record<string, unknown> {
  return typeof value === "object" && value !== null ? value as Record<string, unknown> : {};
}

function transactionBytes(params: unknown[]): Uint8Array {
  const [encoded, cfg] = params;
  if (typeof encoded !== "string") throw new RpcError(-32602, "Invalid param: expected an encoded transaction");
  const encoding = config(cfg).encoding ?? "base58";
  if (encoding === "base64") return Buffer.from(encoded, "base64");
  if (encoding === "base58") return bs58.decode(encoded);
  throw new RpcError(-32602, `Invalid param: unsupported encoding ${String(encoding)}`);
}

function accountJson(account: LedgerAccount | null, encoding: unknown) {
  if (!account) return null;
  const data = encoding === "base58" ? [bs58.encode(account.data), "base58"] : [Buffer.from(account.data).toString("base64"), "base64"];
  return {
    lamports: Number(account.lamports),
    owner: account.owner,
    data,
    executable: account.executable,
    rentEpoch: Number.MAX_SAFE_INTEGER,
    space: account.data.length,
  };
}

function simulationFailure(err: unknown, logs: string[], unitsConsumed: bigint): RpcError {
  const detail = typeof err === "object" && err !== null && "InstructionError" in err
    ? `Error processing Instruction ${(err as { InstructionError: [number, unknown] }).InstructionError[0]}: ${JSON.stringify((err as { InstructionError: [number, unknown] }).InstructionError[1])}`
    : err === "AlreadyProcessed" ? "This transaction has already been processed" : String(typeof err === "string" ? err : JSON.stringify(err));
  return new RpcError(-32002, `Transaction simulation failed: ${detail}`, { err, logs, accounts: null, unitsConsumed: Number(unitsConsumed), returnData: null });
}

function transactionJson(stored: StoredTransaction, cfg: Record<string, unknown>) {
  const tx = VersionedTransaction.deserialize(stored.raw);
  const version = tx.version === "legacy" ? "legacy" : tx.version;
  if (version !== "legacy" && cfg.maxSupportedTransactionVersion === undefined) {
    throw new RpcError(-32015, "Transaction version (0) is not supported by the requesting client. Please try the request again with the following configuration parameter: \"maxSupportedTransactionVersion\": 0");
  }
  const encoding = cfg.encoding ?? "json";
  let transaction: unknown;
  if (encoding === "base64") transaction = [Buffer.from(stored.raw).toString("base64"), "base64"];
  else if (encoding === "base58") transaction = [bs58.encode(stored.raw), "base58"];
  else {
    const m = tx.message;
    transaction = {
      signatures: tx.signatures.map((s) => bs58.encode(s)),
      message: {
        header: m.header,
        accountKeys: m.staticAccountKeys.map((k) => k.toBase58()),
        recentBlockhash: m.recentBlockhash,
        instructions: m.compiledInstructions.map((ix) => ({
          programIdIndex: ix.programIdIndex,
          accounts: ix.accountKeyIndexes,
          data: bs58.encode(ix.data),
          stackHeight: null,
        })),
        ...(version === "legacy" ? {} : { addressTableLookups: [] }),
      },
    };
  }
  return {
    slot: stored.slot,
    blockTime: stored.blockTime,
    version,
    transaction,
    meta: {
      err: stored.err,
      status: stored.err === null ? { Ok: null } : { Err: stored.err },
      fee: Number(stored.fee),
      preBalances: stored.preBalances.map(Number),
      postBalances: stored.postBalances.map(Number),
      innerInstructions: [],
      logMessages: stored.logs,
      preTokenBalances: stored.preTokenBalances,
      postTokenBalances: stored.postTokenBalances,
      rewards: [],
      loadedAddresses: { writable: [], readonly: [] },
      computeUnitsConsumed: Number(stored.unitsConsumed),
    },
  };
}

const METHODS: Record<string, Method> = {
  // Not a Solana method: tells Muster's CLI it talks to an embedded ledger (test money may be made here).
  async muster_ledgerInfo() {
    return { kind: "embedded" };
  },
  async getHealth() {
    return "ok";
  },
  async getVersion() {
    return { "solana-core": "2.2.0", "feature-set": 0 };
  },
  async getGenesisHash(ledger) {
    return ledger.genesisHash();
  },
  async getSlot(ledger) {
    return ledger.slot();
  },
  async getBlockHeight(ledger) {
    return ledger.blockHeight();
  },
  async getEpochInfo(ledger) {
    const slot = ledger.slot();
    return { absoluteSlot: slot, blockHeight: slot, epoch: 0, slotIndex: slot, slotsInEpoch: 432000, transactionCount: null };
  },
  async getLatestBlockhash(ledger) {
    return { context: context(ledger), value: await ledger.latestBlockhash() };
  },
  async isBlockhashValid(ledger, [blockhash]) {
    if (typeof blockhash !== "string") throw new RpcError(-32602, "Invalid param: expected a blockhash");
    return { context: context(ledger), value: await ledger.isBlockhashValid(blockhash) };
  },
  async getFeeForMessage(ledger, [encoded]) {
    if (typeof encoded !== "string") throw new RpcError(-32602, "Invalid param: expected a base64 message");
    const bytes = Buffer.from(encoded, "base64");
    // The first byte of a v0 message has its high bit set; legacy messages start with the signer count.
    const signers = bytes[0]! & 0x80 ? bytes[1]! : Message.from(bytes).header.numRequiredSignatures;
    return { context: context(ledger), value: 5000 * signers };
  },
  async getRecentPrioritizationFees() {
    return [];
  },
  async getMinimumBalanceForRentExemption(ledger, [size]) {
    if (typeof size !== "number" || !Number.isInteger(size) || size < 0 || size > 10 * 1024 * 1024) throw new RpcError(-32602, "Invalid param: size");
    return Number(await ledger.minimumBalanceForRentExemption(size));
  },
  async getBalance(ledger, [addr]) {
    const account = await ledger.account(address(addr));
    return { context: context(ledger), value: Number(account?.lamports ?? 0n) };
  },
  async getAccountInfo(ledger, [addr, cfg]) {
    return { context: context(ledger), value: accountJson(await ledger.account(address(addr)), config(cfg).encoding) };
  },
  async getMultipleAccounts(ledger, [addrs, cfg]) {
    if (!Array.isArray(addrs) || addrs.length > 100) throw new RpcError(-32602, "Invalid param: expected up to 100 addresses");
    const value = [];
    for (const a of addrs) value.push(accountJson(await ledger.account(address(a)), config(cfg).encoding));
    return { context: context(ledger), value };
  },
  async getTokenAccountBalance(ledger, [addr]) {
    const key = new PublicKey(address(addr));
    const account = await ledger.account(key.toBase58());
    if (!account) throw new RpcError(-32602, "Invalid param: could not find account");
    try {
      const programId = new PublicKey(account.owner);
      const token = unpackAccount(key, { ...account, lamports: Number(account.lamports), owner: programId, data: Buffer.from(account.data) }, programId);
      const mint = await ledger.account(token.mint.toBase58());
      const decimals = mint ? unpackMint(token.mint, { ...mint, lamports: Number(mint.lamports), owner: programId, data: Buffer.from(mint.data) }, programId).decimals : 0;
      const uiAmountString = formatUnits(token.amount, decimals);
      return { context: context(ledger), value: { amount: token.amount.toString(), decimals, uiAmount: Number(uiAmountString), uiAmountString } };
    } catch {
      throw new RpcError(-32602, "Invalid param: not a Token account");
    }
  },
  async getTokenAccountsByOwner(ledger, [owner, filter, cfg]) {
    const f = config(filter);
    const mint = typeof f.mint === "string" ? address(f.mint) : undefined;
    const programId = typeof f.programId === "string" ? address(f.programId) : undefined;
    if (!mint && !programId) throw new RpcError(-32602, "Invalid param: a mint or programId filter is required");
    const accounts = await ledger.tokenAccountsByOwner(address(owner), { mint, programId });
    return { context: context(ledger), value: accounts.map((a) => ({ pubkey: a.address, account: accountJson(a.account, config(cfg).encoding) })) };
  },
  async requestAirdrop(ledger, [addr, lamports]) {
    if (typeof lamports !== "number" || !Number.isSafeInteger(lamports) || lamports <= 0 || lamports > 1_000_000 * 1e9) {
      throw new RpcError(-32602, "Invalid param: lamports must be a positive integer up to 10^15");
    }
    return ledger.airdrop(address(addr), BigInt(lamports));
  },
  async sendTransaction(ledger, params) {
    const raw = transactionBytes(params);
    const cfg = config(params[1]);
    if (cfg.skipPreflight === true) {
      try {
        return await ledger.submitSkippingPreflight(raw);
      } catch (error) {
        if (error instanceof LedgerError && error.code === "failed") {
          const d = error.detail as { err: unknown; logs: string[] };
          throw new RpcError(-32002, `Transaction failed: ${JSON.stringify(d.err)}`, { err: d.err, logs: d.logs, accounts: null, unitsConsumed: 0, returnData: null });
        }
        throw error;
      }
    }
    const simulated = await ledger.simulate(raw);
    if (simulated.err !== null) throw simulationFailure(simulated.err, simulated.logs, simulated.unitsConsumed);
    try {
      return await ledger.submit(raw);
    } catch (error) {
      if (error instanceof LedgerError && error.code === "failed") {
        const d = error.detail as { err: unknown; logs: string[] };
        throw simulationFailure(d.err, d.logs, 0n);
      }
      throw error;
    }
  },
  async simulateTransaction(ledger, params) {
    const raw = transactionBytes(params);
    decodeTransaction(raw);
    const result = await ledger.simulate(raw);
    return {
      context: context(ledger),
      value: { err: result.err, logs: result.logs, accounts: null, unitsConsumed: Number(result.unitsConsumed), returnData: null },
    };
  },
  async getSignatureStatuses(ledger, [signatures]) {
    if (!Array.isArray(signatures) || signatures.length > 256) throw new RpcError(-32602, "Invalid param: expected up to 256 signatures");
    const value = [];
    for (const s of signatures) {
      const status = typeof s === "string" ? await ledger.status(s) : null;
      value.push(status && { slot: status.slot, confirmations: null, err: status.err, status: status.err === null ? { Ok: null } : { Err: status.err }, confirmationStatus: status.confirmationStatus });
    }
    return { context: context(ledger), value };
  },
  async getSignaturesForAddress(ledger, [addr, cfg]) {
    const c = config(cfg);
    const list = await ledger.signaturesFor(address(addr), {
      before: typeof c.before === "string" ? c.before : undefined,
      until: typeof c.until === "string" ? c.until : undefined,
      limit: typeof c.limit === "number" ? c.limit : undefined,
    });
    return list.map((s) => ({ signature: s.signature, slot: s.slot, err: s.err, memo: null, blockTime: s.blockTime, confirmationStatus: "finalized" }));
  },
  async getTransaction(ledger, [signature, cfg]) {
    if (typeof signature !== "string") throw new RpcError(-32602, "Invalid param: expected a signature");
    const stored = await ledger.transaction(signature);
    return stored ? transactionJson(stored, config(cfg)) : null;
  },
};
