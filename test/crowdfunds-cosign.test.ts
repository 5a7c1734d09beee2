import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Keypair, PublicKey, Transaction } from "@solana/web3.js";
import { createTransferCheckedInstruction, getAssociatedTokenAddressSync, getMultisig, TOKEN_PROGRAM_ID } from "@solana/spl-token";
import * as ed from "@noble/ed25519";
import bs58 from "bs58";
import { dialects } from "./helpers/databases.ts";
import { followId, person, sharedKeys } from "./helpers/domain-context.ts";
import { DECIMALS, fundedWallet, setupTreasury, tokenBalance } from "./helpers/crowdfund.ts";
import { recordedIntents, recordingOutbox } from "./helpers/membership-worker.ts";
import { startLedger } from "./helpers/solana.ts";
import { createEventBus } from "../src/events.ts";
import { createUnion } from "../src/unions/unions.ts";
import { requestToJoin, setOfficer } from "../src/members/membership.ts";
import { OPERATOR } from "../src/members/members.ts";
import { changeBylaws } from "../src/bylaws/bylaws.ts";
import { duesParamsFromBylaws } from "../src/treasury/dues-params.ts";
import { getTransfer, listTransfers } from "../src/treasury/treasury.ts";
import { issueWalletChallenge, proveWallet } from "../src/treasury/wallet-proof.ts";
import { approveCrowdfund, getCrowdfund, proposeCrowdfund, splitTotal } from "../src/crowdfunds/crowdfunds.ts";
import { settlementTransactions } from "../src/crowdfunds/settlement.ts";
import { faucetFunding, treasuryKey } from "../solana/badge-sync.ts";
import { openVault, pledgeTransaction, vaultBalance } from "../solana/crowdfund-vault.ts";
import { settleCrowdfund } from "../solana/crowdfund-settlement.ts";
import { handleLedgerIntent } from "../solana/ledger-lane.ts";
import { LedgerError } from "../solana/ledger.ts";
import { addTransferSignature, signTransferMessage, submitTransfer, transferMessage } from "../solana/treasury-authority.ts";

const refusedForSignatures = (e: unknown) => e instanceof LedgerError && e.code === "failed" && /MissingRequiredSignature/.test(e.message);

