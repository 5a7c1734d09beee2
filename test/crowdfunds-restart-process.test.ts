import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Keypair, type PublicKey } from "@solana/web3.js";
import { getAssociatedTokenAddressSync, TOKEN_PROGRAM_ID } from "@solana/spl-token";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { followId, person, sharedKeys } from "./helpers/domain-context.ts";
import { DECIMALS, fundedWallet, setupTreasury, tokenBalance, type TestTreasury } from "./helpers/crowdfund.ts";
import { recordingOutbox } from "./helpers/membership-worker.ts";
import { eventually, freePort } from "./helpers/muster.ts";
import { ensureStopped, type MusterProcess, spawnMuster } from "./helpers/muster-process.ts";
import { createEventBus } from "../src/events.ts";
import { createUnion } from "../src/unions/unions.ts";
import { requestToJoin } from "../src/members/membership.ts";
import { OPERATOR } from "../src/members/members.ts";
import { duesParamsFromBylaws } from "../src/treasury/dues-params.ts";
import { approveCrowdfund, type Crowdfund, getCrowdfund, proposeCrowdfund } from "../src/crowdfunds/crowdfunds.ts";
import { listPledges, pledgedTotal } from "../src/crowdfunds/pledges.ts";
import { settlementTransactions } from "../src/crowdfunds/settlement.ts";
import { EmbeddedLedger } from "../solana/embedded-ledger.ts";
import { openVault, pledgeTransaction, vaultBalance } from "../solana/crowdfund-vault.ts";
import { faucetFunding } from "../solana/badge-sync.ts";

// The restart test with a real process: `muster serve` on the
// embedded ledger runs the crowdfund jobs, and MUSTER_TEST_CRASH_AT
// (src/crash-point.ts) makes it SIGKILL itself between "pledge seen" and
// "pledge recorded", then between "settlement sent" (executed on the chain)
// and "settlement confirmed" (in the database). A second process on the same
// database must record each once, leave the chain's balances equal to the
// database's figures, and the bytes signed before the kill must not execute again.

const GOAL = 10_000_000n;
const START = 100_000_000n;

