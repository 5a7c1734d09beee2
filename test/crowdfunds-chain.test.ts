import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Keypair, PublicKey, TransactionInstruction } from "@solana/web3.js";
import {
  createAssociatedTokenAccountIdempotentInstruction, createCloseAccountInstruction, createTransferCheckedInstruction, getAssociatedTokenAddressSync,
} from "@solana/spl-token";
import type { Kysely } from "kysely";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { followId, person, sharedKeys } from "./helpers/domain-context.ts";
import { createTestMint, DECIMALS, fundedWallet, send, setupTreasury, tokenBalance, type TestTreasury } from "./helpers/crowdfund.ts";
import { recordingOutbox } from "./helpers/membership-worker.ts";
import { overrideBylaws } from "./helpers/bylaws.ts";
import type { Database } from "../src/db/database.ts";
import type { DB } from "../src/db/schema.ts";
import { createEventBus } from "../src/events.ts";
import { createUnion } from "../src/unions/unions.ts";
import { requestToJoin } from "../src/members/membership.ts";
import { OPERATOR } from "../src/members/members.ts";
import { duesParamsFromBylaws } from "../src/treasury/dues-params.ts";
import { approveCrowdfund, type Crowdfund, CrowdfundError, getCrowdfund, proposeCrowdfund, splitTotal } from "../src/crowdfunds/crowdfunds.ts";
import { listPledges, pledgedTotal } from "../src/crowdfunds/pledges.ts";
import { settlementTransactions } from "../src/crowdfunds/settlement.ts";
import { EmbeddedLedger } from "../solana/embedded-ledger.ts";
import { openVault, pledgeTransaction, vaultBalance, MEMO_PROGRAM } from "../solana/crowdfund-vault.ts";
import { pledgeIn, recordSignature, scanPledges } from "../solana/crowdfund-pledges.ts";
import { claimDueSettlement, SettlementFailed, settleCrowdfund } from "../solana/crowdfund-settlement.ts";
import { faucetFunding } from "../solana/badge-sync.ts";
import { crowdfundAnnouncer, runCrowdfundJobs } from "../solana/crowdfund-jobs.ts";
import { TOKEN_PROGRAM_ID } from "@solana/spl-token";

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

async function world(d: (typeof dialects)[number], opts: { cutBps?: number; open?: boolean } = {}): Promise<World> {
  const tdb = await d.create();
  const database = tdb.open();
  const db = database.db;
  const ledger = await EmbeddedLedger.open(db);
  const events = createEventBus();
  const union = await createUnion({ db, events, generateKeys: sharedKeys }, { slug: "riders", name: "Riders", purpose: "Fair pay", joinPolicy: "open" });
  if (opts.cutBps !== undefined) await overrideBylaws({ db, events }, "riders", { crowdfundCutBps: opts.cutBps });
  const treasury = await setupTreasury(ledger, db, union.id);
  const deps = { db, events, outbox: recordingOutbox };
  const members: World["members"] = {};
  for (const name of ["alice", "bob", "carol"]) {
    const p = person(name);
    const j = await requestToJoin(deps, union.id, p, followId());
    assert.equal(j.outcome, "accepted");
    const { wallet, account } = await fundedWallet(ledger, treasury.mint, treasury.mintAuthority, START);
    members[name] = { actorId: p.actorId, id: j.member.id, wallet, account };
  }
  const beneficiary = Keypair.generate();
  const crowdfundDeps = { ...deps, duesParams: duesParamsFromBylaws };
  const proposed = await proposeCrowdfund(crowdfundDeps, union.id, members.alice!.id, {
    title: "Legal fund for the depot", text: "Lawyers for the **depot** case.", goal: GOAL, deadline: new Date(Date.now() + 3600_000), beneficiary: beneficiary.publicKey.toBase58(),
  });
  await approveCrowdfund(crowdfundDeps, union.id, `#${proposed.seq}`, OPERATOR);
  const chain = { db, ledger, fund: faucetFunding(ledger) };
  if (opts.open !== false) assert.equal(await openVault(chain, proposed.id), "open");
  const cf = (await getCrowdfund(db, union.id, proposed.id))!;
  return { tdb, database, db, ledger, treasury, unionId: union.id, members, beneficiary, cf, chain };
}

