import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Keypair, PublicKey, Transaction } from "@solana/web3.js";
import { createMintToCheckedInstruction, getMultisig } from "@solana/spl-token";
import * as ed from "@noble/ed25519";
import bs58 from "bs58";
import { dialects } from "./helpers/databases.ts";
import { followId, person, sharedKeys } from "./helpers/domain-context.ts";
import { recordedIntents, recordingOutbox } from "./helpers/membership-worker.ts";
import { startLedger } from "./helpers/solana.ts";
import { createEventBus } from "../src/events.ts";
import { createUnion } from "../src/unions/unions.ts";
import { requestToJoin, setOfficer } from "../src/members/membership.ts";
import { OPERATOR } from "../src/members/members.ts";
import { changeBylaws } from "../src/bylaws/bylaws.ts";
import { TreasuryError } from "../src/treasury/dues.ts";
import { getTransfer, getTreasury } from "../src/treasury/treasury.ts";
import { listMoves } from "../src/treasury/moves.ts";
import { issueWalletChallenge, proveWallet } from "../src/treasury/wallet-proof.ts";
import { faucetFunding, treasuryKey } from "../solana/badge-sync.ts";
import { handleLedgerIntent } from "../solana/ledger-lane.ts";
import { addTransferSignature, createTreasuryJob, prepareTransfer, signTransferMessage, transferMessage, treasuryBalance } from "../solana/treasury-authority.ts";
import { moveTreasury } from "../solana/treasury-move.ts";
import { scanSinceCursor } from "../solana/dues-scan-job.ts";
import { duesParamsFromBylaws } from "../src/treasury/dues-params.ts";

