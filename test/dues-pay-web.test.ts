import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import type { Browser } from "playwright-core";
import { type Keypair, Transaction } from "@solana/web3.js";
import bs58 from "bs58";
import * as ed from "@noble/ed25519";
import { browserSkip, launchBrowser } from "./helpers/browser.ts";
import { dialects } from "./helpers/databases.ts";
import { eventually, type TestMuster } from "./helpers/muster.ts";
import { signInByDm } from "./helpers/sign-in.ts";
import { unionWithPeer } from "./helpers/union-with-peer.ts";
import { realTreasury, rpcConnection } from "./helpers/treasury.ts";
import { overrideBylaws } from "./helpers/bylaws.ts";
import { createEventBus } from "../src/events.ts";
import { duesParamsFromBylaws } from "../src/treasury/dues-params.ts";
import { memberStanding } from "../src/treasury/dues.ts";
import { runDuesScan } from "../solana/dues-scan-job.ts";

// Issue 15 in real Chromium: the member's page offers the dues as a Solana
// Pay transaction-request link, its QR code (an SVG drawn on the server), and
// a button that pays with a wallet in this browser, found by the Wallet
// Standard's discovery events. The wallet is a test wallet registered the
// standard way; it signs with a key the test holds (an exposed function) and
// sends to the server's embedded ledger, as a wallet sends to its RPC node.

const DUES = 5_000_000n;