async function done(w: World): Promise<void> {
  await w.database.close();
  await w.tdb.destroy();
}

/** The member's wallet signs and submits a pledge as a wallet app would. */
async function pledge(w: World, name: string, amount: bigint, memoActor?: string | null, cf = w.cf): Promise<string> {
  const m = w.members[name]!;
  const { tx, lastValidBlockHeight } = await pledgeTransaction(w.ledger, {
    crowdfund: cf, actorId: memoActor ?? m.actorId, wallet: m.wallet.publicKey, amount, decimals: DECIMALS, tokenProgram: TOKEN_PROGRAM_ID,
  });
  if (memoActor === null) tx.instructions.pop();
  tx.sign(m.wallet);
  return w.ledger.submit(tx.serialize(), { lastValidBlockHeight, commitment: "confirmed" });
}

const afterDeadline = (w: World) => w.cf.deadline.getTime() + 1000;

for (const d of dialects) {
  describe(`crowdfund vaults on the embedded ledger, ${d.name}`, { skip: d.skip }, () => {
    it("succeeds: three wallets pledge, one atomic transaction pays the beneficiary total minus the floored cut and the treasury the cut, and closes the vault", async () => {
      const w = await world(d);
      try {
        assert.equal(w.cf.state, "open");
        assert.equal(w.cf.cutBps, 500);
        const vault = w.cf.vault!;
        // Before the vault existed nothing could be pledged; now it is an empty token account owned by the treasury authority.
        assert.equal(await vaultBalance(w.ledger, vault), 0n);
        const amounts = { alice: 3_000_001n, bob: 4_000_000n, carol: 5_345_678n };
        const sigs: Record<string, string> = {};
        for (const [name, amount] of Object.entries(amounts)) sigs[name] = await pledge(w, name, amount);
        // A deposit without a memo is refused (and returned at settlement so the vault can close).
        const stray = await pledge(w, "bob", 7n, null);
        const total = 12_345_679n;
        assert.equal(await vaultBalance(w.ledger, vault), total + 7n);

        // Seen twice (a rescan, the CLI's own lookup): recorded once.
        const first = await scanPledges(w.ledger, w.db, w.cf);
        assert.equal(first.length, 4);
        assert.deepEqual(await scanPledges(w.ledger, w.db, w.cf), []);
        assert.equal((await recordSignature(w.ledger, w.db, w.cf, sigs.alice!))?.recorded, false);
        // The same signed bytes submitted again execute nothing.
        const pledges = await listPledges(w.db, w.cf.id);
        assert.deepEqual(pledges.filter((p) => p.status === "matched").map((p) => p.amount).sort(), [3_000_001n, 4_000_000n, 5_345_678n]);
        assert.equal(pledges.find((p) => p.signature === stray)?.reason, "no memo naming the crowdfund and the member");
        assert.equal(await pledgedTotal(w.db, w.cf.id), total);

        // Not due before the deadline.
        assert.equal((await settleCrowdfund(w.chain, w.cf)).outcome, "not_due");
        // Two workers at the deadline: one decides, both send the same bytes, the payout executes once.
        const [a, b] = await Promise.all([settleCrowdfund(w.chain, w.cf, { now: afterDeadline(w) }), settleCrowdfund(w.chain, w.cf, { now: afterDeadline(w) })]);
        assert.deepEqual([a.outcome, b.outcome], ["settled", "settled"]);
        const { cut, beneficiary } = splitTotal(total, 500);
        assert.equal(cut, 617_283n, "5 % of 12,345,679 is 617,283.95: floored for the union");
        assert.equal(beneficiary, 11_728_396n);
        const beneficiaryAccount = getAssociatedTokenAddressSync(w.treasury.mint, w.beneficiary.publicKey, true);
        assert.equal(await tokenBalance(w.ledger, beneficiaryAccount), beneficiary);
        assert.equal(await tokenBalance(w.ledger, w.treasury.account), cut);
        assert.equal(await w.ledger.account(vault), null, "the vault is closed");
        assert.equal(await tokenBalance(w.ledger, w.members.bob!.account), START - 4_000_000n, "bob's refused 7 came back");
        const txs = await settlementTransactions(w.db, w.cf.id);
        assert.deepEqual(txs.map((t) => [t.kind, t.state]), [["refund", "confirmed"], ["payout", "confirmed"]]);
        // The payout is one transaction with both transfers and the close.
        const payout = await w.ledger.transaction(txs[1]!.signature);
        assert.equal(payout?.err, null);
        const after = (await getCrowdfund(w.db, w.unionId, w.cf.id))!;
        assert.deepEqual([after.state, after.total, after.cut], ["settled", total, cut]);
        assert.ok(after.settledAt);
        // A pledge after settlement is refused by the token program: the vault no longer exists.
        await assert.rejects(pledge(w, "alice", 1n));
      } finally {
        await done(w);
      }
    });

    it("fails: a missed goal refunds every pledge to the account it came from, 15 per transaction, each refund recorded", async () => {
      const w = await world(d);
      try {
        const plan = [...Array(17).keys()].map((i) => ({ name: ["alice", "bob", "carol"][i % 3]!, amount: BigInt(100_000 + i) }));
        for (const p of plan) await pledge(w, p.name, p.amount);
        const r = await settleCrowdfund(w.chain, w.cf, { now: afterDeadline(w) });
        assert.equal(r.outcome, "refunded");
        assert.deepEqual(r.transactions.map((t) => [t.kind, t.pledges.length]), [["refund", 15], ["refund", 2], ["close", 0]]);
        for (const name of ["alice", "bob", "carol"]) assert.equal(await tokenBalance(w.ledger, w.members[name]!.account), START, `${name} got back exactly what they pledged`);
        const pledges = await listPledges(w.db, w.cf.id);
        assert.equal(pledges.length, 17);
        for (const p of pledges) assert.ok(p.refundSignature && r.transactions.some((t) => t.signature === p.refundSignature), "each refund is recorded");
        // Each refund transfer went to the pledge's own source account, for its own amount.
        const batch = await w.ledger.transaction(r.transactions[1]!.signature);
        assert.equal(batch?.err, null);
        assert.equal(await w.ledger.account(w.cf.vault!), null);
        assert.equal(await tokenBalance(w.ledger, w.treasury.account), 0n, "no cut on a failed crowdfund");
      } finally {
        await done(w);
      }
    });

    it("a settlement is atomic: with the treasury's account closed the cut fails and the beneficiary gets nothing; the next run pays once", async () => {
      const w = await world(d);
      try {
        for (const [name, amount] of [["alice", 6_000_000n], ["bob", 6_000_000n]] as const) await pledge(w, name, amount);
        // The treasury's token account (empty) is closed by its owner: the cut transfer has nowhere to go.
        await send(w.ledger, w.treasury.key, [createCloseAccountInstruction(w.treasury.account, w.treasury.key.publicKey, w.treasury.authority, [w.treasury.key])]);
        await assert.rejects(settleCrowdfund(w.chain, w.cf, { now: afterDeadline(w) }), (e: unknown) => e instanceof SettlementFailed && /payout transaction/.test(e.message));
        const beneficiaryAccount = getAssociatedTokenAddressSync(w.treasury.mint, w.beneficiary.publicKey, true);
        assert.equal(await tokenBalance(w.ledger, beneficiaryAccount), 0n, "the beneficiary got nothing");
        assert.equal(await w.ledger.account(beneficiaryAccount.toBase58()), null, "not even the account creation in the same transaction happened");
        assert.equal(await vaultBalance(w.ledger, w.cf.vault!), 12_000_000n, "the vault is whole");
        assert.deepEqual((await settlementTransactions(w.db, w.cf.id)).map((t) => t.state), ["failed"]);
        assert.equal((await getCrowdfund(w.db, w.unionId, w.cf.id))?.state, "succeeded");
        // Reopened, the next run signs the payout anew (the failed one never executed) and pays exactly once.
        // (Paid by another key: the same bytes as the account's first creation would be refused as already processed.)
        await send(w.ledger, w.members.alice!.wallet, [createAssociatedTokenAccountIdempotentInstruction(w.members.alice!.wallet.publicKey, w.treasury.account, w.treasury.authority, w.treasury.mint)]);
        assert.equal(await tokenBalance(w.ledger, w.treasury.account), 0n);
        assert.ok(await w.ledger.account(w.treasury.account.toBase58()));
        const r = await settleCrowdfund(w.chain, (await getCrowdfund(w.db, w.unionId, w.cf.id))!);
        assert.equal(r.outcome, "settled");
        assert.equal(await tokenBalance(w.ledger, beneficiaryAccount), 11_400_000n);
        assert.equal(await tokenBalance(w.ledger, w.treasury.account), 600_000n);
      } finally {
        await done(w);
      }
    });

    it("bad pledges are recorded unmatched with their reasons and never counted", async () => {
      const w = await world(d);
      try {
        const alice = w.members.alice!;
        // Wrong mint: another token sent to alice's own account of it, carrying the crowdfund's reference.
        const other = await createTestMint(w.ledger, w.treasury.mintAuthority);
        const { account: otherSource } = await fundedWallet(w.ledger, other, w.treasury.mintAuthority, 1000n, alice.wallet);
        const elsewhereOwner = Keypair.generate().publicKey;
        const otherDest = getAssociatedTokenAddressSync(other, elsewhereOwner, true);
        const memo = (text: string) => new TransactionInstruction({ programId: MEMO_PROGRAM, keys: [], data: Buffer.from(text) });
        const withRef = (ix: TransactionInstruction) => {
          ix.keys.push({ pubkey: new PublicKey(w.cf.reference!), isSigner: false, isWritable: false });
          return ix;
        };
        const okMemo = `muster crowdfund ${w.cf.id} ${alice.actorId}`;
        const wrongMint = await send(w.ledger, alice.wallet, [
          createAssociatedTokenAccountIdempotentInstruction(alice.wallet.publicKey, otherDest, elsewhereOwner, other),
          withRef(createTransferCheckedInstruction(otherSource, other, otherDest, alice.wallet.publicKey, 10n, DECIMALS)), memo(okMemo),
        ]);
        const stranger = Keypair.generate().publicKey;
        const wrongDest = getAssociatedTokenAddressSync(w.treasury.mint, stranger, true);
        const wrongDestination = await send(w.ledger, alice.wallet, [
          createAssociatedTokenAccountIdempotentInstruction(alice.wallet.publicKey, wrongDest, stranger, w.treasury.mint),
          withRef(createTransferCheckedInstruction(alice.account, w.treasury.mint, wrongDest, alice.wallet.publicKey, 11n, DECIMALS)), memo(okMemo),
        ]);
        const unknownCrowdfund = await send(w.ledger, alice.wallet, [
          createTransferCheckedInstruction(alice.account, w.treasury.mint, new PublicKey(w.cf.vault!), alice.wallet.publicKey, 12n, DECIMALS),
          memo(`muster crowdfund 00000000-0000-4000-8000-000000000000 ${alice.actorId}`),
        ]);
        const notMember = await pledge(w, "alice", 13n, "https://remote.example/users/mallory");
        const noMemo = await pledge(w, "alice", 14n, null);
        const good = await pledge(w, "alice", 15n);
        const recorded = await scanPledges(w.ledger, w.db, w.cf);
        const reasons = new Map(recorded.map((p) => [p.signature, p.reason]));
        assert.match(reasons.get(wrongMint) ?? "", /^wrong mint: /);
        assert.match(reasons.get(wrongDestination) ?? "", /^wrong destination: paid to /);
        assert.match(reasons.get(unknownCrowdfund) ?? "", /unknown crowdfund 00000000-0000-4000-8000-000000000000/);
        assert.match(reasons.get(notMember) ?? "", /^no member of this union is https:\/\/remote.example\/users\/mallory$/);
        assert.match(reasons.get(noMemo) ?? "", /^no memo/);
        assert.equal(reasons.get(good), null);
        assert.equal(await pledgedTotal(w.db, w.cf.id), 15n, "only the good pledge counts");
        const inVault = (await listPledges(w.db, w.cf.id)).filter((p) => p.inVault).map((p) => p.amount).sort();
        assert.deepEqual(inVault, [12n, 13n, 14n, 15n], "wrong mint and wrong destination never reached the vault");
        // Missed goal: everything in the vault goes back, the refused deposits too.
        const r = await settleCrowdfund(w.chain, w.cf, { now: afterDeadline(w) });
        assert.equal(r.outcome, "refunded");
        assert.equal(await tokenBalance(w.ledger, alice.account), START - 11n, "all but the 11 sent to a stranger came back");
        // Refused input to the domain: a bad signature is one clear error.
        assert.equal(await recordSignature(w.ledger, w.db, w.cf, "1111111111111111111111111111111111111111111111111111111111111111"), null, "an unknown signature records nothing");
        await assert.rejects((await import("../src/crowdfunds/pledges.ts")).recordPledge(w.db, {
          signature: "x", crowdfundId: w.cf.id, wallet: "w", source: "s", destination: "d", mint: "m", amount: 1n, memo: null, pledgedAt: 0,
        }), (e: unknown) => e instanceof CrowdfundError && /not a transaction signature/.test(e.message));
      } finally {
        await done(w);
      }
    });

    it("restarts: a pledge seen but not recorded, and a settlement signed and sent but not confirmed, are each recorded once after the ledger reopens from the database", async () => {
      const w = await world(d);
      let database2: Database | undefined;
      try {
        await pledge(w, "alice", 7_000_000n);
        const seenOnly = await pledge(w, "bob", 5_000_000n);
        // "Seen": the scanner read bob's pledge from the chain...
        const tx = await w.ledger.transaction(seenOnly);
        assert.ok(await pledgeIn(w.ledger, w.cf, tx!));
        // ...and the process died before recording it. A new process opens the same database.
        await w.database.close();
        database2 = w.tdb.open();
        const db = database2.db;
        let ledger = await EmbeddedLedger.open(db);
        let chain = { db, ledger, fund: faucetFunding(ledger) };
        const recorded = await scanPledges(ledger, db, w.cf);
        assert.deepEqual(recorded.map((p) => p.amount).sort(), [5_000_000n, 7_000_000n]);
        assert.deepEqual(await scanPledges(ledger, db, w.cf), []);
        assert.equal(await pledgedTotal(db, w.cf.id), await vaultBalance(ledger, w.cf.vault!), "database and chain agree");

        // The settlement decided and signed, its payout sent, then the process died before confirming it.
        const claimed = await claimDueSettlement(chain, w.cf, { now: afterDeadline(w) });
        assert.equal(claimed.state, "succeeded");
        const [stored] = await settlementTransactions(db, w.cf.id);
        assert.equal(stored?.state, "signed");
        await ledger.submit(Buffer.from(stored!.raw, "base64"), { lastValidBlockHeight: stored!.lastValidBlockHeight, commitment: "confirmed" });
        // A new ledger reopened from the database, as after a restart.
        ledger = await EmbeddedLedger.open(db);
        chain = { db, ledger, fund: faucetFunding(ledger) };
        const r = await settleCrowdfund(chain, claimed);
        assert.equal(r.outcome, "settled");
        assert.deepEqual(r.transactions.map((t) => [t.signature, t.state]), [[stored!.signature, "confirmed"]], "found by its signature, never signed anew");
        const beneficiaryAccount = getAssociatedTokenAddressSync(w.treasury.mint, w.beneficiary.publicKey, true);
        assert.equal(await tokenBalance(ledger, beneficiaryAccount), 11_400_000n);
        assert.equal(await tokenBalance(ledger, w.treasury.account), 600_000n);
        // The bytes signed before the restart cannot execute again: resubmitting changes nothing.
        assert.equal(await ledger.submit(Buffer.from(stored!.raw, "base64"), { lastValidBlockHeight: stored!.lastValidBlockHeight, commitment: "confirmed" }), stored!.signature);
        assert.equal(await tokenBalance(ledger, beneficiaryAccount), 11_400_000n);
        const payouts = await ledger.signaturesFor(beneficiaryAccount.toBase58());
        assert.equal(payouts.length, 1, "one transaction ever touched the beneficiary's account");
        // And once more, a run after settlement does nothing.
        assert.equal((await settleCrowdfund(chain, r.crowdfund)).outcome, "settled");
      } finally {
        await database2?.close();
        await w.tdb.destroy();
      }
    });

    it("the ledger process's job, run by two workers at once: one vault, one announcement, one settlement", async () => {
      const w = await world(d, { open: false });
      try {
        const announced: string[] = [];
        const announcer = crowdfundAnnouncer({ db: w.db, events: createEventBus(), outbox: recordingOutbox }, new URL("https://union.example"));
        const deps = { ...w.chain, announce: async (cf: Crowdfund) => { if (await announcer(cf)) announced.push(cf.id); } };
        assert.equal(w.cf.state, "approved");
        await Promise.all([runCrowdfundJobs(deps), runCrowdfundJobs(deps)]);
        const cf = (await getCrowdfund(w.db, w.unionId, w.cf.id))!;
        assert.equal(cf.state, "open");
        assert.deepEqual(announced, [cf.id], "announced once");
        const actions = await w.db.selectFrom("actions").selectAll().execute();
        assert.deepEqual(actions.map((a) => [a.kind, a.link, a.state]), [["donate", "https://union.example/u/riders/crowdfunds/1", "published"]]);
        assert.equal(cf.actionId, actions[0]!.id);
        // Exactly one vault account was created for it: the authority's token accounts for the mint are the treasury's and this vault.
        const owned = await w.ledger.tokenAccountsByOwner(w.treasury.authority.toBase58(), { mint: w.treasury.mint.toBase58() });
        assert.deepEqual(owned.map((o) => o.address).sort(), [w.treasury.account.toBase58(), cf.vault!].sort());
        w.cf = cf;
        await pledge(w, "alice", 6_000_000n);
        await pledge(w, "carol", 4_000_000n);
        // The jobs record pledges while open, and settle once past the deadline.
        await runCrowdfundJobs(deps);
        assert.equal(await pledgedTotal(w.db, cf.id), 10_000_000n);
        await Promise.all([runCrowdfundJobs(deps, afterDeadline(w)), runCrowdfundJobs(deps, afterDeadline(w))]);
        const settled = (await getCrowdfund(w.db, w.unionId, cf.id))!;
        assert.equal(settled.state, "settled");
        assert.equal((await settlementTransactions(w.db, cf.id)).length, 1);
        const beneficiaryAccount = getAssociatedTokenAddressSync(w.treasury.mint, w.beneficiary.publicKey, true);
        assert.equal(await tokenBalance(w.ledger, beneficiaryAccount), 9_500_000n);
        assert.equal(await tokenBalance(w.ledger, w.treasury.account), 500_000n);
      } finally {
        await done(w);
      }
    });

    it("proposals follow the bylaws: eligibility, officers approve once, bad input refused", async () => {
      const w = await world(d);
      try {
        const events = createEventBus();
        const deps = { db: w.db, events, outbox: recordingOutbox, duesParams: duesParamsFromBylaws };
        const draft = { title: "Strike kitchen", text: "Food.", goal: 5n, deadline: new Date(Date.now() + 60_000), beneficiary: w.beneficiary.publicKey.toBase58() };
        await assert.rejects(proposeCrowdfund(deps, w.unionId, w.members.bob!.id, { ...draft, goal: 0n }), /goal/);
        await assert.rejects(proposeCrowdfund(deps, w.unionId, w.members.bob!.id, { ...draft, beneficiary: "nope" }), /beneficiary: not a Solana address/);
        await assert.rejects(proposeCrowdfund(deps, w.unionId, w.members.bob!.id, { ...draft, deadline: new Date(Date.now() - 1) }), /deadline/);
        // Dues in force and bob never paid: not in good standing, so refused.
        await overrideBylaws({ db: w.db, events }, "riders", { duesAmount: 5n, duesPeriodDays: 30, duesGraceDays: 0 });
        await assert.rejects(proposeCrowdfund(deps, w.unionId, w.members.bob!.id, draft), (e: unknown) => e instanceof CrowdfundError && e.code === "forbidden" && /good standing/.test(e.message));
        await overrideBylaws({ db: w.db, events }, "riders", { crowdfundEligibility: "members" });
        const cf = await proposeCrowdfund(deps, w.unionId, w.members.bob!.id, draft);
        assert.equal(cf.seq, 2);
        // Only officers approve; a second decision is refused.
        await assert.rejects(approveCrowdfund(deps, w.unionId, "2", { kind: "member", memberId: w.members.carol!.id }), /only the leader and officers/);
        await approveCrowdfund(deps, w.unionId, cf.id, OPERATOR);
        await assert.rejects(approveCrowdfund(deps, w.unionId, "#2", OPERATOR), /already approved/);
        await assert.rejects(approveCrowdfund(deps, w.unionId, "#99", OPERATOR), /no crowdfund #99/);
      } finally {
        await done(w);
      }
    });
  });
}
