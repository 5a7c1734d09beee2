import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Keypair, PublicKey, Transaction, TransactionInstruction } from "@solana/web3.js";
import { createAssociatedTokenAccountIdempotent, createTransferCheckedInstruction, getAssociatedTokenAddressSync } from "@solana/spl-token";
import { dialects } from "./helpers/databases.ts";
import { makeUnion, startMuster } from "./helpers/muster.ts";
import { followId, person } from "./helpers/domain-context.ts";
import { overrideBylaws } from "./helpers/bylaws.ts";
import { rpcConnection, setUpTreasury } from "./helpers/treasury.ts";
import { browserSkip, launchBrowser } from "./helpers/browser.ts";
import { requestToJoin } from "../src/members/membership.ts";
import { treasuryKey } from "../solana/badge-sync.ts";
import { scanSinceCursor } from "../solana/dues-scan-job.ts";
import { duesParamsFromBylaws } from "../src/treasury/dues-params.ts";

const DUES = 5_000_000n;
const MEMO = new PublicKey("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr");

interface FlowJson { signature: string; url: string; direction: "in" | "out"; amount: { baseUnits: string }; kind: string; payer: string | null; reason: string | null }
interface TreasuryJson { ledger: string; treasury: { address: string; balance: { baseUnits: string; display: string }; threshold: number; signers: string[]; mint: string }; payersShown: boolean; flows: FlowJson[] }

