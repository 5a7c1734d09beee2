import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { browserSkip } from "./helpers/browser.ts";
import { startMembersInBrowser, stopMembersInBrowser } from "./helpers/members-in-browser.ts";
import { overrideBylaws } from "./helpers/bylaws.ts";
import { dialects } from "./helpers/databases.ts";
import type { TestMuster } from "./helpers/muster.ts";
import { signInByDm } from "./helpers/sign-in.ts";
import { unionWithPeer } from "./helpers/union-with-peer.ts";
import { castVote, closeProposal, createProposal, delegateVote, getProposal } from "../src/bylaws/proposals.ts";
import { OPERATOR } from "../src/members/members.ts";
import { saveTreasury } from "../src/treasury/treasury.ts";

// Issue 14, the members' side in real Chromium: opening a proposal of every
// kind from the web form (with the errors a member can make), the list of
// proposals and the links to it, at 1280 and 390 px without sideways
// scrolling. Real Muster, a real peer fediverse server.

// The wrapped SOL mint: a real address with 9 decimals.
const MINT = "So11111111111111111111111111111111111111112";
const PAYEE = "BPFLoaderUpgradeab1e11111111111111111111111";

/** No element reaches past the viewport's right edge. */
async function assertFits(page: Page, what: string): Promise<void> {
  const wider = await page.evaluate(() => [...document.querySelectorAll("body *")]
    .filter((e) => e.getBoundingClientRect().right > document.documentElement.clientWidth + 0.5)
    .map((e) => `${e.tagName.toLowerCase()}.${e.className}`).slice(0, 5));
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
  assert.equal(overflow, 0, `${what} fits ${page.viewportSize()?.width} px; wider: ${wider}`);
}

async function atBothWidths(page: Page, what: string, check?: () => Promise<void>): Promise<void> {
  for (const width of [1280, 390]) {
    await page.setViewportSize({ width, height: 900 });
    await assertFits(page, what);
    await check?.();
  }
  await page.setViewportSize({ width: 1280, height: 900 });
}

