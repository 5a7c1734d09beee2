import { CliError, type Command, fields, JSON_OPT, out, print, requireUnion, str, table, UsageError, withMember, withMuster } from "../command.ts";
import type { Muster } from "../../main.ts";
import { TreasuryError } from "../../treasury/dues.ts";

// Chain commands. solana/ is imported inside run(): spl-token prints a
// warning on import that --help and other commands must not show.

async function chain(m: Muster) {
  const cliLedger = await import("../../../solana/cli-ledger.ts");
  try {
    const cli = await cliLedger.connectCliLedger(m.config);
    const { PublicKey } = await import("@solana/web3.js");
    // What the treasury's chain functions need from the CLI: on the embedded ledger the server's key is topped up.
    const deps = { db: m.database.db, ledger: cli.ledger, outbox: m.membership.outbox, testMint: cli.embedded, fund: fundWith(cli, (a) => cliLedger.airdropSol(cli, new PublicKey(a), cliLedger.SOL)) };
    return { cli, lib: cliLedger, deps };
  } catch (e) {
    if (e instanceof cliLedger.CliLedgerError) throw new CliError(e.message);
    throw e;
  }
}

/** Runs fn, turning the chain's and the treasury's refusals into one-line CLI errors. */
async function refusals<T>(fn: () => Promise<T>): Promise<T> {
  const [{ CliLedgerError }, { LedgerError }] = await Promise.all([import("../../../solana/cli-ledger.ts"), import("../../../solana/ledger.ts")]);
  try {
    return await fn();
  } catch (e) {
    if (e instanceof CliLedgerError || e instanceof LedgerError || e instanceof TreasuryError) throw new CliError(e.message.split("\n")[0]!);
    throw e;
  }
}

function fundWith(cli: { embedded: boolean; ledger: { account(a: string): Promise<{ lamports: bigint } | null> } }, airdrop: (to: string) => Promise<unknown>) {
  if (!cli.embedded) return undefined;
  return async (address: string) => {
    if (((await cli.ledger.account(address))?.lamports ?? 0n) < 100_000_000n) await airdrop(address);
  };
}

