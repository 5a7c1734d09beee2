import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Keypair, PublicKey, Transaction, TransactionInstruction } from "@solana/web3.js";
import { createTransferCheckedInstruction, getAssociatedTokenAddressSync } from "@solana/spl-token";
import type { Kysely } from "kysely";
import { type DialectCase, dialects } from "./helpers/databases.ts";
import { type RunningLedger, startLedger } from "./helpers/solana.ts";
import { followId, person, sharedKeys } from "./helpers/domain-context.ts";
import { overrideBylaws } from "./helpers/bylaws.ts";
import { setUpTreasury, setUpTreasuryOn } from "./helpers/treasury.ts";
import { recordingOutbox } from "./helpers/membership-worker.ts";
import type { DB } from "../src/db/schema.ts";
import { createEventBus, type DomainEvents, type EventBus } from "../src/events.ts";
import { createUnion, type Union } from "../src/unions/unions.ts";
import { type Applicant, requestToJoin } from "../src/members/membership.ts";
import { duesParamsFromBylaws } from "../src/treasury/dues-params.ts";
import { inGoodStanding, recordedStanding, standingHistory } from "../src/treasury/standing.ts";
import { FULL_PASS_MS, runDuesScan } from "../solana/dues-scan-job.ts";

const DUES = 5_000_000n;
const DAY = 86_400_000;
const MEMO = new PublicKey("MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr");

/**
 * A fresh database and embedded ledger, the open union "riders" with alice as its member and
 * dues of DUES every 30 days with 7 days' grace; all torn down after `fn`.
 */
async function withRiders(d: DialectCase, fn: (s: { db: Kysely<DB>; events: EventBus; running: RunningLedger; union: Union; alice: Applicant; aliceId: string }) => Promise<void>): Promise<void> {
  const tdb = await d.create();
  const database = tdb.open();
  const db = database.db;
  const running = await startLedger(db);
  try {
    const events = createEventBus();
    const union = await createUnion({ db, events, generateKeys: sharedKeys }, { slug: "riders", name: "Riders", purpose: "Fair pay", joinPolicy: "open" });
    const alice = person("alice");
    const joined = await requestToJoin({ db, events, outbox: recordingOutbox }, union.id, alice, followId());
    assert.equal(joined.outcome, "accepted");
    await overrideBylaws({ db, events }, "riders", { duesAmount: DUES, duesPeriodDays: 30, duesGraceDays: 7 });
    await fn({ db, events, running, union, alice, aliceId: joined.member.id });
  } finally {
    await running.close();
    await database.close();
    await tdb.destroy();
  }
}

