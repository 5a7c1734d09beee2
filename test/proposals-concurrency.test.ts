import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { followId, LEADER, person, sharedKeys, withCtx, type Ctx } from "./helpers/domain-context.ts";
import { makeUnion, startMuster, type TestMuster } from "./helpers/muster.ts";
import { changeBylaws } from "../src/bylaws/bylaws.ts";
import { castVote, createProposal, type Proposal, tallyOf, YES, NO } from "../src/bylaws/proposals.ts";
import { createUnion, type Union } from "../src/unions/unions.ts";
import { type Member, OPERATOR } from "../src/members/members.ts";
import { requestToJoin } from "../src/members/membership.ts";
import { requestLogin, signInWithCode } from "../src/sessions/sessions.ts";
import { chainOf, verifyChain } from "../src/actions/chain.ts";

/*
 * Ballots join the union's hash chain, so votes saved at the same instant
 * must take its positions one after another. Before castVote locked the
 * chain, on PostgreSQL most of a burst collided on the chain's (union, n)
 * key: a web voter got an error page and a poll answer went back to the
 * queue. (SQLite serialises write transactions, so it passed there.)
 */

const N = 24;

for (const d of dialects) {
  describe(`votes at the same instant on ${d.name}`, { skip: d.skip }, () => {
    it("web votes and poll answers cast at once all count, and the chain verifies", () => withCtx(d, async (c: Ctx) => {
      const union = await createUnion({ db: c.db, events: c.deps.events, generateKeys: sharedKeys }, { slug: "riders", name: "Riders", purpose: "Fair pay", leaderHandle: LEADER.handle, joinPolicy: "open" });
      await changeBylaws(c.deps, union.id, { kind: "operator", reason: "test" }, { params: { quorumPercent: 0 } });
      const members: Member[] = [];
      for (let i = 0; i < N; i++) members.push((await requestToJoin(c.deps, union.id, person(`m${i}`), followId())).member);
      await new Promise((r) => setTimeout(r, 5));
      const p = await createProposal(c.deps, union.id, OPERATOR, { kind: "resolution", title: "Strike", closesAt: new Date(Date.now() + 60_000) });
      // A second pool too, as a worker process beside the web server would have.
      const other = c.tdb.open();
      try {
        const results = await Promise.allSettled(members.map((m, i) => i % 2 === 0
          ? castVote(c.deps, union.id, p.id, { memberId: m.id }, [YES], { kind: "web" })
          : castVote({ ...c.deps, db: other.db }, union.id, p.id, { actorId: person(`m${i}`).actorId }, [NO], { kind: "activity", id: `https://remote.example/votes/${i}` })));
        const failed = results.flatMap((r) => r.status === "rejected" ? [String(r.reason).slice(0, 160)] : r.value.counted ? [] : [r.value.reason]);
        assert.deepEqual(failed, [], "every vote counted");
      } finally {
        await other.close();
      }
      const t = await tallyOf(c.db, p);
      assert.equal(t.voters, N);
      assert.deepEqual(t.options.map((o) => o.direct), [N / 2, N / 2, 0]);
      const report = await verifyChain(c.db, union.id);
      assert.ok(report.ok, JSON.stringify(report.breaks));
      assert.equal((await chainOf(c.db, union.id)).filter((e) => e.event === "ballot").length, N);
    }));

    describe("over HTTP", () => {
      let tdb: TestDatabase;
      let m: TestMuster;
      let union: Union;
      const db = () => m.muster.database.db;

      before(async () => {
        tdb = await d.create();
        // The test's fetch goes through the dispatcher Muster installs for its own outgoing requests (10 s to the
        // first header by default); under this machine's load the last of 24 votes taking their turn waited longer.
        m = await startMuster(tdb, { env: { MUSTER_HTTP_TIMEOUT_MS: "180000" } });
        union = await makeUnion(m, "riders", { joinPolicy: "open" });
      });
      after(async () => {
        await m?.stop();
        await tdb?.destroy();
      });

      it("members voting on the web at the same instant each get their confirmation, never an error page", async () => {
        const deps = m.muster.membership;
        const members: Member[] = [];
        for (let i = 0; i < N; i++) members.push((await requestToJoin(deps, union.id, person(`w${i}`), followId())).member);
        await new Promise((r) => setTimeout(r, 5));
        // Signed in through the domain (the DM that carries the link is not the point here).
        const cookies: string[] = [];
        for (const [i, mem] of members.entries()) {
          let code = "";
          const silent = { add: async () => {} };
          await requestLogin({ db: db(), outbox: silent }, { unionId: union.id, handle: mem.handle!, client: `test-${i}`, linkFor: (k) => (code = k) });
          const r = await signInWithCode(db(), union.id, code, `test-${i}`);
          assert.ok(r.ok);
          cookies.push(`muster_session=${r.token}`);
        }
        const p: Proposal = await createProposal(deps, union.id, OPERATOR, { kind: "resolution", title: "Walk out at noon", closesAt: new Date(Date.now() + 120_000) });
        const url = new URL(`/u/riders/proposals/${p.number}/vote`, m.origin);
        const responses = await Promise.all(cookies.map(async (cookie, i) => {
          const res = await fetch(url, {
            method: "POST",
            headers: { "Content-Type": "application/x-www-form-urlencoded", Origin: m.origin.origin, Cookie: cookie },
            body: new URLSearchParams({ option: i % 3 === 0 ? NO : YES }),
            redirect: "manual",
          });
          return { status: res.status, location: res.headers.get("location"), body: res.status === 303 ? "" : (await res.text()).slice(0, 300) };
        }));
        assert.deepEqual(responses.filter((r) => r.status !== 303), [], "no error page");
        assert.ok(responses.every((r) => r.location === `/u/riders/proposals/${p.number}?done=voted`));
        const t = await tallyOf(db(), p);
        assert.equal(t.voters, N);
        assert.deepEqual(t.options.map((o) => o.direct), [N - N / 3, N / 3, 0]);
        const report = await verifyChain(db(), union.id);
        assert.ok(report.ok, JSON.stringify(report.breaks));
      });
    });
  });
}
