import { TOKEN_PROGRAM_ID } from "@solana/spl-token";
import { Keypair } from "@solana/web3.js";
import type { DialectCase } from "../test/helpers/databases.ts";
import { followId, person, sharedKeys } from "../test/helpers/domain-context.ts";
import { recordingOutbox } from "../test/helpers/membership-worker.ts";
import { DECIMALS, fundedWallet, setupTreasury } from "../test/helpers/crowdfund.ts";
import { createEventBus } from "../src/events.ts";
import { createUnion } from "../src/unions/unions.ts";
import { requestToJoin } from "../src/members/membership.ts";
import { OPERATOR } from "../src/members/members.ts";
import { duesParamsFromBylaws } from "../src/treasury/dues-params.ts";
import { approveCrowdfund, getCrowdfund, proposeCrowdfund } from "../src/crowdfunds/crowdfunds.ts";
import { EmbeddedLedger } from "../solana/embedded-ledger.ts";
import { openVault, pledgeTransaction } from "../solana/crowdfund-vault.ts";
import { scanPledges } from "../solana/crowdfund-pledges.ts";
import { settleCrowdfund } from "../solana/crowdfund-settlement.ts";
import { faucetFunding } from "../solana/badge-sync.ts";
import { type Benchmark, loadAverage, perSecond, progress, type Row } from "./lib.ts";

const WALLETS = 50;

export const crowdfund: Benchmark = {
  name: "crowdfund",
  title: "Crowdfund vaults on the embedded ledger: pledges detected and recorded, settlement of N pledges",
  summary: "pledges detected+recorded/s, and settling a crowdfund of 1,000 pledges (refunds in batches of 15, or one payout): transactions, seconds",
  notes: [
    "each pledge is a real signed SPL transferChecked + Memo from one of 50 member wallets, executed by litesvm and persisted; detect+record = scanPledges over the vault's history (decode signed bytes, record once per signature)",
    "settle = from the decision through the last confirmed transaction (scan, plan, sign all, store, submit in order, confirm each)",
  ],
  async run(dialect: DialectCase, { quick }): Promise<Row[]> {
    const n = quick ? 100 : 1000;
    const tdb = await dialect.create();
    const database = tdb.open();
    try {
      const db = database.db;
      const ledger = await EmbeddedLedger.open(db);
      const events = createEventBus();
      const union = await createUnion({ db, events, generateKeys: sharedKeys }, { slug: "bench", name: "Bench", purpose: "Benchmarks", joinPolicy: "open" });
      const treasury = await setupTreasury(ledger, db, union.id);
      const deps = { db, events, outbox: recordingOutbox, duesParams: duesParamsFromBylaws };
      const members: { id: string; actorId: string; wallet: Keypair }[] = [];
      for (let i = 0; i < WALLETS; i++) {
        const p = person(`m${i}`);
        const j = await requestToJoin(deps, union.id, p, followId());
        const { wallet } = await fundedWallet(ledger, treasury.mint, treasury.mintAuthority, 1_000_000_000_000n);
        members.push({ id: j.member.id, actorId: p.actorId, wallet });
      }
      const chain = { db, ledger, fund: faucetFunding(ledger) };
      const rows: Row[] = [];
      for (const scenario of ["missed goal (refunds)", "goal reached (payout)"] as const) {
        const goal = scenario.startsWith("missed") ? 1_000_000_000_000_000n : 1n;
        const cf0 = await proposeCrowdfund(deps, union.id, members[0]!.id, {
          title: scenario, text: "bench", goal, deadline: new Date(Date.now() + 3600_000), beneficiary: Keypair.generate().publicKey.toBase58(),
        });
        await approveCrowdfund(deps, union.id, cf0.id, OPERATOR);
        await openVault(chain, cf0.id);
        const cf = (await getCrowdfund(db, union.id, cf0.id))!;
        const submitStart = performance.now();
        for (let i = 0; i < n; i++) {
          const m = members[i % WALLETS]!;
          const { tx, lastValidBlockHeight } = await pledgeTransaction(ledger, {
            crowdfund: cf, actorId: m.actorId, wallet: m.wallet.publicKey, amount: BigInt(1_000 + i), decimals: DECIMALS, tokenProgram: TOKEN_PROGRAM_ID,
          });
          tx.sign(m.wallet);
          await ledger.submit(tx.serialize(), { lastValidBlockHeight, commitment: "confirmed" });
          if (i % 200 === 199) progress(`${dialect.name} ${scenario}: ${i + 1}/${n} pledges submitted`);
        }
        const submitMs = performance.now() - submitStart;
        const scanStart = performance.now();
        const recorded = await scanPledges(ledger, db, cf);
        const scanMs = performance.now() - scanStart;
        if (recorded.length !== n || recorded.some((r) => r.status !== "matched")) throw new Error(`recorded ${recorded.length} of ${n} pledges`);
        const settleStart = performance.now();
        const r = await settleCrowdfund(chain, cf, { now: cf.deadline.getTime() + 1000 });
        const settleMs = performance.now() - settleStart;
        if (r.outcome !== (scenario.startsWith("missed") ? "refunded" : "settled")) throw new Error(`settlement ended ${r.outcome}`);
        rows.push({
          dialect: dialect.name, scenario, pledges: n, "pledge submit/s": perSecond(n, submitMs), "detect+record/s": perSecond(n, scanMs),
          "settle txs": r.transactions.length, "settle s": settleMs / 1000, load: loadAverage(),
        });
      }
      return rows;
    } finally {
      await database.close();
      await tdb.destroy();
    }
  },
};
