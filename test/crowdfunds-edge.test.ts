import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Keypair, type PublicKey } from "@solana/web3.js";
import { createCloseAccountInstruction, createTransferCheckedInstruction, getAssociatedTokenAddressSync, TOKEN_PROGRAM_ID } from "@solana/spl-token";
import type { Kysely } from "kysely";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { followId, person, sharedKeys } from "./helpers/domain-context.ts";
import { DECIMALS, fundedWallet, send, setupTreasury, tokenBalance, type TestTreasury } from "./helpers/crowdfund.ts";
import { recordingOutbox } from "./helpers/membership-worker.ts";
import type { Database } from "../src/db/database.ts";
import type { DB } from "../src/db/schema.ts";
import { createEventBus } from "../src/events.ts";
import { createUnion, getUnionById } from "../src/unions/unions.ts";
import { requestToJoin } from "../src/members/membership.ts";
import { OPERATOR } from "../src/members/members.ts";
import { duesParamsFromBylaws } from "../src/treasury/dues-params.ts";
import { approveCrowdfund, type Crowdfund, getCrowdfund, proposeCrowdfund } from "../src/crowdfunds/crowdfunds.ts";
import { listPledges } from "../src/crowdfunds/pledges.ts";
import { settlementTransactions } from "../src/crowdfunds/settlement.ts";
import { crowdfundPage } from "../src/http/pages/crowdfund.ts";
import { EmbeddedLedger } from "../solana/embedded-ledger.ts";
import { openVault, pledgeTransaction } from "../solana/crowdfund-vault.ts";
import { claimDueSettlement, settleCrowdfund } from "../solana/crowdfund-settlement.ts";
import { faucetFunding } from "../solana/badge-sync.ts";
import { crowdfundAnnouncer, runCrowdfundJobs } from "../solana/crowdfund-jobs.ts";

// The three ways a crowdfund used to stall until an operator acted (issue 15):
// a crash between opening the vault and announcing it, a pledge landing after
// the settlement was decided, and a pledger's closed account failing a whole
// refund batch. Real litesvm, real signed transactions, both dialects.

const GOAL = 10_000_000n;
const START = 100_000_000n;

interface World {
  tdb: TestDatabase;
  database: Database;
  db: Kysely<DB>;
  ledger: EmbeddedLedger;
  treasury: TestTreasury;
  unionId: string;
  members: Record<string, { actorId: string; id: string; wallet: Keypair; account: PublicKey }>;
  beneficiary: Keypair;
  cf: Crowdfund;
  chain: { db: Kysely<DB>; ledger: EmbeddedLedger; fund: (a: string) => Promise<void> };
}

async function world(d: (typeof dialects)[number], opts: { open?: boolean } = {}): Promise<World> {
  const tdb = await d.create();
  const database = tdb.open();
  const db = database.db;
  const ledger = await EmbeddedLedger.open(db);
  const events = createEventBus();
  const union = await createUnion({ db, events, generateKeys: sharedKeys }, { slug: "riders", name: "Riders", purpose: "Fair pay", joinPolicy: "open" });
  const treasury = await setupTreasury(ledger, db, union.id);
  const deps = { db, events, outbox: recordingOutbox };
  const members: World["members"] = {};
  for (const name of ["alice", "bob", "carol"]) {
    const p = person(name);
    const j = await requestToJoin(deps, union.id, p, followId());
    const { wallet, account } = await fundedWallet(ledger, treasury.mint, treasury.mintAuthority, START);
    members[name] = { actorId: p.actorId, id: j.member.id, wallet, account };
  }
  const beneficiary = Keypair.generate();
  const proposed = await proposeCrowdfund({ ...deps, duesParams: duesParamsFromBylaws }, union.id, members.alice!.id, {
    title: "Legal fund", text: "Lawyers.", goal: GOAL, deadline: new Date(Date.now() + 3600_000), beneficiary: beneficiary.publicKey.toBase58(),
  });
  await approveCrowdfund({ db }, union.id, proposed.id, OPERATOR);
  const chain = { db, ledger, fund: faucetFunding(ledger) };
  if (opts.open !== false) assert.equal(await openVault(chain, proposed.id), "open");
  const cf = (await getCrowdfund(db, union.id, proposed.id))!;
  return { tdb, database, db, ledger, treasury, unionId: union.id, members, beneficiary, cf, chain };
}

