import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { browserSkip, launchBrowser } from "./helpers/browser.ts";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { freePort } from "./helpers/muster.ts";
import { ensureStopped, type MusterProcess, ROOT, spawnMuster } from "./helpers/muster-process.ts";

// What a newcomer sees: a real `muster serve` child process, driven through
// real headless Chromium. Set MUSTER_SCREENSHOT_DIR to keep screenshots.

const SCREENSHOT_DIR = process.env.MUSTER_SCREENSHOT_DIR;
/** Chromium's colour for an unstyled link. */
const DEFAULT_LINK = "rgb(0, 0, 238)";

/** `--name: #rrggbb` from public/style.css, as getComputedStyle reports it. */
function cssVarAsRgb(name: string): string {
  const css = readFileSync(join(ROOT, "public", "style.css"), "utf8");
  const hex = new RegExp(`${name}:\\s*#([0-9a-f]{6})`, "i").exec(css)?.[1];
  assert.ok(hex, `public/style.css defines ${name} as #rrggbb`);
  const [r, g, b] = [0, 2, 4].map((i) => parseInt(hex.slice(i, i + 2), 16));
  return `rgb(${r}, ${g}, ${b})`;
}

/** Submits the setup form; returns the POST's own status and the page it lands on. */
async function submitSetup(page: Page): Promise<{ postStatus: number; landed: URL }> {
  const post = page.waitForResponse((r) => r.request().method() === "POST" && new URL(r.url()).pathname === "/setup");
  const navigated = page.waitForNavigation({ waitUntil: "load" });
  await page.click("form.setup button[type=submit]");
  const [res] = await Promise.all([post, navigated]);
  return { postStatus: res.status(), landed: new URL(page.url()) };
}

async function screenshot(page: Page, name: string): Promise<void> {
  if (!SCREENSHOT_DIR) return;
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOT_DIR, name), fullPage: true });
}

async function fillSetup(page: Page, v: { token?: string; slug: string; name: string; purpose: string; leader: string }) {
  if (v.token !== undefined) await page.fill("input[name=token]", v.token);
  await page.fill("input[name=slug]", v.slug);
  await page.fill("input[name=name]", v.name);
  await page.fill("textarea[name=purpose]", v.purpose);
  await page.fill("input[name=leader]", v.leader);
}