for (const d of dialects) {
  describe(`proposals of every kind on the web, in Chromium on ${d.name}`, { skip: d.skip || browserSkip }, () => {
    const fx = unionWithPeer(d, { actors: ["lead", "ana", "ben", "cat"], joinPolicy: "open" });
    let m: TestMuster;
    let unionId: string;
    let browser: Browser | undefined;

    before(async () => {
      ({ m, unionId, browser } = await startMembersInBrowser(fx, ["lead", "ana", "ben", "cat"], async ({ m, unionId }) => {
        await overrideBylaws(m.muster.unions, "riders", { duesMint: MINT });
        // The treasury record is where Muster learns the dues mint's decimals. It replaces the one the
        // server's ledger lane made with the union (a test mint).
        await m.muster.database.db.deleteFrom("treasuries").where("union_id", "=", unionId).execute();
        await saveTreasury(m.muster.database.db, { unionId, mint: MINT, tokenProgram: "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA", decimals: 9, authority: MINT, tokenAccount: MINT, threshold: 1, signers: [] });
      }));
    });
    after(async () => {
      await stopMembersInBrowser(fx, browser);
    });

    async function signedIn(name: string, landsOn: string): Promise<{ ctx: BrowserContext; page: Page }> {
      const ctx = await browser!.newContext();
      const page = await ctx.newPage();
      await page.goto(fx.url("/u/riders/login"));
      await signInByDm(page, fx, name, landsOn);
      return { ctx, page };
    }

    it("a member opens an election, a recall and a spend from the form; mistakes come back on the form with nothing lost", async () => {
      const { ctx, page } = await signedIn("ana", "/u/riders/me");
      try {
        // From the member's page to the list, and on to the form.
        await atBothWidths(page, "the member page");
        await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.click("[data-testid=votes] [data-testid=proposals-link]")]);
        assert.equal(new URL(page.url()).pathname, "/u/riders/proposals");
        await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.click("[data-testid=new-proposal]")]);
        assert.equal(new URL(page.url()).pathname, "/u/riders/proposals/new");
        const submit = async (): Promise<number> => {
          const [res] = await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.click("[data-testid=new-proposal-form] button[type=submit]")]);
          return res?.status() ?? 0;
        };
        const error = async () => (await page.textContent("[data-testid=proposal-error]"))?.trim() ?? "";
        const openedNumber = () => /\/u\/riders\/proposals\/(\d+)$/.exec(new URL(page.url()).pathname)?.[1];

        // Only the chosen kind's fields show.
        await page.selectOption("select[name=kind]", "election");
        assert.deepEqual(await page.$$eval("fieldset[data-kind]", (fs) => fs.filter((f) => getComputedStyle(f).display !== "none").map((f) => f.dataset.kind)), ["election"]);
        await atBothWidths(page, "the new-proposal form (election)");

        // An election naming someone who is not a member.
        await page.fill("input[name=title]", "A treasurer");
        await page.fill("input[name=portfolio]", "Treasurer");
        await page.fill("textarea[name=candidates]", `${fx.handleOf("ana")}\n@nobody@${fx.host()}`);
        assert.equal(await submit(), 400);
        assert.equal(await error(), `candidate @nobody@${fx.host()} is not a member of this union`);
        assert.equal(await page.inputValue("input[name=title]"), "A treasurer", "nothing typed is lost");
        assert.equal(await page.inputValue("select[name=kind]"), "election");
        assert.equal(await page.inputValue("input[name=portfolio]"), "Treasurer");
        await page.fill("textarea[name=candidates]", "not-a-handle");
        await submit();
        assert.match(await error(), /a fediverse handle looks like @user@host; got "not-a-handle"/);
        await page.fill("textarea[name=candidates]", `${fx.handleOf("ana")}, ${fx.handleOf("ben")}`);
        await submit();
        const election = await getProposal(m.muster.database.db, unionId, openedNumber() ?? "none");
        assert.ok(election, `landed on the new proposal's page, not ${page.url()}`);
        const [ana, ben, lead] = [(await fx.member("ana"))!, (await fx.member("ben"))!, (await fx.member("lead"))!];
        assert.deepEqual([election.kind, election.multiple, election.options, election.change],
          ["election", true, [fx.handleOf("ana"), fx.handleOf("ben")], { kind: "election", role: "officer", portfolio: "Treasurer", candidates: [ana.id, ben.id] }]);
        await atBothWidths(page, "an election's page");

        // A recall: of someone without an office it is refused; of the leader it opens.
        await page.goto(fx.url("/u/riders/proposals/new"));
        await page.selectOption("select[name=kind]", "recall");
        await page.fill("input[name=title]", "Recall");
        await page.fill("input[name=member]", fx.handleOf("ben"));
        assert.equal(await submit(), 400);
        assert.match(await error(), /holds no office: a recall removes the leader or an officer/);
        await page.fill("input[name=member]", fx.handleOf("lead"));
        await submit();
        const recall = await getProposal(m.muster.database.db, unionId, openedNumber() ?? "none");
        assert.deepEqual(recall?.change, { kind: "recall", memberId: lead.id });

        // A spend typed in whole units of the dues mint (9 decimals).
        await page.goto(fx.url("/u/riders/proposals/new"));
        await page.selectOption("select[name=kind]", "spend");
        assert.match(await page.textContent("fieldset[data-kind=spend]") ?? "", /up to 9 decimal places/);
        await atBothWidths(page, "the new-proposal form (spend)");
        await page.fill("input[name=title]", "Legal fund");
        await page.fill("input[name=recipient]", PAYEE);
        await page.fill("input[name=purpose]", "Defend the Friday strikers");
        for (const [amount, why] of [
          ["1.0000000001", /this mint has 9 decimal places; "1.0000000001" has 10/],
          ["-3", /cannot be negative/],
          ["18446744073.709551616", /more than the largest amount a token account holds \(18446744073\.709551615\)/],
          ["lots", /a decimal number such as 12\.5/],
        ] as const) {
          await page.fill("input[name=amount]", amount);
          assert.equal(await submit(), 400, amount);
          assert.match(await error(), why);
          assert.equal(await page.inputValue("input[name=amount]"), amount, "the amount typed is shown again");
          assert.equal(await page.inputValue("input[name=purpose]"), "Defend the Friday strikers");
        }
        await page.fill("input[name=amount]", "12.5");
        await submit();
        const spend = await getProposal(m.muster.database.db, unionId, openedNumber() ?? "none");
        assert.deepEqual(spend?.change, { kind: "spend", amount: "12500000000", mint: MINT, recipient: PAYEE, purpose: "Defend the Friday strikers" });

        // A resolution with rules to change is pointed to an amendment.
        await page.goto(fx.url("/u/riders/proposals/new"));
        await page.fill("input[name=title]", "Strike");
        await page.evaluate(() => { (document.querySelector("textarea[name=params]") as HTMLTextAreaElement).value = "quorumPercent=5"; });
        assert.equal(await submit(), 400);
        assert.match(await error(), /changes no rule; choose an amendment/);

        // The list shows the open ones with their kind and end; it fits both widths.
        await page.goto(fx.url("/u/riders/proposals"));
        const open = await page.$$eval("[data-testid=open-proposals] li", (lis) => lis.map((li) => li.dataset.number));
        assert.deepEqual(open, [spend!.number, recall!.number, election.number].map(String));
        await atBothWidths(page, "the proposals list");
      } finally {
        await ctx.close();
      }
    });

    it("the list shows closed proposals with their outcome; the links are where members and officers look; proposers=officers hides New proposal from members", async () => {
      const p = await createProposal(m.muster.membership, unionId, OPERATOR, { kind: "resolution", title: "Closed one", closesAt: new Date(Date.now() + 60_000) });
      await castVote(m.muster.membership, unionId, p.id, { memberId: (await fx.member("cat"))!.id }, ["No"], { kind: "web" });
      const closed = await closeProposal(m.muster.membership, unionId, p.id, { force: true });
      assert.equal(closed?.state, "failed");
      const visitor = await browser!.newContext();
      try {
        const page = await visitor.newPage();
        await page.goto(fx.url("/u/riders"));
        await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.click("[data-testid=proposals-link]")]);
        const row = page.locator(`[data-testid=closed-proposals] li[data-number="${p.number}"]`);
        assert.equal(await row.getAttribute("data-state"), "failed");
        assert.equal((await row.locator(".outcome").textContent())?.trim(), closed!.outcome!.reason);
        assert.equal(await page.locator("[data-testid=new-proposal]").count(), 0, "a visitor may not propose");
        await atBothWidths(page, "the proposals list with closed ones");
      } finally {
        await visitor.close();
      }

      await overrideBylaws(m.muster.unions, "riders", { proposers: "officers" });
      const member = await signedIn("ben", "/u/riders/me");
      try {
        assert.equal(await member.page.locator("[data-testid=votes] [data-testid=new-proposal]").count(), 0);
        await member.page.goto(fx.url("/u/riders/proposals"));
        assert.equal(await member.page.locator("[data-testid=new-proposal]").count(), 0, "members may not propose under proposers=officers");
      } finally {
        await member.ctx.close();
      }
      const officer = await signedIn("lead", "/u/riders/console");
      try {
        await Promise.all([officer.page.waitForNavigation({ waitUntil: "load" }), officer.page.click("[data-testid=console-proposals]")]);
        assert.equal(new URL(officer.page.url()).pathname, "/u/riders/proposals");
        assert.equal(await officer.page.locator("[data-testid=new-proposal]").count(), 1, "the leader may");
        await officer.page.goto(fx.url("/u/riders/console"));
        await atBothWidths(officer.page, "the console with its Proposals tab");
      } finally {
        await officer.ctx.close();
      }
      await overrideBylaws(m.muster.unions, "riders", { proposers: "members" });
    });

    it("a member delegates from their page, to their sponsor by default, changes it, is refused a cycle, and withdraws it; the proposal page shows delegated weight", async () => {
      await overrideBylaws(m.muster.unions, "riders", { delegation: "opt_in" });
      const [ana, ben, lead] = [(await fx.member("ana"))!, (await fx.member("ben"))!, (await fx.member("lead"))!];
      assert.equal(ana.sponsorId, lead.id, "an open join's sponsor is the leader");
      // ben already delegates resolutions to ana, so ana -> ben for resolutions would be a cycle.
      await delegateVote(m.muster.membership, unionId, { kind: "member", memberId: ben.id }, ana.id, "resolution");
      const { ctx, page } = await signedIn("ana", "/u/riders/me");
      try {
        const form = page.locator("[data-testid=delegate-form]");
        const send = async (): Promise<number> => {
          const [res] = await Promise.all([page.waitForNavigation({ waitUntil: "load" }), form.locator("button[type=submit]").click()]);
          return res?.status() ?? 0;
        };
        const listed = async () => page.$$eval("[data-testid=delegations] li", (lis) => lis.map((li) => [li.dataset.scope, li.querySelector("[data-testid=delegate]")?.textContent]));
        assert.equal(await page.textContent("[data-testid=no-delegation]"), "You have not delegated your vote.");
        assert.equal(await form.locator("input[name=delegate]").inputValue(), fx.handleOf("lead"), "the sponsor is pre-selected");
        assert.equal(await form.locator("select[name=scope]").inputValue(), "all");
        await atBothWidths(page, "the member page with the delegation form");
        await send();
        assert.equal(await page.textContent("p.notice"), "Your vote is delegated.");
        assert.deepEqual(await listed(), [["all", fx.handleOf("lead")]]);

        // One kind to someone else: refused as a cycle (shown on the page, the choice kept), then an unknown handle.
        await form.locator("select[name=scope]").selectOption("resolution");
        await form.locator("input[name=delegate]").fill(fx.handleOf("ben"));
        assert.equal(await send(), 409);
        assert.match(await page.textContent("p.error") ?? "", /would make a cycle/);
        assert.deepEqual([await form.locator("select[name=scope]").inputValue(), await form.locator("input[name=delegate]").inputValue()], ["resolution", fx.handleOf("ben")]);
        await form.locator("input[name=delegate]").fill(`@nobody@${fx.host()}`);
        assert.equal(await send(), 400);
        assert.equal(await page.textContent("p.error"), `@nobody@${fx.host()} is not a member of this union`);
        await form.locator("select[name=scope]").selectOption("spend");
        await form.locator("input[name=delegate]").fill(fx.handleOf("cat"));
        await send();
        assert.deepEqual(await listed(), [["all", fx.handleOf("lead")], ["spend", fx.handleOf("cat")]]);
        await atBothWidths(page, "the member page with two delegations");

        // On a resolution the leader votes for themselves, ana (all -> lead) and ben (resolutions -> ana -> lead).
        const p = await createProposal(m.muster.membership, unionId, OPERATOR, { kind: "resolution", title: "Delegated strike", closesAt: new Date(Date.now() + 600_000) });
        await castVote(m.muster.membership, unionId, p.id, { memberId: lead.id }, ["Yes"], { kind: "web" });
        const tally = async () => page.$$eval("[data-testid=tally] tbody tr", (trs) => trs.map((tr) => [...tr.querySelectorAll("td")].map((td) => td.textContent?.trim())));
        await page.goto(fx.url(`/u/riders/proposals/${p.number}`));
        assert.deepEqual((await tally())[0], ["Yes", "1", "2"]);
        assert.match(await page.textContent("[data-testid=delegation-note]") ?? "", new RegExp(`your delegate ${fx.handleOf("lead").replace(/[.]/g, "\\.")} votes for you`));

        // Withdrawn before close: the open vote counts ana (and ben through her) no more.
        await page.goto(fx.url("/u/riders/me"));
        await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.click("[data-testid=delegations] li[data-scope=all] [data-testid=withdraw]")]);
        assert.equal(await page.textContent("p.notice"), "Your delegation is withdrawn: you vote for yourself.");
        assert.deepEqual(await listed(), [["spend", fx.handleOf("cat")]]);
        await page.goto(fx.url(`/u/riders/proposals/${p.number}`));
        assert.deepEqual((await tally())[0], ["Yes", "1", "0"]);

        // With delegation off in the bylaws, the page says so and offers no form.
        await overrideBylaws(m.muster.unions, "riders", { delegation: "off" });
        await page.goto(fx.url("/u/riders/me"));
        assert.equal(await page.locator("[data-testid=delegate-form]").count(), 0);
        assert.match(await page.textContent("[data-testid=delegation-off]") ?? "", /do not allow delegating/);
      } finally {
        await ctx.close();
      }
    });

    it("the proposal page shows members who voted, not how; every ballot when votes are public; nobody's name to a viewer the roster rule excludes", async () => {
      const ben = (await fx.member("ben"))!;
      const secret = await createProposal(m.muster.membership, unionId, OPERATOR, { kind: "resolution", title: "Secret ballot", closesAt: new Date(Date.now() + 600_000) });
      await castVote(m.muster.membership, unionId, secret.id, { memberId: ben.id }, ["No"], { kind: "web" });
      await overrideBylaws(m.muster.unions, "riders", { voteVisibility: "public" });
      assert.equal((await getProposal(m.muster.database.db, unionId, String(secret.number)))?.bylawsVersion, secret.bylawsVersion);
      const open = await createProposal(m.muster.membership, unionId, OPERATOR, { kind: "resolution", title: "Open ballot", closesAt: new Date(Date.now() + 600_000) });
      await castVote(m.muster.membership, unionId, open.id, { memberId: ben.id }, ["No"], { kind: "web" });
      const voterList = (page: Page) => page.$$eval("[data-testid=voter-list] li", (lis) => lis.map((li) => li.textContent?.replace(/\s+/g, " ").trim()));

      const visitor = await browser!.newContext();
      try {
        const page = await visitor.newPage();
        await page.goto(fx.url(`/u/riders/proposals/${secret.number}`));
        assert.equal(await page.textContent("[data-testid=voters-hidden]"), "Members who sign in see who voted.");
        assert.equal(await page.locator("[data-testid=voter-list]").count(), 0);
      } finally {
        await visitor.close();
      }
      const { ctx, page } = await signedIn("ana", "/u/riders/me");
      try {
        await page.goto(fx.url(`/u/riders/proposals/${secret.number}`));
        assert.deepEqual(await voterList(page), [fx.handleOf("ben")], "who, not how");
        assert.equal(await page.textContent("[data-testid=voters-rule]"), "Members see who voted, not how.");
        // ana votes on the web: she appears, still without her choice.
        await page.check("[data-testid=vote-form] input[value=Yes]");
        await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.click("[data-testid=vote-form] button[type=submit]")]);
        assert.deepEqual(await voterList(page), [fx.handleOf("ben"), fx.handleOf("ana")]);
        assert.doesNotMatch(await page.textContent("[data-testid=voters]") ?? "", /\b(Yes|No)\b/);
        await atBothWidths(page, "a proposal page with its voters");

        await page.goto(fx.url(`/u/riders/proposals/${open.number}`));
        assert.deepEqual(await voterList(page), [`${fx.handleOf("ben")}: No`], "opened under public votes: each ballot shown");
        assert.match(await page.textContent("[data-testid=voters-rule]") ?? "", /make votes public/);
        await atBothWidths(page, "a proposal page with public ballots");

        // The roster shown to officers only: ana (a member) sees no names; the leader does.
        await overrideBylaws(m.muster.unions, "riders", { membersVisibility: "officers" });
        await page.goto(fx.url(`/u/riders/proposals/${open.number}`));
        assert.equal(await page.locator("[data-testid=voter-list]").count(), 0);
        assert.match(await page.textContent("[data-testid=voters-hidden]") ?? "", /not shown to you/);
        assert.doesNotMatch(await page.textContent("main") ?? "", new RegExp(fx.handleOf("ben").replace(/[.]/g, "\\.")));
      } finally {
        await ctx.close();
      }
      const officer = await signedIn("lead", "/u/riders/console");
      try {
        await officer.page.goto(fx.url(`/u/riders/proposals/${open.number}`));
        assert.deepEqual(await voterList(officer.page), [`${fx.handleOf("ben")}: No`]);
      } finally {
        await officer.ctx.close();
        await overrideBylaws(m.muster.unions, "riders", { membersVisibility: "signed-in", voteVisibility: "turnout" });
      }
    });

    it("an elected leader takes the root and the console; the moderators collection follows; a recall takes the console away", async () => {
      const db = m.muster.database.db;
      const [lead, cat] = [(await fx.member("lead"))!, (await fx.member("cat"))!];
      const voters = await Promise.all(["ana", "ben", "cat"].map(async (n) => (await fx.member(n))!));
      const decide = async (input: Parameters<typeof createProposal>[3], choice: (p: { options: readonly string[] }) => string) => {
        const p = await createProposal(m.muster.membership, unionId, OPERATOR, { ...input, closesAt: new Date(Date.now() + 600_000) });
        for (const v of voters) await castVote(m.muster.membership, unionId, p.id, { memberId: v.id }, [choice(p)], { kind: "web" });
        const closed = await closeProposal(m.muster.membership, unionId, p.id, { force: true });
        assert.equal(closed?.state, "passed", closed?.outcome?.reason);
      };
      const moderators = async () => {
        const res = await fetch(fx.url("/u/riders/moderators"), { headers: { accept: "application/activity+json" } });
        assert.equal(res.status, 200);
        return ((await res.json()) as { orderedItems: string[] }).orderedItems;
      };
      await overrideBylaws(m.muster.unions, "riders", { membersVisibility: "public", quorumPercent: 0 });
      assert.deepEqual(await moderators(), [lead.actorId]);

      await decide({ kind: "election", title: "A new leader", role: "leader", candidates: [cat.id] }, (p) => p.options[0]!);
      assert.deepEqual(await moderators(), [cat.actorId, lead.actorId], "the new leader first, the old one an officer");
      const root = await db.selectFrom("members").select("id").where("union_id", "=", unionId).where("sponsor_id", "is", null).where("state", "in", ["active", "reserved"]).execute();
      assert.deepEqual(root.map((r) => r.id), [cat.id], "one root: the new leader");

      const leader = await signedIn("cat", "/u/riders/console");
      try {
        assert.match(await leader.page.textContent("[data-testid=viewer] + .badge") ?? "", /^Leader/);
        // The console's tree starts at the new leader, with the old one under them.
        const tree = leader.page.locator("section#tree");
        assert.equal(await tree.locator(`li[data-member="${fx.handleOf("cat")}"] > ul > li[data-member="${fx.handleOf("lead")}"]`).count(), 1);
        await atBothWidths(leader.page, "the new leader's console");
        await leader.page.goto(fx.url("/u/riders/bylaws"));
        assert.match(await leader.page.textContent("[data-testid=bylaws-offices]") ?? "", /An elected leader takes the root/);
        await leader.page.goto(fx.url("/u/riders"));
        assert.equal(await leader.page.textContent("[data-testid=leader]"), fx.handleOf("cat"));

        await decide({ kind: "recall", title: "Recall the leader", memberId: cat.id }, () => "Yes");
        assert.deepEqual(await moderators(), [lead.actorId]);
        const res = await leader.page.goto(fx.url("/u/riders/console"));
        assert.equal(res?.status(), 403, "a recalled leader has no console");
      } finally {
        await leader.ctx.close();
        await overrideBylaws(m.muster.unions, "riders", { membersVisibility: "signed-in", quorumPercent: 20 });
      }
    });
  });
}
