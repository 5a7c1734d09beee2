import "../src/temporal.ts";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { Accept, Announce, Create, Delete, type Group, Note, Update } from "@fedify/vocab";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { browserSkip, launchBrowser } from "./helpers/browser.ts";
import { dialects } from "./helpers/databases.ts";
import { eventually, type TestMuster } from "./helpers/muster.ts";
import type { Peer } from "./helpers/peer.ts";
import { signInByDm } from "./helpers/sign-in.ts";
import { unionWithPeer } from "./helpers/union-with-peer.ts";
import { ACTION_KINDS, composeAction, getAction, hashesOf } from "../src/actions/actions.ts";
import { OPERATOR } from "../src/members/members.ts";
import { GENESIS } from "../src/actions/chain.ts";
import { offerRelay } from "../src/actions/relay.ts";
import { localSchedule } from "../src/actions/scheduler.ts";
import { getUnionById } from "../src/unions/unions.ts";
import { htmlToText, parseDatetimeLocal } from "../src/http/actions-data.ts";
import { nextPublication } from "../src/actions/scheduler.ts";
import { overrideBylaws } from "./helpers/bylaws.ts";
import { castVote, closeProposal, createProposal } from "../src/bylaws/proposals.ts";
import { chainOf } from "../src/actions/chain.ts";
import { findMemberByActor } from "../src/members/members.ts";
import { ok as cliOk } from "./helpers/cli-run.ts";

// Calls-to-action on the web, end to end: a real Muster server, a real peer
// fediverse server holding the members, sign-in links by direct message,
// and real Chromium for the console and the call-to-action pages.
// Screenshots go to MUSTER_SCREENSHOT_DIR (default /tmp).

const SCREENSHOT_DIR = process.env.MUSTER_SCREENSHOT_DIR ?? "/tmp";

/**
 * A time zone where it is not yet 23:00, so a 23:5x publish time is still
 * ahead today and the running scheduler leaves the queue alone during the test.
 */
function quietZone(except?: string): string {
  const zone = ["UTC", "Asia/Tokyo", "America/Los_Angeles", "Europe/Berlin", "Australia/Sydney"]
    .find((z) => z !== except && !localSchedule(Date.now(), z, "23:00").due);
  assert.ok(zone);
  return zone;
}

const ASK = [
  "**Sign** the petition for _fair pay_ before Friday.",
  "",
  "<script>document.title = 'pwned'</script>",
  "",
  "[click me](javascript:alert(1)) or read [the petition](https://example.org/petition).",
  "",
  "- tell a friend",
  "- reply “in”",
].join("\n");

describe("call-to-action web helpers", () => {
  it("computes the next publication from the local time, the zone and whether one went out today", () => {
    const now = Date.UTC(2030, 0, 15, 10, 0); // 11:00 in Berlin
    const berlin = { timeZone: "Europe/Berlin", publishTime: "12:30" };
    assert.deepEqual(nextPublication(now, berlin, null), { date: "2030-01-15", time: "12:30", timeZone: "Europe/Berlin", overdue: false });
    // Today's slot already used (the time was moved later after today's call went out): tomorrow, as the CLI and scheduler say.
    assert.deepEqual(nextPublication(now, berlin, "2030-01-15"), { date: "2030-01-16", time: "12:30", timeZone: "Europe/Berlin", overdue: false });
    const early = { timeZone: "Europe/Berlin", publishTime: "09:00" };
    assert.deepEqual(nextPublication(now, early, "2030-01-15"), { date: "2030-01-16", time: "09:00", timeZone: "Europe/Berlin", overdue: false });
    assert.deepEqual(nextPublication(now, early, "2030-01-14"), { date: "2030-01-15", time: "09:00", timeZone: "Europe/Berlin", overdue: true });
    // In Tokyo it is already 19:00 on the 15th; in Los Angeles, 02:00.
    assert.equal(nextPublication(now, { timeZone: "Asia/Tokyo", publishTime: "09:00" }, "2030-01-15").date, "2030-01-16");
    assert.equal(nextPublication(now, { timeZone: "America/Los_Angeles", publishTime: "09:00" }, "2030-01-14").date, "2030-01-15");
  });

  it("reads a datetime-local deadline on the union's wall clock", () => {
    assert.equal(parseDatetimeLocal("2030-06-01T18:30", "Europe/Berlin")?.toISOString(), "2030-06-01T16:30:00.000Z");
    assert.equal(parseDatetimeLocal("2030-01-01T18:30", "Europe/Berlin")?.toISOString(), "2030-01-01T17:30:00.000Z");
    assert.equal(parseDatetimeLocal("2030-06-01T18:30", "UTC")?.toISOString(), "2030-06-01T18:30:00.000Z");
    assert.equal(parseDatetimeLocal("tomorrow", "UTC"), undefined);
    assert.equal(parseDatetimeLocal("2030-13-01T18:30", "UTC"), undefined);
  });

  it("turns reply HTML into plain text", () => {
    assert.equal(htmlToText(`<p><span class="h-card"><a href="x">@<span>riders</span></a></span> I&#39;m in &amp; so is Bo</p><p>see you<br>there</p>`), "@riders I'm in & so is Bo\nsee you\nthere");
    assert.equal(htmlToText("<script>alert(1)</script>&lt;b&gt;"), "alert(1)<b>");
  });
});

