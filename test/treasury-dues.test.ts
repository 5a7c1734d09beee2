import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Keypair, LAMPORTS_PER_SOL, PublicKey, Transaction, TransactionInstruction } from "@solana/web3.js";
import {
  createAssociatedTokenAccountIdempotent, createMint, createTransferCheckedInstruction, getAccount, mintTo, TOKEN_PROGRAM_ID,
} from "@solana/spl-token";
import { dialects } from "./helpers/databases.ts";
import { startLedger } from "./helpers/solana.ts";
import { followId, person, sharedKeys } from "./helpers/domain-context.ts";
import { createEventBus } from "../src/events.ts";
import { createUnion } from "../src/unions/unions.ts";
import { approveMember, requestToJoin } from "../src/members/membership.ts";
import { OPERATOR } from "../src/members/members.ts";
import { saveTreasury } from "../src/treasury/treasury.ts";
import { memberStanding, recordDuesPayment, unmatchedPayments } from "../src/treasury/dues.ts";
import { duesParamsFromBylaws } from "../src/treasury/dues-params.ts";
import { overrideBylaws } from "./helpers/bylaws.ts";
import { scanDuesPayments } from "../solana/dues-scanner.ts";
import type { Ledger } from "../solana/ledger.ts";
import { LedgerError } from "../solana/ledger.ts";
import { NetworkLedger } from "../solana/network-ledger.ts";
import { recordingOutbox } from "./helpers/membership-worker.ts";

const MEMO = new PublicKey("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr");
const DUES = 5_000_000n;