for (const d of dialects) {
  describe(`first-run setup in Chromium against muster serve on ${d.name}`, { skip: d.skip || browserSkip }, () => {
    let dataDir: string;
    let tdb: TestDatabase | undefined;
    let server: MusterProcess | undefined;
    let browser: Browser;
    let context: BrowserContext;
    let page: Page;
    let base: URL;
    let setupLink: URL;
    let token: string;
    const union = {
      slug: "riders",
      name: "Riders <United> & Co",
      purpose: "Fair pay for <b>delivery</b> riders",
      leader: "@Lead@Example.org",
    };

    const unionsViaApi = async () => ((await (await fetch(new URL("/api/unions", base))).json()) as { unions: { slug: string }[] }).unions;

    before(async () => {
      dataDir = mkdtempSync(join(tmpdir(), "muster-web-"));
      const port = await freePort();
      base = new URL(`http://127.0.0.1:${port}`);
      const env: Record<string, string> = { PORT: String(port), ORIGIN: base.origin, DATA_DIR: dataDir, LOG_LEVEL: "info" };
      // SQLite: the embedded default under DATA_DIR, as `npm start` runs it.
      if (d.name === "postgres") {
        tdb = await d.create();
        env.DATABASE_URL = tdb.url;
      }
      server = spawnMuster(["serve"], env);
      const link = await server.waitFor(/^\s*(http:\/\/\S+\/\?token=(\S+))\s*$/m, "the setup link is printed");
      const printed = await server.waitFor(/Setup token \(one use\): (\S+)/, "the setup token is printed");
      setupLink = new URL(link[1]!);
      token = printed[1]!;
      assert.equal(link[2], token, "the link carries the printed token");
      assert.equal(setupLink.port, String(port));
      browser = await launchBrowser();
      context = await browser.newContext();
      page = await context.newPage();
    });

    after(async () => {
      await context?.close();
      await browser?.close();
      await ensureStopped(server);
      await tdb?.destroy();
      rmSync(dataDir, { recursive: true, force: true });
    });

    it("shows a newcomer the setup form; a wrong token is refused and creates nothing", async () => {
      const res = await page.goto(base.href);
      assert.equal(res?.status(), 200);
      assert.equal(await page.textContent("h1"), "Set up your first union");
      assert.equal(await page.inputValue("input[name=token]"), "", "no token without the link");
      assert.equal(await page.locator(".error").count(), 0);

      await fillSetup(page, { token: "not-the-token", ...union });
      const { postStatus, landed } = await submitSetup(page);
      assert.equal(postStatus, 403);
      assert.equal(landed.pathname, "/setup");
      const alert = page.locator("p.error[role=alert]");
      assert.match(await alert.textContent() ?? "", /setup token is not valid/);
      assert.equal(await page.textContent("h1"), "Set up your first union", "the form is shown again");
      assert.equal(await page.inputValue("input[name=slug]"), union.slug, "what was typed is kept");
      assert.deepEqual(await unionsViaApi(), [], "no union was created");
      const notFound = await fetch(new URL(`/u/${union.slug}`, base), { headers: { Accept: "text/html" } });
      assert.equal(notFound.status, 404);
    });

    it("the printed setup link pre-fills the token", async () => {
      const res = await page.goto(setupLink.href);
      assert.equal(res?.status(), 200);
      assert.equal(await page.textContent("h1"), "Set up your first union");
      assert.equal(await page.inputValue("input[name=token]"), token);
    });

    it("a bad slug re-shows the form with the message and leaves the token usable", async () => {
      // The browser's own pattern check stops the worst slugs before sending...
      await page.fill("input[name=slug]", "Bad Slug!");
      assert.equal(await page.$eval("input[name=slug]", (el) => (el as HTMLInputElement).validity.patternMismatch), true);
      // ...and the server catches what no pattern can (a reserved name).
      await fillSetup(page, { ...union, slug: "admin" });
      assert.equal(await page.$eval("input[name=slug]", (el) => (el as HTMLInputElement).validity.valid), true);
      const { postStatus, landed } = await submitSetup(page);
      assert.equal(postStatus, 400);
      assert.equal(landed.pathname, "/setup");
      assert.match(await page.locator("p.error[role=alert]").textContent() ?? "", /reserved/);
      assert.equal(await page.inputValue("input[name=token]"), token, "the token is kept in the form");
      assert.equal(await page.inputValue("input[name=slug]"), "admin");
      assert.equal(await page.inputValue("input[name=name]"), union.name);
      assert.equal(await page.inputValue("textarea[name=purpose]"), union.purpose);
      assert.equal(await page.inputValue("input[name=leader]"), union.leader);
      assert.deepEqual(await unionsViaApi(), [], "no union was created");
      await screenshot(page, `muster-setup-error-${d.name}.png`);
    });

    it("a correct submit lands on the union's page with its name, purpose, handle and leader", async () => {
      await page.fill("input[name=slug]", union.slug);
      const { postStatus, landed } = await submitSetup(page);
      assert.equal(postStatus, 303, "the validation error did not use up the token");
      // The printed link is on localhost; the redirect stays on whatever host the browser used.
      assert.equal(landed.href, new URL(`/u/${union.slug}/start`, setupLink).href, "setup leads on to the next steps");
      await screenshot(page, `muster-start-${d.name}.png`);
      await page.goto(new URL(`/u/${union.slug}`, setupLink).href);
      assert.equal(await page.textContent("article.union h1"), union.name, "the name is shown as text, not markup");
      assert.equal(await page.textContent("p.purpose"), union.purpose);
      assert.equal(await page.locator("p.purpose b").count(), 0, "markup in the purpose is escaped");
      assert.equal(await page.textContent("[data-testid=handle]"), `@${union.slug}@${base.host}`);
      const leader = page.locator("dt", { hasText: "Leader" }).locator("xpath=following-sibling::dd[1]");
      assert.equal(await leader.textContent(), "@lead@example.org", "the leader's handle, lower-cased");
      assert.equal(await page.locator("[data-testid=signed-in]").count(), 0);
      assert.equal(await page.locator("a[href$='/login']").count(), 1, "a visitor is offered sign-in");
      assert.match(await page.title(), new RegExp(`@${union.slug}@${base.host.replaceAll(".", "\\.")}`));
      await screenshot(page, `muster-union-page-${d.name}.png`);
      const api = await unionsViaApi();
      assert.deepEqual(api.map((u) => u.slug), [union.slug]);
    });

    it("after setup, the next steps: sign in by DM, an invite, the first call-to-action, and the handle to copy", async () => {
      const start = new URL(`/u/${union.slug}/start`, base);
      const copier = await browser.newContext({ permissions: ["clipboard-read", "clipboard-write"] });
      try {
        const p = await copier.newPage();
        const favicon = p.waitForResponse((r) => new URL(r.url()).pathname === "/public/favicon.svg");
        await p.goto(start.href);
        assert.equal((await favicon).status(), 200, "the page's icon is served");
        assert.equal(await p.textContent("h1"), "Next steps");
        assert.match(await p.textContent("[data-testid=step-sign-in]") ?? "", /@lead@example\.org.*direct message/s);
        assert.equal(await p.locator("[data-testid=step-sign-in] a").getAttribute("href"), `/u/${union.slug}/login`);
        assert.equal(await p.locator("[data-testid=step-invite] a").getAttribute("href"), `/u/${union.slug}/console#invites`);
        assert.equal(await p.locator("[data-testid=step-action] a").getAttribute("href"), `/u/${union.slug}/console/actions`);
        await p.click("[data-testid=step-members] button[data-copy]");
        await p.waitForFunction(() => document.querySelector("[data-testid=step-members] .copied")?.textContent === "Copied.");
        assert.equal(await p.evaluate(() => navigator.clipboard.readText()), `@${union.slug}@${base.host}`);
        for (const width of [1280, 390]) {
          await p.setViewportSize({ width, height: 900 });
          for (const path of [start.pathname, `/u/${union.slug}`]) {
            await p.goto(new URL(path, base).href);
            const overflow = await p.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
            assert.equal(overflow, 0, `${path} fits ${width} px without scrolling sideways`);
            await screenshot(p, `muster-${path.split("/").at(-1)}-${width}-${d.name}.png`);
          }
        }
        const ico = await fetch(new URL("/favicon.ico", base), { redirect: "manual" });
        assert.equal(ico.status, 301);
        assert.equal(ico.headers.get("location"), "/public/favicon.svg");
      } finally {
        await copier.close();
      }
    });

    it("afterwards the home page lists the union and no longer offers setup", async () => {
      for (const url of [base, setupLink]) {
        const res = await page.goto(url.href);
        assert.equal(res?.status(), 200);
        assert.equal(await page.textContent("h1"), `Unions on ${base.host}`);
        assert.equal(await page.locator("form.setup").count(), 0, `no setup form at ${url.pathname}${url.search ? "?token=..." : ""}`);
        assert.equal(await page.locator("input[name=token]").count(), 0);
        const items = page.locator("ul.unions li");
        assert.equal(await items.count(), 1);
        assert.equal(await items.locator("a").getAttribute("href"), `/u/${union.slug}`);
        assert.equal(await items.locator("strong").textContent(), union.name);
        assert.equal(await items.locator(".handle").textContent(), `@${union.slug}@${base.host}`);
      }
      // The used token cannot create a second union.
      const again = await fetch(new URL("/setup", base), {
        method: "POST",
        body: new URLSearchParams({ token, slug: "bakers", name: "Bakers", purpose: "Bread", leader: "" }),
        redirect: "manual",
      });
      assert.equal(again.status, 403);
      assert.deepEqual((await unionsViaApi()).map((u) => u.slug), [union.slug]);
    });

    it("loads /public/style.css and its styles apply", async () => {
      // A fresh context, so the stylesheet is fetched rather than cached.
      const fresh = await browser.newContext();
      try {
        const p = await fresh.newPage();
        const css = p.waitForResponse((r) => new URL(r.url()).pathname === "/public/style.css");
        await p.goto(base.href);
        const res = await css;
        assert.equal(res.status(), 200);
        assert.match(res.headers()["content-type"] ?? "", /^text\/css/);
        const brand = await p.$eval("header.site a.brand", (el) => getComputedStyle(el).color);
        assert.notEqual(brand, DEFAULT_LINK, "the brand link is not the browser's default blue");
        assert.equal(brand, cssVarAsRgb("--accent"), "the brand link takes the stylesheet's accent colour");
        const bg = await p.$eval("body", (el) => getComputedStyle(el).backgroundColor);
        assert.equal(bg, cssVarAsRgb("--bg"));
      } finally {
        await fresh.close();
      }
    });

    it("exits 0 on SIGTERM", async () => {
      assert.ok(server);
      assert.equal(await server.stop(), 0, server.output());
      assert.match(server.output(), /Stopped cleanly/);
    });
  });
}
