import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import type { Browser, Page } from "playwright-core";
import { browserSkip } from "./helpers/browser.ts";
import { startMembersInBrowser, stopMembersInBrowser } from "./helpers/members-in-browser.ts";
import { overrideBylaws } from "./helpers/bylaws.ts";
import { dialects } from "./helpers/databases.ts";
import type { TestMuster } from "./helpers/muster.ts";
import { signInByDm } from "./helpers/sign-in.ts";
import { unionWithPeer } from "./helpers/union-with-peer.ts";
import { ballotOf, createProposal, getProposal } from "../src/bylaws/proposals.ts";
import { OPERATOR } from "../src/members/members.ts";

// Issue 14 in real Chromium: the public bylaws page (text, enforced rules,
// history with what changed) and web voting on a proposal by a member who
// signed in by the DM link. Real Muster, a real peer fediverse server.

for (const d of dialects) {
  describe(`bylaws and proposals in Chromium on ${d.name}`, { skip: d.skip || browserSkip }, () => {
    const fx = unionWithPeer(d, { actors: ["lead", "ana", "ben"], joinPolicy: "open" });
    let m: TestMuster;
    let unionId: string;
    let browser: Browser | undefined;

    before(async () => {
      ({ m, unionId, browser } = await startMembersInBrowser(fx, ["lead", "ana", "ben"]));
    });
    after(async () => {
      await stopMembersInBrowser(fx, browser);
    });

    it("the bylaws page shows the rules in force and what each version changed", async () => {
      await overrideBylaws(m.muster.unions, "riders", { memberInviteLimit: 9 });
      const ctx = await browser!.newContext();
      try {
        const page: Page = await ctx.newPage();
        await page.goto(fx.url("/u/riders/bylaws"));
        assert.match(await page.textContent("h1") ?? "", /^Bylaws of /);
        assert.match(await page.textContent("[data-testid=bylaws-version]") ?? "", /^Version 2, in force since/);
        assert.ok(await page.isVisible("[data-testid=bylaws-text]"));
        const limit = await page.$$eval("[data-testid=bylaws-params] tr[data-key=memberInviteLimit] td", (tds) => tds.map((td) => td.textContent?.trim()));
        assert.deepEqual(limit.slice(0, 2), ["Invite limit", "9"]);
        assert.equal(await page.locator("[data-testid=bylaws-history] > li").count(), 2);
        const diff = await page.textContent("[data-testid=bylaws-history] > li[data-version='2'] ul.diff") ?? "";
        assert.match(diff, /memberInviteLimit/);
        assert.equal(await page.textContent("[data-testid=bylaws-history] > li[data-version='2'] ul.diff del"), "5");
        assert.equal(await page.textContent("[data-testid=bylaws-history] > li[data-version='2'] ul.diff ins"), "9");
        assert.equal(await page.locator("[data-testid=bylaws-history] > li[data-version='1'] ul.diff").count(), 0, "the founding version has nothing before it");
      } finally {
        await ctx.close();
      }
    });

    it("a signed-in member votes on the proposal page and changes the vote; a visitor sees no form", async () => {
      const p = await createProposal(m.muster.membership, unionId, OPERATOR, { kind: "resolution", title: "Strike on Friday", closesAt: new Date(Date.now() + 600_000) });
      const path = `/u/riders/proposals/${p.number}`;
      const visitor = await browser!.newContext();
      try {
        const page = await visitor.newPage();
        await page.goto(fx.url(path));
        assert.equal(await page.textContent("[data-testid=proposal-title]"), `#${p.number} Strike on Friday`);
        assert.equal(await page.locator("[data-testid=vote-form]").count(), 0, "no vote form for a visitor");
      } finally {
        await visitor.close();
      }
      const ctx = await browser!.newContext();
      try {
        const page = await ctx.newPage();
        await page.goto(fx.url("/u/riders/login"));
        await signInByDm(page, fx, "ana", "/u/riders/me");
        await page.goto(fx.url(path));
        const tally = async () => page.$$eval("[data-testid=tally] tbody tr", (trs) => trs.map((tr) => [...tr.querySelectorAll("td")].map((td) => td.textContent?.trim())));
        assert.deepEqual(await tally(), [["Yes", "0", "0"], ["No", "0", "0"], ["Abstain", "0", "0"]]);
        await page.check("[data-testid=vote-form] input[value=No]");
        await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.click("[data-testid=vote-form] button[type=submit]")]);
        assert.equal(await page.textContent("[data-testid=voted]"), "Your vote is recorded.");
        assert.deepEqual(await tally(), [["Yes", "0", "0"], ["No", "1", "0"], ["Abstain", "0", "0"]]);
        assert.ok(await page.isChecked("[data-testid=vote-form] input[value=No]"), "the form shows the ballot");
        assert.equal(await page.textContent("[data-testid=vote-form] button[type=submit]"), "Change my vote");
        await page.check("[data-testid=vote-form] input[value=Yes]");
        await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.click("[data-testid=vote-form] button[type=submit]")]);
        assert.deepEqual(await tally(), [["Yes", "1", "0"], ["No", "0", "0"], ["Abstain", "0", "0"]]);
        assert.deepEqual(await ballotOf(m.muster.database.db, p.id, (await fx.member("ana"))!.id), ["Yes"]);
      } finally {
        await ctx.close();
      }
    });

    it("a signed-in member opens an amendment from the web form; a bad rule or the proposers rule is shown on the form", async () => {
      const ctx = await browser!.newContext();
      try {
        const page = await ctx.newPage();
        await page.goto(fx.url("/u/riders/proposals/new"));
        assert.equal(new URL(page.url()).pathname, "/u/riders/login", "signing in comes first");
        await signInByDm(page, fx, "ben", "/u/riders/me");
        await page.goto(fx.url("/u/riders/proposals/new"));
        const submit = () => Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.click("[data-testid=new-proposal-form] button[type=submit]")]);
        await page.selectOption("select[name=kind]", "amendment");
        await page.fill("input[name=title]", "Bigger welcomes");
        await page.fill("textarea[name=params]", "memberInviteLimit=lots");
        await submit();
        assert.match(await page.textContent("[data-testid=proposal-error]") ?? "", /memberInviteLimit/);
        assert.equal(await page.inputValue("input[name=title]"), "Bigger welcomes", "nothing typed is lost");
        assert.equal(await page.inputValue("select[name=kind]"), "amendment");
        await page.fill("textarea[name=params]", "memberInviteLimit=7");
        await submit();
        const n = /\/u\/riders\/proposals\/(\d+)$/.exec(new URL(page.url()).pathname)?.[1];
        assert.ok(n, `landed on the new proposal's page, not ${page.url()}`);
        assert.equal(await page.textContent("[data-testid=proposal-title]"), `#${n} Bigger welcomes`);
        const p = await getProposal(m.muster.database.db, unionId, n);
        assert.deepEqual([p?.kind, p?.state, p?.change], ["amendment", "open", { kind: "amendment", params: { memberInviteLimit: 7 } }]);

        await overrideBylaws(m.muster.unions, "riders", { proposers: "officers" });
        await page.goto(fx.url("/u/riders/proposals/new"));
        await page.fill("input[name=title]", "Strike on Monday");
        const [res] = await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.click("[data-testid=new-proposal-form] button[type=submit]")]);
        assert.equal(res?.status(), 403);
        assert.match(await page.textContent("[data-testid=proposal-error]") ?? "", /officer/i);
      } finally {
        await ctx.close();
      }
    });
  });
}
