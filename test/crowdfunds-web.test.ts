import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { Keypair } from "@solana/web3.js";
import { TOKEN_PROGRAM_ID } from "@solana/spl-token";
import { browserSkip, launchBrowser } from "./helpers/browser.ts";
import { dialects } from "./helpers/databases.ts";
import { makeUnion, startMuster } from "./helpers/muster.ts";
import { DECIMALS, fundedWallet, setupTreasury } from "./helpers/crowdfund.ts";
import { followId, person } from "./helpers/domain-context.ts";
import { requestToJoin } from "../src/members/membership.ts";
import { OPERATOR } from "../src/members/members.ts";
import { approveCrowdfund, getCrowdfund, proposeCrowdfund } from "../src/crowdfunds/crowdfunds.ts";
import { duesParamsFromBylaws } from "../src/treasury/dues-params.ts";
import { openVault, pledgeTransaction } from "../solana/crowdfund-vault.ts";
import { scanPledges } from "../solana/crowdfund-pledges.ts";
import { settleCrowdfund } from "../solana/crowdfund-settlement.ts";

// The crowdfund page in real Chromium, against a running server whose vault
// balance comes from its embedded ledger: pledges (names only where the
// roster rule allows), then the settlement.

for (const d of dialects) {
  describe(`the crowdfund page in Chromium on ${d.name}`, { skip: d.skip || browserSkip }, () => {
    it("shows goal, pledges, the vault balance from the chain and the settlement, fitting 1280 and 390 px", async () => {
      const tdb = await d.create();
      const m = await startMuster(tdb, { worker: false });
      const browser = await launchBrowser();
      try {
        const db = m.muster.database.db;
        const ledger = m.muster.embeddedLedger!;
        const union = await makeUnion(m, "riders", { joinPolicy: "open" });
        await db.updateTable("unions").set({ actions_visibility: "public", members_visibility: "members" }).where("id", "=", union.id).execute();
        const treasury = await setupTreasury(ledger, db, union.id);
        const members: { id: string; actorId: string; wallet: Keypair }[] = [];
        for (const name of ["alice", "bob"]) {
          const p = person(name);
          const j = await requestToJoin(m.muster.membership, union.id, p, followId());
          const { wallet } = await fundedWallet(ledger, treasury.mint, treasury.mintAuthority, 50_000_000n);
          members.push({ id: j.member.id, actorId: p.actorId, wallet });
        }
        const proposed = await proposeCrowdfund({ ...m.muster.membership, duesParams: duesParamsFromBylaws }, union.id, members[0]!.id, {
          title: "A van for the night shift", text: "We need a **van** to get riders home safely.", goal: 20_000_000n,
          deadline: new Date(Date.now() + 86_400_000), beneficiary: Keypair.generate().publicKey.toBase58(),
        });
        const page = await (await browser.newContext()).newPage();
        const url = new URL(`/u/riders/crowdfunds/${proposed.seq}`, m.origin).href;
        assert.equal((await page.goto(url))?.status(), 404, "a proposal is not shown to visitors");
        await approveCrowdfund(m.muster.membership, union.id, proposed.id, OPERATOR);
        const chain = { db, ledger };
        await openVault(chain, proposed.id);
        let cf = (await getCrowdfund(db, union.id, proposed.id))!;
        for (const [i, amount] of [[0, 7_500_000n], [1, 5_000_000n]] as const) {
          const mem = members[i]!;
          const { tx, lastValidBlockHeight } = await pledgeTransaction(ledger, { crowdfund: cf, actorId: mem.actorId, wallet: mem.wallet.publicKey, amount, decimals: DECIMALS, tokenProgram: TOKEN_PROGRAM_ID });
          tx.sign(mem.wallet);
          await ledger.submit(tx.serialize(), { lastValidBlockHeight, commitment: "confirmed" });
        }
        await scanPledges(ledger, db, cf);

        await page.goto(url);
        assert.equal(await page.locator("h1").textContent(), "A van for the night shift");
        assert.equal(await page.getByTestId("goal").textContent(), "20 tokens");
        assert.match(await page.getByTestId("pledged").textContent() ?? "", /^12.5 tokens \(62 %\) from 2 pledges$/);
        assert.equal(await page.getByTestId("vault-balance").textContent(), "12.5 tokens");
        assert.equal(await page.locator(".body strong").textContent(), "van", "the Markdown is rendered");
        assert.equal(await page.getByTestId("vault").textContent(), cf.vault);
        // A visitor who may not see the member list sees amounts, not names.
        const pledges = page.getByTestId("pledges");
        assert.equal(await pledges.locator("tbody tr").count(), 2);
        // The Who column only: the transaction column holds base58
        // signatures, which may spell "bob" by chance (it did in CI).
        assert.deepEqual(await pledges.locator("tbody tr td:first-child").allTextContents(), ["a member", "a member"]);
        for (const width of [1280, 390]) {
          await page.setViewportSize({ width, height: 900 });
          assert.equal(await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth), 0, `the crowdfund page fits ${width} px`);
        }
        // The union's page lists it.
        await page.setViewportSize({ width: 1280, height: 900 });
        await page.goto(new URL("/u/riders", m.origin).href);
        assert.match(await page.getByTestId("crowdfunds").textContent() ?? "", /A van for the night shift.*#1 · goal 20 tokens · Open for pledges/s);

        // A public roster: names shown. Then settled (forced, goal missed): refunds shown and the vault closed.
        await db.updateTable("unions").set({ members_visibility: "public" }).where("id", "=", union.id).execute();
        cf = (await getCrowdfund(db, union.id, proposed.id))!;
        const r = await settleCrowdfund(chain, cf, { force: true });
        assert.equal(r.outcome, "refunded");
        await page.goto(url);
        const named = await pledges.textContent() ?? "";
        assert.ok(named.includes("@alice@remote.example") && named.includes("@bob@remote.example"), named);
        assert.equal(await page.getByTestId("vault-balance").textContent(), "closed");
        assert.equal(await page.getByTestId("state").textContent(), "Goal missed, every pledge refunded");
        const settlement = await page.getByTestId("settlement").textContent() ?? "";
        assert.match(settlement, /refunds \(2\).*12.5 tokens.*confirmed/s);
        assert.ok(settlement.includes(r.transactions[0]!.signature));
        for (const width of [1280, 390]) {
          await page.setViewportSize({ width, height: 900 });
          assert.equal(await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth), 0, `the settled page fits ${width} px`);
        }
        assert.equal((await page.goto(new URL("/u/riders/crowdfunds/abc", m.origin).href))?.status(), 404);
      } finally {
        await browser.close();
        await m.stop();
        await tdb.destroy();
      }
    });
  });
}
