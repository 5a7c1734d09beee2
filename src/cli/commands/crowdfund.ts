import { readFileSync } from "node:fs";
import {
  approveCrowdfund, type Crowdfund, CrowdfundError, findCrowdfund, listCrowdfunds, proposeCrowdfund, rejectCrowdfund,
} from "../../crowdfunds/crowdfunds.ts";
import { listPledges, type Pledge } from "../../crowdfunds/pledges.ts";
import { settlementTransactions } from "../../crowdfunds/settlement.ts";
import { duesParamsFromBylaws } from "../../treasury/dues-params.ts";
import { getTreasury, type Treasury } from "../../treasury/treasury.ts";
import { formatUnits, parseUnits } from "../../../solana/amounts.ts";
import type { Ledger } from "../../../solana/ledger.ts";
import type { Muster } from "../../main.ts";
import { OPERATOR } from "../../members/members.ts";
import type { Union } from "../../unions/unions.ts";
import { CliError, type Command, fields, iso, JSON_OPT, out, print, requireMember, requireUnion, str, table, UsageError, withMuster } from "../command.ts";

const LEDGER_NOTE = "  Chain work goes through SOLANA_RPC_URL, or else the serving process's embedded ledger at ORIGIN/solana/rpc.";

function need(values: Record<string, unknown>, name: string): string {
  const v = values[name];
  if (typeof v !== "string" || v.trim() === "") throw new UsageError(`--${name} is required`);
  return v;
}

async function requireTreasury(m: Muster, union: Union): Promise<Treasury> {
  const t = await getTreasury(m.database.db, union.id);
  if (!t) throw new CliError(`union ${union.slug} has no treasury yet; create it with \`muster treasury create ${union.slug}\``);
  return t;
}

/** The chain as this command reaches it: the network ledger, or the server's embedded one over its RPC endpoint. */
async function cliLedger(m: Muster): Promise<Ledger> {
  if (m.ledger) return m.ledger;
  const { NetworkLedger } = await import("../../../solana/network-ledger.ts");
  return new NetworkLedger(new URL("/solana/rpc", m.config.origin).href, { pollMs: 100 });
}

async function requireCrowdfund(m: Muster, union: Union, ref: string): Promise<Crowdfund> {
  try {
    return await findCrowdfund(m.database.db, union.id, ref);
  } catch (e) {
    if (e instanceof CrowdfundError) throw new CliError(`${e.message}; \`muster crowdfund list ${union.slug}\` shows them`);
    throw e;
  }
}

function units(amount: bigint | null, t: Treasury | undefined): string | null {
  return amount === null ? null : t ? formatUnits(amount, t.decimals) : amount.toString();
}

function summary(m: Muster, union: Union, cf: Crowdfund, t: Treasury | undefined) {
  return {
    id: cf.id, seq: cf.seq, state: cf.state, title: cf.title, goal: cf.goal.toString(), goalTokens: units(cf.goal, t), deadline: iso(cf.deadline),
    beneficiary: cf.beneficiary, cutBps: cf.cutBps, vault: cf.vault, reference: cf.reference, mint: cf.mint,
    url: new URL(`/u/${union.slug}/crowdfunds/${cf.seq}`, m.config.origin).href,
    total: cf.total?.toString() ?? null, cut: cf.cut?.toString() ?? null, createdAt: iso(cf.createdAt), settledAt: iso(cf.settledAt),
  };
}

function pledgeJson(p: Pledge, handles: Map<string, string | null>) {
  return {
    signature: p.signature, member: p.memberId ? handles.get(p.memberId) ?? null : null, wallet: p.wallet, source: p.source, amount: p.amount.toString(),
    status: p.status, reason: p.reason, refundSignature: p.refundSignature, at: iso(p.pledgedAt),
  };
}

function parseDeadline(raw: string): Date {
  const d = new Date(raw);
  if (Number.isNaN(d.getTime()) || !/^\d{4}-\d{2}-\d{2}/.test(raw)) throw new UsageError(`--deadline takes an ISO 8601 time such as 2026-12-01T18:00:00Z; got ${JSON.stringify(raw)}`);
  return d;
}

function refusal<T>(p: Promise<T>): Promise<T> {
  return p.catch((e: unknown) => {
    if (e instanceof CrowdfundError) throw new CliError(e.message);
    throw e;
  });
}

