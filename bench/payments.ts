import { Keypair, PublicKey, Transaction, TransactionInstruction } from "@solana/web3.js";
import { createTransferCheckedInstruction, getAssociatedTokenAddressSync } from "@solana/spl-token";
import type { DialectCase } from "../test/helpers/databases.ts";
import { setUpTreasuryOn } from "../test/helpers/treasury.ts";
import { EmbeddedLedger } from "../solana/embedded-ledger.ts";
import { followId, person, sharedKeys } from "../test/helpers/domain-context.ts";
import { recordingOutbox } from "../test/helpers/membership-worker.ts";
import { overrideBylaws } from "../test/helpers/bylaws.ts";
import { createEventBus } from "../src/events.ts";
import { createUnion } from "../src/unions/unions.ts";
import { requestToJoin } from "../src/members/membership.ts";
import { duesParamsFromBylaws } from "../src/treasury/dues-params.ts";
import { recomputeStandings } from "../src/treasury/standing.ts";
import { scanSinceCursor } from "../solana/dues-scan-job.ts";
import { MEMO_PROGRAM_ID } from "../solana/solana-pay.ts";
import { type Benchmark, loadAverage, perSecond, progress, type Row } from "./lib.ts";

const DUES = 5_000_000n;

export const payments: Benchmark = {
  name: "payments",
  title: "Dues scan on the embedded ledger: payments detected and recorded per second",
  summary: "N dues payments (transferChecked + reference + memo) sent to the treasury, then one scan records them and recomputes standing",
  notes: [
    "detect+record: scanSinceCursor over the treasury account (getSignaturesForAddress pages, then per chunk of 200: one batched transactions read, decode the signed bytes, one recordDuesPayments transaction)",
    "detect CPU ms/payment: process.cpuUsage() of this process (which runs the ledger and the scan) over the detect+record phase, divided by N",
    "standing: recomputeStandings for all N members afterwards (one memberStanding per member); rescan: the same scan again with the cursor reset (every payment already recorded)",
    "one paying wallet, N members each named by the memo; litesvm in-process, ledger state in the same database",
  ],
  async run(dialect: DialectCase, { quick }): Promise<Row[]> {
    const n = quick ? 100 : 1000;
    const tdb = await dialect.create();
    const database = tdb.open();
    const db = database.db;
    const ledger = await EmbeddedLedger.open(db);
    try {
      const events = createEventBus();
      const union = await createUnion({ db, events, generateKeys: sharedKeys }, { slug: "riders", name: "Riders", purpose: "Fair pay", joinPolicy: "open" });
      await overrideBylaws({ db, events }, "riders", { duesAmount: DUES, duesPeriodDays: 30, duesGraceDays: 7 });
      const members = [];
      for (let i = 0; i < n; i++) members.push(person(`m${i}`));
      for (const p of members) await requestToJoin({ db, events, outbox: recordingOutbox }, union.id, p, followId());
      const t = await setUpTreasuryOn(ledger, db, union.id);
      const wallet = await t.wallet(DUES * BigInt(n));
      const source = getAssociatedTokenAddressSync(t.mint, wallet.publicKey);
      const treasury = new PublicKey(t.treasury.tokenAccount);
      progress(`${dialect.name}: sending ${n} payments`);
      const sendStart = performance.now();
      for (const p of members) {
        const transfer = createTransferCheckedInstruction(source, t.mint, treasury, wallet.publicKey, DUES, 6);
        transfer.keys.push({ pubkey: Keypair.generate().publicKey, isSigner: false, isWritable: false });
        const { blockhash, lastValidBlockHeight } = await ledger.latestBlockhash();
        const tx = new Transaction({ feePayer: wallet.publicKey, blockhash, lastValidBlockHeight }).add(transfer, new TransactionInstruction({ programId: MEMO_PROGRAM_ID, keys: [], data: Buffer.from(p.actorId) }));
        tx.sign(wallet);
        await ledger.submit(tx.serialize(), { lastValidBlockHeight, commitment: "confirmed" });
      }
      const sendMs = performance.now() - sendStart;
      const deps = { db, events, ledger: ledger, duesParams: duesParamsFromBylaws };
      progress(`${dialect.name}: scanning`);
      const scanStart = performance.now();
      const scanCpu = process.cpuUsage();
      const recorded = await scanSinceCursor(deps, union.id, treasury.toBase58());
      const scanMs = performance.now() - scanStart;
      const cpu = process.cpuUsage(scanCpu);
      // The scan runs in this process (the ledger is in-process): its CPU per payment, apart from the database server's.
      const cpuMsPerPayment = ((cpu.user + cpu.system) / 1000 / n).toFixed(2);
      const credited = recorded.filter((r) => r.recorded && r.status === "credited").length;
      if (credited !== n) throw new Error(`${credited} of ${n} payments credited`);
      const standingStart = performance.now();
      const changes = await recomputeStandings(deps, union.id, Date.now(), new Set(recorded.map((r) => r.memberId!)));
      const standingMs = performance.now() - standingStart;
      await db.deleteFrom("scan_cursors").execute();
      const rescanStart = performance.now();
      const again = await scanSinceCursor(deps, union.id, treasury.toBase58());
      const rescanMs = performance.now() - rescanStart;
      if (again.some((r) => r.recorded)) throw new Error("a rescan recorded a payment twice");
      return [{
        dialect: dialect.name,
        payments: n,
        "send tx/s": perSecond(n, sendMs),
        "detect+record /s": perSecond(n, scanMs),
        "detect CPU ms/payment": cpuMsPerPayment,
        "standing members/s": perSecond(changes.length, standingMs),
        "rescan /s": perSecond(n, rescanMs),
        load: loadAverage(),
      }];
    } finally {
      await database.close();
      await tdb.destroy();
    }
  },
};