for (const d of dialects) {
  describe(`moving a treasury to a new multisig on ${d.name}`, { skip: d.skip }, () => {
    it("1-of-1 → 2-of-3 by the server alone, then 2-of-3 → 3-of-3 only once an officer co-signs; the balance moves once and the union's treasury follows", async () => {
      const tdb = await d.create();
      const database = tdb.open();
      const db = database.db;
      const running = await startLedger(db);
      try {
        const { ledger, connection } = running;
        const events = createEventBus();
        const deps = { db, events, outbox: recordingOutbox };
        const chain = { db, ledger, outbox: recordingOutbox, fund: faucetFunding(ledger), origin: new URL("https://union.example") };
        const union = await createUnion({ db, events, generateKeys: sharedKeys }, { slug: "riders", name: "Riders", purpose: "Fair pay", joinPolicy: "open" });
        // As made with the union: 1 of 1, the server's key. Fund it with test dues tokens.
        const first = (await createTreasuryJob(chain, union.id))!;
        const server = await treasuryKey(db, union.id);
        const bh = await ledger.latestBlockhash();
        const mintTx = new Transaction({ feePayer: server.publicKey, ...bh }).add(createMintToCheckedInstruction(new PublicKey(first.mint), new PublicKey(first.tokenAccount), server.publicKey, 1_000_000n, 6));
        mintTx.sign(server);
        await ledger.submit(mintTx.serialize(), { lastValidBlockHeight: bh.lastValidBlockHeight, commitment: "confirmed" });
        await assert.rejects(moveTreasury(chain, union.id), (e: unknown) => e instanceof TreasuryError && /nothing to move/.test(e.message));

        // Two officers prove wallets and the bylaws ask for 2 signatures.
        const officers = [Keypair.generate(), Keypair.generate()];
        for (const [i, name] of ["ana", "ben"].entries()) {
          const j = await requestToJoin(deps, union.id, person(name), followId());
          await setOfficer(deps, union.id, j.member.id, OPERATOR, "treasurer");
          const challenge = await issueWalletChallenge(db, union.id, j.member.id, { union: "https://union.example/u/riders", actorId: person(name).actorId });
          await proveWallet(deps, union.id, { wallet: officers[i]!.publicKey.toBase58(), message: challenge.message, signature: bs58.encode(await ed.signAsync(new TextEncoder().encode(challenge.message), officers[i]!.secretKey.slice(0, 32))) });
        }
        await changeBylaws(deps, union.id, { kind: "operator", reason: "officers co-sign" }, { params: { treasuryThreshold: "2" } });
        // A transfer awaiting signatures names the old authority: the move waits for it.
        const stale = await prepareTransfer(chain, union.id, { to: Keypair.generate().publicKey.toBase58(), amount: 1n });
        await db.updateTable("treasury_transfers").set({ state: "pending" }).where("id", "=", stale.id).execute();
        await assert.rejects(moveTreasury(chain, union.id), /cannot move yet: treasury transfer #1 is still awaiting signatures/);
        await db.updateTable("treasury_transfers").set({ state: "failed" }).where("id", "=", stale.id).execute();

        // The old threshold is 1: the server signs the move alone; the ledger lane sends it.
        const before = (await recordedIntents(db)).length;
        const move = await moveTreasury(chain, union.id);
        assert.equal(move.state, "signing");
        assert.deepEqual([move.from.threshold, move.to.threshold, move.to.signers.length], [1, 2, 3]);
        assert.equal(move.amount, 1_000_000n);
        const queued = (await recordedIntents(db)).slice(before);
        assert.deepEqual(queued, [{ kind: "treasury.transfer", unionId: union.id, transferId: move.transferId! }]);
        assert.equal((await moveTreasury(chain, union.id)).id, move.id, "running it again resumes the open move");
        await handleLedgerIntent(chain, { intent: queued[0]! });
        const second = (await getTreasury(db, union.id))!;
        assert.equal(second.authority, move.to.authority, "the union's treasury is the new multisig");
        assert.deepEqual([second.threshold, second.signers], [2, [server.publicKey.toBase58(), ...officers.map((o) => o.publicKey.toBase58())]]);
        const ms = await getMultisig(connection, new PublicKey(second.authority));
        assert.deepEqual([ms.m, ms.n], [2, 3]);
        assert.equal(await treasuryBalance(ledger, second), 1_000_000n);
        assert.equal(await treasuryBalance(ledger, first), 0n);
        await handleLedgerIntent(chain, { intent: queued[0]! });
        assert.equal(await treasuryBalance(ledger, second), 1_000_000n, "handled twice, moved once");

        // 3 of 3 now: the old 2-of-3 needs an officer; the server alone moves nothing.
        await changeBylaws(deps, union.id, { kind: "operator", reason: "everyone signs" }, { params: { treasuryThreshold: "3" } });
        const again = (await recordedIntents(db)).length;
        const move2 = await moveTreasury(chain, union.id);
        assert.equal(move2.state, "signing");
        const t = (await getTransfer(db, union.id, move2.transferId!))!;
        assert.deepEqual([t.state, t.required, t.signed], ["pending", [server.publicKey.toBase58(), officers[0]!.publicKey.toBase58()], [server.publicKey.toBase58()]]);
        assert.deepEqual((await recordedIntents(db)).slice(again), [], "nothing sent on the server's signature alone");
        assert.equal((await getTreasury(db, union.id))!.authority, second.authority);
        const signed = await addTransferSignature(deps, union.id, t.id, officers[0]!.publicKey.toBase58(), await signTransferMessage(await transferMessage(db, union.id, t.id), officers[0]!));
        assert.equal(signed.state, "ready");
        for (const intent of (await recordedIntents(db)).slice(again)) await handleLedgerIntent(chain, { intent });
        const third = (await getTreasury(db, union.id))!;
        assert.deepEqual([third.authority, third.threshold], [move2.to.authority, 3]);
        assert.equal(await treasuryBalance(ledger, third), 1_000_000n);
        assert.equal(await treasuryBalance(ledger, second), 0n);

        // Recorded, for the transparency page.
        const moves = await listMoves(db, union.id);
        assert.deepEqual(moves.map((m) => [m.state, m.from.threshold, m.to.threshold, m.amount]), [["executed", 1, 2, 1_000_000n], ["executed", 2, 3, 1_000_000n]]);
        for (const m of moves) assert.equal((await ledger.status(m.signature!))?.err, null);

        // The moves' own inflows into the new accounts are the treasury's, not dues: the scan records none of them.
        const scanDeps = { db, events, ledger, duesParams: duesParamsFromBylaws };
        for (const account of [second.tokenAccount, third.tokenAccount]) assert.deepEqual(await scanSinceCursor(scanDeps, union.id, account), []);
        assert.deepEqual(await db.selectFrom("dues_payments").select("signature").where("union_id", "=", union.id).execute(), []);
      } finally {
        await running.close();
        await database.close();
        await tdb.destroy();
      }
    });
  });
}
