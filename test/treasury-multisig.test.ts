import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Keypair, PublicKey, Transaction } from "@solana/web3.js";
import { createAssociatedTokenAccountIdempotentInstruction, createMintToCheckedInstruction, createTransferCheckedInstruction, getAssociatedTokenAddressSync, getMultisig, getAccount } from "@solana/spl-token";
import { dialects } from "./helpers/databases.ts";
import { startLedger } from "./helpers/solana.ts";
import { followId, person, sharedKeys } from "./helpers/domain-context.ts";
import { createEventBus } from "../src/events.ts";
import { createUnion } from "../src/unions/unions.ts";
import { requestToJoin, setOfficer } from "../src/members/membership.ts";
import { OPERATOR } from "../src/members/members.ts";
import { changeBylaws } from "../src/bylaws/bylaws.ts";
import { linkWallet } from "../src/treasury/badges.ts";
import { TreasuryError } from "../src/treasury/dues.ts";
import { getTransfer } from "../src/treasury/treasury.ts";
import { issueWalletChallenge, proveWallet } from "../src/treasury/wallet-proof.ts";
import * as ed from "@noble/ed25519";
import bs58 from "bs58";
import { KyselyMessageQueue } from "../federation/kysely-message-queue.ts";
import { queueOutbox } from "../federation/outbound.ts";
import { faucetFunding } from "../solana/badge-sync.ts";
import { handleLedgerIntent } from "../solana/ledger-lane.ts";
import { LedgerError } from "../solana/ledger.ts";
import { addTransferSignature, ensureTreasury, prepareTransfer, signTransferMessage, submitTransfer, transferMessage, treasuryAuthority, treasuryBalance } from "../solana/treasury-authority.ts";

// The Token program's own refusal, not some other failure.
const refusedForSignatures = (e: unknown) => e instanceof LedgerError && e.code === "failed" && /MissingRequiredSignature/.test(e.message);

