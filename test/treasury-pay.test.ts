import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Keypair, PublicKey, Transaction } from "@solana/web3.js";
import { decodeTransferCheckedInstruction, getAccount, TOKEN_PROGRAM_ID } from "@solana/spl-token";
import { dialects } from "./helpers/databases.ts";
import { makeUnion, startMuster } from "./helpers/muster.ts";
import { person, followId } from "./helpers/domain-context.ts";
import { overrideBylaws } from "./helpers/bylaws.ts";
import { rpcConnection, setUpTreasury } from "./helpers/treasury.ts";
import { requestToJoin } from "../src/members/membership.ts";
import { scanDuesPayments } from "../solana/dues-scanner.ts";
import { duesParamsFromBylaws } from "../src/treasury/dues-params.ts";
import { MEMO_PROGRAM_ID } from "../solana/solana-pay.ts";

const DUES = 5_000_000n;

for (const d of dialects) {
  describe(`dues by Solana Pay transaction request and Action on ${d.name}`, { skip: d.skip }, () => {
    it("builds the member's dues transfer with a reference and memo; a wallet signs it and the scan credits it; bad input is a clear 4xx", async () => {
      const tdb = await d.create();
      const m = await startMuster(tdb, { env: { MUSTER_QUEUE_CONCURRENCY: "2" } });
      let rpc: ReturnType<typeof rpcConnection> | undefined;
      try {
        const db = m.muster.database.db;
        const union = await makeUnion(m, "riders", { joinPolicy: "open" });
        const free = await makeUnion(m, "free", { joinPolicy: "open" });
        const alice = person("alice");
        const joined = await requestToJoin(m.muster.membership, union.id, alice, followId());
        assert.equal(joined.outcome, "accepted");
        await requestToJoin(m.muster.membership, free.id, alice, followId());
        await overrideBylaws(m.muster.membership, "riders", { duesAmount: DUES, duesPeriodDays: 30, duesGraceDays: 7 });
        rpc = rpcConnection(m.origin);
        const { connection } = rpc;
        const t = await setUpTreasury(connection, db, union.id);
        const wallet = await t.wallet(20_000_000n);
        const url = new URL(`/u/riders/dues/pay?member=${encodeURIComponent("@alice@remote.example")}`, m.origin);

        // actions.json maps the path; every answer carries the Actions CORS headers.
        const rules = await fetch(new URL("/actions.json", m.origin));
        assert.equal(rules.status, 200);
        assert.equal(rules.headers.get("access-control-allow-origin"), "*");
        assert.deepEqual(await rules.json(), { rules: [{ pathPattern: "/u/*/dues/pay", apiPath: "/u/*/dues/pay" }] });
        const preflight = await fetch(url, { method: "OPTIONS", headers: { Origin: "https://dial.to", "Access-Control-Request-Method": "POST" } });
        assert.equal(preflight.status, 204);
        assert.match(preflight.headers.get("access-control-allow-methods") ?? "", /POST/);
        assert.match(preflight.headers.get("access-control-allow-headers") ?? "", /Content-Type/);

        const meta = await fetch(url);
        assert.equal(meta.status, 200);
        assert.equal(meta.headers.get("x-action-version"), "2.4");
        const got = await meta.json() as { type: string; label: string; icon: string; title: string; links: { actions: { href: string; type: string }[] }; solanaPay: string };
        assert.equal(got.type, "action");
        assert.equal(got.label, "Pay 5 tokens");
        assert.match(got.icon, /^http:\/\/127\.0\.0\.1:\d+\//);
        assert.deepEqual(got.links.actions.map((a) => [a.type, a.href]), [["transaction", "/u/riders/dues/pay?member=%40alice%40remote.example"]]);
        assert.equal(got.solanaPay, `solana:${encodeURIComponent(url.href)}`);

        const post = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ account: wallet.publicKey.toBase58() }) });
        assert.equal(post.status, 200);
        assert.equal(post.headers.get("access-control-allow-origin"), "*");
        const answer = await post.json() as { type: string; transaction: string; message: string; reference: string };
        assert.equal(answer.type, "transaction");
        const tx = Transaction.from(Buffer.from(answer.transaction, "base64"));
        assert.ok(tx.feePayer?.equals(wallet.publicKey));
        assert.equal(tx.instructions.length, 2);
        const transfer = decodeTransferCheckedInstruction(tx.instructions[0]!, TOKEN_PROGRAM_ID);
        assert.equal(transfer.data.amount, DUES);
        assert.equal(transfer.keys.destination.pubkey.toBase58(), t.treasury.tokenAccount);
        assert.ok(transfer.keys.owner.pubkey.equals(wallet.publicKey));
        const ref = tx.instructions[0]!.keys.at(-1)!;
        assert.deepEqual([ref.pubkey.toBase58(), ref.isSigner, ref.isWritable], [answer.reference, false, false]);
        assert.ok(tx.instructions[1]!.programId.equals(MEMO_PROGRAM_ID));
        assert.equal(tx.instructions[1]!.data.toString("utf8"), alice.actorId);
        // Two requests, two references: each payment is told apart.
        const second = await (await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ account: wallet.publicKey.toBase58() }) })).json() as { reference: string };
        assert.notEqual(second.reference, answer.reference);

        // The wallet signs and sends; the scan credits the payment to alice.
        tx.partialSign(wallet);
        const signature = await connection.sendRawTransaction(tx.serialize());
        await connection.confirmTransaction(signature, "confirmed");
        assert.equal((await getAccount(connection, new PublicKey(t.treasury.tokenAccount))).amount, DUES);
        const seen = await scanDuesPayments(m.muster.ledger!, { db, duesParams: duesParamsFromBylaws }, union.id, t.treasury.tokenAccount);
        assert.deepEqual(seen.map((p) => [p.signature, p.status, p.memberId]), [[signature, "credited", joined.member.id]]);
        const row = await db.selectFrom("dues_payments").select(["reference", "status"]).where("signature", "=", signature).executeTakeFirstOrThrow();
        assert.deepEqual(row, { reference: answer.reference, status: "credited" });

        // Hostile input: each a clear 4xx with a message, never a transaction.
        const poor = await t.wallet(1n);
        const noAccount = Keypair.generate();
        const pda = PublicKey.findProgramAddressSync([Buffer.from("x")], TOKEN_PROGRAM_ID)[0];
        const cases: [string, URL, RequestInit, number, RegExp][] = [
          ["bad account", url, { method: "POST", body: JSON.stringify({ account: "not-an-address!" }) }, 400, /not a Solana address/],
          ["missing account", url, { method: "POST", body: JSON.stringify({}) }, 400, /account must be/],
          ["account a number", url, { method: "POST", body: JSON.stringify({ account: 12 }) }, 400, /account must be/],
          ["program address", url, { method: "POST", body: JSON.stringify({ account: pda.toBase58() }) }, 400, /program address/],
          ["not JSON", url, { method: "POST", body: "account=abc" }, 400, /must be JSON/],
          ["huge body", url, { method: "POST", body: JSON.stringify({ account: "x".repeat(10_000) }) }, 400, /too large/],
          ["no token account", url, { method: "POST", body: JSON.stringify({ account: noAccount.publicKey.toBase58() }) }, 400, /no token account/],
          ["too few tokens", url, { method: "POST", body: JSON.stringify({ account: poor.publicKey.toBase58() }) }, 400, /holds 0.000001 of the 5 tokens/],
          ["unknown member", new URL("/u/riders/dues/pay?member=@mallory@remote.example", m.origin), { method: "GET" }, 404, /no member @mallory@remote.example/],
          ["unknown member POST", new URL("/u/riders/dues/pay?member=@mallory@remote.example", m.origin), { method: "POST", body: JSON.stringify({ account: wallet.publicKey.toBase58() }) }, 404, /no member/],
          ["bad handle", new URL("/u/riders/dues/pay?member=@@", m.origin), { method: "GET" }, 400, /handle/],
          ["no member named", new URL("/u/riders/dues/pay", m.origin), { method: "GET" }, 400, /say whose dues/],
          ["unknown union", new URL("/u/nobody/dues/pay?member=@alice@remote.example", m.origin), { method: "GET" }, 404, /no such union/],
          ["union without dues", new URL("/u/free/dues/pay?member=@alice@remote.example", m.origin), { method: "GET" }, 409, /no dues/],
        ];
        for (const [what, at, init, status, message] of cases) {
          const r = await fetch(at, { ...init, headers: { "Content-Type": "application/json" } });
          assert.equal(r.status, status, what);
          assert.equal(r.headers.get("access-control-allow-origin"), "*", what);
          const body = await r.json() as { message: string; transaction?: string };
          assert.match(body.message, message, what);
          assert.equal(body.transaction, undefined, what);
        }
        // Nothing else reached the treasury.
        assert.equal((await getAccount(connection, new PublicKey(t.treasury.tokenAccount))).amount, DUES);
      } finally {
        rpc?.close();
        await m.stop();
        await tdb.destroy();
      }
    });
  });
}
