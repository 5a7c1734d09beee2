import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Transaction, TransactionInstruction, VersionedTransaction } from "@solana/web3.js";
import bs58 from "bs58";
import { dialects } from "./helpers/databases.ts";
import { overrideBylaws } from "./helpers/bylaws.ts";
import { makeUnion, startMuster } from "./helpers/muster.ts";
import { composeAction } from "../src/actions/actions.ts";
import { verifyChain } from "../src/actions/chain.ts";
import { OPERATOR } from "../src/members/members.ts";
import { anchorDue, anchorMemo } from "../solana/feed-anchor.ts";
import { faucetFunding, treasuryKey } from "../solana/badge-sync.ts";
import { MEMO_PROGRAM_ID } from "../solana/solana-pay.ts";

const DAY = 86_400_000;

/** The Memo of a transaction, read from its signed bytes as the RPC serves them (base64), never from logs. */
async function memoOnChain(rpc: string, signature: string): Promise<{ memo: string; signer: string }> {
  const res = await fetch(rpc, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "getTransaction", params: [signature, { encoding: "base64", commitment: "confirmed", maxSupportedTransactionVersion: 0 }] }) });
  const body = await res.json() as { result: { transaction: [string, string]; meta: { err: unknown } } };
  assert.equal(body.result.meta.err, null);
  const tx = VersionedTransaction.deserialize(Buffer.from(body.result.transaction[0], "base64"));
  const keys = tx.message.staticAccountKeys;
  const memo = tx.message.compiledInstructions.find((ix) => keys[ix.programIdIndex]!.equals(MEMO_PROGRAM_ID))!;
  return { memo: Buffer.from(memo.data).toString("utf8"), signer: keys[memo.accountKeyIndexes[0]!]!.toBase58() };
}

for (const d of dialects) {
  describe(`the daily on-chain anchor of the call-to-action chain on ${d.name}`, { skip: d.skip }, () => {
    it("writes the chain head in a Memo from the treasury key once a day, readable back from the raw transaction; the action page shows it", async () => {
      const tdb = await d.create();
      // The server's own schedule would anchor too (at most once a day, which the test checks): keep it out of the way.
      const m = await startMuster(tdb, { env: { MUSTER_QUEUE_CONCURRENCY: "2" }, schedulerIntervalMs: 3_600_000 });
      try {
        const db = m.muster.database.db;
        const union = await makeUnion(m, "riders", { joinPolicy: "open" });
        // Calls-to-action readable by anyone, so the page is fetched signed out.
        await overrideBylaws(m.muster.membership, "riders", { actionsVisibility: "public" });
        const deps = { db, ledger: m.muster.ledger!, fund: faucetFunding(m.muster.embeddedLedger!), explorerUrl: (s: string) => `https://explorer.solana.com/tx/${s}` };
        const rpc = new URL("/solana/rpc", m.origin).href;
        const now = Date.now();
        assert.deepEqual(await anchorDue(deps, now), [], "an empty chain is not anchored");
        const first = await composeAction(m.muster.membership, union.id, OPERATOR, { title: "Ride slow on Friday", text: "For safety." }, { publishNow: true });
        await composeAction(m.muster.membership, union.id, OPERATOR, { title: "Log your waiting time", text: "All week." }, { publishNow: true });
        const chain = await verifyChain(db, union.id);
        assert.equal(chain.entries, 2);

        // Two workers at once: one anchor.
        const [a, b] = await Promise.all([anchorDue(deps, now), anchorDue(deps, now)]);
        const anchored = [...a, ...b];
        assert.equal(anchored.length, 1);
        assert.deepEqual([anchored[0]!.n, anchored[0]!.head], [2, chain.head]);
        const read = await memoOnChain(rpc, anchored[0]!.signature);
        assert.equal(read.memo, anchorMemo(chain.entries, chain.head));
        assert.equal(read.memo.split(":").at(-1), chain.head);
        assert.equal(read.signer, (await treasuryKey(db, union.id)).publicKey.toBase58());
        assert.deepEqual(await anchorDue(deps, now + 60_000), [], "once a day");

        // The call-to-action page names the anchoring transaction.
        const page = await (await fetch(new URL(`/u/riders/actions/${first.id}`, m.origin), { headers: { Accept: "text/html" } })).text();
        assert.match(page, new RegExp(`data-testid="anchor-signature">${anchored[0]!.signature}<`));
        assert.match(page, /the chain&#39;s head at entry 2|the chain's head at entry 2/);

        // The next day with nothing new: no anchor. A new entry: its head is anchored.
        assert.deepEqual(await anchorDue(deps, now + DAY), []);
        const third = await composeAction(m.muster.membership, union.id, OPERATOR, { title: "Strike vote Monday", text: "Be there." }, { publishNow: true });
        const thirdPage = await (await fetch(new URL(`/u/riders/actions/${third.id}`, m.origin), { headers: { Accept: "text/html" } })).text();
        assert.match(thirdPage, /Not yet anchored on-chain/);
        const later = await verifyChain(db, union.id);
        // A crash after signing and before sending: the stored bytes go out, nothing is signed anew.
        const key = await treasuryKey(db, union.id);
        const { blockhash, lastValidBlockHeight } = await deps.ledger.latestBlockhash();
        const signed = new Transaction({ feePayer: key.publicKey, blockhash, lastValidBlockHeight })
          .add(new TransactionInstruction({ programId: MEMO_PROGRAM_ID, keys: [{ pubkey: key.publicKey, isSigner: true, isWritable: false }], data: Buffer.from(anchorMemo(later.entries, later.head)) }));
        signed.sign(key);
        const day2 = new Date(now + 2 * DAY).toISOString().slice(0, 10);
        await db.insertInto("chain_anchors").values({
          union_id: union.id, day: day2, n: later.entries, head: later.head, memo: anchorMemo(later.entries, later.head), signature: null, explorer_url: null,
          raw: Buffer.from(signed.serialize()).toString("base64"), last_valid_block_height: lastValidBlockHeight, created_at: now, anchored_at: null,
        }).execute();
        const resent = await anchorDue(deps, new Date(`${day2}T12:00:00Z`).getTime());
        assert.deepEqual(resent.map((r) => r.signature), [bs58.encode(signed.signature!)]);
        assert.equal((await memoOnChain(rpc, resent[0]!.signature)).memo, anchorMemo(3, later.head));
        assert.match(await (await fetch(new URL(`/u/riders/actions/${third.id}`, m.origin), { headers: { Accept: "text/html" } })).text(), new RegExp(resent[0]!.signature));
      } finally {
        await m.stop();
        await tdb.destroy();
      }
    });
  });
}
