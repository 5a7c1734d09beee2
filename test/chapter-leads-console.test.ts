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

// The console's "Chapter leads" section, over real HTTP (no browser on every
// machine; the layout at 1280/390 px is covered by relationships-web in
// Chromium): a chapter on another Muster server, led by the peer's gus,
// reports up; the parent's leader signs in by DM and sees gus as a chapter lead.

for (const d of dialects) {
  describe(`the console's chapter leads, on ${d.name}`, { skip: d.skip }, () => {
    const fx = unionWithPeer(d, { actors: ["lead", "gus"], joinPolicy: "approval" });
    let tdb: TestDatabase;
    let other: TestMuster;
    let cookie = "";

    before(async () => {
      await fx.start();
      await fx.answerTo(await fx.follow("lead"), Accept);
      tdb = await d.create();
      other = await startMuster(tdb);
    });
    after(async () => {
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
  });
}