for (const d of dialects) {
  describe(`multisig treasury on ${d.name}`, { skip: d.skip }, () => {
    it("a 2-of-3 treasury: the chain refuses one signer, moves with two over hours through a durable nonce, and runs it once", async () => {
      const tdb = await d.create();
      const database = tdb.open();
      const db = database.db;
      let clock = Date.now();
      const running = await startLedger(db, { now: () => clock });
      const domainQueue = new KyselyMessageQueue(database, { name: "domain", pollIntervalMs: 20 } as never);
      const ledgerQueue = new KyselyMessageQueue(database, { name: "ledger", pollIntervalMs: 20 } as never);
      try {
        const { ledger, connection } = running;
        const events = createEventBus();
        const outbox = queueOutbox(domainQueue, ledgerQueue);
        const deps = { db, events, outbox };
        const chain = { db, ledger, outbox, fund: faucetFunding(ledger), origin: new URL("https://union.example") };

        // The default: 1-of-1 of the server's key (custodial).
        const solo = await createUnion({ db, events, generateKeys: sharedKeys }, { slug: "solo", name: "Solo", purpose: "Fair pay", joinPolicy: "open" });
        const soloAuth = await treasuryAuthority(chain, solo.id);
        assert.equal(soloAuth.threshold, 1);
        assert.deepEqual(soloAuth.treasury.signers, [soloAuth.serverKey.publicKey.toBase58()]);
        assert.ok(soloAuth.serverAlone);
        const soloMultisig = await getMultisig(connection, soloAuth.address);
        assert.deepEqual([soloMultisig.m, soloMultisig.n], [1, 1]);
        assert.equal((await getAccount(connection, new PublicKey(soloAuth.treasury.tokenAccount))).owner.toBase58(), soloAuth.address.toBase58(), "the multisig owns the treasury's token account");
        assert.equal((await ensureTreasury(chain, solo.id)).authority, soloAuth.treasury.authority, "created once");
        // Crowdfund vault code signs through the same authority: under the 1-of-1 multisig the server signs alone.
        const vaultAuth = soloAuth;
        assert.deepEqual(vaultAuth.multiSigners.map((k) => k.toBase58()), [soloAuth.serverKey.publicKey.toBase58()]);
        const soloMint = new PublicKey(soloAuth.treasury.mint);
        const mintBh = await ledger.latestBlockhash();
        const mintSolo = new Transaction({ feePayer: soloAuth.serverKey.publicKey, ...mintBh }).add(createMintToCheckedInstruction(soloMint, new PublicKey(soloAuth.treasury.tokenAccount), soloAuth.serverKey.publicKey, 10n, 6, [], soloAuth.tokenProgram));
        mintSolo.sign(soloAuth.serverKey);
        await ledger.submit(mintSolo.serialize(), { lastValidBlockHeight: mintBh.lastValidBlockHeight, commitment: "confirmed" });
        const soloPayee = Keypair.generate().publicKey;
        const soloPayeeAccount = getAssociatedTokenAddressSync(soloMint, soloPayee, true, soloAuth.tokenProgram);
        const pay = new Transaction({ feePayer: vaultAuth.feePayer, ...(await ledger.latestBlockhash()) }).add(
          createAssociatedTokenAccountIdempotentInstruction(vaultAuth.feePayer, soloPayeeAccount, soloPayee, soloMint, soloAuth.tokenProgram),
          createTransferCheckedInstruction(new PublicKey(soloAuth.treasury.tokenAccount), soloMint, soloPayeeAccount, vaultAuth.address, 4n, 6, [...vaultAuth.multiSigners], soloAuth.tokenProgram),
        );
        vaultAuth.signAsServer(pay);
        await ledger.submit(pay.serialize(), { lastValidBlockHeight: Number.MAX_SAFE_INTEGER, commitment: "confirmed" });
        assert.equal(await treasuryBalance(ledger, soloAuth.treasury), 6n, "the server alone moves a custodial 1-of-1 treasury");

        // 2-of-3: an operator override sets the threshold; two officers link wallets.
        const union = await createUnion({ db, events, generateKeys: sharedKeys }, { slug: "riders", name: "Riders", purpose: "Fair pay", joinPolicy: "open" });
        const wallets = [Keypair.generate(), Keypair.generate()];
        for (const [i, name] of ["ana", "ben"].entries()) {
          const j = await requestToJoin(deps, union.id, person(name), followId());
          await setOfficer(deps, union.id, j.member.id, OPERATOR, "treasurer");
          // An operator's link (no proof) does not make a signer; the officer's own proof does.
          await linkWallet(deps, union.id, j.member.id, Keypair.generate().publicKey.toBase58(), OPERATOR);
          const challenge = await issueWalletChallenge(db, union.id, j.member.id, { union: "https://union.example/u/riders", actorId: person(name).actorId });
          await proveWallet(deps, union.id, { wallet: wallets[i]!.publicKey.toBase58(), message: challenge.message, signature: bs58.encode(await ed.signAsync(new TextEncoder().encode(challenge.message), wallets[i]!.secretKey.slice(0, 32))) });
        }
        await changeBylaws(deps, union.id, { kind: "operator", reason: "officers co-sign" }, { params: { treasuryThreshold: "3" } });
        await changeBylaws(deps, union.id, { kind: "operator", reason: "too many" }, { params: { treasuryThreshold: "4" } });
        await assert.rejects(treasuryAuthority(chain, union.id), (e: unknown) => e instanceof TreasuryError && /ask for 4 treasury signatures but there are only 3 signers/.test(e.message));
        await changeBylaws(deps, union.id, { kind: "operator", reason: "officers co-sign" }, { params: { treasuryThreshold: "2" } });
        const auth = await treasuryAuthority(chain, union.id);
        const server = auth.serverKey;
        assert.deepEqual(auth.treasury.signers, [server.publicKey.toBase58(), ...wallets.map((w) => w.publicKey.toBase58())]);
        assert.equal(auth.serverAlone, false);
        assert.deepEqual(auth.multiSigners.map((k) => k.toBase58()), [server.publicKey.toBase58(), wallets[0]!.publicKey.toBase58()], "instructions name the server and the first officer");
        const multisig = await getMultisig(connection, auth.address);
        assert.deepEqual([multisig.m, multisig.n], [2, 3]);

        // Fund the treasury with test dues tokens (the test mint's authority is the server's key).
        const mint = new PublicKey(auth.treasury.mint);
        const bh = await ledger.latestBlockhash();
        const fundTx = new Transaction({ feePayer: server.publicKey, ...bh }).add(createMintToCheckedInstruction(mint, new PublicKey(auth.treasury.tokenAccount), server.publicKey, 1_000_000n, 6, [], auth.tokenProgram));
        fundTx.sign(server);
        await ledger.submit(fundTx.serialize(), { lastValidBlockHeight: bh.lastValidBlockHeight, commitment: "confirmed" });
        assert.equal(await treasuryBalance(ledger, auth.treasury), 1_000_000n);

        // The server's key alone cannot move a 2-of-3 treasury: the chain refuses.
        const thief = Keypair.generate().publicKey;
        const thiefAccount = getAssociatedTokenAddressSync(mint, thief, true, auth.tokenProgram);
        const openThief = new Transaction({ feePayer: server.publicKey, ...(await ledger.latestBlockhash()) })
          .add(createAssociatedTokenAccountIdempotentInstruction(server.publicKey, thiefAccount, thief, mint, auth.tokenProgram));
        openThief.sign(server);
        await ledger.submit(openThief.serialize(), { lastValidBlockHeight: Number.MAX_SAFE_INTEGER, commitment: "confirmed" });
        const alone = new Transaction({ feePayer: server.publicKey, ...(await ledger.latestBlockhash()) }).add(
          createTransferCheckedInstruction(new PublicKey(auth.treasury.tokenAccount), mint, thiefAccount, auth.address, 500_000n, 6, [server.publicKey], auth.tokenProgram),
        );
        alone.sign(server);
        await assert.rejects(ledger.submit(alone.serialize(), { lastValidBlockHeight: Number.MAX_SAFE_INTEGER, commitment: "confirmed" }), refusedForSignatures);
        // Nor one officer alone.
        const officerAlone = new Transaction({ feePayer: wallets[0]!.publicKey, ...(await ledger.latestBlockhash()) }).add(
          createTransferCheckedInstruction(new PublicKey(auth.treasury.tokenAccount), mint, thiefAccount, auth.address, 500_000n, 6, [wallets[0]!.publicKey], auth.tokenProgram),
        );
        await ledger.airdrop(wallets[0]!.publicKey.toBase58(), 1_000_000_000n);
        officerAlone.sign(wallets[0]!);
        await assert.rejects(ledger.submit(officerAlone.serialize(), { lastValidBlockHeight: Number.MAX_SAFE_INTEGER, commitment: "confirmed" }), refusedForSignatures);
        assert.equal(await treasuryBalance(ledger, auth.treasury), 1_000_000n);

        // Two signers: the server prepares and signs; ben co-signs hours later.
        const payee = Keypair.generate().publicKey;
        await assert.rejects(prepareTransfer(chain, union.id, { to: payee.toBase58(), amount: 300_000n, cosigners: [] }), /needs 2 signatures/);
        await assert.rejects(prepareTransfer(chain, union.id, { to: payee.toBase58(), amount: 300_000n, cosigners: [thief.toBase58()] }), /not one of the treasury's signers/);
        const pending = await prepareTransfer(chain, union.id, { to: payee.toBase58(), amount: 300_000n, cosigners: [wallets[1]!.publicKey.toBase58()] });
        assert.equal(pending.state, "pending");
        assert.deepEqual(pending.signed, [server.publicKey.toBase58()]);
        const message = await transferMessage(db, union.id, pending.id);
        // ana is a signer of the multisig but not named by this transfer; a forged signature is refused.
        await assert.rejects(addTransferSignature(deps, union.id, pending.id, wallets[0]!.publicKey.toBase58(), await signTransferMessage(message, wallets[0]!)), /not one of the signers transfer/);
        await assert.rejects(addTransferSignature(deps, union.id, pending.id, wallets[1]!.publicKey.toBase58(), await signTransferMessage(message, wallets[0]!)), /is not .*'s signature/);
        clock += 5 * 3600_000;
        const ready = await addTransferSignature(deps, union.id, pending.id, wallets[1]!.publicKey.toBase58(), await signTransferMessage(message, wallets[1]!));
        assert.equal(ready.state, "ready");
        const again = await addTransferSignature(deps, union.id, pending.id, wallets[1]!.publicKey.toBase58(), await signTransferMessage(message, wallets[1]!));
        assert.equal(again.state, "ready", "signing twice changes nothing");
        const queued = await db.selectFrom("fedify_mq").select("message").where("queue", "=", "ledger").execute();
        assert.equal(queued.filter((q) => q.message.includes("treasury.transfer")).length, 1, "one submission queued in the ledger lane");

        // The ledger lane submits it once, hours after the blockhash of the time would have expired.
        await handleLedgerIntent(chain, { intent: { kind: "treasury.transfer", unionId: union.id, transferId: pending.id } });
        const done = (await getTransfer(db, union.id, pending.id))!;
        assert.equal(done.state, "executed", done.reason ?? "");
        assert.equal((await getAccount(connection, getAssociatedTokenAddressSync(mint, payee, true, auth.tokenProgram))).amount, 300_000n);
        assert.equal(await treasuryBalance(ledger, auth.treasury), 700_000n);
        // A retry (the lane's message handled twice) and a rebroadcast of the same bytes move nothing more.
        await submitTransfer(chain, union.id, pending.id);
        await db.updateTable("treasury_transfers").set({ state: "ready" }).where("id", "=", pending.id).execute();
        const retried = await submitTransfer(chain, union.id, pending.id);
        assert.equal(retried.state, "executed", "the resent bytes are found by their signature");
        assert.equal(await treasuryBalance(ledger, auth.treasury), 700_000n, "executed once");
      } finally {
        await domainQueue.close();
        await ledgerQueue.close();
        await running.close();
        await database.close();
        await tdb.destroy();
      }
    });
  });
}
