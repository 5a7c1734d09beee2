import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import type { Browser } from "playwright-core";
import { Keypair } from "@solana/web3.js";
import * as ed from "@noble/ed25519";
import { browserSkip } from "./helpers/browser.ts";
import { startMembersInBrowser, stopMembersInBrowser } from "./helpers/members-in-browser.ts";
import { dialects } from "./helpers/databases.ts";
import type { TestMuster } from "./helpers/muster.ts";
import { signInByDm } from "./helpers/sign-in.ts";
import { unionWithPeer } from "./helpers/union-with-peer.ts";
import { verifyWalletProof, walletOf } from "../src/treasury/wallet-proof.ts";

// Issue 15 in real Chromium: a member links a wallet from their page. The
// wallet is a small window.solana-like object injected by the test; it
// signs with a key the test holds (through an exposed function), the way a
// wallet extension signs without showing the page its key.

for (const d of dialects) {
  describe(`wallet link on the member page in Chromium on ${d.name}`, { skip: d.skip || browserSkip }, () => {
    const fx = unionWithPeer(d, { actors: ["lead", "ana"], joinPolicy: "open" });
    let m: TestMuster;
    let unionId: string;
    let browser: Browser | undefined;

    before(async () => {
      ({ m, unionId, browser } = await startMembersInBrowser(fx, ["lead", "ana"]));
    });
    after(async () => {
      await stopMembersInBrowser(fx, browser);
    });

    it("links the injected wallet with a signed challenge, shows the proof, and nothing overflows at 1280 and 390 px", async () => {
      const key = Keypair.generate();
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
        await signInByDm(page, fx, "ana", "/u/riders/me");
        assert.match(await page.textContent("#wallet") ?? "", /No wallet linked/);
        await Promise.all([page.waitForURL(/done=wallet_linked/), page.click("[data-wallet-link]")]);
        assert.match(await page.textContent("[data-testid=wallet]") ?? "", new RegExp(`Linked: ${key.publicKey.toBase58()} proven`));
        const ana = (await fx.member("ana"))!;
        const stored = (await walletOf(m.muster.database.db, unionId, ana.id))!;
        assert.equal(stored.wallet, key.publicKey.toBase58());
        assert.ok(stored.proof && await verifyWalletProof(stored.proof));
        assert.match(stored.proof!.message, /Member: .*\/users\/ana/);
        assert.equal(await page.textContent("[data-testid=wallet-proof] pre"), stored.proof!.message);
        for (const width of [1280, 390]) {
          await page.setViewportSize({ width, height: 900 });
          await page.reload();
          const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
          assert.ok(overflow <= 0, `nothing overflows at ${width} px (by ${overflow})`);
        }
        // Without a wallet in the browser, the page says so and links nothing.
        const bare = await ctx.newPage();
        await bare.goto(fx.url("/u/riders/me"));
        await bare.evaluate(() => { delete (window as unknown as Record<string, unknown>).solana; });
        await bare.click("[data-wallet-link]");
        await bare.waitForFunction(() => /No Solana wallet found/.test(document.querySelector("[data-wallet-status]")?.textContent ?? ""));
        // The endpoint refuses a forged proof and a cross-site POST.
        const cookie = (await ctx.cookies()).map((c) => `${c.name}=${c.value}`).join("; ");
        const forged = await fetch(fx.url("/u/riders/me/wallet"), { method: "POST", headers: { "Content-Type": "application/json", Cookie: cookie, Origin: m.origin.origin }, body: JSON.stringify({ wallet: Keypair.generate().publicKey.toBase58(), message: stored.proof!.message, signature: stored.proof!.signature }) });
        assert.equal(forged.status, 400);
        const crossSite = await fetch(fx.url("/u/riders/me/wallet/challenge"), { method: "POST", headers: { "Content-Type": "application/json", Cookie: cookie, Origin: "http://evil.example" }, body: "{}" });
        assert.equal(crossSite.status, 403);
        assert.equal((await walletOf(m.muster.database.db, unionId, ana.id))?.wallet, key.publicKey.toBase58(), "still the proven wallet");
      } finally {
        await ctx.close();
      }
    });
  });
}
