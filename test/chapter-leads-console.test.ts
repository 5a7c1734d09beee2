import "../src/temporal.ts";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Accept } from "@fedify/vocab";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { eventually, makeUnion, startMuster, type TestMuster } from "./helpers/muster.ts";
import { unionWithPeer } from "./helpers/union-with-peer.ts";
import { OPERATOR } from "../src/members/members.ts";
import { listRelationships } from "../src/relationships/relationships.ts";
import { chapterTree } from "../src/relationships/chapters.ts";
import { getUnionBySlug } from "../src/unions/unions.ts";
import { proposeTo } from "../federation/relationships.ts";
import type { Browser, Page } from "playwright-core";
import { browserSkip, launchBrowser } from "./helpers/browser.ts";
import { answerOffer } from "../src/relationships/relationships.ts";

// The console's "Chapter leads" section, over real HTTP: a chapter on another
// Muster server, led by the peer's gus, reports up; the parent's leader signs
// in by DM and sees gus as a chapter lead. Then in Chromium at 1280 and 390 px:
// that section, and the public page with the chapter tree and the allies.

for (const d of dialects) {
  describe(`the console's chapter leads, on ${d.name}`, { skip: d.skip }, () => {
    const fx = unionWithPeer(d, { actors: ["lead", "gus"], joinPolicy: "approval" });
    let tdb: TestDatabase;
    let other: TestMuster;
    let cookie = "";
    let started: Awaited<ReturnType<typeof fx.start>>;
    let browser: Browser | undefined;

    before(async () => {
      started = await fx.start();
      await fx.answerTo(await fx.follow("lead"), Accept);
      tdb = await d.create();
      other = await startMuster(tdb);
    });
    after(async () => {
      await browser?.close();
      await other?.stop();
      await tdb?.destroy();
      await fx.stop();
    });

    const consolePage = (withCookie: boolean) => fetch(fx.url("/u/riders/console"), { headers: withCookie ? { Cookie: cookie } : {}, redirect: "manual" });

    it("no section while the union has no chapters; none for a visitor", async () => {
      const origin = new URL(fx.url("/")).origin;
      const asked = await fetch(fx.url("/u/riders/login"), { method: "POST", headers: { "Content-Type": "application/x-www-form-urlencoded", Origin: origin }, body: new URLSearchParams({ handle: fx.handleOf("lead") }) });
      assert.equal(asked.status, 200, await asked.text());
      const code = await fx.newLoginCode("lead");
      const signed = await fetch(fx.url(`/u/riders/login/${code}`), { method: "POST", headers: { "Content-Type": "application/x-www-form-urlencoded", Origin: origin }, body: "", redirect: "manual" });
      assert.ok(signed.status === 302 || signed.status === 303, `sign-in answered ${signed.status}`);
      cookie = (signed.headers.getSetCookie?.() ?? []).map((c) => c.split(";")[0]).join("; ");
      assert.ok(cookie.length > 0, "a session cookie");
      const page = await (await consolePage(true)).text();
      assert.match(page, /<h1|Members/);
      assert.doesNotMatch(page, /id="chapter-leads"/);
      const anonymous = await consolePage(false);
      assert.notEqual(anonymous.status, 200);
      await anonymous.body?.cancel();
    });

    it("a chapter on another server reports its lead; the parent's console lists them as chapter lead, linked to the chapter", async () => {
      const riders = (await getUnionBySlug(fx.db(), "riders"))!;
      const north = await makeUnion(other, "north", { name: "North Riders", leaderHandle: fx.handleOf("gus") });
      const offer = await proposeTo({ ...other.muster.membership, federation: other.muster.federation, origin: other.origin }, north, OPERATOR, fx.url("/u/riders"), "parent", "theirs");
      const atParent = await eventually(async () => (await listRelationships(fx.db(), riders.id)).find((r) => r.followId === offer.followId), "riders receives north's request");
      // The leader accepts with the console's button (officerStep): a bad id is the tab again with 404.
      const post = (path: string) => fetch(fx.url(path), { method: "POST", headers: { Cookie: cookie, "Content-Type": "application/x-www-form-urlencoded", Origin: new URL(fx.url("/")).origin }, body: "proposal=", redirect: "manual" });
      const missing = await post("/u/riders/console/unions/00000000-0000-4000-8000-000000000000/accept");
      assert.equal(missing.status, 404);
      assert.match(await missing.text(), /Other unions|relationship/i);
      const accepted = await post(`/u/riders/console/unions/${atParent.id}/accept`);
      assert.equal(accepted.status, 303, await accepted.text());
      assert.equal(accepted.headers.get("location"), "/u/riders/console/unions?done=accepted");
      assert.equal((await listRelationships(fx.db(), riders.id)).find((r) => r.id === atParent.id)?.state, "active");
      await eventually(async () => (await chapterTree(fx.db(), riders.id))[0]?.leads.length === 1, "north's report with its lead reaches riders");
      const page = await (await consolePage(true)).text();
      assert.match(page, /<section id="chapter-leads">/);
      const northUrl = new URL("/u/north", other.origin).href;
      assert.match(page, new RegExp(`<tr data-chapter-lead="${fx.handleOf("gus")}">[\\s\\S]*?Chapter lead[\\s\\S]*?<a href="${northUrl}"[^>]*>North Riders</a>`));
    });

    it("in Chromium at 1280 and 390 px: the chapter leads section, and the public page's chapter tree and allies (totals only for who may see members)", { skip: browserSkip }, async () => {
      const riders = (await getUnionBySlug(fx.db(), "riders"))!;
      const couriers = await makeUnion(other, "couriers", { name: "Couriers United" });
      const offer = await proposeTo({ ...other.muster.membership, federation: other.muster.federation, origin: other.origin }, couriers, OPERATOR, fx.url("/u/riders"), "ally", "both");
      const atRiders = await eventually(async () => (await listRelationships(fx.db(), riders.id)).find((r) => r.followId === offer.followId), "riders receives couriers' offer");
      await answerOffer(started.m.muster.membership, riders.id, atRiders.id, OPERATOR, true);
      await eventually(async () => (await listRelationships(other.muster.database.db, couriers.id))[0]?.state === "active", "couriers sees the Accept");
      const couriersUrl = new URL("/u/couriers", other.origin).href;
      const northUrl = new URL("/u/north", other.origin).href;

      browser = await launchBrowser();
      const signedIn = await browser.newContext();
      await signedIn.addCookies(cookie.split("; ").map((kv) => {
        const [name, ...rest] = kv.split("=");
        return { name: name!, value: rest.join("="), url: fx.url("/") };
      }));
      const visitor = await (await browser.newContext()).newPage();
      const page = await signedIn.newPage();
      const fits = async (p: Page, what: string) => {
        const overflow = await p.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
        assert.ok(overflow <= 0, `${what}: nothing overflows (${overflow} px)`);
      };
      /** Visible, with its box inside the viewport's width. */
      const shown = async (p: Page, selector: string, width: number) => {
        const el = p.locator(selector).first();
        assert.ok(await el.isVisible(), `${selector} is visible at ${width} px`);
        const box = (await el.boundingBox())!;
        assert.ok(box.width > 0 && box.height > 0 && box.x >= 0 && box.x + box.width <= width + 0.5, `${selector} lies within ${width} px (${JSON.stringify(box)})`);
      };
      for (const width of [1280, 390]) {
        for (const p of [page, visitor]) await p.setViewportSize({ width, height: 900 });
        await page.goto(fx.url("/u/riders/console"));
        await shown(page, "#chapter-leads", width);
        const lead = page.locator(`#chapter-leads tr[data-chapter-lead="${fx.handleOf("gus")}"]`);
        assert.equal(await lead.count(), 1);
        await shown(page, `#chapter-leads tr[data-chapter-lead="${fx.handleOf("gus")}"] a[href="${northUrl}"]`, width);
        assert.match(await lead.innerText(), /Chapter lead/);
        await fits(page, `the console at ${width} px`);

        await page.goto(fx.url("/u/riders"));
        assert.deepEqual(await page.locator("[data-testid=allies] a").evaluateAll((as) => as.map((a) => (a as HTMLAnchorElement).href)), [couriersUrl]);
        await shown(page, "[data-testid=allies] a", width);
        assert.deepEqual(await page.locator("[data-testid=chapters] > li > a").evaluateAll((as) => as.map((a) => [(a as HTMLAnchorElement).href, a.textContent])), [[northUrl, "North Riders"]]);
        await shown(page, "[data-testid=chapters] a", width);
        // The leader may see members (the default rule: signed-in), so the tree's totals show.
        await shown(page, "[data-testid=tree-totals]", width);
        assert.match(await page.innerText("[data-testid=tree-totals]"), /across 1 chapter/);
        assert.match(await page.innerText("[data-testid=chapter-totals]"), /\d+ members?, \d+ commitments?/);
        await fits(page, `the public page, signed in, at ${width} px`);

        await visitor.goto(fx.url("/u/riders"));
        await shown(visitor, "[data-testid=allies] a", width);
        await shown(visitor, "[data-testid=chapters] a", width);
        assert.equal(await visitor.locator("[data-testid=tree-totals], [data-testid=chapter-totals]").count(), 0, "a visitor sees the tree without its counts");
        await fits(visitor, `the public page, for a visitor, at ${width} px`);
      }
    });
  });
}