function transferId(raw: string): number {
  const t = raw.trim().replace(/^#/, "");
  if (!/^\d+$/.test(t)) throw new UsageError(`a transfer id is a number such as 3 or #3; got ${JSON.stringify(raw)}`);
  return Number(t);
}

function units(amount: bigint, decimals: number): string {
  const s = amount.toString().padStart(decimals + 1, "0");
  return decimals ? `${s.slice(0, -decimals)}.${s.slice(-decimals)}` : s;
}

export const walletCommands: readonly Command[] = [
  {
    path: ["wallet", "create"],
    usage: "muster wallet create --out <file> [--json]",
    summary: "Write a new Solana keypair file (for trying things without a wallet app); prints its address.",
    details: "  The file is a JSON array of the 64 secret-key bytes (the Solana CLI's format), owner-only, never overwritten.",
    options: { out: { type: "string" }, ...JSON_OPT },
    positionals: [],
    async run({ values }) {
      const file = str(values, "out");
      if (!file) throw new UsageError("--out <file> is required");
      const lib = await import("../../../solana/cli-ledger.ts");
      const key = await refusals(async () => lib.writeKeypairFile(file));
      if (values.json) return print({ address: key.publicKey.toBase58(), file });
      out(`Wrote ${file}; address ${key.publicKey.toBase58()}\n`);
    },
  },
  {
    path: ["wallet", "link"],
    usage: "muster wallet link <union> <@user@host> --keypair <file> [--json]",
    summary: "Link a member's wallet with proof: signs the union's one-time challenge with the keypair, as a wallet would.",
    details: "  The proof (challenge text and signature) is kept, shown on the member's entry and published in the union's\n  member collection. `muster member wallet` links without proof (the operator's word), which no treasury trusts.",
    options: { keypair: { type: "string" }, ...JSON_OPT },
    positionals: ["union", "member"],
    async run({ values, positionals }) {
      const file = str(values, "keypair");
      if (!file) throw new UsageError("--keypair <file> is required");
      const lib = await import("../../../solana/cli-ledger.ts");
      const key = await refusals(async () => lib.readKeypairFile(file));
      await withMember(positionals, async (m, union, member) => {
        if (!member.actorId || !["active", "pending"].includes(member.state)) throw new CliError(`${member.handle ?? member.id} is ${member.state} in ${union.slug}; only a current member links a wallet`);
        const { issueWalletChallenge, proveWallet } = await import("../../treasury/wallet-proof.ts");
        const { signTransferMessage } = await import("../../../solana/treasury-authority.ts");
        const challenge = await issueWalletChallenge(m.database.db, union.id, member.id, { union: new URL(`/u/${union.slug}`, m.config.origin).href, actorId: member.actorId });
        const signature = await signTransferMessage(new TextEncoder().encode(challenge.message), key);
        const proof = { wallet: key.publicKey.toBase58(), message: challenge.message, signature };
        await refusals(() => proveWallet({ db: m.database.db, outbox: m.membership.outbox }, union.id, proof));
        if (values.json) return print({ member: member.handle, ...proof });
        out(`Linked wallet ${proof.wallet} to ${member.handle} in ${union.slug}, with proof; the badge follows once the server's ledger lane runs.\n`);
      });
    },
  },
];

export const ledgerCommands: readonly Command[] = [
  {
    path: ["ledger", "status"],
    usage: "muster ledger status [--json]",
    summary: "Which ledger this server uses (embedded or network), its RPC URL, slot and latest blockhash.",
    details: "  Reads SOLANA_RPC_URL, or the running server's own /solana/rpc (ORIGIN) for the embedded ledger.",
    options: { ...JSON_OPT },
    positionals: [],
    async run({ values }) {
      await withMuster(async (m) => {
        const { cli } = await chain(m);
        const [slot, latest] = await refusals(() => Promise.all([cli.ledger.connection.getSlot("confirmed"), cli.ledger.connection.getLatestBlockhash("confirmed")]));
        const status = { ledger: cli.embedded ? "embedded" : "network", rpcUrl: cli.url, slot, blockhash: latest.blockhash, lastValidBlockHeight: latest.lastValidBlockHeight };
        if (values.json) return print(status);
        out(fields([["Ledger", status.ledger], ["RPC URL", status.rpcUrl], ["Slot", String(slot)], ["Blockhash", latest.blockhash]]));
      });
    },
  },
  {
    path: ["ledger", "airdrop"],
    usage: "muster ledger airdrop <address> [--sol N] [--tokens N --union <slug>] [--json]",
    summary: "Embedded ledger only: give an address test SOL and/or the union's test dues tokens.",
    details: "  --sol defaults to 1 when neither is given. --tokens are whole or decimal dues tokens of the union's test mint.\n  On a network ledger this is refused: use the cluster's faucet.",
    options: { sol: { type: "string" }, tokens: { type: "string" }, union: { type: "string" }, ...JSON_OPT },
    positionals: ["address"],
    async run({ values, positionals }) {
      await withMuster(async (m) => {
        const { cli, lib } = await chain(m);
        const to = await refusals(async () => lib.parseAddress(positionals[0]!));
        const done: Record<string, string> = {};
        if (!cli.embedded) throw new CliError(`airdrops are for the embedded ledger only; ${cli.url} is a network ledger (use its faucet)`);
        const tokens = str(values, "tokens");
        const sol = str(values, "sol") ?? (tokens ? undefined : "1");
        let treasury: Awaited<ReturnType<typeof import("../../treasury/treasury.ts")["getTreasury"]>>;
        if (tokens) {
          const slug = str(values, "union");
          if (!slug) throw new UsageError("--tokens needs --union <slug> (whose test dues mint)");
          const union = await requireUnion(m, slug);
          const { getTreasury } = await import("../../treasury/treasury.ts");
          treasury = await getTreasury(m.database.db, union.id);
          if (!treasury) throw new CliError(`union ${slug} has no treasury yet; run muster treasury create ${slug}`);
        }
        if (sol) done.sol = await refusals(() => lib.airdropSol(cli, to, lib.parseUnits(sol, 9, "--sol")));
        if (tokens && treasury) {
          const { treasuryKey } = await import("../../../solana/badge-sync.ts");
          const { PublicKey } = await import("@solana/web3.js");
          const key = await treasuryKey(m.database.db, treasury.unionId);
          if (((await cli.ledger.account(key.publicKey.toBase58()))?.lamports ?? 0n) < 10_000_000n) await lib.airdropSol(cli, key.publicKey, lib.SOL);
          done.tokens = await refusals(() => lib.airdropTokens(cli, key, new PublicKey(treasury!.mint), new PublicKey(treasury!.tokenProgram), to, lib.parseUnits(tokens, treasury!.decimals, "--tokens")));
        }
        if (values.json) return print({ address: to.toBase58(), signatures: done });
        out(`Airdropped to ${to.toBase58()}:${sol ? ` ${sol} SOL` : ""}${tokens ? ` ${tokens} dues tokens` : ""} (${Object.values(done).join(", ")})\n`);
      });
    },
  },
  {
    path: ["ledger", "transfer"],
    usage: "muster ledger transfer --mint <mint> --keypair <file> --to <address> --amount N [--json]",
    summary: "A plain token transfer signed by the keypair (try it with a badge: the chain refuses to move it).",
    details: "  --amount is in tokens (decimals allowed up to the mint's). The recipient's token account is created if needed.",
    options: { mint: { type: "string" }, keypair: { type: "string" }, to: { type: "string" }, amount: { type: "string" }, ...JSON_OPT },
    positionals: [],
    async run({ values }) {
      for (const o of ["mint", "keypair", "to", "amount"]) if (!str(values, o)) throw new UsageError(`--${o} is required`);
      await withMuster(async (m) => {
        const { cli, lib } = await chain(m);
        const { unpackMint } = await import("@solana/spl-token");
        const owner = await refusals(async () => lib.readKeypairFile(str(values, "keypair")!));
        const mint = await refusals(async () => lib.parseAddress(str(values, "mint")!, "mint"));
        const to = await refusals(async () => lib.parseAddress(str(values, "to")!, "recipient"));
        const info = await cli.ledger.account(mint.toBase58());
        if (!info) throw new CliError(`no mint ${mint.toBase58()} on this ledger`);
        let decimals: number;
        try {
          const { PublicKey } = await import("@solana/web3.js");
          decimals = unpackMint(mint, { data: Buffer.from(info.data), owner: new PublicKey(info.owner), lamports: Number(info.lamports), executable: false }, new PublicKey(info.owner)).decimals;
        } catch {
          throw new CliError(`${mint.toBase58()} is not a token mint`);
        }
        const amount = await refusals(async () => lib.parseUnits(str(values, "amount")!, decimals, "--amount"));
        const signature = await refusals(() => lib.transferTokens(cli, owner, mint, to, amount));
        if (values.json) return print({ signature, amount: String(amount) });
        out(`Transferred ${str(values, "amount")} of ${mint.toBase58()} to ${to.toBase58()} (${signature})\n`);
      });
    },
  },
];

export const treasuryCommands: readonly Command[] = [
  {
    path: ["treasury", "create"],
    usage: "muster treasury create <union> [--json]",
    summary: "Create the union's treasury on the ledger (once): dues mint, multisig authority, token account.",
    details: "  Signers: the server's key and the officers' proven wallets; threshold: the treasuryThreshold bylaw (default 1,\n  the server alone: custodial). On a network ledger set the duesMint bylaw first and fund the server's key.",
    options: { ...JSON_OPT },
    positionals: ["union"],
    async run({ values, positionals }) {
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const { deps } = await chain(m);
        const { ensureTreasury } = await import("../../../solana/treasury-authority.ts");
        const t = await refusals(() => ensureTreasury(deps, union.id));
        if (values.json) return print(t);
        out(`Treasury of ${union.slug}: token account ${t.tokenAccount}, authority ${t.authority} (${t.threshold} of ${t.signers.length}).\n`);
      });
    },
  },
  {
    path: ["treasury", "move"],
    usage: "muster treasury move <union> [--json]",
    summary: "Move the treasury to a new multisig of today's officers' proven wallets and treasuryThreshold, signed as the old one requires.",
    details: "  An SPL multisig cannot change once made. This makes a new one and prepares one transaction moving the whole\n  balance to it; officers of the old multisig co-sign it (muster treasury sign, or the console) when its threshold is\n  above 1. Once it executes, the new multisig is the treasury. Running it again resumes an unfinished move. Refused\n  while a crowdfund is unsettled or a transfer awaits signatures: they belong to the old authority.",
    options: { ...JSON_OPT },
    positionals: ["union"],
    async run({ values, positionals }) {
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const { deps } = await chain(m);
        const { moveTreasury } = await import("../../../solana/treasury-move.ts");
        const mv = await refusals(() => moveTreasury(deps, union.id));
        if (values.json) return print({ ...mv, amount: mv.amount?.toString() ?? null });
        const what = mv.state === "executed" ? "done: the new multisig is the treasury" : mv.state === "signing" ? `transaction #${mv.transferId} awaits signatures (muster treasury sign ${union.slug} ${mv.transferId}); the ledger lane of a running server sends it once all have signed` : mv.state;
        out(`Treasury move #${mv.id} of ${union.slug}: ${mv.from.threshold} of ${mv.from.signers.length} → ${mv.to.threshold} of ${mv.to.signers.length}, new authority ${mv.to.authority}: ${what}.\n`);
      });
    },
  },
  {
    path: ["treasury", "show"],
    usage: "muster treasury show <union> [--json]",
    summary: "The union's treasury: address, authority, signers, threshold, balances read from the ledger, badge mints, transfers.",
    options: { ...JSON_OPT },
    positionals: ["union"],
    async run({ values, positionals }) {
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const { getTreasury, listTransfers } = await import("../../treasury/treasury.ts");
        const t = await getTreasury(m.database.db, union.id);
        if (!t) throw new CliError(`union ${union.slug} has no treasury yet; run muster treasury create ${union.slug}`);
        const { cli } = await chain(m);
        const { treasuryBalance } = await import("../../../solana/treasury-authority.ts");
        const { badgeMintOf } = await import("../../../solana/badge-sync.ts");
        const serverKey = (await m.database.db.selectFrom("treasury_keys").select("public_key").where("union_id", "=", union.id).executeTakeFirstOrThrow()).public_key;
        const [balance, serverSol, badgeMint, transfers] = await refusals(() => Promise.all([
          treasuryBalance(cli.ledger, t), cli.ledger.account(serverKey).then((a) => a?.lamports ?? 0n), badgeMintOf(m.database.db, union.id), listTransfers(m.database.db, union.id),
        ]));
        const json = {
          union: union.slug, ledger: cli.embedded ? "embedded" : "network", address: t.tokenAccount, authority: t.authority, signers: t.signers, threshold: t.threshold,
          custodial: t.threshold === 1, serverKey, mint: t.mint, decimals: t.decimals, balance: String(balance), serverLamports: String(serverSol),
          badgeMints: badgeMint ? [badgeMint] : [],
          transfers: transfers.map((x) => ({ id: x.id, to: x.destination, amount: String(x.amount), state: x.state, required: x.required, signed: x.signed, signature: x.signature, reason: x.reason })),
        };
        if (values.json) return print(json);
        out(fields([
          ["Treasury", t.tokenAccount], ["Authority", `${t.authority} (SPL multisig, ${t.threshold} of ${t.signers.length}${t.threshold === 1 ? ": the server alone, custodial" : ""})`],
          ["Signers", t.signers.map((s) => (s === serverKey ? `${s} (server)` : s)).join(", ")], ["Dues mint", t.mint],
          ["Balance", `${units(balance, t.decimals)} (${balance} base units)`], ["Server key", `${serverKey} (${units(serverSol, 9)} SOL for fees)`],
          ["Badge mints", badgeMint ?? "none yet"], ["Ledger", `${json.ledger} ${cli.url}`],
        ]));
        if (transfers.length) out("Transfers:\n" + table(["ID", "TO", "AMOUNT", "STATE", "SIGNED"], transfers.map((x) => [`#${x.id}`, x.destination, String(x.amount), x.state, `${x.signed.length}/${x.required.length}`])));
      });
    },
  },
  {
    path: ["treasury", "transfer"],
    usage: "muster treasury transfer <union> --to <address> --amount N [--cosigners <address,...>] [--json]",
    summary: "Prepare a transfer out of the treasury; the server signs, named officers co-sign (muster treasury sign).",
    details: "  --amount is in dues tokens. The transaction is fixed with a durable nonce, so co-signers may take hours or days.\n  --cosigners defaults to the first threshold-1 officer signers. It is submitted once every named signer has signed.",
    options: { to: { type: "string" }, amount: { type: "string" }, cosigners: { type: "string" }, ...JSON_OPT },
    positionals: ["union"],
    async run({ values, positionals }) {
      for (const o of ["to", "amount"]) if (!str(values, o)) throw new UsageError(`--${o} is required`);
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const { getTreasury } = await import("../../treasury/treasury.ts");
        const t = await getTreasury(m.database.db, union.id);
        if (!t) throw new CliError(`union ${union.slug} has no treasury yet; run muster treasury create ${union.slug}`);
        const { lib, deps } = await chain(m);
        const { prepareTransfer } = await import("../../../solana/treasury-authority.ts");
        const amount = await refusals(async () => lib.parseUnits(str(values, "amount")!, t.decimals, "--amount"));
        const cosigners = str(values, "cosigners")?.split(",").map((s) => s.trim()).filter(Boolean);
        const x = await refusals(() => prepareTransfer(deps, union.id, { to: str(values, "to")!, amount, cosigners }));
        if (values.json) return print({ id: x.id, state: x.state, required: x.required, signed: x.signed, amount: String(x.amount), to: x.destination });
        out(`Transfer #${x.id} of ${str(values, "amount")} to ${x.destination}: ${x.state}; signed ${x.signed.length} of ${x.required.length}${x.state === "pending" ? ` (waiting for ${x.required.filter((r) => !x.signed.includes(r)).join(", ")})` : ""}.\n`);
      });
    },
  },
  {
    path: ["treasury", "sign"],
    usage: "muster treasury sign <union> <id> --keypair <file> [--json]",
    summary: "Co-sign a pending treasury transfer with an officer's keypair; the last signature queues its submission.",
    details: "  The keypair signs the transfer's stored message on this machine; only the signature is stored. <id> is 3 or #3.",
    options: { keypair: { type: "string" }, ...JSON_OPT },
    positionals: ["union", "id"],
    async run({ values, positionals }) {
      const file = str(values, "keypair");
      if (!file) throw new UsageError("--keypair <file> is required");
      const id = transferId(positionals[1]!);
      const lib = await import("../../../solana/cli-ledger.ts");
      const key = await refusals(async () => lib.readKeypairFile(file));
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const { addTransferSignature, signTransferMessage, transferMessage } = await import("../../../solana/treasury-authority.ts");
        const x = await refusals(async () => {
          const message = await transferMessage(m.database.db, union.id, id);
          return addTransferSignature({ db: m.database.db, outbox: m.membership.outbox }, union.id, id, key.publicKey.toBase58(), await signTransferMessage(message, key));
        });
        if (values.json) return print({ id: x.id, state: x.state, required: x.required, signed: x.signed });
        out(`Signed transfer #${x.id} as ${key.publicKey.toBase58()}: ${x.state === "ready" ? "every signer has signed; the server's ledger lane submits it" : `${x.signed.length} of ${x.required.length} signatures`}.\n`);
      });
    },
  },
];

