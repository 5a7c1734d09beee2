import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Create, Note } from "@fedify/vocab";
import type { Browser, Page } from "playwright-core";
import { browserSkip, launchBrowser } from "./helpers/browser.ts";
import { dialects } from "./helpers/databases.ts";
import { eventually, makeUnion, type TestMuster } from "./helpers/muster.ts";
import type { Peer } from "./helpers/peer.ts";
import { signInByDm } from "./helpers/sign-in.ts";
import { joinByInviteChain } from "./helpers/invite-chain.ts";
import { unionWithPeer } from "./helpers/union-with-peer.ts";
import { composeAction } from "../src/actions/actions.ts";
import { createInvite } from "../src/members/invites.ts";
import { OPERATOR } from "../src/members/members.ts";
import { setOfficer } from "../src/members/membership.ts";
import { VISIBILITY_TEXT } from "../src/members/visibility.ts";
import { getUnionBySlug, type MembersVisibility } from "../src/unions/unions.ts";
import { overrideBylaws } from "./helpers/bylaws.ts";

// Who may see who belongs to a union, on every path that shows it: the
// followers collection (and its pages and count), the member list, the
// moderators, and the member list's web page. Real Muster, a real peer
// fediverse server signing its fetches, real Chromium.

const AP = "application/activity+json";
const HTML = "text/html,application/xhtml+xml";

