import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Accept } from "@fedify/vocab";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { makeUnion, startMuster, type TestMuster } from "./helpers/muster.ts";
import { unionWithPeer } from "./helpers/union-with-peer.ts";
import { composeAction } from "../src/actions/actions.ts";
import { OPERATOR } from "../src/members/members.ts";
import { createInvite } from "../src/members/invites.ts";
import { followLinkFrom } from "../federation/remote-follow.ts";

// The small holes found when the server was probed from outside: headers,
// CSRF on non-form bodies, paging parameters, an open redirect, an unlimited
// join form, an unescaped Group summary, NodeInfo constants.

describe("the remote-follow link", () => {
  const target = new URL("https://muster.example/u/riders");
  const jrd = (template: string, self = "https://social.example/users/ana") => ({
    links: [
      { rel: "self", href: self },
      { rel: "http://ostatus.org/schema/1.0/subscribe", template },
    ],
  });

  it("goes to the account's own server only", () => {
    assert.equal(
      followLinkFrom(jrd("https://social.example/authorize_interaction?uri={uri}"), "@ana@social.example", target),
      `https://social.example/authorize_interaction?uri=${encodeURIComponent(target.href)}`,
    );
    // A handle on example.org whose account lives on social.example (WebFinger delegation) may go there.
    assert.ok(followLinkFrom(jrd("https://social.example/authorize_interaction?uri={uri}"), "@ana@example.org", target));
    assert.equal(followLinkFrom(jrd("https://evil.example/phish?u={uri}"), "@ana@social.example", target), undefined);
    assert.equal(followLinkFrom(jrd("https://social.example.evil.example/x?u={uri}"), "@ana@social.example", target), undefined);
    assert.equal(followLinkFrom(jrd("javascript:alert(1)//{uri}"), "@ana@social.example", target), undefined);
  });
});