for (const d of dialects) {
  describe(`the treasury transparency page on ${d.name}`, { skip: d.skip }, () => {
    it("shows the balance and every inflow and outflow as the ledger has them, payers only per the roster rule, in Chromium at 1280 and 390 px", async () => {
      const tdb = await d.create();
      const m = await startMuster(tdb, { env: { MUSTER_QUEUE_CONCURRENCY: "2" } });
      const rpc = rpcConnection(m.origin);
      try {
        const { connection } = rpc;
        const db = m.muster.database.db;
        const union = await makeUnion(m, "riders", { joinPolicy: "open" });
        const alice = person("alice");
        const joined = await requestToJoin(m.muster.membership, union.id, alice, followId());
        assert.equal(joined.outcome, "accepted");
        await overrideBylaws(m.muster.membership, "riders", { duesAmount: DUES, duesPeriodDays: 30, duesGraceDays: 7 });
        const t = await setUpTreasury(connection, db, union.id);
        const treasury = new PublicKey(t.treasury.tokenAccount);

        // Before anything moved: an empty list and a zero balance.
        const empty = await (await fetch(new URL("/u/riders/treasury.json", m.origin))).json() as TreasuryJson;
        assert.equal(empty.treasury.balance.baseUnits, "0");
        assert.deepEqual(empty.flows, []);

        const wallet = await t.wallet(100_000_000n);
        const pay = async (amount: bigint, memo: string) => {
          const transfer = createTransferCheckedInstruction(getAssociatedTokenAddressSync(t.mint, wallet.publicKey), t.mint, treasury, wallet.publicKey, amount, 6);
          transfer.keys.push({ pubkey: Keypair.generate().publicKey, isSigner: false, isWritable: false });
          const { blockhash, lastValidBlockHeight } = await connection.getLatestBlockhash();
          const tx = new Transaction({ feePayer: wallet.publicKey, blockhash, lastValidBlockHeight }).add(transfer, new TransactionInstruction({ programId: MEMO, keys: [], data: Buffer.from(memo) }));
          tx.sign(wallet);
          const signature = await connection.sendRawTransaction(tx.serialize());
          await connection.confirmTransaction({ signature, blockhash, lastValidBlockHeight });
          return signature;
        };
        const dues1 = await pay(DUES, alice.actorId);
        const dues2 = await pay(DUES * 2n, alice.actorId);
        const under = await pay(1_000n, alice.actorId);
        // An outflow signed by the treasury key.
        const key = await treasuryKey(db, union.id);
        const payee = await createAssociatedTokenAccountIdempotent(connection, t.faucet, t.mint, Keypair.generate().publicKey);
        const { blockhash, lastValidBlockHeight } = await connection.getLatestBlockhash();
        const outTx = new Transaction({ feePayer: key.publicKey, blockhash, lastValidBlockHeight }).add(createTransferCheckedInstruction(treasury, t.mint, payee, key.publicKey, 3_000_000n, 6));
        outTx.sign(key);
        const out = await connection.sendRawTransaction(outTx.serialize());
        await connection.confirmTransaction({ signature: out, blockhash, lastValidBlockHeight });
        // What the server's scheduled scan does (its lease is the server's own).
        await scanSinceCursor({ db, events: m.muster.events, ledger: m.muster.ledger!, duesParams: duesParamsFromBylaws }, union.id, treasury.toBase58());

        const read = async (cookie?: string) => (await (await fetch(new URL("/u/riders/treasury.json", m.origin), { headers: cookie ? { cookie } : {} })).json()) as TreasuryJson;
        const j = await read();
        // Every figure equals what the ledger says, read through web3.js against /solana/rpc.
        const chainBalance = await connection.getTokenAccountBalance(treasury);
        assert.equal(j.treasury.balance.baseUnits, chainBalance.value.amount);
        assert.equal(chainBalance.value.amount, String(DUES * 3n + 1_000n - 3_000_000n));
        assert.equal(j.treasury.address, treasury.toBase58());
        assert.deepEqual([j.treasury.threshold, j.treasury.signers], [1, [key.publicKey.toBase58()]]);
        const onChain = await connection.getSignaturesForAddress(treasury);
        assert.deepEqual(j.flows.map((f) => f.signature).sort(), onChain.filter((s) => s.err === null).map((s) => s.signature).filter((s) => j.flows.some((f) => f.signature === s)).sort());
        for (const s of [dues1, dues2, under, out]) assert.ok(j.flows.some((f) => f.signature === s), `flow ${s} shown`);
        for (const f of j.flows) {
          // The treasury account's token balance change in that transaction, from the RPC's own metadata.
          const tx = await connection.getTransaction(f.signature, { commitment: "confirmed", maxSupportedTransactionVersion: 0 });
          const index = tx!.transaction.message.staticAccountKeys.findIndex((k) => k.equals(treasury));
          const pre = BigInt(tx!.meta!.preTokenBalances!.find((b) => b.accountIndex === index)?.uiTokenAmount.amount ?? "0");
          const post = BigInt(tx!.meta!.postTokenBalances!.find((b) => b.accountIndex === index)!.uiTokenAmount.amount);
          assert.equal(f.direction === "in" ? post - pre : pre - post, BigInt(f.amount.baseUnits), `amount of ${f.signature}`);
          assert.match(f.url, new RegExp(`^https://explorer\\.solana\\.com/tx/${f.signature}\\?cluster=custom&customUrl=${encodeURIComponent(new URL("/solana/rpc", m.origin).href).replace(/\./g, "\\.")}$`));
        }
        const byId = new Map(j.flows.map((f) => [f.signature, f]));
        assert.deepEqual([byId.get(dues1)!.kind, byId.get(under)!.kind, byId.get(out)!.kind, byId.get(out)!.direction], ["dues", "unmatched", "other", "out"]);
        assert.match(byId.get(under)!.reason ?? "", /underpaid/);
        // The roster is for signed-in members by default: an anonymous reader sees no payer.
        assert.equal(j.payersShown, false);
        assert.ok(j.flows.every((f) => f.payer === null));
        await overrideBylaws(m.muster.membership, "riders", { membersVisibility: "public" });
        const pub = await read();
        assert.equal(pub.payersShown, true);
        assert.equal(pub.flows.find((f) => f.signature === dues1)!.payer, "@alice@remote.example");

        if (!browserSkip) {
          const browser = await launchBrowser();
          try {
            const page = await browser.newPage();
            for (const width of [1280, 390]) {
              await page.setViewportSize({ width, height: 900 });
              await page.goto(new URL("/u/riders/treasury", m.origin).href);
              assert.equal(await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth), 0, `the treasury page fits ${width} px`);
              assert.equal(await page.getAttribute("[data-testid=balance]", "data-base-units"), chainBalance.value.amount);
              const items = await page.$$eval("[data-testid=flows] li", (els) => els.map((e) => [e.getAttribute("data-signature"), e.getAttribute("data-direction"), e.getAttribute("data-amount")]));
              assert.deepEqual(items, pub.flows.map((f) => [f.signature, f.direction, f.amount.baseUnits]));
              assert.match(await page.textContent(`[data-signature="${dues1}"] [data-testid=payer]`) ?? "", /@alice@remote\.example/);
            }
          } finally {
            await browser.close();
          }
        }
        const missing = await fetch(new URL("/u/nobody/treasury", m.origin));
        assert.equal(missing.status, 404);
      } finally {
        rpc.close();
        await m.stop();
        await tdb.destroy();
      }
    });
  });
}