for (const d of dialects) {
  describe(`dues pay button and QR code on the member page in Chromium on ${d.name}`, { skip: d.skip || browserSkip }, () => {
    const fx = unionWithPeer(d, { actors: ["lead", "ana"], joinPolicy: "open" });
    let m: TestMuster;
    let unionId: string;
    let browser: Browser | undefined;
    let rpc: ReturnType<typeof rpcConnection>;
    let wallet: Keypair;

    before(async () => {
      ({ m, unionId } = await fx.start());
      for (const name of ["lead", "ana"]) {
        await fx.follow(name);
        await eventually(async () => (await fx.member(name))?.state === "active", `${name} joined`, 30_000);
      }
      rpc = rpcConnection(m.origin);
      const db = m.muster.database.db;
      const t = await realTreasury(rpc.connection, m.muster.embeddedLedger!, db, unionId);
      await overrideBylaws({ db, events: createEventBus() }, "riders", { duesAmount: DUES, duesPeriodDays: 30, duesGraceDays: 7 });
      wallet = await t.wallet(DUES * 3n);
      browser = await launchBrowser();
    });
    after(async () => {
      await browser?.close();
      rpc?.close();
      await fx.stop();
    });

    it("links the Wallet Standard wallet; shows the solana: link and its QR code; the wallet pays, the scan credits it; nothing overflows at 1280 and 390 px", async () => {
      const ledger = m.muster.embeddedLedger!;
      const ctx = await browser!.newContext();
      try {
        const page = await ctx.newPage();
        const sent: string[] = [];
        await page.exposeFunction("__testWalletSignAndSend", async (bytes: number[]) => {
          // What a wallet does with a transaction request's bytes: check it pays from this wallet, sign, send.
          const tx = Transaction.from(Uint8Array.from(bytes));
          assert.ok(tx.feePayer?.equals(wallet.publicKey), "the server built it for this wallet");
          tx.partialSign(wallet);
          const signature = await ledger.submit(tx.serialize(), { lastValidBlockHeight: tx.lastValidBlockHeight ?? Number.MAX_SAFE_INTEGER, commitment: "confirmed" });
          sent.push(signature);
          return Array.from(bs58.decode(signature));
        });
        await page.exposeFunction("__testWalletSignMessage", async (bytes: number[]) => Array.from(await ed.signAsync(Uint8Array.from(bytes), wallet.secretKey.slice(0, 32))));
        await page.addInitScript((address: string) => {
          const w = window as unknown as { __testWalletSignAndSend(b: number[]): Promise<number[]>; __testWalletSignMessage(b: number[]): Promise<number[]> };
          const account = { address, publicKey: new Uint8Array(32), chains: ["solana:localnet"], features: ["solana:signAndSendTransaction"] };
          const testWallet = {
            version: "1.0.0", name: "Test Wallet", icon: "data:image/svg+xml;base64,PHN2Zy8+", chains: ["solana:localnet"], accounts: [account],
            features: {
              "standard:connect": { version: "1.0.0", connect: async () => ({ accounts: [account] }) },
              "solana:signMessage": {
                version: "1.0.0",
                signMessage: async (...inputs: { message: Uint8Array }[]) =>
                  Promise.all(inputs.map(async (i) => ({ signedMessage: i.message, signature: Uint8Array.from(await w.__testWalletSignMessage(Array.from(i.message))) }))),
              },
              "solana:signAndSendTransaction": {
                version: "1.0.0", supportedTransactionVersions: ["legacy"],
                signAndSendTransaction: async (...inputs: { transaction: Uint8Array }[]) =>
                  Promise.all(inputs.map(async (i) => ({ signature: Uint8Array.from(await w.__testWalletSignAndSend(Array.from(i.transaction))) }))),
              },
            },
          };
          // The Wallet Standard's registration, both ways round (the app may load before or after the wallet).
          const register = (api: { register(w: unknown): unknown }) => api.register(testWallet);
          window.addEventListener("wallet-standard:app-ready", (e) => register((e as CustomEvent).detail));
          window.dispatchEvent(new CustomEvent("wallet-standard:register-wallet", { detail: register }));
        }, wallet.publicKey.toBase58());
        await page.goto(fx.url("/u/riders/login"));
        await signInByDm(page, fx, "ana", "/u/riders/me");
        const ana = (await fx.member("ana"))!;
        // The same Wallet Standard wallet links itself (solana:signMessage), with no window.solana in this browser.
        assert.equal(await page.evaluate(() => "solana" in window), false);
        await Promise.all([page.waitForURL(/done=wallet_linked/), page.click("[data-wallet-link]")]);
        assert.match(await page.textContent("[data-testid=wallet]") ?? "", new RegExp(`Linked: ${wallet.publicKey.toBase58()} proven`));
        const requestUrl = new URL(`/u/riders/dues/pay?member=${encodeURIComponent(ana.handle!)}`, m.origin).href;
        assert.equal(await page.getAttribute("[data-testid=dues-pay-link]", "href"), `solana:${encodeURIComponent(requestUrl)}`);
        assert.match(await page.textContent("[data-testid=dues]") ?? "", /The dues are 5 tokens a period/);
        assert.equal(await page.locator("[data-testid=dues-qr] svg path").count(), 1, "the QR code is an inline SVG");
        // The link is a working transaction request: a wallet app GETs its label, then POSTs its account.
        const label = await (await fetch(requestUrl)).json() as { label: string };
        assert.match(label.label, /Pay 5 tokens/);

        await page.click("[data-dues-pay]");
        await page.waitForFunction(() => /^Sent\. Transaction /.test(document.querySelector("[data-dues-status]")?.textContent ?? ""));
        const signature = await page.getAttribute("[data-dues-status]", "data-signature");
        assert.deepEqual(sent, [signature], "the page shows the signature the wallet sent");
        const db = m.muster.database.db;
        // The scheduled scan records it (the server's worker, or this pass when the job's lease is free).
        const mine = await eventually(async () => {
          await runDuesScan({ db, events: createEventBus(), ledger, duesParams: duesParamsFromBylaws }, "test");
          return db.selectFrom("dues_payments").selectAll().where("signature", "=", signature!).executeTakeFirst();
        }, "the payment recorded", 120_000);
        assert.deepEqual([mine.status, mine.member_id, mine.amount], ["credited", ana.id, DUES.toString()]);
        assert.equal((await memberStanding({ db, duesParams: duesParamsFromBylaws }, unionId, ana.id)).standing, "good");
        // The server issued and stored the transaction's reference; the payment closed it.
        const refs = await db.selectFrom("dues_references").selectAll().where("member_id", "=", ana.id).execute();
        assert.deepEqual(refs.map((r) => [r.state, r.signature]), [["paid", signature]]);

        for (const width of [1280, 390]) {
          await page.setViewportSize({ width, height: 900 });
          await page.reload();
          const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
          assert.ok(overflow <= 0, `nothing overflows at ${width} px (by ${overflow})`);
          const box = await page.locator("[data-testid=dues-qr] svg").boundingBox();
          assert.ok(box && box.width >= 100 && box.width <= width, `the QR code is shown at a scannable size at ${width} px (${box?.width})`);
        }
        // Without a wallet in the browser, the page says what to do instead.
        const bare = await (await browser!.newContext({ storageState: await ctx.storageState() })).newPage();
        await bare.goto(fx.url("/u/riders/me"));
        await bare.click("[data-dues-pay]");
        await bare.waitForFunction(() => /No Solana wallet found/.test(document.querySelector("[data-dues-status]")?.textContent ?? ""));
        await bare.context().close();
      } finally {
        await ctx.close();
      }
    });
  });
}