for (const d of dialects) {
  describe(`web hardening on ${d.name}`, { skip: d.skip }, () => {
    const fx = unionWithPeer(d, { actors: ["lead"], joinPolicy: "approval" });
    let m: TestMuster;
    let unionId: string;
    let cookie = "";
    let httpsDb: TestDatabase;
    let https: TestMuster;

    before(async () => {
      ({ m, unionId } = await fx.start());
      await fx.answerTo(await fx.follow("lead"), Accept);
      const form = (path: string, fields: Record<string, string>) =>
        fetch(fx.url(path), { method: "POST", headers: { Origin: m.origin.origin }, body: new URLSearchParams(fields), redirect: "manual" });
      assert.equal((await form("/u/riders/login", { handle: fx.handleOf("lead") })).status, 200);
      const res = await form(`/u/riders/login/${await fx.newLoginCode("lead")}`, {});
      cookie = /^(muster_session=[^;]*)/.exec(res.headers.get("set-cookie") ?? "")?.[1] ?? "";
      assert.ok(cookie, "signed in");
      httpsDb = await d.create();
      https = await startMuster(httpsDb, { env: { ORIGIN: "https://muster.example" } });
    });
    after(async () => {
      await https?.stop();
      await httpsDb?.destroy();
      await fx.stop();
    });

    it("public pages and the setup and join forms send CSP, X-Frame-Options and nosniff; HSTS only behind https", async () => {
      const invite = await createInvite(m.muster.membership, unionId, { by: OPERATOR, maxUses: 1 });
      for (const path of ["/", "/u/riders", `/u/riders/join/${invite.code}`, "/public/style.css", "/u/riders/login"]) {
        const res = await fetch(fx.url(path), { headers: { Accept: "text/html" } });
        assert.equal(res.status, 200, path);
        assert.match(res.headers.get("content-security-policy") ?? "", /frame-ancestors 'none'/, path);
        assert.match(res.headers.get("content-security-policy") ?? "", /script-src 'self'|script-src 'none'/, path);
        assert.equal(res.headers.get("x-frame-options"), "DENY", path);
        assert.equal(res.headers.get("x-content-type-options"), "nosniff", path);
        assert.equal(res.headers.get("strict-transport-security"), null, `${path}: no HSTS on an http origin`);
      }
      const secure = await fetch(new URL("/", https.server.url));
      assert.match(secure.headers.get("strict-transport-security") ?? "", /max-age=\d{7,}/);
    });

    it("refuses a JSON POST with a session and no Origin; Sec-Fetch-Site same-origin passes the guard", async () => {
      const count = async () => (await fx.db().selectFrom("invites").select("id").execute()).length;
      const before = await count();
      const json = (headers: Record<string, string>) => fetch(fx.url("/u/riders/console/invites"), {
        method: "POST",
        headers: { Cookie: cookie, "Content-Type": "application/json", ...headers },
        body: JSON.stringify({ uses: "1", expires: "7" }),
        redirect: "manual",
      });
      for (const headers of [{}, { "Sec-Fetch-Site": "cross-site" }, { Origin: "http://evil.example" }] as Record<string, string>[]) {
        const res = await json(headers);
        assert.equal(res.status, 403, JSON.stringify(headers));
      }
      assert.equal(await count(), before, "no invite was created");
      assert.notEqual((await json({ "Sec-Fetch-Site": "same-origin" })).status, 403);
    });

    it("answers 400, not 500, to console page numbers that are not page numbers", async () => {
      for (const page of ["1e309", "-1", "2.5", "x", "99999999999"]) {
        const res = await fetch(fx.url(`/u/riders/console?page=${encodeURIComponent(page)}`), { headers: { Cookie: cookie } });
        assert.equal(res.status, 400, page);
      }
      assert.equal((await fetch(fx.url("/u/riders/console?page=2"), { headers: { Cookie: cookie } })).status, 200);
    });

    it("limits join attempts per client: 429 with Retry-After, and no claim recorded past the limit", async () => {
      const invite = await createInvite(m.muster.membership, unionId, { by: OPERATOR, maxUses: 100 });
      const claims = async () => (await fx.db().selectFrom("join_claims").select("id").execute()).length;
      const statuses: number[] = [];
      let last: Response | undefined;
      for (let i = 0; i < 12; i++) {
        last = await fetch(fx.url(`/u/riders/join/${invite.code}`), {
          method: "POST",
          body: new URLSearchParams({ handle: `@nobody${i}@${fx.host()}` }),
          redirect: "manual",
        });
        statuses.push(last.status);
      }
      assert.ok(statuses.slice(0, 10).every((s) => s !== 429), statuses.join(","));
      assert.deepEqual(statuses.slice(10), [429, 429]);
      assert.match(last!.headers.get("retry-after") ?? "", /^\d+$/);
      const before = await claims();
      await fetch(fx.url(`/u/riders/join/${invite.code}`), { method: "POST", body: new URLSearchParams({ handle: `@late@${fx.host()}` }) });
      assert.equal(await claims(), before);
    });

    it("escapes the purpose in the Group's HTML summary", async () => {
      await makeUnion(m, "tricky", { purpose: `<img src=x onerror=alert(1)> & "fair" pay` });
      const res = await fetch(fx.url("/u/tricky"), { headers: { Accept: "application/activity+json" } });
      const group = await res.json() as { summary: string };
      assert.equal(group.summary, "&lt;img src=x onerror=alert(1)&gt; &amp; &quot;fair&quot; pay");
    });

    it("NodeInfo counts unions, active unions and published calls-to-action from the database", async () => {
      // NodeInfo's counts are served from the read cache for up to a minute (src/http/read-cache.ts); each read
      // here starts from a cleared cache, so it shows what the database holds now.
      const nodeinfo = async () => {
        m.muster.readCache.clear();
        return (await (await fetch(fx.url("/nodeinfo/2.1"))).json()) as { usage: { users: Record<string, number>; localPosts: number } };
      };
      const before = await nodeinfo();
      await composeAction(m.muster.membership, unionId, OPERATOR, { title: "Strike", text: "Friday at noon.", kind: "show-up" }, { publishNow: true });
      await composeAction(m.muster.membership, unionId, OPERATOR, { title: "Later", text: "Queued, not published.", kind: "show-up" });
      const now = await nodeinfo();
      const unions = (await fx.db().selectFrom("unions").select("id").execute()).length;
      assert.equal(now.usage.users.total, unions);
      assert.equal(now.usage.localPosts, before.usage.localPosts + 1);
      assert.equal(now.usage.users.activeMonth, unions, "every union here was created this month");
      // Age one union past six months: it is active only through the call it published.
      await fx.db().updateTable("unions").set({ created_at: Date.now() - 400 * 86_400_000 }).execute();
      await fx.db().updateTable("actions").set({ published_at: Date.now() - 60 * 86_400_000 }).where("union_id", "=", unionId).execute();
      const aged = await nodeinfo();
      assert.equal(aged.usage.users.activeMonth, 0);
      assert.equal(aged.usage.users.activeHalfyear, 1);
    });
  });
}
