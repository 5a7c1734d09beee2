import { readFile } from "node:fs/promises";
import type { Muster } from "../../main.ts";
import { duesStatus } from "../../treasury/dues-status.ts";
import { duesParamsFromBylaws } from "../../treasury/dues-params.ts";
import type { Member } from "../../members/members.ts";
import type { Union } from "../../unions/unions.ts";
import { CliError, type Command, fields, JSON_OPT, label, out, print, requireMember, requireUnion, shortDate, str, table, UsageError, withMuster } from "../command.ts";

/** A keypair file as `solana-keygen` and `muster wallet create` write it: a JSON array of the 64 secret-key bytes. */
async function readKeypair(path: string) {
  const { Keypair } = await import("@solana/web3.js");
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (e) {
    throw new CliError(`cannot read the keypair file ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    const bytes = JSON.parse(text) as unknown;
    if (!Array.isArray(bytes) || bytes.length !== 64 || !bytes.every((b) => Number.isInteger(b) && b >= 0 && b < 256)) throw new Error();
    return Keypair.fromSecretKey(Uint8Array.from(bytes as number[]));
  } catch {
    throw new CliError(`${path} is not a keypair file (a JSON array of 64 bytes, as solana-keygen writes)`);
  }
}

/** The server's answer to the Solana Pay POST; null when no server answers at the origin (then the CLI builds the transaction itself). */
async function fromServer(m: Muster, union: Union, member: Member, account: string): Promise<{ transaction: string; rpc: string } | null> {
  const url = new URL(`/u/${union.slug}/dues/pay?member=${encodeURIComponent(member.handle ?? member.id)}`, m.config.origin);
  let response: Response;
  try {
    response = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ account }), signal: AbortSignal.timeout(15_000) });
  } catch (e) {
    const code = (e as { cause?: { code?: string } }).cause?.code;
    if (code === "ECONNREFUSED" || code === "ENOTFOUND" || code === "EAI_AGAIN") return null;
    throw new CliError(`the server at ${m.config.origin.origin} did not answer: ${(e as Error).message}`);
  }
  const body = await response.json().catch(() => ({})) as { transaction?: string; message?: string };
  if (!response.ok || typeof body.transaction !== "string") {
    throw new CliError(`the server refused: ${body.message ?? `HTTP ${response.status}`}`);
  }
  return { transaction: body.transaction, rpc: m.config.solanaRpcUrl ?? new URL("/solana/rpc", m.config.origin).href };
}

export const duesCommands: readonly Command[] = [
  {
    path: ["dues", "pay"],
    usage: "muster dues pay <union> <@user@host> --keypair <file> [--json]",
    summary: "Pay a member's dues from a wallet keypair file: fetch the Solana Pay transaction, sign, submit, wait, print the signature.",
    details: [
      "  --keypair <file>  the paying wallet (a JSON array of 64 bytes, as solana-keygen or muster wallet create writes)",
      "  The transaction comes from the running server at ORIGIN (its Solana Pay endpoint, /u/<union>/dues/pay).",
      "  With no server answering there, it is built in-process and submitted to SOLANA_RPC_URL, or to the",
      "  embedded ledger opened from the database (only when no server runs it). The output says which.",
      "  The payment is then recorded (as the server's scan would) and the member's standing printed.",
    ].join("\n"),
    options: { ...JSON_OPT, keypair: { type: "string" } },
    positionals: ["union", "member"],
    async run({ values, positionals }) {
      const file = str(values, "keypair");
      if (!file) throw new UsageError("--keypair <file> is required");
      const keypair = await readKeypair(file);
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const member = await requireMember(m, union, positionals[1]!, ["active"]);
        const { Transaction } = await import("@solana/web3.js");
        const { NetworkLedger } = await import("../../../solana/network-ledger.ts");
        const { LedgerError } = await import("../../../solana/ledger.ts");
        const served = await fromServer(m, union, member, keypair.publicKey.toBase58());
        let ledger;
        let tx;
        let source: string;
        if (served) {
          ledger = new NetworkLedger(served.rpc, { pollMs: 200, rebroadcastMs: 1000 });
          tx = Transaction.from(Buffer.from(served.transaction, "base64"));
          source = `the server at ${m.config.origin.origin}`;
        } else {
          if (m.config.solanaRpcUrl) {
            ledger = new NetworkLedger(m.config.solanaRpcUrl, { pollMs: 200, rebroadcastMs: 1000 });
          } else {
            const { EmbeddedLedger } = await import("../../../solana/embedded-ledger.ts");
            ledger = await EmbeddedLedger.open(m.database.db);
          }
          const { buildDuesTransaction, duesTerms, PayRequestError } = await import("../../../solana/solana-pay.ts");
          try {
            const terms = await duesTerms(m.database.db, ledger, duesParamsFromBylaws, union.id);
            const built = await buildDuesTransaction(ledger, terms, keypair.publicKey, member.actorId!);
            const { issueDuesReference } = await import("../../treasury/dues-references.ts");
            await issueDuesReference(m.database.db, {
              reference: built.reference, unionId: union.id, memberId: member.id, payer: keypair.publicKey.toBase58(), amount: terms.amount, mint: terms.mint, destination: terms.destination,
            });
            tx = built.transaction;
          } catch (e) {
            if (e instanceof PayRequestError) throw new CliError(e.message);
            throw e;
          }
          source = m.config.solanaRpcUrl ? `in-process (no server at ${m.config.origin.origin}), submitted to ${m.config.solanaRpcUrl}` : `in-process (no server at ${m.config.origin.origin}), on the embedded ledger`;
        }
        if (!tx.feePayer?.equals(keypair.publicKey)) throw new CliError("the transaction the server built is not for this keypair's wallet");
        tx.partialSign(keypair);
        let signature: string;
        try {
          signature = await ledger.submit(tx.serialize(), { lastValidBlockHeight: tx.lastValidBlockHeight ?? Number.MAX_SAFE_INTEGER, commitment: "confirmed" });
        } catch (e) {
          if (e instanceof LedgerError) throw new CliError(`the payment did not go through: ${e.message.slice(0, 300)}`);
          throw e;
        }
        // Recorded now, as the server's scheduled scan would: keyed by signature, so the scan finds it recorded.
        const { scanSinceCursor } = await import("../../../solana/dues-scan-job.ts");
        const { getTreasury } = await import("../../treasury/treasury.ts");
        const treasury = (await getTreasury(m.database.db, union.id))!;
        await scanSinceCursor({ db: m.database.db, events: m.events, ledger, duesParams: duesParamsFromBylaws }, union.id, treasury.tokenAccount);
        const status = (await duesStatus({ db: m.database.db, duesParams: duesParamsFromBylaws }, union.id, member.id)).members[0]!;
        const recorded = await m.database.db.selectFrom("dues_payments").select(["status", "reason"]).where("signature", "=", signature).executeTakeFirst();
        if (values.json) {
          return print({ signature, transactionFrom: served ? "server" : "in-process", payment: recorded ?? null, standing: status.standing, paidThrough: status.paidThrough === null ? null : new Date(status.paidThrough).toISOString() });
        }
        out(`Paid dues for ${label(member)} in ${union.slug}: transaction built by ${source}.\nSignature: ${signature}\n`);
        out(`Recorded: ${recorded ? `${recorded.status}${recorded.reason ? ` (${recorded.reason})` : ""}` : "not yet seen"}; standing ${status.standing}${status.paidThrough ? `, paid through ${shortDate(new Date(status.paidThrough))}` : ""}.\n`);
      });
    },
  },
  {
    path: ["dues", "status"],
    usage: "muster dues status <union> [<@user@host>] [--json]",
    summary: "Dues standing per member (good, grace, lapsed), last payment, and payments officers must look at (unmatched, with reasons).",
    options: { ...JSON_OPT },
    positionals: ["union"],
    optional: ["member"],
    async run({ values, positionals }) {
      await withMuster(async (m) => {
        const union = await requireUnion(m, positionals[0]!);
        const member = positionals[1] ? await requireMember(m, union, positionals[1]) : undefined;
        const status = await duesStatus({ db: m.database.db, duesParams: duesParamsFromBylaws }, union.id, member?.id);
        const { formatUnits } = await import("../../../solana/amounts.ts");
        const decimals = (await m.database.db.selectFrom("treasuries").select("decimals").where("union_id", "=", union.id).executeTakeFirst())?.decimals ?? 0;
        const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());
        if (values.json) {
          return print({
            union: union.slug, duesAmount: status.duesAmount.toString(), decimals, periodDays: status.periodDays, graceDays: status.graceDays,
            members: status.members.map((s) => ({
              id: s.memberId, handle: s.handle, actorId: s.actorId, standing: s.standing, paidThrough: iso(s.paidThrough),
              lastPayment: s.lastPayment && { signature: s.lastPayment.signature, amount: s.lastPayment.amount.toString(), paidAt: iso(s.lastPayment.paidAt) },
            })),
            unmatched: status.unmatched.map((u) => ({ signature: u.signature, payer: u.payer, amount: u.amount.toString(), reason: u.reason, paidAt: iso(u.paidAt) })),
          });
        }
        out(fields([["Dues", status.duesAmount === 0n ? "none (every active member is in good standing)" : `${formatUnits(status.duesAmount, decimals)} every ${status.periodDays} days, ${status.graceDays} days of grace`]]));
        out("\n" + table(["HANDLE", "STANDING", "PAID THROUGH", "LAST PAYMENT", "SIGNATURE"], status.members.map((s) => [
          s.handle ?? s.actorId ?? s.memberId, s.standing, shortDate(s.paidThrough === null ? null : new Date(s.paidThrough)),
          s.lastPayment ? `${formatUnits(s.lastPayment.amount, decimals)} on ${shortDate(new Date(s.lastPayment.paidAt))}` : null, s.lastPayment?.signature,
        ])));
        if (status.unmatched.length) {
          out(`\nUnmatched payments (never credited; for officers):\n`);
          out(table(["PAID", "AMOUNT", "PAYER", "REASON", "SIGNATURE"], status.unmatched.map((u) => [shortDate(new Date(u.paidAt)), formatUnits(u.amount, decimals), u.payer, u.reason, u.signature])));
        }
      });
    },
  },
];
