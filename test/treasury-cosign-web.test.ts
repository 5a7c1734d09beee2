import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import type { Browser } from "playwright-core";
import { Connection, Keypair, PublicKey, Transaction } from "@solana/web3.js";
import { createMintToCheckedInstruction, getAccount, getAssociatedTokenAddressSync } from "@solana/spl-token";
import * as ed from "@noble/ed25519";
import bs58 from "bs58";
import { browserSkip, launchBrowser } from "./helpers/browser.ts";
import { dialects } from "./helpers/databases.ts";
import { eventually, type TestMuster } from "./helpers/muster.ts";
import { signInByDm } from "./helpers/sign-in.ts";
import { unionWithPeer } from "./helpers/union-with-peer.ts";
import { setOfficer } from "../src/members/membership.ts";
import { OPERATOR } from "../src/members/members.ts";
import { changeBylaws } from "../src/bylaws/bylaws.ts";
import { getTransfer, getTreasury } from "../src/treasury/treasury.ts";
import { issueWalletChallenge, proveWallet } from "../src/treasury/wallet-proof.ts";
import { faucetFunding, treasuryKey } from "../solana/badge-sync.ts";
import type { EmbeddedLedger } from "../solana/embedded-ledger.ts";
import { prepareTransfer, treasuryBalance } from "../solana/treasury-authority.ts";
import { moveTreasury } from "../solana/treasury-move.ts";

// Issue 15 in real Chromium: an officer co-signs a treasury transaction from
// the console with the browser's wallet. The wallet is a window.solana-like
// object injected by the test, signing with a key the test holds (through an
// exposed function), as a wallet extension signs without showing its key.

