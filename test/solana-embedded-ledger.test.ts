import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  type Connection, Keypair, NONCE_ACCOUNT_LENGTH, NonceAccount, LAMPORTS_PER_SOL, PublicKey, SendTransactionError, SystemProgram, Transaction, TransactionInstruction,
} from "@solana/web3.js";
import {
  createAssociatedTokenAccountIdempotent, createMint, getAccount, mintTo, TOKEN_2022_PROGRAM_ID, TOKEN_PROGRAM_ID, transferChecked,
} from "@solana/spl-token";
import { dialects } from "./helpers/databases.ts";
import { startLedger } from "./helpers/solana.ts";

const MEMO = new PublicKey("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr");

async function funded(connection: Connection, sol = 10): Promise<Keypair> {
  const kp = Keypair.generate();
  await connection.requestAirdrop(kp.publicKey, sol * LAMPORTS_PER_SOL);
  return kp;
}

for (const d of dialects) {
  describe(`embedded ledger over JSON-RPC on ${d.name}`, { skip: d.skip }, () => {
    it("runs real SPL Token and Token-2022 transfers for a web3.js Connection, and keeps them across a restart", async () => {
      const tdb = await d.create();
      const database = tdb.open();
      let running = await startLedger(database.db);
      try {
        const { connection } = running;
        const payer = await funded(connection);
        assert.equal(await connection.getBalance(payer.publicKey), 10 * LAMPORTS_PER_SOL);
        for (const programId of [TOKEN_PROGRAM_ID, TOKEN_2022_PROGRAM_ID]) {
          const mint = await createMint(connection, payer, payer.publicKey, null, 6, Keypair.generate(), { commitment: "confirmed" }, programId);
          const alice = Keypair.generate().publicKey;
          const from = await createAssociatedTokenAccountIdempotent(connection, payer, mint, payer.publicKey, {}, programId);
          const to = await createAssociatedTokenAccountIdempotent(connection, payer, mint, alice, {}, programId);
          await mintTo(connection, payer, mint, from, payer, 5_000_000n, [], {}, programId);
          await transferChecked(connection, payer, from, mint, to, payer, 1_250_000n, 6, [], {}, programId);
          assert.equal((await getAccount(connection, to, "confirmed", programId)).amount, 1_250_000n);
          const balance = await connection.getTokenAccountBalance(from);
          assert.deepEqual(balance.value, { amount: "3750000", decimals: 6, uiAmount: 3.75, uiAmountString: "3.75" });
          // Overdrawing fails in the token program and is refused at preflight.
          await assert.rejects(
            transferChecked(connection, payer, from, mint, to, payer, 10_000_000n, 6, [], {}, programId),
            (e: unknown) => e instanceof SendTransactionError && /custom program error: 0x1|Custom":1/.test(e.message + JSON.stringify(e.transactionError)),
          );
        }
        // A memo transfer: the transaction's bytes come back from getTransaction and getSignaturesForAddress finds it.
        const bob = Keypair.generate().publicKey;
        const { blockhash, lastValidBlockHeight } = await connection.getLatestBlockhash();
        const tx = new Transaction({ feePayer: payer.publicKey, blockhash, lastValidBlockHeight })
          .add(SystemProgram.transfer({ fromPubkey: payer.publicKey, toPubkey: bob, lamports: LAMPORTS_PER_SOL }))
          .add(new TransactionInstruction({ programId: MEMO, keys: [], data: Buffer.from("https://social.example/users/alice") }));
        tx.sign(payer);
        const raw = tx.serialize();
        const signature = await connection.sendRawTransaction(raw);
        const [status] = (await connection.getSignatureStatuses([signature])).value;
        assert.equal(status?.err, null);
        assert.equal(status?.confirmationStatus, "finalized");
        const seen = await connection.getSignaturesForAddress(bob);
        assert.deepEqual(seen.map((s) => s.signature), [signature]);
        const fetched = await connection.getTransaction(signature, { maxSupportedTransactionVersion: 0 });
        assert.ok(fetched);
        assert.equal(fetched.meta?.err, null);
        assert.ok(fetched.meta?.logMessages?.some((l) => l.includes("Memo")));
        const memoIx = fetched.transaction.message.compiledInstructions[1]!;
        assert.equal(Buffer.from(memoIx.data).toString(), "https://social.example/users/alice");
        assert.equal(await connection.getBalance(bob), LAMPORTS_PER_SOL);
        // The same signed bytes again: refused at preflight as already processed, never executed twice.
        await assert.rejects(connection.sendRawTransaction(raw), /already been processed/);
        await connection.sendRawTransaction(raw, { skipPreflight: true });
        assert.equal(await connection.getBalance(bob), LAMPORTS_PER_SOL);

        // Restart: a new ledger on the same database.
        const blockTimeBefore = fetched.blockTime;
        await running.close();
        running = await startLedger(database.db);
        const after = running.connection;
        assert.equal(await after.getBalance(bob), LAMPORTS_PER_SOL);
        assert.equal((await after.getSignatureStatuses([signature])).value[0]?.err, null);
        assert.equal((await after.getTransaction(signature, { maxSupportedTransactionVersion: 0 }))?.blockTime, blockTimeBefore);
        // litesvm alone would run this again after a restart: the stored index refuses it.
        await assert.rejects(after.sendRawTransaction(raw), /already been processed/);
        await after.sendRawTransaction(raw, { skipPreflight: true });
        assert.equal(await after.getBalance(bob), LAMPORTS_PER_SOL);
        // Accounts work after the restart: the payer still pays.
        const again = new Transaction({ feePayer: payer.publicKey, ...(await after.getLatestBlockhash()) })
          .add(SystemProgram.transfer({ fromPubkey: payer.publicKey, toPubkey: bob, lamports: 1 }));
        again.sign(payer);
        await after.sendRawTransaction(again.serialize());
        assert.equal(await after.getBalance(bob), LAMPORTS_PER_SOL + 1);
      } finally {
        await running.close();
        await database.close();
        await tdb.destroy();
      }
    });

    it("accepts a durable-nonce transaction long after signing, once, and refuses it after a restart", async () => {
      const tdb = await d.create();
      const database = tdb.open();
      let clock = Date.now();
      let running = await startLedger(database.db, { now: () => clock });
      try {
        const { connection } = running;
        const officer = await funded(connection);
        const nonce = Keypair.generate();
        const rent = await connection.getMinimumBalanceForRentExemption(NONCE_ACCOUNT_LENGTH);
        const create = new Transaction({ feePayer: officer.publicKey, ...(await connection.getLatestBlockhash()) })
          .add(SystemProgram.createNonceAccount({ fromPubkey: officer.publicKey, noncePubkey: nonce.publicKey, authorizedPubkey: officer.publicKey, lamports: rent }));
        create.sign(officer, nonce);
        await connection.sendRawTransaction(create.serialize());
        const nonceValue = async () => NonceAccount.fromAccountData((await connection.getAccountInfo(nonce.publicKey))!.data).nonce;
        const stored = await nonceValue();
        const to = Keypair.generate().publicKey;
        const payout = new Transaction({ feePayer: officer.publicKey, nonceInfo: { nonce: stored, nonceInstruction: SystemProgram.nonceAdvance({ noncePubkey: nonce.publicKey, authorizedPubkey: officer.publicKey }) } })
          .add(SystemProgram.transfer({ fromPubkey: officer.publicKey, toPubkey: to, lamports: LAMPORTS_PER_SOL }));
        payout.sign(officer);
        const raw = payout.serialize();
        // Co-signers take hours: far past any blockhash's life, the nonce still holds.
        clock += 3 * 3600_000;
        await connection.sendRawTransaction(raw);
        assert.equal(await connection.getBalance(to), LAMPORTS_PER_SOL);
        assert.notEqual(await nonceValue(), stored, "the nonce advanced");
        // A second payout signed against the old nonce value is refused.
        const stale = new Transaction({ feePayer: officer.publicKey, nonceInfo: { nonce: stored, nonceInstruction: SystemProgram.nonceAdvance({ noncePubkey: nonce.publicKey, authorizedPubkey: officer.publicKey }) } })
          .add(SystemProgram.transfer({ fromPubkey: officer.publicKey, toPubkey: to, lamports: 2 }));
        stale.sign(officer);
        await assert.rejects(connection.sendRawTransaction(stale.serialize()), /BlockhashNotFound/);
        // After a restart the nonce keeps moving forward and the executed payout stays refused.
        const advanced = await nonceValue();
        await running.close();
        running = await startLedger(database.db, { now: () => clock });
        await assert.rejects(running.connection.sendRawTransaction(raw), /already been processed/);
        const next = new Transaction({ feePayer: officer.publicKey, nonceInfo: { nonce: advanced, nonceInstruction: SystemProgram.nonceAdvance({ noncePubkey: nonce.publicKey, authorizedPubkey: officer.publicKey }) } })
          .add(SystemProgram.transfer({ fromPubkey: officer.publicKey, toPubkey: to, lamports: 3 }));
        next.sign(officer);
        await running.connection.sendRawTransaction(next.serialize());
        assert.equal(await running.connection.getBalance(to), LAMPORTS_PER_SOL + 3);
        assert.notEqual(await (async () => NonceAccount.fromAccountData((await running.connection.getAccountInfo(nonce.publicKey))!.data).nonce)(), stored);
      } finally {
        await running.close();
        await database.close();
        await tdb.destroy();
      }
    });

    it("refuses an expired blockhash, a forged signature and garbage, with the validator's errors", async () => {
      const tdb = await d.create();
      const database = tdb.open();
      let clock = Date.now();
      const running = await startLedger(database.db, { now: () => clock });
      try {
        const { connection } = running;
        const payer = await funded(connection);
        const { blockhash, lastValidBlockHeight } = await connection.getLatestBlockhash();
        const build = (lamports: number) => {
          const tx = new Transaction({ feePayer: payer.publicKey, blockhash, lastValidBlockHeight })
            .add(SystemProgram.transfer({ fromPubkey: payer.publicKey, toPubkey: Keypair.generate().publicKey, lamports }));
          tx.sign(payer);
          return tx;
        };
        // Signed by someone else: fails signature verification.
        const forged = build(1);
        forged.signatures[0]!.signature = Buffer.from(Keypair.generate().secretKey.subarray(0, 64));
        await assert.rejects(connection.sendRawTransaction(forged.serialize({ verifySignatures: false })), /SignatureFailure|signature/i);
        // 150 slots (60 s) later the blockhash has expired.
        const late = build(2);
        clock += 61_000;
        assert.ok(await connection.getBlockHeight() > lastValidBlockHeight);
        assert.equal((await connection.isBlockhashValid(blockhash)).value, false);
        await assert.rejects(connection.sendRawTransaction(late.serialize()), /BlockhashNotFound/);
        const fresh = await connection.getLatestBlockhash();
        assert.notEqual(fresh.blockhash, blockhash);
        const res = await fetch(running.url, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "sendTransaction", params: ["AAAA", { encoding: "base64" }] }) });
        const body = await res.json() as { error?: { code: number; message: string } };
        assert.equal(body.error?.code, -32602);
        const unknown = await (await fetch(running.url, { method: "POST", body: JSON.stringify({ jsonrpc: "2.0", id: 2, method: "nope" }) })).json() as { error?: { code: number } };
        assert.equal(unknown.error?.code, -32601);
      } finally {
        await running.close();
        await database.close();
        await tdb.destroy();
      }
    });
  });
}
