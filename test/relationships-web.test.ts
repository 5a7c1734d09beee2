import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Accept } from "@fedify/vocab";
import type { Browser, Page } from "playwright-core";
import { browserSkip, launchBrowser } from "./helpers/browser.ts";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { eventually, makeUnion, startMuster, type TestMuster } from "./helpers/muster.ts";
import { unionWithPeer } from "./helpers/union-with-peer.ts";
import { OPERATOR } from "../src/members/members.ts";
import { listRelationships } from "../src/relationships/relationships.ts";
import { proposeTo } from "../federation/relationships.ts";
import type { Union } from "../src/unions/unions.ts";

// The console's "Other unions" section and the public page's allies, in real
// Chromium: another Muster server's union offers an alliance, the leader
// signs in by DM and accepts it, and both public pages then list the ally.

for (const d of dialects) {
  describe(`alliance offers in the console, in Chromium, on ${d.name}`, { skip: d.skip || browserSkip }, () => {
    const fx = unionWithPeer(d, { actors: ["lead"], joinPolicy: "approval" });
    let tdb: TestDatabase;
    let other: TestMuster;
    let couriers: Union;
    let browser: Browser | undefined;
    let page: Page;
    let started: Awaited<ReturnType<typeof fx.start>>;

    before(async () => {
      started = await fx.start();
      await fx.answerTo(await fx.follow("lead"), Accept);
      tdb = await d.create();
      other = await startMuster(tdb);
      couriers = await makeUnion(other, "couriers", { name: "Couriers United" });
      browser = await launchBrowser();
      page = await (await browser.newContext()).newPage();
    });
    after(async () => {
      await browser?.close();
      await other?.stop();
      await tdb?.destroy();
      await fx.stop();
    });

    it("the leader sees the offer, accepts it, and both public pages list the ally", async () => {
      const riders = fx.url("/u/riders");
      await proposeTo({ ...other.muster.membership, federation: other.muster.federation, origin: other.origin }, couriers, OPERATOR, riders, "ally", "both");
      const ridersId = (await fx.db().selectFrom("unions").select("id").where("slug", "=", "riders").executeTakeFirstOrThrow()).id;
      await eventually(async () => (await listRelationships(fx.db(), ridersId)).length === 1, "riders receives the offer");

      // Signed in over HTTP (the sign-in itself has its own Chromium tests in console.test.ts); the cookie goes to the browser.
      const post = (path: string) => fetch(fx.url(path), {
        method: "POST", redirect: "manual", body: new URLSearchParams(path.endsWith("/login") ? { handle: fx.handleOf("lead") } : {}),
        headers: { "Content-Type": "application/x-www-form-urlencoded", Origin: new URL(riders).origin },
      });
      assert.equal((await post("/u/riders/login")).status, 200);
      const confirmed = await post(`/u/riders/login/${await fx.newLoginCode("lead")}`);
      const [name, value] = /^muster_session=([^;]*)/.exec(confirmed.headers.get("set-cookie") ?? "")![0].split("=") as [string, string];
      await page.context().addCookies([{ name, value, url: riders }]);
      await page.goto(fx.url("/u/riders/console"));
      await page.click("nav.tabs a[href$='/console/unions']");
      await page.waitForURL(/\/console\/unions$/);
      const couriersId = new URL("/u/couriers", other.origin).href;
      const row = page.locator(`tr[data-offer]`);
      assert.equal(await row.count(), 1);
      assert.match(await row.textContent() ?? "", /your ally/);
      await Promise.all([page.waitForURL(/done=accepted/), row.locator("[data-testid=accept-offer]").click()]);
      assert.match(await page.textContent(".notice, [role=status], .flash, body") ?? "", /Accepted/);
      assert.equal(await page.locator("tr[data-relationship]").count(), 1);
      await eventually(async () => (await listRelationships(other.muster.database.db, couriers.id))[0]?.state === "active", "couriers sees the Accept");

      await page.goto(riders);
      assert.deepEqual(await page.locator("[data-testid=allies] a").evaluateAll((as) => as.map((a) => (a as HTMLAnchorElement).href)), [couriersId]);
      await page.goto(new URL("/u/couriers", other.origin).href);
      assert.deepEqual(await page.locator("[data-testid=allies] a").evaluateAll((as) => as.map((a) => (a as HTMLAnchorElement).href)), [riders]);

      // Ending it from the console removes the ally from the page.
      await page.goto(fx.url("/u/riders/console/unions"));
      await Promise.all([page.waitForURL(/done=ended/), page.locator("tr[data-relationship] [data-testid=end]").click()]);
      await page.goto(riders);
      assert.equal(await page.locator("[data-testid=allies]").count(), 0);
    });

    it("a stranger's request to list the union (FEP-7aa9) waits in the console; the leader consents, then withdraws it", async () => {
      const peer = started.peer;
      const inbox = new URL(fx.url("/u/riders/inbox"));
      const body = JSON.stringify({
        "@context": ["https://www.w3.org/ns/activitystreams", "https://w3id.org/fep/7aa9"],
        id: new URL("/requests/1", peer.origin).href, type: "FeatureRequest", actor: peer.actorId("lead").href,
        object: fx.url("/u/riders"), instrument: new URL("/users/lead/collections/1", peer.origin).href,
      });
      const res = await fetch(await peer.signedPost(inbox, body, { as: "lead" }));
      assert.equal(res.status, 202);
      await res.body?.cancel();
      for (const width of [1280, 390]) {
        await page.setViewportSize({ width, height: 900 });
        await page.goto(fx.url("/u/riders/console/unions"));
        const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
        assert.ok(overflow <= 0, `nothing overflows at ${width} px (${overflow})`);
      }
      // (The ally of the test before may be listed too: allies are stamped at once.)
      const row = page.locator(`tr[data-listing="${peer.actorId("lead").href}"]`);
      assert.equal(await row.count(), 1);
      assert.match(await row.textContent() ?? "", /waiting for you/);
      await Promise.all([page.waitForURL(/done=listing-accepted/), row.locator("[data-testid=accept-listing]").click()]);
      const ridersId = (await fx.db().selectFrom("unions").select("id").where("slug", "=", "riders").executeTakeFirstOrThrow()).id;
      const stamp = await fx.db().selectFrom("feature_stamps").selectAll().where("union_id", "=", ridersId).where("requester", "=", peer.actorId("lead").href).executeTakeFirstOrThrow();
      assert.equal(stamp.state, "accepted");
      assert.equal(stamp.decided_by, (await fx.member("lead"))!.id, "the leader's decision is recorded");
      const served = await fetch(fx.url(`/u/riders/stamps/${stamp.id}`), { headers: { Accept: "application/activity+json" } });
      assert.equal(served.status, 200);
      assert.equal((await served.json() as { type: string }).type, "FeatureAuthorization");
      await Promise.all([page.waitForURL(/done=listing-withdrawn/), row.locator("[data-testid=withdraw-listing]").click()]);
      const gone = await fetch(fx.url(`/u/riders/stamps/${stamp.id}`), { headers: { Accept: "application/activity+json" } });
      assert.equal(gone.status, 410);
      await gone.body?.cancel();
    });

    it("the leader proposes an alliance from the console by handle or URL, at 1280 and 390 px; a bad target is refused with the typed value kept", async () => {
      const fits = async (what: string) => assert.equal(await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth), 0, `${what} fits`);
      const couriersUrl = new URL("/u/couriers", other.origin).href;
      for (const width of [1280, 390]) {
        await page.setViewportSize({ width, height: 900 });
        await page.goto(fx.url("/u/riders/console/unions"));
        await fits(`the Other unions tab at ${width} px`);
        await page.fill("[data-testid=propose-target]", "@nobody@127.0.0.1:9");
        await Promise.all([page.waitForLoadState(), page.click("[data-testid=propose]")]);
        assert.match(await page.textContent("body") ?? "", /(could not look up|is not a union).*@nobody@127\.0\.0\.1:9|@nobody@127\.0\.0\.1:9 is not a union/);
        assert.equal(await page.inputValue("[data-testid=propose-target]"), "@nobody@127.0.0.1:9");
        await fits(`the refusal at ${width} px`);
      }
      await page.fill("[data-testid=propose-target]", couriersUrl);
      await page.selectOption("[data-testid=propose-relay]", "theirs");
      await Promise.all([page.waitForURL(/done=proposed/), page.click("[data-testid=propose]")]);
      assert.match(await page.textContent("body") ?? "", /Proposed: the other union's officers/);
      const row = page.locator("tr[data-relationship]");
      assert.equal(await row.count(), 1);
      assert.match(await row.textContent() ?? "", /waiting for their answer/);
      await fits("the Other unions tab with a proposal at 390 px");
      const offer = await eventually(async () => (await listRelationships(other.muster.database.db, couriers.id, { states: ["received"] }))[0], "couriers receives the offer");
      assert.equal(offer.relay, "ours", "relaying as the proposer chose, seen from the other side");
      assert.equal(offer.peerActorId, fx.url("/u/riders"));
      // Proposing again while the offer is open is refused, in one line on the page.
      await page.fill("[data-testid=propose-target]", couriersUrl);
      await Promise.all([page.waitForLoadState(), page.click("[data-testid=propose]")]);
      assert.match(await page.textContent("body") ?? "", /already a relationship/);
      // A cross-site form post is refused.
      const res = await fetch(fx.url("/u/riders/console/unions/propose"), {
        method: "POST", redirect: "manual", body: new URLSearchParams({ target: couriersUrl }),
        headers: { "Content-Type": "application/x-www-form-urlencoded", Origin: "https://evil.example" },
      });
      assert.equal(res.status, 403);
      await page.goto(fx.url("/u/riders"));
      await fits("the public page at 390 px");
    });
  });
}