for (const d of dialects) {
  describe(`crowdfunds under a 2-of-3 treasury on ${d.name}`, { skip: d.skip }, () => {
    it("one signer cannot settle; the server and an officer co-signing settle it, in order and exactly once", async () => {
      const tdb = await d.create();
      const database = tdb.open();
      const db = database.db;
      let clock = Date.now();
      const running = await startLedger(db, { now: () => clock });
      try {
        const { ledger, connection } = running;
        const events = createEventBus();
        const deps = { db, events, outbox: recordingOutbox };
        const union = await createUnion({ db, events, generateKeys: sharedKeys }, { slug: "riders", name: "Riders", purpose: "Fair pay", joinPolicy: "open" });
        // Two officers prove their wallets; the bylaws ask for 2 signatures: a 2-of-3 multisig.
        const officers = [Keypair.generate(), Keypair.generate()];
        for (const [i, name] of ["ana", "ben"].entries()) {
          const j = await requestToJoin(deps, union.id, person(name), followId());
          await setOfficer(deps, union.id, j.member.id, OPERATOR, "treasurer");
          const challenge = await issueWalletChallenge(db, union.id, j.member.id, { union: "https://union.example/u/riders", actorId: person(name).actorId });
          await proveWallet(deps, union.id, { wallet: officers[i]!.publicKey.toBase58(), message: challenge.message, signature: bs58.encode(await ed.signAsync(new TextEncoder().encode(challenge.message), officers[i]!.secretKey.slice(0, 32))) });
        }
        await changeBylaws(deps, union.id, { kind: "operator", reason: "officers co-sign" }, { params: { treasuryThreshold: "2" } });
        const treasury = await setupTreasury(ledger, db, union.id);
        const multisig = await getMultisig(connection, treasury.authority);
        assert.deepEqual([multisig.m, multisig.n], [2, 3]);
        const server = (await treasuryKey(db, union.id)).publicKey.toBase58();
        const [ana, ben] = officers.map((o) => o.publicKey.toBase58()) as [string, string];

        // Two members pledge; bob also sends a deposit without a memo (refused, returned at settlement).
        const pledgers: Record<string, { id: string; actorId: string; wallet: Keypair; account: PublicKey }> = {};
        for (const name of ["alice", "bob"]) {
          const p = person(name);
          const j = await requestToJoin(deps, union.id, p, followId());
          pledgers[name] = { id: j.member.id, actorId: p.actorId, ...await fundedWallet(ledger, treasury.mint, treasury.mintAuthority, 50_000_000n) };
        }
        const beneficiary = Keypair.generate();
        const cfDeps = { ...deps, duesParams: duesParamsFromBylaws };
        const proposed = await proposeCrowdfund(cfDeps, union.id, pledgers.alice!.id, {
          title: "Legal fund", text: "Lawyers.", goal: 10_000_000n, deadline: new Date(Date.now() + 3600_000), beneficiary: beneficiary.publicKey.toBase58(),
        });
        await approveCrowdfund(cfDeps, union.id, `#${proposed.seq}`, OPERATOR);
        const chain = { db, ledger, fund: faucetFunding(ledger), origin: new URL("https://union.example") };
        // Before: refused ("officers' co-signing of vault transactions is not wired yet"). Opening a vault moves nothing: the server's key suffices.
        assert.equal(await openVault(chain, proposed.id), "open");
        let cf = (await getCrowdfund(db, union.id, proposed.id))!;
        const pledge = async (name: string, amount: bigint, memo = true) => {
          const m = pledgers[name]!;
          const { tx, lastValidBlockHeight } = await pledgeTransaction(ledger, { crowdfund: cf, actorId: m.actorId, wallet: m.wallet.publicKey, amount, decimals: DECIMALS, tokenProgram: TOKEN_PROGRAM_ID });
          if (!memo) tx.instructions.pop();
          tx.sign(m.wallet);
          return ledger.submit(tx.serialize(), { lastValidBlockHeight, commitment: "confirmed" });
        };
        await pledge("alice", 6_000_000n);
        await pledge("bob", 5_000_001n);
        await pledge("bob", 7n, false);
        const vault = cf.vault!;
        const total = 11_000_001n;
        assert.equal(await vaultBalance(ledger, vault), total + 7n);

        // The deadline: the settlement is decided and signed by the server alone, and waits for an officer.
        const afterDeadline = cf.deadline.getTime() + 1000;
        const settled = await settleCrowdfund(chain, cf, { now: afterDeadline });
        assert.equal(settled.outcome, "pending");
        assert.equal(settled.crowdfund.state, "succeeded");
        const txs = await settlementTransactions(db, cf.id);
        assert.deepEqual(txs.map((t) => [t.kind, t.state]), [["refund", "signed"], ["payout", "signed"]]);
        const [refundId, payoutId] = txs.map((t) => t.transferId!) as [number, number];
        for (const id of [refundId, payoutId]) {
          const t = (await getTransfer(db, union.id, id))!;
          assert.deepEqual([t.state, t.required, t.signed], ["pending", [server, ana], [server]], "the server has signed; ana, the first officer, must");
        }
        assert.equal((await listTransfers(db, union.id)).length, 2, "offered to officers like any treasury transfer");
        // Nothing moved, whatever the server does alone: running it again sends nothing...
        assert.equal((await settleCrowdfund(chain, cf, { now: afterDeadline })).outcome, "pending");
        assert.equal(await vaultBalance(ledger, vault), total + 7n);
        // ...and the chain refuses the vault moved on the server's signature alone.
        const mint = treasury.mint;
        const bAccount = getAssociatedTokenAddressSync(mint, beneficiary.publicKey, true);
        const serverKey = await treasuryKey(db, union.id);
        const alone = new Transaction({ feePayer: serverKey.publicKey, ...(await ledger.latestBlockhash()) })
          .add(createTransferCheckedInstruction(new PublicKey(vault), mint, treasury.account, treasury.authority, total, DECIMALS, [serverKey.publicKey], TOKEN_PROGRAM_ID));
        alone.sign(serverKey);
        await assert.rejects(ledger.submit(alone.serialize(), { lastValidBlockHeight: Number.MAX_SAFE_INTEGER, commitment: "confirmed" }), refusedForSignatures);
        // Nor is a signer the transaction does not name accepted, nor a forged signature.
        await assert.rejects(addTransferSignature(deps, union.id, payoutId, ben, await signTransferMessage(await transferMessage(db, union.id, payoutId), officers[1]!)), /not one of the signers/);
        await assert.rejects(addTransferSignature(deps, union.id, payoutId, ana, await signTransferMessage(await transferMessage(db, union.id, payoutId), officers[1]!)), /is not .*'s signature/);

        // Hours later ana signs the payout first: it is ready, but the lane keeps the settlement's order
        // (a payout before the stray refund could not close the vault): nothing is sent yet.
        clock += 6 * 3600_000;
        const before = (await recordedIntents(db)).length;
        assert.equal((await addTransferSignature(deps, union.id, payoutId, ana, await signTransferMessage(await transferMessage(db, union.id, payoutId), officers[0]!))).state, "ready");
        const queued = (await recordedIntents(db)).slice(before);
        assert.deepEqual(queued, [{ kind: "treasury.transfer", unionId: union.id, transferId: payoutId }], "one submission queued for the ledger lane");
        await handleLedgerIntent(chain, { intent: queued[0]! });
        assert.equal((await getTransfer(db, union.id, payoutId))!.state, "ready");
        assert.equal(await vaultBalance(ledger, vault), total + 7n);

        // ana signs the refund: the lane sends the refund, then the payout.
        await addTransferSignature(deps, union.id, refundId, ana, await signTransferMessage(await transferMessage(db, union.id, refundId), officers[0]!));
        const next = (await recordedIntents(db)).slice(before + 1);
        assert.deepEqual(next, [{ kind: "treasury.transfer", unionId: union.id, transferId: refundId }]);
        await handleLedgerIntent(chain, { intent: next[0]! });
        cf = (await getCrowdfund(db, union.id, cf.id))!;
        assert.equal(cf.state, "settled");
        const { cut, beneficiary: payout } = splitTotal(total, cf.cutBps!);
        assert.equal(await tokenBalance(ledger, bAccount), payout);
        assert.equal(await tokenBalance(ledger, treasury.account), cut);
        assert.equal(await tokenBalance(ledger, pledgers.bob!.account), 50_000_000n - 5_000_001n, "bob's refused 7 came back");
        assert.equal(await ledger.account(vault), null, "the vault is closed");
        assert.deepEqual((await settlementTransactions(db, cf.id)).map((t) => t.state), ["confirmed", "confirmed"]);
        assert.deepEqual(await Promise.all([refundId, payoutId].map(async (id) => (await getTransfer(db, union.id, id))!.state)), ["executed", "executed"]);

        // Exactly once: the lane's messages again, another pass of the jobs, and the same bytes resent.
        for (const intent of [...queued, ...next]) await handleLedgerIntent(chain, { intent });
        assert.equal((await settleCrowdfund(chain, cf, { now: afterDeadline })).outcome, "settled");
        await db.updateTable("treasury_transfers").set({ state: "ready" }).where("id", "=", payoutId).execute();
        assert.equal((await submitTransfer(chain, union.id, payoutId)).state, "executed", "the resent bytes are found by their signature");
        assert.equal(await tokenBalance(ledger, bAccount), payout);
        assert.equal(await tokenBalance(ledger, treasury.account), cut);
      } finally {
        await running.close();
        await database.close();
        await tdb.destroy();
      }
    });
  });
}