for (const d of dialects) {
  for (const which of ["embedded", "network"] as const) {
    describe(`dues payments through the ${which} ledger on ${d.name}`, { skip: d.skip }, () => {
      it("credits a payment once, and keeps each bad payment unmatched with its reason", async () => {
        const tdb = await d.create();
        const database = tdb.open();
        const db = database.db;
        let clock = Date.now();
        const running = await startLedger(db, { now: () => clock });
        const ledger: Ledger = which === "embedded" ? running.ledger : new NetworkLedger(running.url, { pollMs: 20, rebroadcastMs: 50 });
        try {
          const { connection } = running;
          const events = createEventBus();
          const union = await createUnion({ db, events, generateKeys: sharedKeys }, { slug: "riders", name: "Riders", purpose: "Fair pay", joinPolicy: "open" });
          const deps = { db, events, outbox: recordingOutbox };
          const alice = person("alice");
          const joined = await requestToJoin(deps, union.id, alice, followId());
          if (joined.outcome === "pending") await approveMember(deps, union.id, joined.member.id, OPERATOR);
          // The dues rule in force is the union's bylaws.
          await overrideBylaws({ db, events }, "riders", { duesAmount: DUES, duesPeriodDays: 30, duesGraceDays: 7 });
          const dues = { db, duesParams: duesParamsFromBylaws };

          // The treasury: a dues mint and the authority's token account.
          const payer = Keypair.generate();
          await connection.requestAirdrop(payer.publicKey, 10 * LAMPORTS_PER_SOL);
          const authority = Keypair.generate();
          const mint = await createMint(connection, payer, payer.publicKey, null, 6);
          const otherMint = await createMint(connection, payer, payer.publicKey, null, 6);
          const treasuryAccount = await createAssociatedTokenAccountIdempotent(connection, payer, mint, authority.publicKey);
          const elsewhere = await createAssociatedTokenAccountIdempotent(connection, payer, mint, Keypair.generate().publicKey);
          const wrongMintAccount = await createAssociatedTokenAccountIdempotent(connection, payer, otherMint, authority.publicKey);
          await saveTreasury(db, {
            unionId: union.id, mint: mint.toBase58(), tokenProgram: TOKEN_PROGRAM_ID.toBase58(), decimals: 6,
            authority: authority.publicKey.toBase58(), tokenAccount: treasuryAccount.toBase58(), threshold: 1, signers: [authority.publicKey.toBase58()],
          });
          // Alice's wallet, with dues tokens of both mints.
          const wallet = Keypair.generate();
          await connection.requestAirdrop(wallet.publicKey, LAMPORTS_PER_SOL);
          const from = await createAssociatedTokenAccountIdempotent(connection, payer, mint, wallet.publicKey);
          const fromOther = await createAssociatedTokenAccountIdempotent(connection, payer, otherMint, wallet.publicKey);
          await mintTo(connection, payer, mint, from, payer, 100_000_000n);
          await mintTo(connection, payer, otherMint, fromOther, payer, 100_000_000n);

          const pay = async (o: { amount: bigint; memo?: string | null; reference?: boolean; to?: PublicKey; source?: PublicKey; mint?: PublicKey }) => {
            const reference = Keypair.generate().publicKey;
            const transfer = createTransferCheckedInstruction(o.source ?? from, o.mint ?? mint, o.to ?? treasuryAccount, wallet.publicKey, o.amount, 6);
            if (o.reference !== false) transfer.keys.push({ pubkey: reference, isSigner: false, isWritable: false });
            const { blockhash, lastValidBlockHeight } = await ledger.latestBlockhash();
            const tx = new Transaction({ feePayer: wallet.publicKey, blockhash, lastValidBlockHeight }).add(transfer);
            if (o.memo !== null) tx.add(new TransactionInstruction({ programId: MEMO, keys: [], data: Buffer.from(o.memo ?? alice.actorId) }));
            tx.sign(wallet);
            const raw = tx.serialize();
            const signature = await ledger.submit(raw, { lastValidBlockHeight, commitment: "confirmed" });
            return { signature, reference, raw, lastValidBlockHeight };
          };

          const good = await pay({ amount: DUES });
          // Rebroadcasting the same signed bytes (a retried worker) executes nothing twice.
          assert.equal(await ledger.submit(good.raw, { lastValidBlockHeight: good.lastValidBlockHeight, commitment: "confirmed" }), good.signature);
          assert.equal((await getAccount(connection, treasuryAccount)).amount, DUES);
          assert.equal((await memberStanding(dues, union.id, joined.member.id)).standing, "grace");
          const first = await scanDuesPayments(ledger, dues, union.id, treasuryAccount.toBase58());
          assert.deepEqual(first.map((p) => [p.signature, p.status, p.amount, p.recorded]), [[good.signature, "credited", DUES, true]]);
          assert.deepEqual(await scanDuesPayments(ledger, dues, union.id, treasuryAccount.toBase58()), [], "a rescan records nothing");
          const standing = await memberStanding(dues, union.id, joined.member.id);
          assert.equal(standing.standing, "good");
          // Seen again by another path (a reference scan): the first record stands.
          const again = await scanDuesPayments(ledger, { ...dues }, union.id, good.reference.toBase58());
          assert.deepEqual(again, []);

          const underpaid = await pay({ amount: DUES - 1n });
          const noMemo = await pay({ amount: DUES, memo: null });
          const noReference = await pay({ amount: DUES, reference: false });
          const stranger = await pay({ amount: DUES, memo: "https://remote.example/users/mallory" });
          const seen = await scanDuesPayments(ledger, dues, union.id, treasuryAccount.toBase58());
          const reasons = new Map(seen.map((p) => [p.signature, p.reason]));
          assert.match(reasons.get(underpaid.signature) ?? "", /^underpaid: 4999999 of 5000000$/);
          assert.match(reasons.get(noMemo.signature) ?? "", /no memo/);
          assert.match(reasons.get(noReference.signature) ?? "", /no payment reference/);
          assert.match(reasons.get(stranger.signature) ?? "", /no member of this union/);
          // Payments found by their reference key, sent to the wrong place or in the wrong token.
          const wrongPlace = await pay({ amount: DUES, to: elsewhere });
          const wrongMint = await pay({ amount: DUES, to: wrongMintAccount, source: fromOther, mint: otherMint });
          const [r1] = await scanDuesPayments(ledger, dues, union.id, wrongPlace.reference.toBase58());
          const [r2] = await scanDuesPayments(ledger, dues, union.id, wrongMint.reference.toBase58());
          assert.match(r1?.reason ?? "", /wrong destination/);
          assert.match(r2?.reason ?? "", /wrong mint/);
          assert.equal((await unmatchedPayments(db, union.id)).length, 6);
          // Only the good payment counts toward standing: 31 days on, the member is in grace.
          assert.equal((await memberStanding(dues, union.id, joined.member.id, Date.now() + 31 * 86_400_000)).standing, "grace");
          assert.equal((await memberStanding(dues, union.id, joined.member.id, Date.now() + 38 * 86_400_000)).standing, "lapsed");
          // Recording the same payment directly is a no-op.
          const direct = await recordDuesPayment(dues, {
            signature: good.signature, unionId: union.id, payer: wallet.publicKey.toBase58(), mint: mint.toBase58(),
            destination: treasuryAccount.toBase58(), amount: DUES, reference: null, memo: alice.actorId, paidAt: Date.now(),
          });
          assert.equal(direct.recorded, false);
          assert.equal(direct.status, "credited");
          const { n } = await db.selectFrom("dues_payments").select((eb) => eb.fn.countAll<string>().as("n")).executeTakeFirstOrThrow();
          assert.equal(Number(n), 7);

          // An amendment doubling the dues changes what counts as paid: the old payment no longer covers
          // a period, and a payment of the old amount is now underpaid.
          await overrideBylaws({ db, events }, "riders", { duesAmount: DUES * 2n });
          assert.equal((await memberStanding(dues, union.id, joined.member.id)).standing, "grace");
          const oldAmount = await pay({ amount: DUES });
          const [late1] = await scanDuesPayments(ledger, dues, union.id, oldAmount.reference.toBase58());
          assert.equal(late1?.reason, `underpaid: ${DUES} of ${DUES * 2n}`);
          const newAmount = await pay({ amount: DUES * 2n });
          const [paid2] = await scanDuesPayments(ledger, dues, union.id, newAmount.reference.toBase58());
          assert.equal(paid2?.status, "credited");
          assert.equal((await memberStanding(dues, union.id, joined.member.id)).standing, "good");

          // A payment whose blockhash expires before it lands is reported as expired (safe to re-sign).
          const { blockhash, lastValidBlockHeight } = await ledger.latestBlockhash();
          const late = new Transaction({ feePayer: wallet.publicKey, blockhash, lastValidBlockHeight })
            .add(createTransferCheckedInstruction(from, mint, treasuryAccount, wallet.publicKey, 1n, 6));
          late.sign(wallet);
          clock += 61_000;
          await assert.rejects(ledger.submit(late.serialize(), { lastValidBlockHeight, commitment: "confirmed" }), (e: unknown) => e instanceof LedgerError && (which === "network" ? e.code === "expired" : e.code === "failed"));
        } finally {
          await running.close();
          await database.close();
          await tdb.destroy();
        }
      });
    });
  }
}