async function done(w: World): Promise<void> {
  await w.database.close();
  await w.tdb.destroy();
}

async function pledge(w: World, name: string, amount: bigint): Promise<string> {
  const m = w.members[name]!;
  const { tx, lastValidBlockHeight } = await pledgeTransaction(w.ledger, {
    crowdfund: w.cf, actorId: m.actorId, wallet: m.wallet.publicKey, amount, decimals: DECIMALS, tokenProgram: TOKEN_PROGRAM_ID,
  });
  tx.sign(m.wallet);
  return w.ledger.submit(tx.serialize(), { lastValidBlockHeight, commitment: "confirmed" });
}

const afterDeadline = (w: World) => w.cf.deadline.getTime() + 1000;

for (const d of dialects) {
  describe(`crowdfunds that used to need an operator, ${d.name}`, { skip: d.skip }, () => {
    it("a crash between opening the vault and announcing it: the next pass of the jobs announces it, once, even run twice at once", async () => {
      const w = await world(d, { open: false });
      try {
        // The vault opened and the process died before announcing (no announcer ran).
        assert.equal(await openVault(w.chain, w.cf.id), "open");
        assert.equal((await getCrowdfund(w.db, w.unionId, w.cf.id))?.actionId, null);
        const announcer = crowdfundAnnouncer({ db: w.db, events: createEventBus(), outbox: recordingOutbox }, new URL("https://union.example"));
        const deps = { ...w.chain, announce: async (cf: Crowdfund) => void await announcer(cf) };
        await Promise.all([runCrowdfundJobs(deps), runCrowdfundJobs(deps)]);
        const actions = await w.db.selectFrom("actions").selectAll().execute();
        assert.deepEqual(actions.map((a) => [a.kind, a.link, a.state]), [["donate", "https://union.example/u/riders/crowdfunds/1", "published"]], "announced exactly once");
        assert.equal((await getCrowdfund(w.db, w.unionId, w.cf.id))?.actionId, actions[0]!.id);
        await runCrowdfundJobs(deps);
        assert.equal((await w.db.selectFrom("actions").selectAll().execute()).length, 1, "a later pass announces nothing more");
      } finally {
        await done(w);
      }
    });

    it("a pledge landing after the settlement was decided is returned by a follow-up refund, recorded, and the payout goes through", async () => {
      const w = await world(d);
      try {
        await pledge(w, "alice", 6_000_000n);
        await pledge(w, "bob", 6_000_000n);
        // Decided and signed (payout of 12,000,000 plus the vault's close)...
        const claimed = await claimDueSettlement(w.chain, w.cf, { now: afterDeadline(w) });
        assert.equal(claimed.state, "succeeded");
        // ...then carol's pledge lands: the vault holds more than the payout moves, so its close would fail.
        const late = await pledge(w, "carol", 1_000_000n);
        const r = await settleCrowdfund(w.chain, claimed);
        assert.equal(r.outcome, "settled");
        const beneficiaryAccount = getAssociatedTokenAddressSync(w.treasury.mint, w.beneficiary.publicKey, true);
        assert.equal(await tokenBalance(w.ledger, beneficiaryAccount), 11_400_000n, "the payout is the decided total minus the cut");
        assert.equal(await tokenBalance(w.ledger, w.treasury.account), 600_000n);
        assert.equal(await tokenBalance(w.ledger, w.members.carol!.account), START, "carol got her late pledge back");
        assert.equal(await w.ledger.account(w.cf.vault!), null, "the vault closed");
        const p = (await listPledges(w.db, w.cf.id)).find((x) => x.signature === late)!;
        assert.equal(p.status, "unmatched");
        assert.match(p.reason ?? "", /after the settlement was decided/);
        const txs = await settlementTransactions(w.db, w.cf.id);
        const refund = txs.find((t) => t.kind === "refund")!;
        assert.deepEqual([refund.pledges, refund.state, refund.amount], [[late], "confirmed", 1_000_000n]);
        assert.equal(p.refundSignature, refund.signature, "the refund is recorded on the pledge");
        assert.equal((await w.ledger.transaction(refund.signature))?.err, null);
        assert.deepEqual(txs.map((t) => t.state), ["confirmed", "confirmed"]);
      } finally {
        await done(w);
      }
    });

    it("a pledger's closed account: the batch goes through without that refund, which is recorded failed with its reason (held by the treasury) and shown to officers", async () => {
      const w = await world(d);
      try {
        const bobPledge = await pledge(w, "bob", 2_000_000n);
        await pledge(w, "alice", 1_000_000n);
        await pledge(w, "carol", 3_000_000n);
        // Bob empties and closes the account his pledge came from.
        const bob = w.members.bob!;
        const elsewhere = await fundedWallet(w.ledger, w.treasury.mint, w.treasury.mintAuthority, 0n);
        await send(w.ledger, bob.wallet, [
          createTransferCheckedInstruction(bob.account, w.treasury.mint, elsewhere.account, bob.wallet.publicKey, START - 2_000_000n, DECIMALS),
          createCloseAccountInstruction(bob.account, bob.wallet.publicKey, bob.wallet.publicKey),
        ]);
        assert.equal(await w.ledger.account(bob.account.toBase58()), null);
        // Goal missed: one batch of three refunds, then the close.
        const r = await settleCrowdfund(w.chain, w.cf, { now: afterDeadline(w) });
        assert.equal(r.outcome, "refunded");
        assert.equal(await tokenBalance(w.ledger, w.members.alice!.account), START, "alice's refund went through in the retried batch");
        assert.equal(await tokenBalance(w.ledger, w.members.carol!.account), START);
        assert.equal(await tokenBalance(w.ledger, w.treasury.account), 2_000_000n, "bob's pledge is held by the treasury");
        assert.equal(await w.ledger.account(w.cf.vault!), null, "the vault still closed");
        const pledges = await listPledges(w.db, w.cf.id);
        const bobs = pledges.find((p) => p.signature === bobPledge)!;
        assert.match(bobs.refundFailure ?? "", new RegExp(`^the account the pledge came from \\(${bob.account.toBase58()}\\) is closed; 2000000 base units are held in the union's treasury`));
        assert.deepEqual(pledges.filter((p) => p.refundFailure === null).map((p) => p.refundFailure), [null, null]);
        assert.deepEqual(r.transactions.map((t) => [t.kind, t.pledges.length, t.state]), [["refund", 3, "confirmed"], ["close", 0, "confirmed"]]);
        // Officers see the reason on the crowdfund's page; others see that the union holds it.
        const union = (await getUnionById(w.db, w.unionId))!;
        const cf = (await getCrowdfund(w.db, w.unionId, w.cf.id))!;
        const view = { union, crowdfund: cf, fmt: (a: bigint) => `${a}`, pledges, names: null, vaultBalance: "closed" as const, transactions: r.transactions, memo: "m" };
        assert.match(String(crowdfundPage({ ...view, officer: true })), /data-testid="refund-failed">refund failed: the account the pledge came from \(\w+\) is closed/);
        const publicPage = String(crowdfundPage({ ...view, officer: false }));
        assert.doesNotMatch(publicPage, /refund-failed/);
        assert.match(publicPage, /held by the union for the pledger/);
      } finally {
        await done(w);
      }
    });
  });
}
