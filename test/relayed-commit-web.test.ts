import "../src/temporal.ts";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Accept, Announce, Create, Follow, type Group, Note } from "@fedify/vocab";
import type { Browser } from "playwright-core";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { eventually, makeUnion, startMuster, type TestMuster } from "./helpers/muster.ts";
import { type Peer, startPeer } from "./helpers/peer.ts";
import { browserSkip, launchBrowser } from "./helpers/browser.ts";
import { composeAction } from "../src/actions/actions.ts";
import { OPERATOR } from "../src/members/members.ts";
import { answerOffer, listRelationships } from "../src/relationships/relationships.ts";
import type { Union } from "../src/unions/unions.ts";
import { proposeTo } from "../federation/relationships.ts";
import { relayedTotals, talliesOf } from "../src/relationships/tallies.ts";
import { overrideBylaws } from "./helpers/bylaws.ts";

// "I'm in" on the web at the relaying union. A posts a call; its ally B
// relays it; bob, B's member, cannot sign in at A, so he signs in at B and
// presses "I'm in" on B's list of relayed calls. B counts it once, reports
// it to A, and A's call page shows it from B. Two real Muster servers.

for (const d of dialects) {
  describe(`"I'm in" on the web for a relayed call, on ${d.name}`, { skip: d.skip }, () => {
    const dbs: TestDatabase[] = [];
    const servers: TestMuster[] = [];
    let peer: Peer;
    let ma: TestMuster, mb: TestMuster;
    let a: Union, b: Union;
    let call: URL;
    let callId: string;
    let cookie = "";
    let browser: Browser | undefined;

    async function server(): Promise<TestMuster> {
      const tdb = await d.create();
      dbs.push(tdb);
      const m = await startMuster(tdb);
      servers.push(m);
      return m;
    }
    const groupId = (m: TestMuster, slug: string) => new URL(`/u/${slug}`, m.origin);
    const atB = (path: string) => new URL(path, mb.origin).href;
    async function join(m: TestMuster, slug: string, name: string): Promise<void> {
      const group = await peer.lookup(groupId(m, slug)) as Group;
      await peer.send(name, group, new Follow({ id: new URL(`/follows/${name}-${slug}`, peer.origin), actor: peer.actorId(name), object: group.id }));
      await eventually(async () => {
        for (const x of peer.received) if (x instanceof Accept && x.actorId?.href === group.id!.href && (await x.getObject({ crossOrigin: "trust" }))?.id?.href.endsWith(`/follows/${name}-${slug}`)) return true;
        return false;
      }, `${name} joined ${slug}`);
    }
    /** The newest sign-in code B sent this actor by direct message. */
    async function loginCode(name: string, seen: Set<string>): Promise<string | undefined> {
      for (const x of [...peer.received].reverse()) {
        if (!(x instanceof Create) || !x.toIds.some((t) => t.href === peer.actorId(name).href)) continue;
        const note = await x.getObject({ crossOrigin: "trust" });
        const code = note instanceof Note ? /\/u\/b\/login\/([\w-]+)/.exec(String(note.content))?.[1] : undefined;
        if (code && !seen.has(code)) return code;
      }
      return undefined;
    }
    const form = { "Content-Type": "application/x-www-form-urlencoded", Origin: "" };
    const post = (path: string, body: Record<string, string>, opts: { cookie?: string; origin?: string } = {}) => fetch(atB(path), {
      method: "POST", redirect: "manual",
      headers: { ...form, Origin: opts.origin ?? mb.origin.origin, ...(opts.cookie ? { Cookie: opts.cookie } : {}) },
      body: new URLSearchParams(body),
    });
    const relayedPage = (withCookie = cookie) => fetch(atB("/u/b/actions/relayed"), { headers: withCookie ? { Cookie: withCookie } : {}, redirect: "manual" });
    const bTotals = () => relayedTotals(mb.muster.database.db, b.id, call.href);
    const fromB = async () => (await talliesOf(ma.muster.database.db, a.id, callId)).find((t) => t.reporterActorId === groupId(mb, "b").href);

    before(async () => {
      peer = await startPeer(["alice", "bob", "mallory"]);
      ma = await server();
      mb = await server();
      a = await makeUnion(ma, "a", { name: "Riders A", joinPolicy: "open" });
      b = await makeUnion(mb, "b", { name: "Couriers B", joinPolicy: "open" });
      a = await overrideBylaws(ma.muster.unions, "a", { actionsVisibility: "public" });
      await join(ma, "a", "alice");
      await join(mb, "b", "bob");
      const offer = await proposeTo({ ...ma.muster.membership, federation: ma.muster.federation, origin: ma.origin }, a, OPERATOR, groupId(mb, "b").href, "ally", "both");
      const atBRel = await eventually(async () => (await listRelationships(mb.muster.database.db, b.id)).find((r) => r.followId === offer.followId), "B receives the offer");
      await answerOffer(mb.muster.membership, b.id, atBRel.id, OPERATOR, true);
      await eventually(async () => (await listRelationships(ma.muster.database.db, a.id)).find((r) => r.state === "active"), "A sees B's Accept");
      const action = await composeAction(ma.muster.membership, a.id, OPERATOR, { title: "Picket at noon", text: "Gate 2, bring a flag.", kind: "show-up" }, { publishNow: true });
      call = new URL(`/u/a/actions/${action.id}`, ma.origin);
      callId = action.id;
      await eventually(async () => peer.received.some((x) => x instanceof Announce && x.actorId?.href === groupId(mb, "b").href && x.objectId?.href === call.href), "bob gets B's Announce of A's call");
    });
    after(async () => {
      await browser?.close();
      for (const m of servers) await m.stop();
      await peer?.close();
      for (const t of dbs) await t.destroy();
    });

    it("bob signs in at B and sees A's relayed call with an \"I'm in\" button, linked from B's calls", async () => {
      const seen = new Set<string>();
      const asked = await post("/u/b/login", { handle: `@bob@${peer.origin.host}` });
      assert.equal(asked.status, 200, await asked.text());
      const code = await eventually(() => loginCode("bob", seen), "bob's sign-in code");
      const signed = await post(`/u/b/login/${code}`, {});
      assert.ok(signed.status === 302 || signed.status === 303, `sign-in answered ${signed.status}`);
      cookie = (signed.headers.getSetCookie?.() ?? []).map((c) => c.split(";")[0]).join("; ");
      assert.ok(cookie.length > 0, "a session cookie");
      const index = await (await fetch(atB("/u/b/actions"), { headers: { Cookie: cookie } })).text();
      assert.match(index, /href="\/u\/b\/actions\/relayed" data-testid="relayed-link"/);
      const res = await relayedPage();
      assert.equal(res.status, 200);
      const page = await res.text();
      assert.match(page, new RegExp(`data-testid="relayed-call" data-note="${call.href}"`));
      // B keeps no copy of the call's text: the item says whose it is and links to it.
      assert.ok(page.includes(`relayed from ally @a@${ma.origin.host}. <a href="${call.href}" rel="nofollow noopener" data-testid="relayed-open">`), "whose call it is, and a link to it");
      assert.match(page, /data-testid="relayed-commit"/);
    });

    it("pressing \"I'm in\" counts one commitment at B; pressing again keeps one; A's page shows it from B", async () => {
      const first = await post("/u/b/actions/relayed/commit", { note: call.href }, { cookie });
      assert.equal(first.status, 303);
      assert.equal(first.headers.get("location"), "/u/b/actions/relayed?done=committed");
      assert.equal((await bTotals()).commitments, 1);
      const again = await post("/u/b/actions/relayed/commit", { note: call.href }, { cookie });
      assert.equal(again.headers.get("location"), "/u/b/actions/relayed?done=already_committed");
      assert.equal((await bTotals()).commitments, 1);
      assert.match(await (await relayedPage()).text(), /data-testid="relayed-withdraw"/);
      await eventually(async () => (await fromB())?.commitments === 1, "A receives B's report of one commitment");
      const page = await (await fetch(call, { headers: { Accept: "text/html" } })).text();
      assert.match(page, new RegExp(`data-testid="relayed-tally" data-union="${groupId(mb, "b").href}"><strong>1</strong> from`));
    });

    it("withdrawing brings B's count back, and A's with it; pressing again counts again", async () => {
      const w = await post("/u/b/actions/relayed/withdraw", { note: call.href }, { cookie });
      assert.equal(w.headers.get("location"), "/u/b/actions/relayed?done=withdrawn");
      assert.equal((await bTotals()).commitments, 0);
      await eventually(async () => (await fromB())?.commitments === 0, "A receives B's report of none");
      const w2 = await post("/u/b/actions/relayed/withdraw", { note: call.href }, { cookie });
      assert.equal(w2.headers.get("location"), "/u/b/actions/relayed?done=not_counted");
      await post("/u/b/actions/relayed/commit", { note: call.href }, { cookie });
      assert.equal((await bTotals()).commitments, 1);
      await eventually(async () => (await fromB())?.commitments === 1, "A receives B's report of one again");
    });

    it("hostile: a visitor is sent to sign in; a cross-site form is refused; a non-member cannot sign in; an unknown note is 404", async () => {
      const visitor = await relayedPage("");
      assert.equal(visitor.status, 303);
      assert.equal(visitor.headers.get("location"), "/u/b/login");
      const anon = await post("/u/b/actions/relayed/commit", { note: call.href });
      assert.equal(anon.status, 303);
      assert.equal(anon.headers.get("location"), "/u/b/login");
      const forged = await post("/u/b/actions/relayed/withdraw", { note: call.href }, { cookie, origin: "http://evil.example" });
      assert.equal(forged.status, 403);
      assert.equal((await bTotals()).commitments, 1, "the cross-site withdrawal changed nothing");
      // mallory is no member of B: no sign-in code is sent, so no session.
      const asked = await post("/u/b/login", { handle: `@mallory@${peer.origin.host}` });
      await asked.body?.cancel();
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(await loginCode("mallory", new Set()), undefined);
      const forgedCookie = await post("/u/b/actions/relayed/commit", { note: call.href }, { cookie: "muster_session=not-a-session" });
      assert.equal(forgedCookie.headers.get("location"), "/u/b/login");
      for (const note of [new URL("/u/a/actions/00000000-0000-4000-8000-000000000000", ma.origin).href, "http://127.0.0.1:1/nothing", ""]) {
        const r = await post("/u/b/actions/relayed/commit", { note }, { cookie });
        assert.equal(r.status, 404, `${note} is not relayed by B`);
        await r.body?.cancel();
      }
      assert.equal((await bTotals()).commitments, 1);
    });

    it("the button is visible at 390 px in Chromium, and pressing it withdraws", { skip: browserSkip }, async () => {
      browser = await launchBrowser();
      const ctx = await browser.newContext({ viewport: { width: 390, height: 844 } });
      await ctx.addCookies(cookie.split("; ").map((kv) => {
        const [name, ...rest] = kv.split("=");
        return { name: name!, value: rest.join("="), url: atB("/") };
      }));
      const page = await ctx.newPage();
      await page.goto(atB("/u/b/actions/relayed"));
      const button = page.locator("[data-testid=relayed-withdraw]");
      assert.ok(await button.isVisible());
      const box = (await button.boundingBox())!;
      assert.ok(box.x >= 0 && box.x + box.width <= 390.5, `the button lies within 390 px (${JSON.stringify(box)})`);
      const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
      assert.ok(overflow <= 0, `nothing overflows (${overflow} px)`);
      await Promise.all([page.waitForURL(/done=withdrawn/), button.click()]);
      assert.ok(await page.locator("[data-testid=relayed-commit]").isVisible());
      assert.equal((await bTotals()).commitments, 0);
    });
  });
}