export const crowdfundCommands: readonly Command[] = [
  {
    path: ["crowdfund", "create"],
    usage: "muster crowdfund create <union> --by <@user@host> --title <text> (--text <markdown> | --text-file <file>) --goal <tokens> --deadline <iso> --beneficiary <address> [--json]",
    summary: "Propose a crowdfund for a member (the bylaws decide who may: members, good standing, or officers); officers then approve it.",
    details: [
      "  --goal        in tokens of the union's dues mint, e.g. 250 or 12.5 (stored as base units, exact)",
      "  --beneficiary the Solana wallet paid at success (its associated token account for the mint)",
    ].join("\n"),
    options: { by: { type: "string" }, title: { type: "string" }, text: { type: "string" }, "text-file": { type: "string" }, goal: { type: "string" }, deadline: { type: "string" }, beneficiary: { type: "string" }, ...JSON_OPT },
    positionals: ["union"],
    async run({ values, positionals }) {
      const textFile = str(values, "text-file");
      const text = textFile ? readFileSync(textFile, "utf8") : need(values, "text");
      const deadline = parseDeadline(need(values, "deadline"));
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const treasury = await requireTreasury(m, union);
        const member = await requireMember(m, union, need(values, "by"), ["active"]);
        let goal: bigint;
        try {
          goal = parseUnits(need(values, "goal"), treasury.decimals);
        } catch (e) {
          throw new UsageError(`--goal: ${(e as Error).message}`);
        }
        const cf = await refusal(proposeCrowdfund({ ...m.membership, duesParams: duesParamsFromBylaws }, union.id, member.id, {
          title: need(values, "title"), text, goal, deadline, beneficiary: need(values, "beneficiary"),
        }));
        if (values.json) return print(summary(m, union, cf, treasury));
        out(`Proposed crowdfund #${cf.seq} "${cf.title}" for ${formatUnits(cf.goal, treasury.decimals)} tokens by ${iso(cf.deadline)}; officers approve it with \`muster crowdfund approve ${union.slug} ${cf.seq}\`.\n`);
      });
    },
  },
  {
    path: ["crowdfund", "list"],
    usage: "muster crowdfund list <union> [--json]",
    summary: "List the union's crowdfunds, newest first: number, state, goal, pledged, deadline, title.",
    options: { ...JSON_OPT },
    positionals: ["union"],
    async run({ values, positionals }) {
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const t = await getTreasury(m.database.db, union.id);
        const all = await listCrowdfunds(m.database.db, union.id);
        const pledged = new Map<string, bigint>();
        for (const cf of all) pledged.set(cf.id, (await listPledges(m.database.db, cf.id)).filter((p) => p.status === "matched").reduce((s, p) => s + p.amount, 0n));
        if (values.json) return print(all.map((cf) => ({ ...summary(m, union, cf, t), pledged: pledged.get(cf.id)!.toString() })));
        if (all.length === 0) return out(`No crowdfunds in ${union.slug}.\n`);
        out(table(["#", "state", "goal", "pledged", "deadline", "title"], all.map((cf) => [
          `#${cf.seq}`, cf.state, units(cf.goal, t), units(pledged.get(cf.id)!, t), iso(cf.deadline), cf.title,
        ])));
      });
    },
  },
  {
    path: ["crowdfund", "show"],
    usage: "muster crowdfund show <union> <crowdfund> [--json]",
    summary: "Show a crowdfund (3, #3 or its id): text, goal, vault and its balance read from the chain, pledges, settlement transactions.",
    details: LEDGER_NOTE,
    options: { ...JSON_OPT },
    positionals: ["union", "crowdfund"],
    async run({ values, positionals }) {
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const cf = await requireCrowdfund(m, union, positionals[1]!);
        const t = await getTreasury(m.database.db, union.id);
        const pledges = await listPledges(m.database.db, cf.id);
        const handles = new Map((await m.database.db.selectFrom("members").select(["id", "handle"]).where("union_id", "=", union.id).execute()).map((r) => [r.id, r.handle]));
        const txs = await settlementTransactions(m.database.db, cf.id);
        let balance: string | null = null;
        if (cf.vault) {
          try {
            const { vaultBalance } = await import("../../../solana/crowdfund-vault.ts");
            const b = await vaultBalance(await cliLedger(m), cf.vault);
            balance = b === null ? "closed" : b.toString();
          } catch (e) {
            balance = `unavailable (${(e as Error).message.slice(0, 120)})`;
          }
        }
        const detail = {
          ...summary(m, union, cf, t), text: cf.bodyMd, vaultBalance: balance,
          pledges: pledges.map((p) => pledgeJson(p, handles)),
          transactions: txs.map((x) => ({ kind: x.kind, signature: x.signature, state: x.state, amount: x.amount.toString(), pledges: x.pledges.length })),
        };
        if (values.json) return print(detail);
        out(fields([
          ["Crowdfund", `#${cf.seq} ${cf.title}`], ["State", cf.state], ["Goal", `${units(cf.goal, t)} tokens`], ["Deadline", iso(cf.deadline) ?? ""],
          ["Beneficiary", cf.beneficiary], ["Union's cut", cf.cutBps === null ? "set at approval" : `${cf.cutBps / 100} %`],
          ["Vault", cf.vault ?? "not yet opened"], ["Vault balance", balance === null ? "-" : /^\d+$/.test(balance) ? units(BigInt(balance), t)! : balance],
          ["Pledges", `${pledges.filter((p) => p.status === "matched").length} matched, ${pledges.filter((p) => p.status === "unmatched").length} refused`],
        ]));
        if (pledges.length) out("\n" + table(["signature", "member", "amount", "status", "reason"], pledges.map((p) => [p.signature.slice(0, 16) + "…", p.memberId ? handles.get(p.memberId) ?? "" : "", units(p.amount, t), p.status, p.reason ?? ""])));
        if (txs.length) out("\n" + table(["kind", "state", "amount", "signature"], txs.map((x) => [x.kind, x.state, units(x.amount, t), x.signature])));
      });
    },
  },
  {
    path: ["crowdfund", "approve"],
    usage: "muster crowdfund approve <union> <crowdfund> [--proposal <number>] [--note <text>] [--json]",
    summary: "Approve a proposed crowdfund as an officer would: fixes the union's cut, opens its vault on the chain and announces it to members.",
    details: `${LEDGER_NOTE}\n  --proposal <number> names the passed resolution that approved it (its title or text says "crowdfund #N"): it is checked (passed, names this crowdfund, not used before) and recorded, as for an officer under the crowdfundApproval bylaw member_vote. Without it the operator's command is an override.`,
    options: { note: { type: "string" }, proposal: { type: "string" }, ...JSON_OPT },
    positionals: ["union", "crowdfund"],
    async run({ values, positionals }) {
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const cf = await requireCrowdfund(m, union, positionals[1]!);
        await refusal(approveCrowdfund(m.membership, union.id, cf.id, OPERATOR, str(values, "note"), str(values, "proposal")));
        const { openVault } = await import("../../../solana/crowdfund-vault.ts");
        const { crowdfundAnnouncer } = await import("../../../solana/crowdfund-jobs.ts");
        await openVault({ db: m.database.db, ledger: await cliLedger(m), announce: crowdfundAnnouncer(m.membership, m.config.origin) }, cf.id);
        const after = await findCrowdfund(m.database.db, union.id, cf.id);
        if (values.json) return print(summary(m, union, after, await getTreasury(m.database.db, union.id)));
        out(`Approved crowdfund #${after.seq}; its vault ${after.vault} is open and members were sent the call-to-action.\n`);
      });
    },
  },
  {
    path: ["crowdfund", "reject"],
    usage: "muster crowdfund reject <union> <crowdfund> [--note <text>]",
    summary: "Reject a proposed crowdfund (nothing is opened on the chain).",
    options: { note: { type: "string" } },
    positionals: ["union", "crowdfund"],
    async run({ values, positionals }) {
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const cf = await requireCrowdfund(m, union, positionals[1]!);
        await refusal(rejectCrowdfund(m.membership, union.id, cf.id, OPERATOR, str(values, "note")));
        out(`Rejected crowdfund #${cf.seq}.\n`);
      });
    },
  },
  {
    path: ["crowdfund", "pledge"],
    usage: "muster crowdfund pledge <union> <crowdfund> <@user@host> --keypair <file> --amount <tokens> [--json]",
    summary: "Pledge to an open crowdfund from a wallet keypair file, as a wallet app would: signs a transfer into the vault with the memo naming the member.",
    details: ["  --keypair  a Solana keypair file (a JSON array of 64 numbers, as solana-keygen writes)", "  --amount   tokens of the dues mint, from the wallet's associated token account", LEDGER_NOTE].join("\n"),
    options: { keypair: { type: "string" }, amount: { type: "string" }, ...JSON_OPT },
    positionals: ["union", "crowdfund", "member"],
    async run({ values, positionals }) {
      const file = need(values, "keypair");
      const rawAmount = need(values, "amount");
      let secret: Uint8Array;
      try {
        const parsed = JSON.parse(readFileSync(file, "utf8")) as unknown;
        if (!Array.isArray(parsed) || parsed.length !== 64 || !parsed.every((n) => Number.isInteger(n) && n >= 0 && n <= 255)) throw new Error("not a JSON array of 64 bytes");
        secret = Uint8Array.from(parsed as number[]);
      } catch (e) {
        throw new UsageError(`--keypair ${file}: ${(e as Error).message.split("\n")[0]}`);
      }
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const cf = await requireCrowdfund(m, union, positionals[1]!);
        const member = await requireMember(m, union, positionals[2]!, ["active"]);
        const t = await requireTreasury(m, union);
        if (cf.state !== "open") throw new CliError(`crowdfund #${cf.seq} is ${cf.state}, not open for pledges`);
        let amount: bigint;
        try {
          amount = parseUnits(rawAmount, t.decimals);
        } catch (e) {
          throw new UsageError(`--amount: ${(e as Error).message}`);
        }
        const [{ Keypair, PublicKey }, { pledgeTransaction }, { recordSignature }] = await Promise.all([
          import("@solana/web3.js"), import("../../../solana/crowdfund-vault.ts"), import("../../../solana/crowdfund-pledges.ts"),
        ]);
        const wallet = Keypair.fromSecretKey(secret);
        const ledger = await cliLedger(m);
        const { tx, lastValidBlockHeight } = await pledgeTransaction(ledger, {
          crowdfund: cf, actorId: member.actorId!, wallet: wallet.publicKey, amount, decimals: t.decimals, tokenProgram: new PublicKey(t.tokenProgram),
        });
        tx.sign(wallet);
        let signature: string;
        try {
          signature = await ledger.submit(tx.serialize(), { lastValidBlockHeight, commitment: "confirmed" });
        } catch (e) {
          throw new CliError(`the pledge was refused by the chain: ${(e as Error).message.slice(0, 300)}`);
        }
        const recorded = await recordSignature(ledger, m.database.db, cf, signature);
        if (values.json) return print({ signature, amount: amount.toString(), status: recorded?.status ?? null, reason: recorded?.reason ?? null });
        out(recorded?.status === "matched"
          ? `Pledged ${formatUnits(amount, t.decimals)} tokens to crowdfund #${cf.seq} (transaction ${signature}).\n`
          : `Sent ${formatUnits(amount, t.decimals)} tokens (transaction ${signature}) but the pledge was refused: ${recorded?.reason ?? "not seen"}; it is returned at settlement.\n`);
      });
    },
  },
  {
    path: ["crowdfund", "settle"],
    usage: "muster crowdfund settle <union> <crowdfund> [--force] [--json]",
    summary: "Settle a crowdfund now if its deadline has passed (or before it with --force, logged): pays out or refunds, or resumes an interrupted settlement.",
    details: ["  Goal reached: one transaction pays the beneficiary the total minus the union's cut, the treasury the cut, and closes the vault.", "  Goal missed: every pledge is refunded to its source account, 15 per transaction.", LEDGER_NOTE].join("\n"),
    options: { force: { type: "boolean", default: false }, ...JSON_OPT },
    positionals: ["union", "crowdfund"],
    async run({ values, positionals }) {
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const cf = await requireCrowdfund(m, union, positionals[1]!);
        const t = await requireTreasury(m, union);
        if (!["open", "succeeded", "failed", "settled", "refunded"].includes(cf.state)) throw new CliError(`crowdfund #${cf.seq} is ${cf.state}; only an open crowdfund is settled`);
        const { settleCrowdfund } = await import("../../../solana/crowdfund-settlement.ts");
        const r = await refusal(settleCrowdfund({ db: m.database.db, ledger: await cliLedger(m) }, cf, { force: values.force === true }));
        if (values.json) {
          return print({ ...summary(m, union, r.crowdfund, t), outcome: r.outcome, transactions: r.transactions.map((x) => ({ kind: x.kind, signature: x.signature, state: x.state, amount: x.amount.toString() })) });
        }
        if (r.outcome === "not_due") return out(`Crowdfund #${cf.seq} is open until ${iso(cf.deadline)}; nothing settled (use --force to settle now).\n`);
        const c = r.crowdfund;
        out(r.outcome === "settled"
          ? `Settled crowdfund #${c.seq}: ${units(c.total! - c.cut!, t)} tokens to the beneficiary, ${units(c.cut, t)} to the union, vault closed (${r.transactions.length} transaction(s)).\n`
          : r.outcome === "refunded" ? `Refunded crowdfund #${c.seq}: ${units(c.total, t)} tokens returned in ${r.transactions.filter((x) => x.kind === "refund").length} refund transaction(s).\n`
          : `Crowdfund #${c.seq} is ${c.state}; its transactions are not all confirmed yet.\n`);
      });
    },
  },
];