for (const d of dialects) {
  describe(`console co-signing in Chromium on ${d.name}`, { skip: d.skip || browserSkip }, () => {
    const fx = unionWithPeer(d, { actors: ["lead", "ana"], joinPolicy: "open" });
    let m: TestMuster;
    let unionId: string;
    let browser: Browser | undefined;
    const key = Keypair.generate();

    before(async () => {
      ({ m, unionId } = await fx.start());
      for (const name of ["lead", "ana"]) {
        await fx.follow(name);
        await eventually(async () => (await fx.member(name))?.state === "active", `${name} joined`, 30_000);
      }
      browser = await launchBrowser();
    });
    after(async () => {
      await browser?.close();
      await fx.stop();
    });

    it("an officer sees the transaction naming their wallet, signs it in the browser, the server checks it and the ledger lane sends it once; 1280 and 390 px", async () => {
      const db = m.muster.database.db;
      const ledger = m.muster.embeddedLedger as EmbeddedLedger;
      const membership = m.muster.membership;
      // The treasury was made with the union (1 of 1). ana becomes an officer with a proven wallet; the bylaws ask for 2.
      const first = await eventually(() => getTreasury(db, unionId), "the treasury made with the union", 60_000);
      const ana = (await fx.member("ana"))!;
      await setOfficer(membership, unionId, ana.id, OPERATOR, "treasurer");
      const challenge = await issueWalletChallenge(db, unionId, ana.id, { union: fx.url("/u/riders"), actorId: ana.actorId! });
      await proveWallet(membership, unionId, { wallet: key.publicKey.toBase58(), message: challenge.message, signature: bs58.encode(await ed.signAsync(new TextEncoder().encode(challenge.message), key.secretKey.slice(0, 32))) });
      await changeBylaws(membership, unionId, { kind: "operator", reason: "officers co-sign" }, { params: { treasuryThreshold: "2" } });
      const chain = { db, ledger, outbox: membership.outbox, fund: faucetFunding(ledger), origin: m.origin };
      // Moved to the new 2-of-2 multisig by the server alone (the old one was 1 of 1), through the running server's ledger lane.
      await moveTreasury(chain, unionId);
      const treasury = await eventually(async () => {
        const t = await getTreasury(db, unionId);
        return t && t.threshold === 2 ? t : undefined;
      }, "the treasury moved to 2 of 2", 60_000);
      assert.notEqual(treasury.authority, first.authority);
      const server = await treasuryKey(db, unionId);
      const bh = await ledger.latestBlockhash();
      const mintTx = new Transaction({ feePayer: server.publicKey, ...bh }).add(createMintToCheckedInstruction(new PublicKey(treasury.mint), new PublicKey(treasury.tokenAccount), server.publicKey, 1_000_000n, 6));
      mintTx.sign(server);
      await ledger.submit(mintTx.serialize(), { lastValidBlockHeight: bh.lastValidBlockHeight, commitment: "confirmed" });
      const payee = Keypair.generate().publicKey;
      const pending = await prepareTransfer(chain, unionId, { to: payee.toBase58(), amount: 250_000n, memo: "Printing for the depot" });
      assert.deepEqual(pending.required, [server.publicKey.toBase58(), key.publicKey.toBase58()]);

      const ctx = await browser!.newContext();
      try {
        const page = await ctx.newPage();
        await page.exposeFunction("__testWalletSign", async (bytes: number[]) => Array.from(await ed.signAsync(Uint8Array.from(bytes), key.secretKey.slice(0, 32))));
        await page.addInitScript((address: string) => {
          const w = window as unknown as Record<string, unknown> & { __testWalletSign(b: number[]): Promise<number[]> };
          w.solana = {
            publicKey: { toString: () => address },
            async connect() {
              return { publicKey: { toString: () => address } };
            },
            async signMessage(message: Uint8Array) {
              return { signature: Uint8Array.from(await w.__testWalletSign(Array.from(message))) };
            },
          };
        }, key.publicKey.toBase58());
        await page.goto(fx.url("/u/riders/login"));
        await signInByDm(page, fx, "ana", "/u/riders/console");
        await page.goto(fx.url("/u/riders/console/treasury"));
        assert.match(await page.textContent("[data-testid=threshold]") ?? "", /2 of 2/);
        assert.match(await page.textContent(`[data-transfer="${pending.id}"]`) ?? "", /Printing for the depot · 0\.25 tokens to [\s\S]*collecting signatures · signed 1 of 2/);
        for (const width of [1280, 390]) {
          await page.setViewportSize({ width, height: 900 });
          await page.reload();
          const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
          assert.ok(overflow <= 0, `nothing overflows at ${width} px (by ${overflow})`);
        }

        // The endpoints refuse a forged signature, another wallet's, and a cross-site POST.
        const cookie = (await ctx.cookies()).map((c) => `${c.name}=${c.value}`).join("; ");
        const post = (body: unknown, origin = m.origin.origin) => fetch(fx.url(`/u/riders/console/treasury/${pending.id}/signature`), { method: "POST", headers: { "Content-Type": "application/json", Cookie: cookie, Origin: origin }, body: JSON.stringify(body) });
        const message = await (await fetch(fx.url(`/u/riders/console/treasury/${pending.id}/message`), { headers: { Cookie: cookie } })).json() as { signer: string; message: string };
        assert.equal(message.signer, key.publicKey.toBase58());
        const other = Keypair.generate();
        const forged = await post({ signature: bs58.encode(await ed.signAsync(Buffer.from(message.message, "base64"), other.secretKey.slice(0, 32))) });
        assert.equal(forged.status, 400);
        assert.match(((await forged.json()) as { error: { message: string } }).error.message, /not your wallet .*'s signature/);
        assert.equal((await post({ signature: 42 })).status, 400);
        assert.equal((await post({ signature: "x" }, "http://evil.example")).status, 403);
        assert.equal((await fetch(fx.url(`/u/riders/console/treasury/${pending.id}/message`))).status, 401, "signed in only");
        assert.equal((await fetch(fx.url("/u/riders/console/treasury/1e9/message"), { headers: { Cookie: cookie } })).status, 400, "an id is a whole number");
        assert.equal((await fetch(fx.url("/u/riders/console/treasury/999999/message"), { headers: { Cookie: cookie } })).status, 404);
        const form = await fetch(fx.url(`/u/riders/console/treasury/${pending.id}/signature`), { method: "POST", headers: { "Content-Type": "application/x-www-form-urlencoded", Cookie: cookie, Origin: m.origin.origin }, body: "signature=x" });
        assert.equal(form.status, 415, "JSON only");
        assert.equal((await getTransfer(db, unionId, pending.id))!.state, "pending");

        // The button: the wallet signs the message, the server checks it against ana's proven wallet, the lane sends it.
        await Promise.all([page.waitForURL(/done=cosigned_ready/), page.click(`[data-testid=cosign-${pending.id}]`)]);
        assert.match(await page.textContent("[role=status]") ?? "", /Signed by everyone it names/);
        const done = await eventually(async () => {
          const t = await getTransfer(db, unionId, pending.id);
          return t && t.state === "executed" ? t : undefined;
        }, "the co-signed transfer executed by the ledger lane", 60_000);
        assert.ok(done.signature);
        assert.equal((await getAccount(new Connection(fx.url("/solana/rpc"), "confirmed"), getAssociatedTokenAddressSync(new PublicKey(treasury.mint), payee, true))).amount, 250_000n, "read through the server's RPC");
        assert.equal(await treasuryBalance(ledger, treasury), 750_000n);
        await page.reload();
        assert.match(await page.textContent(`[data-transfer="${pending.id}"]`) ?? "", /executed · signed 2 of 2/);
        assert.equal(await page.locator(`[data-testid=cosign-${pending.id}]`).count(), 0);

        // The transparency page lists the move.
        await page.goto(fx.url("/u/riders/treasury"));
        assert.match(await page.textContent("[data-testid=moves]") ?? "", /1 of 1 → 2 of 2/);
        // ana's officer badge, minted by the server's ledger lane when she proved her wallet as an officer, is listed.
        await eventually(async () => {
          await page.reload();
          return /officer: \S{32,44}/.test(await page.textContent("[data-testid=role-badge-mints]") ?? "");
        }, "the officer badge mint on the transparency page", 60_000);
      } finally {
        await ctx.close();
      }
    });
  });
}