for (const d of dialects) {
  describe(`calls-to-action in the console and on their pages on ${d.name}`, { skip: d.skip || browserSkip }, () => {
    const fx = unionWithPeer(d, { actors: ["lead", "alice", "bob"], joinPolicy: "open" });
    const { handleOf, url, db, member, follow } = fx;
    let m: TestMuster;
    let peer: Peer;
    let group: Group;
    let unionId: string;
    let zone: string;
    let browser: Browser;
    let leadCtx: BrowserContext;
    let lead: Page;
    let aliceCtx: BrowserContext;
    let alice: Page;
    /** The published call-to-action with the Markdown ask, and a second one published from the queue. */
    let askId: string;
    let queuedId: string;
    const text = async (page: Page, sel: string) => (await page.textContent(sel) ?? "").replace(/\s+/g, " ").trim();

    /** Signs in from the sign-in page the browser is on; the union's DM carries the link. */
    async function signIn(page: Page, name: string, landsOn: string) {
      assert.equal(new URL(page.url()).pathname, "/u/riders/login");
      await signInByDm(page, fx, name, landsOn);
    }

    /** Submits a form by one of its buttons and waits for the page it lands on. */
    async function submit(page: Page, button: string, landsOn: RegExp) {
      await Promise.all([page.waitForURL(landsOn), page.click(button)]);
    }

    async function screenshot(page: Page, name: string) {
      mkdirSync(SCREENSHOT_DIR, { recursive: true });
      await page.screenshot({ path: join(SCREENSHOT_DIR, `${name}-${d.name}.png`), fullPage: true });
    }

    /** Activities of a kind the peer received about a call-to-action's Note. */
    async function received<T extends Create | Update | Delete | Announce>(Kind: new (...a: never[]) => T, objectId: string): Promise<T> {
      return eventually(async () => peer.received.find((a): a is T => a instanceof Kind && a.objectId?.href === objectId), `${Kind.name} of ${objectId}`);
    }

    before(async () => {
      ({ m, peer, group, unionId } = await fx.start());
      zone = quietZone();
      await overrideBylaws(m.muster.unions, "riders", { publishTime: "23:59", timeZone: zone });
      for (const name of ["lead", "alice", "bob"]) await fx.answerTo(await follow(name), Accept);
      browser = await launchBrowser();
      leadCtx = await browser.newContext();
      lead = await leadCtx.newPage();
      aliceCtx = await browser.newContext();
      alice = await aliceCtx.newPage();
    });

    after(async () => {
      await browser?.close();
      await fx.stop();
    });

    it("an officer composes in the console: one queued, one published at once with a Markdown ask", async () => {
      await lead.goto(url("/u/riders/login"));
      await signIn(lead, "lead", "/u/riders/console");
      await Promise.all([lead.waitForURL(url("/u/riders/console/actions")), lead.click("nav.tabs >> text=Calls to action")]);
      assert.equal(await lead.locator("[data-testid=compose-form] select[name=kind] option").count(), ACTION_KINDS.length);
      assert.match(await text(lead, "[data-testid=compose-form]"), new RegExp(`Deadline ${zone.replace("/", "\\/")}`), "the deadline is typed in the union's zone");

      const form = lead.locator("[data-testid=compose-form]");
      await form.locator("input[name=title]").fill("Boycott SpeedyEats on Saturday");
      await form.locator("textarea[name=text]").fill("Order from **anyone else** on Saturday.");
      await form.locator("select[name=kind]").selectOption("boycott");
      await submit(lead, "[data-testid=queue]", /console\/actions\?done=queued/);
      assert.match(await text(lead, ".notice"), /Queued/);
      const queuedRow = lead.locator("[data-testid=queue-table] tbody tr");
      assert.equal(await queuedRow.count(), 1);
      queuedId = (await queuedRow.getAttribute("data-action"))!;
      assert.equal((await getAction(db(), unionId, queuedId))?.state, "queued");

      // A javascript: link is refused by the domain, and what was typed is kept.
      await form.locator("input[name=title]").fill("Sign the <fair pay> petition");
      await form.locator("textarea[name=text]").fill(ASK);
      await form.locator("input[name=link]").fill("javascript:alert(1)");
      const refused = lead.waitForResponse((r) => r.request().method() === "POST");
      await Promise.all([lead.waitForNavigation({ waitUntil: "load" }), lead.click("[data-testid=publish-now]")]);
      assert.equal((await refused).status(), 400);
      assert.match(await text(lead, "p.error[role=alert]"), /http\(s\) URL/);
      assert.equal(await form.locator("textarea[name=text]").inputValue(), ASK);
      assert.equal(await lead.textContent("[data-testid=count-published]"), "0");
      await form.locator("select[name=kind]").selectOption("sign");
      await form.locator("input[name=link]").fill("https://example.org/petition");
      await form.locator("input[name=goal]").fill("3");
      await form.locator("input[name=deadline]").fill("2030-06-01T18:30");
      await submit(lead, "[data-testid=publish-now]", /console\/actions\?done=published/);
      assert.equal(await lead.textContent("[data-testid=count-published]"), "1");
      const historyRow = lead.locator("[data-testid=history-table] tbody tr");
      assert.equal(await historyRow.count(), 1);
      askId = (await historyRow.getAttribute("data-action"))!;
      const a = (await getAction(db(), unionId, askId))!;
      assert.equal(a.state, "published");
      assert.equal(a.seq, 1);
      assert.equal(a.title, "Sign the <fair pay> petition");
      assert.equal(a.goal, 3);
      assert.equal(a.deadline?.getTime(), Temporal.PlainDateTime.from("2030-06-01T18:30").toZonedDateTime(zone).epochMilliseconds, "the deadline was read in the union's time zone");
      assert.match(await text(lead, "[data-testid=history-table] tbody tr"), /#?1 Sign the <fair pay> petition 0 \/ 3 0% /);
      assert.equal(await lead.textContent("[data-testid=history-table] code.hash"), (await hashesOf(db(), askId))!.hash.slice(0, 12));
      // Members' servers receive it.
      const create = await received(Create, url(`/u/riders/actions/${askId}`));
      assert.equal(create.actorId?.href, group.id!.href);
    });

    it("the call-to-action page renders the Markdown ask inertly and shows the hash chain", async () => {
      const res = await lead.goto(url(`/u/riders/actions/${askId}`));
      assert.equal(res?.status(), 200);
      assert.match(res?.headers()["content-type"] ?? "", /^text\/html/);
      assert.equal(await lead.textContent("[data-testid=title]"), "Sign the <fair pay> petition");
      const ask = lead.locator("[data-testid=ask]");
      assert.equal(await ask.locator("strong").first().textContent(), "Sign");
      assert.equal(await ask.locator("em").textContent(), "fair pay");
      assert.equal(await ask.locator("li").count(), 2);
      assert.equal(await ask.locator("script").count(), 0, "raw HTML in the Markdown is not markup");
      assert.match(await ask.textContent() ?? "", /<script>document\.title = 'pwned'<\/script>/, "it is shown as text");
      assert.notEqual(await lead.title(), "pwned");
      assert.equal(await lead.locator("a[href^='javascript:' i]").count(), 0, "no javascript: link anywhere");
      assert.match(await ask.textContent() ?? "", /\[click me\]\(javascript:alert\(1\)\)/, "the javascript: link is left as text");
      assert.equal(await ask.locator("a").getAttribute("href"), "https://example.org/petition");
      assert.equal(await lead.getAttribute("[data-testid=link]", "href"), "https://example.org/petition");
      assert.match(res?.headers()["content-security-policy"] ?? "", /script-src 'self'(;|$)/, "only the server's own script files run, nothing inline");
      assert.equal(await lead.textContent("[data-testid=kind]"), "Sign");
      assert.equal(await text(lead, "[data-testid=deadline]"), `2030-06-01 18:30 (${zone})`);
      assert.equal(await text(lead, "[data-testid=goal]"), "3 members");
      assert.equal(await lead.textContent("[data-testid=commitments]"), "0");
      const hashes = (await hashesOf(db(), askId))!;
      assert.equal(await lead.textContent("[data-testid=hash]"), hashes.hash);
      assert.equal(await lead.textContent("[data-testid=prev-hash]"), GENESIS, "the first entry links to the start of the chain");
      // The record is folded away; opened, the browser itself checks the chain.
      assert.equal(await lead.locator("details.integrity").getAttribute("open"), null, "folded by default");
      assert.equal(await lead.isVisible("[data-testid=hash]"), false);
      await lead.click("details.integrity summary");
      await lead.click("button[data-verify-chain]");
      await lead.waitForFunction(() => /^(Intact|Broken|Could not)/.test(document.querySelector("[data-testid=chain-result]")?.textContent ?? ""));
      assert.match(await text(lead, "[data-testid=chain-result]"), new RegExp(`^Intact: all 1 entries recomputed in this browser.*${hashes.hash.slice(0, 12)}`));
      const chain = await lead.evaluate(async () => (await fetch("/u/riders/actions/chain.json")).json()) as { entries: { hash: string; payload: string }[] };
      assert.deepEqual(chain.entries.map((e) => e.hash), [hashes.hash], "the export is the chain, for any tool");
      // A tampered export is caught by the same page script: the browser recomputes, it does not trust.
      await lead.route("**/actions/chain.json", async (route) => {
        const real = await (await route.fetch()).json() as { entries: { payload: string }[] };
        real.entries[0]!.payload = real.entries[0]!.payload.replace("fair pay", "no pay");
        await route.fulfill({ json: real });
      });
      await lead.click("button[data-verify-chain]");
      await lead.waitForFunction(() => /^Broken/.test(document.querySelector("[data-testid=chain-result]")?.textContent ?? ""));
      assert.match(await text(lead, "[data-testid=chain-result]"), /entry 1's content does not match its hash/);
      await lead.unroute("**/actions/chain.json");

      // Content negotiation: the same URL is the Note for fediverse servers
      // (members-only here, so the fetch is signed by a member's server).
      const json = await fetch(await peer.signedGet(new URL(`/u/riders/actions/${askId}`, m.origin), { as: "alice" }));
      assert.equal(json.status, 200);
      assert.match(json.headers.get("content-type") ?? "", /activity\+json/);
      const note = await json.json() as { type: string; id: string; content: string };
      assert.equal(note.type, "Note");
      assert.equal(note.id, url(`/u/riders/actions/${askId}`));
      assert.doesNotMatch(note.content, /<script/);
      const missing = await fetch(url("/u/riders/actions/00000000-0000-0000-0000-000000000000"), { headers: { Accept: "text/html" } });
      assert.equal(missing.status, 404);
      assert.match(await missing.text(), /No such call-to-action/);
    });

    it("members-only: a signed-out visitor is sent to sign in, and comes back to the page after", async () => {
      for (const path of [`/u/riders/actions/${askId}`, "/u/riders/actions"]) {
        const res = await fetch(url(path), { headers: { Accept: "text/html" }, redirect: "manual" });
        assert.equal(res.status, 303, path);
        assert.equal(res.headers.get("location"), "/u/riders/login");
      }
      const unionPage = await (await fetch(url("/u/riders"), { headers: { Accept: "text/html" } })).text();
      assert.match(unionPage, /has a call to action for its members/);
      assert.doesNotMatch(unionPage, /fair pay/, "the union page does not name a members-only call-to-action to strangers");
      const chain = await fetch(url("/u/riders/actions/chain.json"));
      assert.equal(chain.status, 403, "a members-only union's chain is for members");
      assert.doesNotMatch(await chain.text(), /fair pay/);

      await alice.goto(url(`/u/riders/actions/${askId}`));
      await signIn(alice, "alice", `/u/riders/actions/${askId}`);
      assert.equal(await alice.textContent("[data-testid=title]"), "Sign the <fair pay> petition");
      assert.equal(await alice.textContent("[data-testid=viewer]"), handleOf("alice"));
      const res = await alice.goto(url("/u/riders/console/actions"));
      assert.equal(res?.status(), 403, "a member who is not an officer has no console");

      // The union's page, to a signed-in member: who they are instead of "Already a member? Sign in",
      // how many members there are (members may see that here), and the leader's profile.
      await alice.goto(url("/u/riders"));
      assert.match(await text(alice, "[data-testid=signed-in]"), new RegExp(`signed in as ${handleOf("alice").replace(/\./g, "\\.")}\\. Your page`));
      assert.equal(await alice.locator("a[href='/u/riders/login']").count(), 0, "no sign-in offer to someone signed in");
      assert.equal(await text(alice, "[data-testid=member-count]"), "3 members");
      assert.equal(await alice.locator("[data-testid=current-action] h2 a").getAttribute("href"), `/u/riders/actions/${askId}`);
      const stranger = await (await fetch(url("/u/riders"), { headers: { Accept: "text/html" } })).text();
      assert.doesNotMatch(stranger, /data-testid="member-count"/, "the count follows the union's visibility: not for strangers here");
      assert.match(stranger, /Already a member\? <a href="\/u\/riders\/login">Sign in<\/a>/);
    });

    it("a member presses “I'm in”: the count goes up once, however often it is pressed; then “Done”", async () => {
      await alice.goto(url(`/u/riders/actions/${askId}`));
      assert.equal(await alice.textContent("[data-testid=commitments]"), "0");
      assert.equal(await alice.getAttribute("[data-testid=commit]", "aria-pressed"), "false");
      await submit(alice, "[data-testid=commit]", /\?done=committed$/);
      assert.equal(await alice.textContent("[data-testid=commitments]"), "1");
      assert.equal(await alice.getAttribute("[data-testid=commit]", "aria-pressed"), "true");
      assert.match(await text(alice, ".notice"), /You're in/);
      assert.equal(await alice.textContent("[data-testid=participation]"), "33%", "1 of 3 members");

      await submit(alice, "[data-testid=commit]", /\?done=already_committed$/);
      assert.equal(await alice.textContent("[data-testid=commitments]"), "1", "a second press does not count twice");
      assert.match(await text(alice, ".notice"), /already counted/);

      await submit(alice, "[data-testid=done]", /\?done=done$/);
      assert.equal(await alice.textContent("[data-testid=commitments]"), "1", "done is not a second commitment");
      assert.equal(await alice.textContent("[data-testid=done-count]"), "1");
      assert.equal(await alice.getAttribute("[data-testid=done]", "aria-pressed"), "true");
      const rows = await db().selectFrom("action_responses").select(["kind", "source"]).where("action_id", "=", askId)
        .where("member_id", "=", (await member("alice"))!.id).orderBy("kind").execute();
      assert.deepEqual(rows, [{ kind: "commit", source: "web" }, { kind: "done", source: "web" }]);
      await screenshot(alice, "muster-action-page");

      // The buttons are forms of this site: a cross-site POST is refused.
      const cookie = (await aliceCtx.cookies()).find((c) => c.name === "muster_session")!;
      const evil = await fetch(url(`/u/riders/actions/${queuedId}/commit`), {
        method: "POST",
        headers: { Origin: "http://evil.example", Cookie: `muster_session=${cookie.value}`, "Content-Type": "application/x-www-form-urlencoded" },
        redirect: "manual",
      });
      assert.equal(evil.status, 403);
    });

    it("the queue: drafts in publication order, edited, deleted and published from the console", async () => {
      await lead.goto(url("/u/riders/console/actions"));
      const form = lead.locator("[data-testid=compose-form]");
      for (const title of ["Call your councillor", "Draft to delete"]) {
        await form.locator("input[name=title]").fill(title);
        await form.locator("textarea[name=text]").fill(`About: ${title}`);
        await submit(lead, "[data-testid=queue]", /done=queued/);
      }
      const titles = async () => (await lead.locator("[data-testid=queue-table] tbody tr td:nth-child(2)").allTextContents()).map((s) => s.trim());
      assert.deepEqual(await titles(), ["Boycott SpeedyEats on Saturday", "Call your councillor", "Draft to delete"], "oldest first: the order they go out");

      // Edit a draft: no federation, just saved.
      const row = (title: string) => lead.locator("[data-testid=queue-table] tbody tr", { hasText: title });
      await Promise.all([lead.waitForURL(/\/console\/actions\/[\w-]+$/), row("Call your councillor").locator("[data-testid=edit]").click()]);
      assert.equal(await lead.textContent("[data-testid=state]"), "queued");
      await lead.fill("[data-testid=edit-form] input[name=title]", "Call your city councillor");
      await lead.selectOption("[data-testid=edit-form] select[name=kind]", "contact");
      await submit(lead, "[data-testid=edit-form] button[type=submit]", /done=draft_saved/);
      assert.equal(await lead.textContent("[data-testid=title]"), "Call your city councillor");

      await lead.goto(url("/u/riders/console/actions"));
      await submit(lead, `[data-testid=queue-table] tr:has-text("Draft to delete") [data-testid=delete]`, /done=deleted/);
      assert.deepEqual(await titles(), ["Boycott SpeedyEats on Saturday", "Call your city councillor"]);

      // The first in the queue, published now.
      await submit(lead, `[data-testid=queue-table] tr[data-action="${queuedId}"] [data-testid=publish]`, /done=published/);
      assert.equal(await lead.textContent("[data-testid=count-published]"), "2");
      assert.deepEqual(await titles(), ["Call your city councillor"]);
      const b = (await getAction(db(), unionId, queuedId))!;
      assert.equal(b.seq, 2);
      assert.equal((await hashesOf(db(), queuedId))!.prevHash, (await hashesOf(db(), askId))!.hash, "the second links to the first");
      await screenshot(lead, "muster-console-actions");
    });

    it("an officer edits a published call-to-action (Update) and retracts another (Delete); its page then says 410", async () => {
      const before = (await hashesOf(db(), askId))!;
      await lead.goto(url(`/u/riders/console/actions/${askId}`));
      assert.equal(await lead.textContent("[data-testid=state]"), "published");
      assert.equal(await lead.inputValue("[data-testid=edit-form] input[name=deadline]"), "2030-06-01T18:30", "the deadline is shown in the union's zone");
      await lead.fill("[data-testid=edit-form] input[name=title]", "Sign the fair pay petition today");
      await submit(lead, "[data-testid=edit-form] button[type=submit]", /done=edited/);
      assert.match(await text(lead, ".notice"), /Saved/);
      const a = (await getAction(db(), unionId, askId))!;
      assert.equal(a.title, "Sign the fair pay petition today");
      assert.equal(a.deadline?.getTime(), Temporal.PlainDateTime.from("2030-06-01T18:30").toZonedDateTime(zone).epochMilliseconds, "the unchanged deadline is kept");
      const after = (await hashesOf(db(), askId))!;
      assert.notEqual(after.hash, before.hash, "the edit is a new chain entry");
      assert.equal(after.prevHash, before.prevHash);
      await received(Update, url(`/u/riders/actions/${askId}`));
      await alice.goto(url(`/u/riders/actions/${askId}`));
      assert.equal(await alice.textContent("[data-testid=title]"), "Sign the fair pay petition today");
      assert.match(await text(alice, "[data-testid=edited]"), /^edited/);
      assert.equal(await alice.textContent("[data-testid=hash]"), after.hash);
      assert.equal(await alice.textContent("[data-testid=commitments]"), "1", "the edit keeps the commitments");

      await lead.goto(url(`/u/riders/console/actions/${queuedId}`));
      await submit(lead, "[data-testid=retract]", /done=retracted/);
      assert.equal(await lead.textContent("[data-testid=state]"), "retracted");
      assert.equal(await lead.locator("[data-testid=edit-form]").count(), 0);
      assert.equal((await getAction(db(), unionId, queuedId))?.state, "retracted");
      await received(Delete, url(`/u/riders/actions/${queuedId}`));
      const gone = await alice.goto(url(`/u/riders/actions/${queuedId}`));
      assert.equal(gone?.status(), 410);
      assert.match(await text(alice, "[data-testid=retracted]"), /#2 was retracted/);
      await lead.goto(url("/u/riders/console/actions"));
      assert.equal(await lead.textContent(`[data-testid=history-table] tr[data-action="${queuedId}"] [data-testid=state]`), "retracted");
    });

    it("the officer sees members' replies to a call-to-action on its console page, as text", async () => {
      const reply = new Note({
        id: new URL("/users/bob/statuses/1", peer.origin),
        attribution: peer.actorId("bob"),
        to: group.id,
        replyTarget: new URL(url(`/u/riders/actions/${askId}`)),
        content: `<p><span class="h-card"><a href="${group.id!.href}" class="u-url mention">@<span>riders</span></a></span> I&#39;m in <script>alert(1)</script><b>really</b></p>`,
      });
      await peer.send("bob", group, new Create({ id: new URL("/users/bob/statuses/1/activity", peer.origin), actor: peer.actorId("bob"), object: reply, to: group.id }));
      await eventually(async () => (await db().selectFrom("action_responses").select("id").where("kind", "=", "comment").execute()).length === 1, "the reply recorded");
      await lead.goto(url(`/u/riders/console/actions/${askId}`));
      const comment = lead.locator("[data-testid=comments] li");
      assert.equal(await comment.count(), 1);
      assert.match(await text(lead, "[data-testid=comments] li"), new RegExp(`${handleOf("bob").replace(/\./g, "\\.")} .* counted as in @riders I'm in alert\\(1\\)really`));
      assert.equal(await comment.locator("script, b").count(), 0, "remote HTML is shown as text");
      assert.equal(await lead.textContent("[data-testid=commitments]"), "2", "“in” in a reply counts");
      await screenshot(lead, "muster-console-action");
    });

    it("the schedule is the bylaws' (shown, not editable); officers set only the relay policy", async () => {
      await lead.goto(url("/u/riders/console/actions"));
      assert.match(await text(lead, "[data-testid=next-publication]"), new RegExp(`Next publication: ${localSchedule(Date.now(), zone, "23:59").today} 23:59 \\(${zone.replace("/", "\\/")}\\)`));
      assert.match(await text(lead, "[data-testid=schedule-bylaws]"), /Published daily at 23:59 .* These are bylaws/);
      const form = lead.locator("[data-testid=settings-form]");
      assert.equal(await form.locator("input[name=publishTime], select[name=timeZone], input[name=commitmentWords]").count(), 0);
      await form.locator("select[name=relayPolicy]").selectOption("approval");
      await submit(lead, "[data-testid=settings-form] button[type=submit]", /done=schedule/);
      assert.equal((await getUnionById(db(), unionId))!.relayPolicy, "approval");

      // A forged form carrying a bylaw is refused whole, with the domain's message.
      const status = await lead.evaluate(async () => {
        const body = new URLSearchParams({ relayPolicy: "auto", publishTime: "06:00" });
        const res = await fetch(location.pathname.replace(/actions$/, "schedule"), { method: "POST", body });
        return { status: res.status, text: await res.text() };
      });
      assert.equal(status.status, 403);
      assert.match(status.text, /publishTime is a bylaw/);
      const u = (await getUnionById(db(), unionId))!;
      assert.deepEqual([u.publishTime, u.relayPolicy], ["23:59", "approval"]);
    });

    it("public: anyone sees the call-to-action page, the list and the union page's link, without the buttons", async () => {
      // Calls-to-action visibility is a bylaw; officers no longer set it in the console.
      await overrideBylaws(m.muster.unions, "riders", { actionsVisibility: "public" });
      const anon = await browser.newContext();
      try {
        const page = await anon.newPage();
        const res = await page.goto(url(`/u/riders/actions/${askId}`));
        assert.equal(res?.status(), 200);
        assert.equal(await page.textContent("[data-testid=title]"), "Sign the fair pay petition today");
        assert.equal(await page.locator("[data-testid=commit]").count(), 0);
        assert.match(await text(page, "[data-testid=respond-signed-out]"), /sign in/);
        await page.goto(url("/u/riders"));
        const current = page.locator("[data-testid=current-action] a", { hasText: "Sign the fair pay petition today" });
        await Promise.all([page.waitForURL(url(`/u/riders/actions/${askId}`)), current.click()]);
        await page.goto(url("/u/riders/actions"));
        assert.match(await text(page, "[data-testid=current-action]"), /Sign the fair pay petition today/);
        assert.doesNotMatch(await text(page, "main"), /Boycott SpeedyEats/, "retracted ones are not listed");
        // A newer call makes the petition an earlier one, listed under "Recent".
        await composeAction(m.muster.membership, unionId, OPERATOR, { title: "Ride slow on Friday", text: "For safety." }, { publishNow: true });
        await page.goto(url("/u/riders"));
        assert.match(await text(page, "[data-testid=current-action]"), /Ride slow on Friday/);
        assert.match(await text(page, "[data-testid=recent-actions]"), /Sign the fair pay petition today/, "the union page lists its earlier calls-to-action");
        assert.doesNotMatch(await text(page, "[data-testid=recent-actions]"), /Boycott SpeedyEats|Ride slow/, "neither retracted ones nor the current one again");
        assert.equal(await page.locator("[data-testid=leader] a").count() + await page.locator("[data-testid=leader]").count(), 2, "the leader is a link to their profile");
        await screenshot(page, "muster-union-page-action");
        const json = await fetch(url(`/u/riders/actions/${askId}`), { headers: { Accept: "application/activity+json" } });
        assert.equal(json.status, 200, "public: the Note is served unsigned too");
      } finally {
        await anon.close();
      }
    });

    it("a member's post mentioning the union waits for approval; the officer relays it", async () => {
      const noteId = new URL("/users/alice/statuses/rally", peer.origin).href;
      const outcome = await offerRelay(m.muster.membership, unionId, {
        noteId,
        createId: null,
        authorActorId: peer.actorId("alice").href,
        contentHtml: " @riders Rally at the depot at 6 &amp; bring &lt;friends&gt; ",
        isPublic: true,
        isReplyToAction: false,
      });
      assert.equal(outcome, "pending");
      await lead.goto(url("/u/riders/console/actions"));
      assert.equal(await lead.textContent("[data-testid=count-relays]"), "1");
      const row = lead.locator("[data-testid=relay-table] tbody tr");
      assert.equal(await row.count(), 1);
      assert.match(await text(lead, "[data-testid=relay-table] tbody tr"), new RegExp(`${handleOf("alice").replace(/\./g, "\\.")} @riders Rally at the depot at 6 & bring <friends>`));
      await submit(lead, "[data-testid=relay-table] [data-testid=relay]", /done=relayed/);
      assert.equal(await lead.locator("[data-testid=relay-table]").count(), 0);
      assert.equal(await lead.textContent("[data-testid=count-relays]"), "0");
      const r = await db().selectFrom("relay_requests").select("state").where("note_id", "=", noteId).executeTakeFirstOrThrow();
      assert.equal(r.state, "relayed");
      await received(Announce, noteId);
    });

    it("with a proposal, its ballots and its outcome in the chain, the browser's check and `muster action verify` still find it intact", async () => {
      const p = await createProposal(m.muster.membership, unionId, OPERATOR, { kind: "resolution", title: "Picket the depot", closesAt: new Date(Date.now() + 60_000) });
      for (const [name, option] of [["alice", "Yes"], ["bob", "No"], ["alice", "Abstain"]] as const) {
        const member = (await findMemberByActor(db(), unionId, peer.actorId(name).href))!;
        assert.deepEqual(await castVote(m.muster.membership, unionId, p.id, { memberId: member.id }, [option], { kind: "web" }), { counted: true });
      }
      await closeProposal(m.muster.membership, unionId, p.id, { force: true });
      const entries = await chainOf(db(), unionId);
      assert.deepEqual(entries.slice(-5).map((e) => e.event), ["proposal", "ballot", "ballot", "ballot", "outcome"]);
      const published = await db().selectFrom("actions").select("id").where("union_id", "=", unionId).where("state", "=", "published").executeTakeFirstOrThrow();
      await lead.goto(url(`/u/riders/actions/${published.id}`));
      await lead.click("details.integrity summary");
      await lead.click("button[data-verify-chain]");
      await lead.waitForFunction(() => /^(Intact|Broken|Could not)/.test(document.querySelector("[data-testid=chain-result]")?.textContent ?? ""));
      assert.match(await text(lead, "[data-testid=chain-result]"), new RegExp(`^Intact: all ${entries.length} entries recomputed in this browser`));
      const verified = cliOk(["action", "verify", "riders", "--json"], { DATABASE_URL: m.muster.config.databaseUrl });
      assert.deepEqual([JSON.parse(verified).ok, JSON.parse(verified).entries], [true, entries.length]);
    });
  });
}