for (const d of dialects) {
  describe(`crowdfund chain work survives SIGKILL of muster serve, on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    let dataDir: string;
    let env: Record<string, string>;
    let child: MusterProcess | undefined;
    let treasury: TestTreasury;
    let cf: Crowdfund;
    let unionId: string;
    let beneficiary: Keypair;
    const pledgeRaw: Buffer[] = [];
    const accounts: PublicKey[] = [];
    const members: { id: string; actorId: string; wallet: Keypair }[] = [];

    /** Opens the database and its ledger in this process (no child running), for `work`. */
    async function inspect<T>(work: (db: ReturnType<TestDatabase["open"]>["db"], ledger: EmbeddedLedger) => Promise<T>): Promise<T> {
      const database = tdb.open();
      try {
        return await work(database.db, await EmbeddedLedger.open(database.db));
      } finally {
        await database.close();
      }
    }

    async function query<T>(work: (db: ReturnType<TestDatabase["open"]>["db"]) => Promise<T>): Promise<T> {
      const database = tdb.open();
      try {
        return await work(database.db);
      } finally {
        await database.close();
      }
    }

    /** Every child started, so a failing test leaves none running (it held the port, and the file never ended). */
    const started: MusterProcess[] = [];
    const start = (crashAt?: string) => {
      const p = spawnMuster(["serve"], crashAt ? { ...env, MUSTER_TEST_CRASH_AT: crashAt } : env);
      started.push(p);
      return p;
    };

    async function killedAt(p: MusterProcess, point: string): Promise<void> {
      const timer = setTimeout(() => p.child.kill("SIGKILL"), 120_000);
      try {
        await p.exited;
      } finally {
        clearTimeout(timer);
      }
      assert.equal(p.child.signalCode, "SIGKILL", p.output());
      assert.match(p.output(), new RegExp(`SIGKILL at ${point}\\n`), "the process died at the crash point, not elsewhere");
    }

    before(async () => {
      tdb = await d.create();
      dataDir = mkdtempSync(join(tmpdir(), "muster-cf-crash-"));
      const port = await freePort();
      env = { PORT: String(port), ORIGIN: `http://127.0.0.1:${port}`, DATABASE_URL: tdb.url, DATA_DIR: dataDir, LOG_LEVEL: "info" };
      // Set up as the console and the members' wallets would, then close: one process owns the embedded ledger at a time.
      await inspect(async (db, ledger) => {
        const events = createEventBus();
        const union = await createUnion({ db, events, generateKeys: sharedKeys }, { slug: "riders", name: "Riders", purpose: "Fair pay", joinPolicy: "open" });
        unionId = union.id;
        treasury = await setupTreasury(ledger, db, union.id);
        const deps = { db, events, outbox: recordingOutbox };
        for (const name of ["alice", "bob"]) {
          const p = person(name);
          const j = await requestToJoin(deps, union.id, p, followId());
          const { wallet, account } = await fundedWallet(ledger, treasury.mint, treasury.mintAuthority, START);
          members.push({ id: j.member.id, actorId: p.actorId, wallet });
          accounts.push(account);
        }
        beneficiary = Keypair.generate();
        const proposed = await proposeCrowdfund({ ...deps, duesParams: duesParamsFromBylaws }, union.id, members[0]!.id, {
          title: "Depot legal fund", text: "Lawyers.", goal: GOAL, deadline: new Date(Date.now() + 3600_000), beneficiary: beneficiary.publicKey.toBase58(),
        });
        await approveCrowdfund({ db }, union.id, proposed.id, OPERATOR);
        assert.equal(await openVault({ db, ledger, fund: faucetFunding(ledger) }, proposed.id), "open");
        cf = (await getCrowdfund(db, union.id, proposed.id))!;
        for (const [i, amount] of [7_000_000n, 5_000_000n].entries()) {
          const m = members[i]!;
          const { tx, lastValidBlockHeight } = await pledgeTransaction(ledger, { crowdfund: cf, actorId: m.actorId, wallet: m.wallet.publicKey, amount, decimals: DECIMALS, tokenProgram: TOKEN_PROGRAM_ID });
          tx.sign(m.wallet);
          pledgeRaw.push(tx.serialize());
          await ledger.submit(tx.serialize(), { lastValidBlockHeight, commitment: "confirmed" });
        }
      });
    });

    after(async () => {
      for (const p of started) await ensureStopped(p);
      await tdb?.destroy();
      if (dataDir) rmSync(dataDir, { recursive: true, force: true });
    });

    it("killed between 'pledge seen' and 'pledge recorded': after a restart each pledge is recorded once and the vault matches the database", async () => {
      child = start("pledge-seen");
      await killedAt(child, "pledge-seen");
      assert.equal((await query((db) => listPledges(db, cf.id))).length, 0, "the kill came before the first pledge was recorded");

      child = start();
      await eventually(async () => (await query((db) => listPledges(db, cf.id))).length === 2 || undefined, "both pledges recorded", 120_000);
      await child.stop();
      await inspect(async (db, ledger) => {
        const pledges = await listPledges(db, cf.id);
        assert.deepEqual(pledges.map((p) => [p.amount, p.status]).sort(), [[5_000_000n, "matched"], [7_000_000n, "matched"]]);
        assert.equal(await pledgedTotal(db, cf.id), 12_000_000n);
        assert.equal(await vaultBalance(ledger, cf.vault!), await pledgedTotal(db, cf.id), "chain and database agree");
        // The pledges signed before the kill, sent again, execute nothing.
        for (const raw of pledgeRaw) await ledger.submit(raw, { lastValidBlockHeight: Number.MAX_SAFE_INTEGER, commitment: "confirmed" });
        assert.equal(await vaultBalance(ledger, cf.vault!), 12_000_000n);
        assert.equal(await tokenBalance(ledger, accounts[0]!), START - 7_000_000n);
      });
    });

    it("killed between 'settlement sent' and 'settlement confirmed': after a restart the payout is confirmed once by its signature, never signed anew", async () => {
      // The deadline passes (pledges were recorded before it).
      await query((db) => db.updateTable("crowdfunds").set({ deadline: Date.now() - 1000 }).where("id", "=", cf.id).execute());
      child = start("settlement-sent");
      await killedAt(child, "settlement-sent");
      const beneficiaryAccount = getAssociatedTokenAddressSync(treasury.mint, beneficiary.publicKey, true);
      const stored = await inspect(async (db, ledger) => {
        const txs = await settlementTransactions(db, cf.id);
        assert.deepEqual(txs.map((t) => [t.kind, t.state]), [["payout", "signed"]], "decided and sent, not yet confirmed");
        assert.equal((await getCrowdfund(db, unionId, cf.id))?.state, "succeeded");
        // The chain executed it before the kill.
        assert.equal(await tokenBalance(ledger, beneficiaryAccount), 11_400_000n);
        return txs[0]!;
      });

      child = start();
      await eventually(async () => (await query((db) => getCrowdfund(db, unionId, cf.id)))?.state === "settled" || undefined, "the settlement confirmed", 120_000);
      await child.stop();
      await inspect(async (db, ledger) => {
        const txs = await settlementTransactions(db, cf.id);
        assert.deepEqual(txs.map((t) => [t.signature, t.state]), [[stored.signature, "confirmed"]], "found by its signature, never signed anew");
        const after = (await getCrowdfund(db, unionId, cf.id))!;
        assert.deepEqual([after.total, after.cut], [12_000_000n, 600_000n]);
        // The chain's balances are the database's figures.
        assert.equal(await tokenBalance(ledger, beneficiaryAccount), after.total! - after.cut!);
        assert.equal(await tokenBalance(ledger, treasury.account), after.cut);
        assert.equal(await ledger.account(cf.vault!), null, "the vault is closed");
        // The payout signed before the kill cannot execute again.
        assert.equal(await ledger.submit(Buffer.from(stored.raw, "base64"), { lastValidBlockHeight: stored.lastValidBlockHeight, commitment: "confirmed" }), stored.signature);
        assert.equal(await tokenBalance(ledger, beneficiaryAccount), 11_400_000n);
        assert.equal((await ledger.signaturesFor(beneficiaryAccount.toBase58())).length, 1, "one transaction ever touched the beneficiary's account");
      });
    });

    it("killed between opening a vault and announcing it, then between signing a refund settlement and sending it: after each restart it is done once, with the bytes signed before", async () => {
      // A second crowdfund, approved; its vault is opened by the child.
      const second = await query(async (db) => {
        const deps = { db, events: createEventBus(), outbox: recordingOutbox, duesParams: duesParamsFromBylaws };
        const proposed = await proposeCrowdfund(deps, unionId, members[1]!.id, {
          title: "Strike kitchen", text: "Food.", goal: GOAL, deadline: new Date(Date.now() + 3600_000), beneficiary: Keypair.generate().publicKey.toBase58(),
        });
        return approveCrowdfund({ db }, unionId, proposed.id, OPERATOR);
      });
      child = start("vault-opened");
      await killedAt(child, "vault-opened");
      let cf2 = (await query((db) => getCrowdfund(db, unionId, second.id)))!;
      assert.deepEqual([cf2.state, cf2.actionId], ["open", null], "open, never announced");
      child = start();
      cf2 = await eventually(async () => {
        const now = await query((db) => getCrowdfund(db, unionId, second.id));
        return now?.actionId ? now : undefined;
      }, "the crowdfund announced after the restart", 120_000);
      await child.stop();
      const actions = await query((db) => db.selectFrom("actions").select(["id", "link"]).where("kind", "=", "donate").execute());
      // Each crowdfund announced once (the first, opened before any server ran, by the recovery pass of the first child).
      assert.deepEqual(actions.map((a) => a.link).sort(), [`${env.ORIGIN}/u/riders/crowdfunds/1`, `${env.ORIGIN}/u/riders/crowdfunds/2`], "announced once each");

      // Two pledges that miss the goal; the deadline passes.
      await inspect(async (db, ledger) => {
        for (const [i, amount] of [1_000_000n, 2_000_000n].entries()) {
          const m = members[i]!;
          const { tx, lastValidBlockHeight } = await pledgeTransaction(ledger, { crowdfund: cf2, actorId: m.actorId, wallet: m.wallet.publicKey, amount, decimals: DECIMALS, tokenProgram: TOKEN_PROGRAM_ID });
          tx.sign(m.wallet);
          await ledger.submit(tx.serialize(), { lastValidBlockHeight, commitment: "confirmed" });
        }
        await db.updateTable("crowdfunds").set({ deadline: Date.now() + 1000 }).where("id", "=", cf2.id).execute();
      });
      await new Promise((r) => setTimeout(r, 1500));
      child = start("settlement-signed");
      await killedAt(child, "settlement-signed");
      const stored = await inspect(async (db, ledger) => {
        assert.equal((await getCrowdfund(db, unionId, cf2.id))?.state, "failed");
        const txs = await settlementTransactions(db, cf2.id);
        assert.deepEqual(txs.map((t) => [t.kind, t.state]), [["refund", "signed"], ["close", "signed"]], "decided and signed, nothing sent");
        assert.equal(await vaultBalance(ledger, cf2.vault!), 3_000_000n, "nothing moved yet");
        return txs;
      });
      child = start();
      await eventually(async () => (await query((db) => getCrowdfund(db, unionId, cf2.id)))?.state === "refunded" || undefined, "refunded after the restart", 120_000);
      await child.stop();
      await inspect(async (db, ledger) => {
        const txs = await settlementTransactions(db, cf2.id);
        assert.deepEqual(txs.map((t) => [t.signature, t.state]), stored.map((t) => [t.signature, "confirmed"]), "the bytes signed before the kill were sent, none signed anew");
        assert.equal(await ledger.account(cf2.vault!), null, "the vault is closed");
        // Each got back exactly what they pledged to the second crowdfund (alice's first pledge was paid out).
        assert.equal(await tokenBalance(ledger, accounts[0]!), START - 7_000_000n);
        assert.equal(await tokenBalance(ledger, accounts[1]!), START - 5_000_000n);
        for (const p of await listPledges(db, cf2.id)) assert.equal(p.refundSignature, txs[0]!.signature);
      });
    });
  });
}