for (const d of dialects) {
  describe(`the roster's privacy on ${d.name}`, { skip: d.skip }, () => {
    const fx = unionWithPeer(d, { actors: ["lead", "alice", "bob", "stranger"], joinPolicy: "approval" });
    const { handleOf, url, member, newLoginCode } = fx;
    let m: TestMuster;
    let peer: Peer;
    let unionId: string;
    let browser: Browser | undefined;
    const setVisibility = (v: MembersVisibility) => overrideBylaws(m.muster.unions, "riders", { membersVisibility: v }).catch((e: unknown) => {
      // Setting the value already in force is not a change.
      if (!/leave the bylaws as they are/.test(String(e))) throw e;
    });

    const unsigned = (path: string, accept = AP) => fetch(url(path), { headers: { Accept: accept }, redirect: "manual" });
    const signed = async (path: string, as: string) => fetch(await peer.signedGet(new URL(url(path)), { as }));

    /** Signs in over plain HTTP by the DM link; returns the `muster_session=...` cookie pair. */
    const sessions = new Map<string, string>();
    async function sessionCookie(name: string): Promise<string> {
      // One sign-in per member: links asked for one handle are rate limited.
      const known = sessions.get(name);
      if (known) return known;
      const form = (path: string, fields: Record<string, string>) => fetch(url(path), {
        method: "POST",
        headers: { "Content-Type": "application/x-www-form-urlencoded", Origin: m.origin.origin },
        body: new URLSearchParams(fields),
        redirect: "manual",
      });
      assert.equal((await form("/u/riders/login", { handle: handleOf(name) })).status, 200);
      const res = await form(`/u/riders/login/${await newLoginCode(name)}`, {});
      const cookie = /^(muster_session=[^;]*)/.exec(res.headers.get("set-cookie") ?? "")?.[1];
      assert.ok(cookie, `${name} got a session`);
      sessions.set(name, cookie);
      return cookie;
    }

    before(async () => {
      const started = await fx.start();
      ({ m, peer, unionId } = started);
      // lead at the root; alice on the operator's invite (made an officer); bob on alice's invite.
      await joinByInviteChain(fx, started, ["lead", "alice", "bob"]);
      await setOfficer(m.muster.membership, unionId, (await member("alice"))!.id, OPERATOR, "Treasurer");
      if (!browserSkip) browser = await launchBrowser();
    });
    after(async () => {
      await browser?.close();
      await fx.stop();
    });

    it("a new union starts strict: members on the web, officers over the fediverse", async () => {
      assert.equal((await getUnionBySlug(m.muster.database.db, "riders"))?.membersVisibility, "signed-in");
      const other = await makeUnion(m, "cooks");
      assert.equal(other.membersVisibility, "signed-in");
    });

    it("the followers collection, its pages and its count are refused to unsigned fetches", async () => {
      for (const path of ["/u/riders/followers", "/u/riders/followers?cursor=", "/u/riders/followers?cursor=0"]) {
        const res = await unsigned(path);
        assert.equal(res.status, 401, path);
        const body = await res.text();
        assert.ok(!body.includes(peer.actorId("bob").href), `${path} names no member`);
        assert.ok(!/totalItems/.test(body), `${path} gives no count`);
      }
    });

    it("strict: over the fediverse only the officers' own accounts read followers, members and moderators", async () => {
      for (const path of ["/u/riders/followers?cursor=", "/u/riders/members", "/u/riders/moderators"]) {
        // stranger is on a server that hosts members; bob is a member but not an officer.
        assert.notEqual((await signed(path, "stranger")).status, 200, `stranger: ${path}`);
        assert.notEqual((await signed(path, "bob")).status, 200, `bob: ${path}`);
        assert.equal((await unsigned(path)).status, 401, `unsigned: ${path}`);
      }
      const page = await (await signed("/u/riders/followers?cursor=", "alice")).json() as { orderedItems: string[] };
      assert.deepEqual(new Set(page.orderedItems), new Set(["lead", "alice", "bob"].map((n) => peer.actorId(n).href)));
      const coll = await (await signed("/u/riders/followers", "alice")).json() as { totalItems: number };
      assert.equal(coll.totalItems, 3);
      const mods = await (await signed("/u/riders/moderators", "alice")).json() as { orderedItems: string[] };
      assert.deepEqual(mods.orderedItems, [peer.actorId("lead").href, peer.actorId("alice").href]);
      const refused = await signed("/u/riders/members", "bob");
      assert.equal(refused.status, 403);
      assert.match((await refused.json() as { error: { message: string } }).error.message, /only the leader's and officers' own accounts/);
    });

    it("members: any account on a member's server reads the followers, as the setting says", async () => {
      await setVisibility("members");
      try {
        assert.equal((await signed("/u/riders/followers?cursor=", "stranger")).status, 200);
        assert.equal((await signed("/u/riders/members", "stranger")).status, 200);
        assert.equal((await unsigned("/u/riders/followers?cursor=")).status, 401);
        assert.equal((await unsigned("/u/riders/moderators")).status, 401);
      } finally {
        await setVisibility("signed-in");
      }
    });

    it("public: anyone reads the followers and the moderators", async () => {
      await setVisibility("public");
      try {
        const coll = await (await unsigned("/u/riders/followers")).json() as { totalItems: number };
        assert.equal(coll.totalItems, 3);
        assert.equal((await unsigned("/u/riders/moderators")).status, 200);
      } finally {
        await setVisibility("signed-in");
      }
    });

    it("the refusal of HTTP reads does not stop delivery to every follower", async () => {
      const ctx = m.muster.federation.createContext(m.origin, undefined);
      const id = new URL(`/u/riders/test-fanout/${Date.now()}`, m.origin);
      await ctx.sendActivity({ identifier: "riders" }, "followers", new Create({
        id,
        actor: ctx.getActorUri("riders"),
        object: new Note({ id: new URL(`${id.href}/note`), attribution: ctx.getActorUri("riders"), content: "hello members", to: ctx.getFollowersUri("riders") }),
        to: ctx.getFollowersUri("riders"),
      }));
      await eventually(async () => peer.received.some((a) => a.id?.href === id.href), "the fan-out reached the members' server");
    });

    it("the join page states exactly who sees the roster and promises no rule the code does not enforce", async () => {
      const invite = await createInvite(m.muster.membership, unionId, { by: OPERATOR });
      for (const v of ["signed-in", "members", "public", "officers"] as const) {
        await setVisibility(v);
        const text = await (await fetch(url(`/u/riders/join/${invite.code}`))).text();
        assert.ok(text.includes(VISIBILITY_TEXT[v].replace(/'/g, "&#39;")), `join page states the ${v} rule`);
        assert.ok(!/dispute/i.test(text), "no promise about disputes");
      }
      await setVisibility("signed-in");
      assert.match(VISIBILITY_TEXT.members, /any account on such a server \(on a large server, that is everyone on it\)/);
    });

    it("browsers asking for the member list sign in first; signed in, a member sees the roster and the tree", async () => {
      const out = await unsigned("/u/riders/members", HTML);
      assert.equal(out.status, 303);
      assert.equal(out.headers.get("location"), "/u/riders/login");
      const cookie = await sessionCookie("bob");
      const res = await fetch(url("/u/riders/members"), { headers: { Accept: HTML, Cookie: cookie } });
      assert.equal(res.status, 200);
      assert.match(res.headers.get("content-type") ?? "", /text\/html/);
      assert.match(res.headers.get("cache-control") ?? "", /no-store/);
      const page = await res.text();
      for (const n of ["lead", "alice", "bob"]) assert.ok(page.includes(handleOf(n)), `lists ${n}`);
      assert.ok(!/dispute/i.test(page));
      // The member's own page promises nothing about disputes either.
      const me = await (await fetch(url("/u/riders/me"), { headers: { Cookie: cookie } })).text();
      assert.ok(me.includes(handleOf("alice")), "bob's page shows his sponsor chain");
      assert.ok(!/dispute/i.test(me));
      // The same URL still answers fediverse servers with the collection, and still wants a signature.
      assert.equal((await unsigned("/u/riders/members")).status, 401);
    });

    it("a member searches the list by handle (any case, a leading @, wildcards taken literally); the union's visibility still applies", async () => {
      const cookie = await sessionCookie("bob");
      const search = async (q: string, as = cookie) => fetch(url(`/u/riders/members?q=${encodeURIComponent(q)}`), { headers: { Accept: HTML, Cookie: as } });
      const rowsOf = (page: string) => [...page.matchAll(/<tr data-member="([^"]+)"/g)].map((r) => r[1]);
      const found = await search("ALI");
      assert.equal(found.status, 200);
      const page = await found.text();
      assert.deepEqual(rowsOf(page), [handleOf("alice")]);
      assert.match(page, /data-testid="search-count">1 of 3 matches\./);
      assert.deepEqual(rowsOf(await (await search(`@${handleOf("bob").replace(/^@/, "")}`)).text()), [handleOf("bob")]);
      for (const wildcard of ["%", "_", "\\"]) {
        const none = await (await search(wildcard)).text();
        assert.deepEqual(rowsOf(none), [], `${wildcard} matches no handle`);
        assert.match(none, /No member&#39;s handle contains/);
      }
      assert.equal(rowsOf(await (await search("   ")).text()).length, 3, "a blank search lists everyone");
      await setVisibility("officers");
      try {
        const refused = await search("ali");
        assert.equal(refused.status, 403, "searching does not get round the setting");
        assert.ok(!(await refused.text()).includes(handleOf("alice")));
        assert.deepEqual(rowsOf(await (await search("bo", await sessionCookie("alice"))).text()), [handleOf("bob")]);
      } finally {
        await setVisibility("signed-in");
      }
      const out = await fetch(url("/u/riders/members?q=ali"), { headers: { Accept: HTML }, redirect: "manual" });
      assert.equal(out.status, 303, "signed out, a search is sent to sign in first");
    });

    it("officers-only: a signed-in ordinary member is refused the page, an officer is shown it", async () => {
      await setVisibility("officers");
      try {
        const bob = await fetch(url("/u/riders/members"), { headers: { Accept: HTML, Cookie: await sessionCookie("bob") } });
        assert.equal(bob.status, 403);
        assert.match(await bob.text(), /The leader and officers only/);
        const alice = await fetch(url("/u/riders/members"), { headers: { Accept: HTML, Cookie: await sessionCookie("alice") } });
        assert.equal(alice.status, 200);
        assert.ok((await alice.text()).includes(handleOf("bob")));
      } finally {
        await setVisibility("signed-in");
      }
    });

    it("the console shows the setting, explained; it is a bylaw, so an officer's change is refused", async () => {
      const cookie = await sessionCookie("alice");
      const console = await (await fetch(url("/u/riders/console"), { headers: { Cookie: cookie } })).text();
      assert.ok(console.includes(VISIBILITY_TEXT["signed-in"].replace(/'/g, "&#39;")));
      // The sign-in page's no-referrer makes browsers send Origin: null; it passes only with Sec-Fetch-Site same-origin
      // (and then the domain refuses the bylaw change), otherwise the CSRF guard refuses first.
      for (const [headers, byDomain] of [[{ Origin: "null" }, false], [{ Origin: "null", "Sec-Fetch-Site": "cross-site" }, false], [{ Origin: "null", "Sec-Fetch-Site": "same-origin" }, true]] as const) {
        const res = await fetch(url("/u/riders/console/roster-visibility"), {
          method: "POST",
          headers: { "Content-Type": "application/x-www-form-urlencoded", Cookie: cookie, ...headers },
          body: new URLSearchParams({ visibility: "officers" }),
          redirect: "manual",
        });
        assert.equal(res.status, 403, JSON.stringify(headers));
        assert.equal(/is a bylaw/.test(await res.text()), byDomain, JSON.stringify(headers));
      }
      const refused = await fetch(url("/u/riders/console/roster-visibility"), {
        method: "POST",
        headers: { "Content-Type": "application/x-www-form-urlencoded", Origin: m.origin.origin, Cookie: cookie },
        body: new URLSearchParams({ visibility: "officers" }),
        redirect: "manual",
      });
      assert.equal(refused.status, 403);
      assert.match(await refused.text(), /membersVisibility is a bylaw/);
      assert.equal((await getUnionBySlug(m.muster.database.db, "riders"))?.membersVisibility, "signed-in", "nothing changed");
    });

    it("a public call-to-action tells a visitor how many committed, not how many members there are", async () => {
      await overrideBylaws(m.muster.unions, "riders", { actionsVisibility: "public" });
      try {
        const action = await composeAction(m.muster.membership, unionId, OPERATOR, { title: "Sign the petition", text: "Please sign." }, { publishNow: true });
        const visitor = await (await fetch(url(`/u/riders/actions/${action.id}`), { headers: { Accept: HTML } })).text();
        assert.match(visitor, /data-testid="commitments"/);
        assert.ok(!/data-testid="participation"/.test(visitor), "no share of members to a visitor");
        assert.ok(!/of 3 members/.test(visitor), "no member count to a visitor");
        const union = await (await fetch(url("/u/riders"), { headers: { Accept: HTML } })).text();
        assert.ok(!/max="3"/.test(union), "the union page's bar is not scaled to the membership");
        const member = await (await fetch(url(`/u/riders/actions/${action.id}`), { headers: { Accept: HTML, Cookie: await sessionCookie("bob") } })).text();
        assert.match(member, /of 3 members took part/, "a signed-in member sees the share");
      } finally {
        await overrideBylaws(m.muster.unions, "riders", { actionsVisibility: "members" });
      }
    });

    it("in Chromium, a member sent to sign in comes back to the member list, and sees the tree", { skip: browserSkip }, async () => {
      const ctx = await browser!.newContext();
      try {
        const page: Page = await ctx.newPage();
        await page.goto(url("/u/riders/members"));
        assert.equal(new URL(page.url()).pathname, "/u/riders/login");
        await signInByDm(page, fx, "bob", "/u/riders/members");
        assert.equal(await page.textContent("h1"), "Members of Riders United");
        assert.match(await page.textContent("[data-testid=visibility]") ?? "", /Members who sign in on the web/);
        assert.match(await page.textContent("[data-testid=member-count]") ?? "", /3 members/);
        const rows = await page.$$eval("[data-testid=roster] tbody tr", (trs) => trs.map((tr) => [...tr.querySelectorAll("td")].map((td) => td.textContent?.trim())));
        const bobRow = rows.find((r) => r[0] === handleOf("bob"));
        assert.equal(bobRow?.[2], handleOf("alice"), "bob's row names alice as his sponsor");
        assert.equal(rows.find((r) => r[0] === handleOf("alice"))?.[1], "Officer, Treasurer");
        // The tree nests bob under alice under lead.
        const nested = await page.$(`[data-testid=tree] li[data-member="${handleOf("lead")}"] li[data-member="${handleOf("alice")}"] li[data-member="${handleOf("bob")}"]`);
        assert.ok(nested, "bob sits under alice, under lead");
        // Opening alice's subtree stays on the members page.
        await page.click(`[data-testid=tree] li[data-member="${handleOf("alice")}"] > a`);
        assert.match(await page.textContent("#tree h2") ?? "", new RegExp(`Recruited under ${handleOf("alice").replace(/\./g, "\\.")}`));
        // Searching by handle, then opening that member's part of the tree from the result.
        await page.fill("[data-testid=member-search] input[name=q]", "ALICE");
        await Promise.all([page.waitForURL(/[?&]q=ALICE/), page.click("[data-testid=member-search] button[type=submit]")]);
        assert.deepEqual(await page.$$eval("[data-testid=roster] tbody tr", (trs) => trs.map((tr) => tr.getAttribute("data-member"))), [handleOf("alice")]);
        assert.match(await page.textContent("[data-testid=search-count]") ?? "", /1 of 3 matches/);
        assert.equal(await page.inputValue("[data-testid=member-search] input[name=q]"), "ALICE", "the search stays in the box");
        for (const width of [1280, 390]) {
          await page.setViewportSize({ width, height: 900 });
          assert.equal(await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth), 0, `the search result fits ${width} px`);
        }
        await page.click(`[data-testid=roster] tr[data-member="${handleOf("alice")}"] a`);
        assert.match(await page.textContent("#tree h2") ?? "", new RegExp(`Recruited under ${handleOf("alice").replace(/\./g, "\\.")}`));
        assert.equal(await page.locator(`[data-testid=tree] li[data-member="${handleOf("alice")}"] li[data-member="${handleOf("bob")}"]`).count(), 1);
        // From the member's own page, the account bar links here.
        await page.goto(url("/u/riders/me"));
        await Promise.all([page.waitForURL(url("/u/riders/members")), page.click("[data-testid=members-link]")]);
      } finally {
        await ctx.close();
      }
    });
  });
}
