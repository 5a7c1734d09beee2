import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Browser } from "playwright-core";
import { browserSkip, launchBrowser } from "./helpers/browser.ts";

const PAGE = `<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Muster browser smoke</title></head>
<body>
  <p id="status">waiting</p>
  <button id="go" type="button">Go</button>
  <script>
    document.getElementById("go").addEventListener("click", () => {
      document.getElementById("status").textContent = "clicked";
    });
  </script>
</body>
</html>`;

describe("browser smoke (headless Chromium)", () => {
  let server: Server | undefined;
  let browser: Browser | undefined;
  let origin = "";

  before(async () => {
    // The skip is set on each test, so node:test counts it as skipped.
    if (browserSkip) return;
    const s = createServer((req, res) => {
      if (req.url === "/") {
        res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
        res.end(PAGE);
      } else {
        res.writeHead(404, { "content-type": "text/plain" });
        res.end("not found");
      }
    });
    server = s;
    await new Promise<void>((resolve, reject) => {
      s.once("error", reject);
      s.listen(0, "127.0.0.1", () => resolve());
    });
    origin = `http://127.0.0.1:${(s.address() as AddressInfo).port}`;
    browser = await launchBrowser();
  });

  after(async () => {
    await browser?.close();
    const s = server;
    if (s) {
      s.closeAllConnections();
      await new Promise<void>((resolve) => s.close(() => resolve()));
    }
  });

  it("renders a page served on localhost and reacts to a click", { skip: browserSkip }, async () => {
    assert.ok(browser, "browser was not launched");
    const context = await browser.newContext();
    try {
      const page = await context.newPage();
      const res = await page.goto(`${origin}/`);
      assert.equal(res?.status(), 200);
      assert.equal(await page.title(), "Muster browser smoke");
      assert.equal(await page.textContent("#status"), "waiting");
      await page.click("#go");
      await page.waitForFunction(() => document.getElementById("status")?.textContent === "clicked");
      assert.equal(await page.textContent("#status"), "clicked");
    } finally {
      await context.close();
    }
  });
});
