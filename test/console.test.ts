import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { Accept, type Follow, type Group } from "@fedify/vocab";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { browserSkip, launchBrowser } from "./helpers/browser.ts";
import { dialects } from "./helpers/databases.ts";
import { eventually, type TestMuster } from "./helpers/muster.ts";
import { signInByDm } from "./helpers/sign-in.ts";
import { joinByInviteChain } from "./helpers/invite-chain.ts";
import { unionWithPeer } from "./helpers/union-with-peer.ts";
import { FAILED_CODES_PER_IP, LOGIN_PER_HANDLE, LOGIN_PER_IP } from "../src/sessions/sessions.ts";

// Passwordless web sign-in and the officers' console, end to end: a real
// Muster server and a real peer fediverse server on loopback, the sign-in
// link delivered as a direct message to the peer, and real Chromium for the
// pages. Screenshots go to MUSTER_SCREENSHOT_DIR (default /tmp).

const SCREENSHOT_DIR = process.env.MUSTER_SCREENSHOT_DIR ?? "/tmp";

for (const d of dialects) {
  describe(`web sign-in and the officers' console on ${d.name}`, { skip: d.skip }, () => {
    const fx = unionWithPeer(d, { actors: ["lead", "alice", "bob", "pat"], joinPolicy: "approval" });
    const { host, handleOf, url, db, member, follow, linksTo, newLoginCode } = fx;
    let m: TestMuster;
    let group: Group;
    let unionId: string;
    let browser: Browser | undefined;
    let leadCtx: BrowserContext;
    let leadPage: Page;
    let bobCtx: BrowserContext;
    let bobPage: Page;
    const acceptOf = (f: Follow) => fx.answerTo(f, Accept);

    /** A form POST as our own pages send it (same Origin). */
    function post(path: string, fields: Record<string, string>, opts: { cookie?: string; origin?: string | null } = {}) {
      const headers: Record<string, string> = { "Content-Type": "application/x-www-form-urlencoded" };
      if (opts.origin !== null) headers.Origin = opts.origin ?? m.origin.origin;
      if (opts.cookie) headers.Cookie = opts.cookie;
      return fetch(url(path), { method: "POST", headers, body: new URLSearchParams(fields), redirect: "manual" });
    }

    const askForLink = (handle: string) => post("/u/riders/login", { handle });

    /** Signs in over plain HTTP; returns the confirm response and the `muster_session=...` cookie pair. */
    async function signInByFetch(name: string): Promise<{ res: Response; cookie: string; code: string }> {
      const asked = await askForLink(handleOf(name));
      assert.equal(asked.status, 200);
      const code = await newLoginCode(name);
      const res = await post(`/u/riders/login/${code}`, {});
      const cookie = /^(muster_session=[^;]*)/.exec(res.headers.get("set-cookie") ?? "")?.[1] ?? "";
      return { res, cookie, code };
    }

    async function signInInBrowser(page: Page, name: string, landsOn: string) {
      await page.goto(url("/u/riders/login"));
      await signInByDm(page, fx, name, landsOn, {
        sent: async () => assert.match(await page.textContent("[data-testid=sent]") ?? "", new RegExp(handleOf(name).replace(/\./g, "\\."))),
        async opened(res) {
          assert.equal(res?.status(), 200);
          assert.equal(await page.textContent("[data-testid=signing-in-as]"), handleOf(name));
          const row = await db().selectFrom("login_codes").select("used_at").where("used_at", "is", null).execute();
          assert.ok(row.length > 0, "opening the link (GET) does not use the code up");
        },
      });
    }

    async function screenshot(page: Page, name: string) {
      mkdirSync(SCREENSHOT_DIR, { recursive: true });
      await page.screenshot({ path: join(SCREENSHOT_DIR, `${name}-${d.name}.png`), fullPage: true });
    }

    before(async () => {
      const started = await fx.start();
      ({ m, group, unionId } = started);
      // The leader takes the root; alice joins on an invite, bob on alice's own invite.
      await joinByInviteChain(fx, started, ["lead", "alice", "bob"]);
      if (!browserSkip) {
        browser = await launchBrowser();
        leadCtx = await browser.newContext();
        leadPage = await leadCtx.newPage();
        bobCtx = await browser.newContext();
        bobPage = await bobCtx.newPage();
      }
    });

    after(async () => {
      await browser?.close();
      await fx.stop();
    });

    it("the leader asks for a link in Chromium, gets it by direct message, confirms it and lands on the console", { skip: browserSkip }, async () => {
      await signInInBrowser(leadPage, "lead", "/u/riders/console");
      assert.match(await leadPage.textContent("h1") ?? "", /Riders United/);
      assert.equal(await leadPage.textContent("[data-testid=viewer]"), handleOf("lead"));
      const cookie = (await leadCtx.cookies()).find((c) => c.name === "muster_session");
      assert.ok(cookie, "the session cookie is set");
      assert.equal(cookie.httpOnly, true);
      assert.equal(cookie.sameSite, "Lax");
      assert.equal(cookie.path, "/");
      assert.equal(await leadPage.evaluate(() => document.cookie.includes("muster_session")), false, "scripts cannot read the session");
    });

    it("an officer approves a pending request with one click; the peer receives an Accept of that Follow", { skip: browserSkip }, async () => {
      const f = await follow("pat");
      await eventually(async () => (await member("pat"))?.state === "pending", "pat pending");
      await leadPage.goto(url("/u/riders/console"));
      assert.equal(await leadPage.textContent("[data-testid=count-pending]"), "1");
      const row = leadPage.locator(`tr[data-pending="${handleOf("pat")}"]`);
      await screenshot(leadPage, "muster-console-pending");
      await Promise.all([leadPage.waitForURL(/\/u\/riders\/console\?done=approved/), row.locator("[data-testid=approve]").click()]);
      assert.match(await leadPage.textContent(".notice") ?? "", /Request approved/);
      const accept = await acceptOf(f);
      assert.equal(accept.actorId?.href, group.id!.href);
      const pat = (await member("pat"))!;
      assert.equal(pat.state, "active");
      assert.equal(pat.sponsorId, (await member("lead"))!.id, "the approving officer becomes the sponsor");
      assert.equal(await leadPage.textContent("[data-testid=count-pending]"), "0");
    });

    it("an officer creates an invite in the console and its link is shown; members and the tree are listed", { skip: browserSkip }, async () => {
      await leadPage.goto(url("/u/riders/console"));
      const form = leadPage.locator("section#invites [data-testid=invite-form]");
      await form.locator("input[name=uses]").fill("3");
      await form.locator("select[name=expires]").selectOption("30");
      await Promise.all([leadPage.waitForURL(/\/console\?created=/), form.locator("button[type=submit]").click()]);
      const shown = await leadPage.textContent("[data-testid=created-invite-url]") ?? "";
      const code = new RegExp(`^${m.origin.origin.replace(/\./g, "\\.")}/u/riders/join/([\\w-]+)$`).exec(shown)?.[1];
      assert.ok(code, `an invite URL is shown: ${shown}`);
      const row = await db().selectFrom("invites").selectAll().where("code", "=", code).executeTakeFirstOrThrow();
      assert.equal(Number(row.max_uses), 3);
      assert.equal(row.created_by, (await member("lead"))!.id);
      assert.ok(Number(row.expires_at) > Date.now() + 29 * 24 * 3600_000);
      const joinPage = await fetch(shown);
      assert.equal(joinPage.status, 200);
      assert.match(await joinPage.text(), new RegExp(`data-testid="sponsor">${handleOf("lead").replace(/\./g, "\\.")}<`));
      // The invite list shows it with its status.
      assert.equal(await leadPage.locator(`tr[data-code="${code}"] [data-testid=invite-status]`).textContent(), "valid");

      // Members table: handle, sponsor, depth.
      const bobRow = leadPage.locator(`table.members tr[data-member="${handleOf("bob")}"] td`);
      assert.deepEqual((await bobRow.allTextContents()).slice(0, 4).map((s) => s.trim()), [handleOf("bob"), handleOf("alice"), "2", "Member"]);
      assert.equal(await leadPage.textContent("[data-testid=count-members]"), "4");
      // The tree, from the leader down.
      const tree = leadPage.locator("section#tree");
      assert.equal(await tree.locator(`li[data-member="${handleOf("lead")}"] li[data-member="${handleOf("alice")}"] li[data-member="${handleOf("bob")}"]`).count(), 1);
      assert.equal(await tree.locator(`li[data-member="${handleOf("lead")}"] > ul > li[data-member="${handleOf("pat")}"]`).count(), 1);
      await screenshot(leadPage, "muster-console");
      // The console is as wide as every other page (it was wider), and fits both widths without scrolling sideways.
      for (const width of [1280, 390]) {
        await leadPage.setViewportSize({ width, height: 900 });
        const widths: Record<string, number> = {};
        for (const path of ["/u/riders", "/u/riders/me", "/u/riders/console", "/u/riders/console/actions", "/u/riders/console/unions", "/u/riders/members"]) {
          await leadPage.goto(url(path));
          widths[path] = await leadPage.evaluate(() => document.querySelector("main")!.getBoundingClientRect().width);
          const wider = await leadPage.evaluate(() => [...document.querySelectorAll("body *")]
            .filter((e) => e.getBoundingClientRect().right > document.documentElement.clientWidth)
            .map((e) => `${e.tagName.toLowerCase()}.${e.className}`).slice(0, 5));
          assert.equal(await leadPage.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth), 0, `${path} fits ${width} px; wider: ${wider}`);
        }
        for (const [path, w] of Object.entries(widths)) assert.equal(w, widths["/u/riders"], `at ${width} px the main column of ${path} is as wide as the union page's: ${JSON.stringify(widths)}`);
        await screenshot(leadPage, `muster-members-${width}`);
      }
      await leadPage.setViewportSize({ width: 1280, height: 900 });
    });

    it("a member signs in, lands on their page, sees their sponsor chain, and creates invites until the limit refuses", { skip: browserSkip }, async () => {
      await signInInBrowser(bobPage, "bob", "/u/riders/me");
      const chain = await bobPage.locator("[data-testid=chain] li").allTextContents();
      assert.deepEqual(chain.map((s) => s.replace(/\s+/g, " ").trim()), [`${handleOf("bob")} (you)`, handleOf("alice"), `${handleOf("lead")} Leader`]);
      const allowance = async () => (await bobPage.textContent("[data-testid=invite-allowance]") ?? "").replace(/\s+/g, " ");
      // The welcome invite holds all 5 places of the union's limit, and a new invite may take them.
      assert.match(await allowance(), /for 5 people at a time\. Yours are open for 5, 5 of them on the welcome link you were sent\. You can invite 5 more people now/);
      const form = bobPage.locator("[data-testid=invite-form]");
      const create = async (uses: string) => {
        await form.locator("input[name=uses]").fill(uses);
        await Promise.all([bobPage.waitForNavigation({ waitUntil: "load" }), form.locator("button[type=submit]").click()]);
      };
      await create("1");
      assert.match(await bobPage.textContent("[data-testid=created-invite-url]") ?? "", /\/u\/riders\/join\//, "right after joining, a member can create an invite");
      assert.match(await allowance(), /Yours are open for 5, 4 of them on the welcome link.*You can invite 4 more people/);
      for (const width of [1280, 390]) {
        await bobPage.setViewportSize({ width, height: 900 });
        assert.equal(await bobPage.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth), 0, `the member page fits ${width} px`);
        const lines = await bobPage.$$eval("[data-testid=created-invite-url] .code, [data-testid=invite-url] .code", (els) => els.map((e) => e.getClientRects().length));
        assert.ok(lines.length >= 2 && lines.every((n) => n === 1), `at ${width} px no invite code is split across lines: ${lines}`);
        await screenshot(bobPage, `muster-member-page-${width}`);
      }
      await bobPage.setViewportSize({ width: 1280, height: 900 });
      await create("4");
      const welcome = (await linksTo("bob", "join"))[0]!;
      assert.equal(await bobPage.locator(`tr[data-code="${welcome}"] [data-testid=invite-status]`).textContent(), "revoked", "the welcome link gave all its places");
      assert.match(await allowance(), /Yours are open for 5\. You can invite 0 more people\./);
      await create("1");
      // The members domain's own message is shown.
      const refusal = (held: number) => new RegExp(`invites .*for 5 people.*${handleOf("bob").replace(/\./g, "\\.")}.*\\b${held}\\b`);
      assert.match(await bobPage.textContent("p.error[role=alert]") ?? "", refusal(5));
      const held = await db().selectFrom("invites").select("max_uses").where("created_by", "=", (await member("bob"))!.id).where("revoked_at", "is", null).execute();
      assert.deepEqual(held.map((r) => Number(r.max_uses)).sort(), [1, 4]);
      await bobPage.goto(url("/u/riders/me"));
      await screenshot(bobPage, "muster-member-page");

      const res = await bobPage.goto(url("/u/riders/console"));
      assert.equal(res?.status(), 403, "a member who is not an officer cannot open the console");
      assert.match(await bobPage.textContent("main") ?? "", /Only the leader and officers/);
    });

    it("sets the session cookie HttpOnly, SameSite=Lax, Path=/ (not Secure on an http origin); a used code is refused", async () => {
      const { res, cookie, code } = await signInByFetch("alice");
      assert.equal(res.status, 303);
      assert.equal(res.headers.get("location"), "/u/riders/me", "an ordinary member lands on their own page");
      const setCookie = res.headers.get("set-cookie") ?? "";
      assert.match(setCookie, /^muster_session=[\w-]{40,};/);
      assert.match(setCookie, /;\s*HttpOnly/i);
      assert.match(setCookie, /;\s*SameSite=Lax/i);
      assert.match(setCookie, /;\s*Path=\//);
      assert.match(setCookie, /;\s*Max-Age=\d+/);
      assert.doesNotMatch(setCookie, /;\s*Secure/i, "the test origin is http");
      const me = await fetch(url("/u/riders/me"), { headers: { Cookie: cookie } });
      assert.equal(me.status, 200);
      assert.match(await me.text(), new RegExp(handleOf("alice").replace(/\./g, "\\.")));
      assert.equal(me.headers.get("cache-control"), "no-store");
      const stored = await db().selectFrom("sessions").select("token_hash").execute();
      assert.ok(stored.every((s) => !cookie.includes(s.token_hash)), "only a hash of the token is stored");

      const again = await post(`/u/riders/login/${code}`, {});
      assert.equal(again.status, 410);
      assert.match(await again.text(), /already been used/);
      assert.equal(again.headers.get("set-cookie"), null);
      assert.equal((await fetch(url(`/u/riders/login/${code}`))).status, 410, "the confirmation page says so too");

      const console = await fetch(url("/u/riders/console"), { headers: { Cookie: cookie } });
      assert.equal(console.status, 403, "a non-officer gets 403 on the console");
      assert.equal((await fetch(url("/u/riders/console"), { redirect: "manual" })).status, 303, "signed out: sent to sign in");
    });

    it("refuses an expired code", async () => {
      assert.equal((await askForLink(handleOf("alice"))).status, 200);
      const code = await newLoginCode("alice");
      const alice = (await member("alice"))!;
      await db().updateTable("login_codes").set({ expires_at: Date.now() - 1000 }).where("member_id", "=", alice.id).where("used_at", "is", null).execute();
      const page = await fetch(url(`/u/riders/login/${code}`));
      assert.equal(page.status, 410);
      assert.match(await page.text(), /expired/);
      const res = await post(`/u/riders/login/${code}`, {});
      assert.equal(res.status, 410);
      assert.match(await res.text(), /has expired/);
      assert.equal(res.headers.get("set-cookie"), null);
    });

    it("refuses a cross-origin form POST, even with a valid session cookie", async () => {
      const { cookie } = await signInByFetch("alice");
      const alice = (await member("alice"))!;
      const count = async () => (await db().selectFrom("invites").select("id").where("created_by", "=", alice.id).execute()).length;
      const before = await count();
      const fields = { uses: "1", expires: "7" };
      const evil = await post("/u/riders/me/invites", fields, { cookie, origin: "http://evil.example" });
      assert.equal(evil.status, 403);
      assert.match(await evil.text(), /sent from another site/);
      const noOrigin = await post("/u/riders/me/invites", fields, { cookie, origin: null });
      assert.equal(noOrigin.status, 403, "no Origin and no Sec-Fetch-Site: refused");
      const logout = await post("/u/riders/logout", {}, { cookie, origin: "http://evil.example" });
      assert.equal(logout.status, 403);
      assert.equal(await count(), before, "nothing was created");
      assert.equal((await fetch(url("/u/riders/me"), { headers: { Cookie: cookie } })).status, 200, "still signed in");
    });

    it("in Chromium, a form on another site that posts to the console is refused", { skip: browserSkip }, async () => {
      const page = await leadCtx.newPage();
      try {
        await page.route("http://evil.test/**", (route) => route.fulfill({
          contentType: "text/html",
          body: `<form method="post" action="${url("/u/riders/console/invites")}"><input name="uses" value="9"><input name="expires" value="never"></form><script>document.forms[0].submit()</script>`,
        }));
        const [res] = await Promise.all([
          page.waitForResponse((r) => r.url() === url("/u/riders/console/invites")),
          page.goto("http://evil.test/"),
        ]);
        assert.equal(res.status(), 403);
        const made = await db().selectFrom("invites").select("id").where("max_uses", "=", 9).execute();
        assert.equal(made.length, 0);
      } finally {
        await page.close();
      }
    });

    it("an officer removes a member with a required reason; the member's session stops working at once", { skip: browserSkip }, async () => {
      const bob = (await member("bob"))!;
      const leadCookie = (await leadCtx.cookies()).find((c) => c.name === "muster_session")!;
      const blank = await post(`/u/riders/console/members/${bob.id}/remove`, { reason: "  " }, { cookie: `muster_session=${leadCookie.value}` });
      assert.equal(blank.status, 400);
      assert.match(await blank.text(), /a removal needs a reason/);
      assert.equal((await member("bob"))!.state, "active");

      await leadPage.goto(url(`/u/riders/console/members/${bob.id}`));
      assert.equal(await leadPage.textContent("[data-testid=member-handle]"), handleOf("bob"));
      await leadPage.fill("[data-testid=remove-form] textarea[name=reason]", "Spammed the <b>union</b>");
      await Promise.all([leadPage.waitForURL(/done=removed/), leadPage.click("[data-testid=remove-form] button[type=submit]")]);
      assert.match(await leadPage.textContent("main dl") ?? "", /removed \(Spammed the <b>union<\/b>\)/, "the reason is shown as text");
      assert.equal((await member("bob"))!.state, "removed");
      await screenshot(leadPage, "muster-console-member");

      const res = await bobPage.goto(url("/u/riders/me"));
      assert.equal(new URL(res!.url()).pathname, "/u/riders/login", "a removed member is signed out");
    });

    it("limits sign-in requests per account and per network with 429, and answers alike for members and strangers", async () => {
      const stranger = `@nobody@${host()}`;
      const forMember = await askForLink(handleOf("lead"));
      const forStranger = await askForLink(stranger);
      assert.equal(forMember.status, 200);
      assert.equal(forStranger.status, 200);
      const memberText = (await forMember.text()).replaceAll(handleOf("lead"), "HANDLE");
      const strangerText = (await forStranger.text()).replaceAll(stranger, "HANDLE");
      assert.equal(memberText, strangerText, "the answer does not reveal who is a member");

      for (let i = 1; i < LOGIN_PER_HANDLE; i++) assert.equal((await askForLink(stranger)).status, 200);
      const limited = await askForLink(stranger);
      assert.equal(limited.status, 429);
      assert.ok(Number(limited.headers.get("retry-after")) > 0);
      assert.match(await limited.text(), /Too many sign-in links have been asked for/);

      // Per client address: fresh handles from the same address run into the network limit.
      let allowed = 0;
      let last: Response | undefined;
      for (let i = 0; i <= LOGIN_PER_IP; i++) {
        last = await askForLink(`@someone${i}@${host()}`);
        if (last.status !== 200) break;
        allowed++;
      }
      assert.equal(last?.status, 429);
      assert.ok(allowed < LOGIN_PER_IP, "earlier requests from this address counted");
      assert.match(await last!.text(), /Too many sign-in requests from your network/);
      const hits = await db().selectFrom("rate_limit_hits").select("id").where("bucket", "like", "login:ip:%").execute();
      assert.equal(hits.length, LOGIN_PER_IP, "refused requests are not counted");

      // Codes that do not work are limited too.
      let status = 0;
      for (let i = 0; i <= FAILED_CODES_PER_IP && status !== 429; i++) status = (await post(`/u/riders/login/not-a-code-${i}`, {})).status;
      assert.equal(status, 429);
    });

    it("signing out ends the session for good", { skip: browserSkip }, async () => {
      const token = (await leadCtx.cookies()).find((c) => c.name === "muster_session")!.value;
      await leadPage.goto(url("/u/riders/console"));
      await Promise.all([leadPage.waitForURL(/\/u\/riders\/login\?done=signed_out/), leadPage.click("[data-testid=sign-out]")]);
      assert.match(await leadPage.textContent(".notice") ?? "", /signed out/);
      assert.equal((await leadCtx.cookies()).find((c) => c.name === "muster_session"), undefined, "the cookie is deleted");
      const replay = await fetch(url("/u/riders/console"), { headers: { Cookie: `muster_session=${token}` }, redirect: "manual" });
      assert.equal(replay.status, 303, "the old token no longer works");
    });
  });
}