for (const d of dialects) {
  describe(`scheduled dues scan and standing events on ${d.name}`, { skip: d.skip }, () => {
    it("finds a payment made straight on the ledger, records it once, and moves the member good -> grace -> lapsed as the clock moves", () => withRiders(d, async ({ db, events, running, union, aliceId, alice }) => {
        const seen: DomainEvents["member.standing"][] = [];
        events.on("member.standing", (e) => seen.push(e));
        const t = await setUpTreasury(running.connection, db, union.id);
        const deps = { db, events, ledger: running.ledger, duesParams: duesParamsFromBylaws };
        const start = Date.now();

        // First pass: nothing paid yet, a new member is in grace.
        const first = await runDuesScan(deps, "worker-a", start);
        assert.equal(first.ran, true);
        assert.deepEqual(first.changes.map((c) => [c.memberId, c.from, c.to]), [[aliceId, null, "grace"]]);
        // Another worker's pass while worker-a holds the lease does nothing.
        assert.equal((await runDuesScan(deps, "worker-b", start + 1000)).ran, false);

        // Alice pays from her wallet directly on the ledger, not through the server.
        const wallet = await t.wallet(50_000_000n);
        const source = getAssociatedTokenAddressSync(t.mint, wallet.publicKey);
        const transfer = createTransferCheckedInstruction(source, t.mint, new PublicKey(t.treasury.tokenAccount), wallet.publicKey, DUES, 6);
        transfer.keys.push({ pubkey: Keypair.generate().publicKey, isSigner: false, isWritable: false });
        const { blockhash, lastValidBlockHeight } = await running.ledger.latestBlockhash();
        const tx = new Transaction({ feePayer: wallet.publicKey, blockhash, lastValidBlockHeight })
          .add(transfer, new TransactionInstruction({ programId: MEMO, keys: [], data: Buffer.from(alice.actorId) }));
        tx.sign(wallet);
        const signature = await running.connection.sendRawTransaction(tx.serialize());
        const paidAt = Date.now();

        const second = await runDuesScan(deps, "worker-a", paidAt);
        assert.deepEqual(second.recorded.map((p) => [p.signature, p.status, p.memberId, p.recorded]), [[signature, "credited", aliceId, true]]);
        assert.deepEqual(second.changes.map((c) => [c.from, c.to, c.reason]), [["grace", "good", "payment"]]);
        assert.equal(await inGoodStanding(deps, union.id, aliceId), true);

        // Seen again: the cursor skips it, and a rescan from scratch records nothing twice.
        assert.deepEqual((await runDuesScan(deps, "worker-a", paidAt + 1000)).recorded, []);
        await db.deleteFrom("scan_cursors").execute();
        const rescan = await runDuesScan(deps, "worker-a", paidAt + 2000);
        assert.deepEqual(rescan.recorded.map((p) => [p.signature, p.recorded]), [[signature, false]]);
        const rows = await db.selectFrom("dues_payments").select("signature").execute();
        assert.deepEqual(rows.map((r) => r.signature), [signature]);

        // Time passes with no payment: grace once the 30 days run out, lapsed after the 7 days of grace.
        assert.deepEqual((await runDuesScan(deps, "worker-a", paidAt + 29 * DAY)).changes, []);
        const grace = await runDuesScan(deps, "worker-a", paidAt + 31 * DAY);
        assert.deepEqual(grace.changes.map((c) => [c.from, c.to, c.reason]), [["good", "grace", "time"]]);
        // The lease has expired by now (the clock moved on): another worker takes over.
        const lapsed = await runDuesScan(deps, "worker-b", paidAt + 38 * DAY);
        assert.equal(lapsed.ran, true);
        assert.deepEqual(lapsed.changes.map((c) => [c.from, c.to, c.reason]), [["grace", "lapsed", "time"]]);
        assert.deepEqual((await runDuesScan(deps, "worker-b", paidAt + 39 * DAY)).changes, [], "a change is recorded once");

        // The durable record other features read, and the events.
        assert.equal((await recordedStanding(db, union.id, aliceId))?.standing, "lapsed");
        assert.equal(await inGoodStanding(deps, union.id, aliceId), false);
        assert.deepEqual((await standingHistory(db, union.id, aliceId)).map((c) => c.to), ["lapsed", "grace", "good", "grace"]);
        assert.deepEqual(seen.map((e) => [e.from, e.to]), [[null, "grace"], ["grace", "good"], ["good", "grace"], ["grace", "lapsed"]]);
    }));

    it("reads the whole roster at most every FULL_PASS_MS per union: a member who joins in between gets a standing at the next whole pass", () => withRiders(d, async ({ db, events, running, union }) => {
        // Straight on the ledger: web3.js's confirmation polls would outlive this short test.
        await setUpTreasuryOn(running.ledger, db, union.id);
        const deps = { db, events, ledger: running.ledger, duesParams: duesParamsFromBylaws };
        const start = Date.now();
        assert.equal((await runDuesScan(deps, "worker-a", start)).changes.length, 1);

        const bob = await requestToJoin({ db, events, outbox: recordingOutbox }, union.id, person("bob"), followId());
        assert.equal(bob.outcome, "accepted");
        // Between whole passes only the members just paid are recomputed: bob is not read.
        assert.deepEqual((await runDuesScan(deps, "worker-a", start + 1000)).changes, []);
        assert.equal(await recordedStanding(db, union.id, bob.member.id), null);
        // The next whole pass records him; a worker that takes the lease over starts with one.
        const full = await runDuesScan(deps, "worker-a", start + FULL_PASS_MS);
        assert.deepEqual(full.changes.map((c) => [c.memberId, c.from, c.to]), [[bob.member.id, null, "grace"]]);
    }));
  });
}
