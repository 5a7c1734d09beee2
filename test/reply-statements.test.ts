import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import pg from "pg";
import type { HttpMessageSignaturesSpec } from "@fedify/fedify";
import { composeAction } from "../src/actions/actions.ts";
import { sharesRoundTrip } from "../src/db/pipeline.ts";
import { OPERATOR } from "../src/members/members.ts";
import type { Union } from "../src/unions/unions.ts";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { eventually, makeUnion, startMuster, type TestMuster } from "./helpers/muster.ts";
import { type Peer, startPeer } from "./helpers/peer.ts";
import { joinAsRemoteMember } from "./helpers/remote-member.ts";
import { onSqliteStatement } from "./helpers/sqlite-statements.ts";

/*
 * What a member's reply costs the worker that handles it through Fedify's
 * path (issue 16: replies within 2 s under a fan-out on PostgreSQL, where
 * each round trip waited 100-600 ms for a core): the statements from the
 * signed POST until the reply is recorded as processed, Fedify's own queue
 * and key tables aside. The member is read once (not again by the partner
 * check nor by the response's record), the call and the membership in one
 * statement, the union not read again, and the comment and the commitment
 * written in one transaction.
 */

const CAVAGE: HttpMessageSignaturesSpec = "draft-cavage-http-signatures-12";

/** Statements (PostgreSQL: round trips) this process runs on Muster's own tables while `counting`, by text. */
const seen: string[] = [];
let counting = false;
// A BEGIN counts: on PostgreSQL it is the round trip its transaction's first statement travels in (database.ts).
// pg_notify wakes the queue's listeners (a count that varies with their timing).
const ours = (text: string) => !/fedify_|pg_notify/i.test(text);
function countStatements(): void {
  onSqliteStatement((text) => {
    if (counting && ours(text)) seen.push(text);
  });
  const query = pg.Client.prototype.query as (...args: unknown[]) => unknown;
  // Whether the round trip of the pipeline being written was counted (its statements are written synchronously, one after another).
  let headCounted = false;
  // Whether the round trip being written is the queue's claim (its statements are not fedify_-named throughout).
  let queueClaim = false;
  pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
    const first = args[0];
    const text = (typeof first === "string" ? first : (first as { text?: string } | null)?.text ?? "?").replace(/\s+/g, " ").trim();
    if (counting) {
      // A statement pipelined after another shares its round trip (src/db/pipeline.ts): one entry, as a BEGIN's with its first statement.
      if (!sharesRoundTrip(first)) {
        queueClaim = false;
        headCounted = ours(text);
        if (headCounted) seen.push(text);
      } else if (/plan_cache_mode/.test(text)) {
        // The queue's claim on its generic plan (executeGenericPlanned): BEGIN, this setting, the claim, COMMIT in one
        // round trip. The queue's, not the reply's: its BEGIN is taken back and the rest of its round trip is not counted.
        if (headCounted && seen[seen.length - 1] === "begin") seen.pop();
        headCounted = false;
        queueClaim = true;
      } else if (queueClaim) {
        // the claim's own statements (above)
      } else if (ours(text)) {
        if (headCounted) seen[seen.length - 1] = seen[seen.length - 1] === "begin" ? `begin; ${text}` : `${seen[seen.length - 1]}; ${text}`;
        else seen.push(text);
        headCounted = true;
      }
    }
    return query.apply(this, args);
  } as typeof pg.Client.prototype.query;
}
countStatements();

for (const d of dialects) {
  describe(`a member's reply through Fedify's inbox path, on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    let m: TestMuster;
    let peer: Peer;
    let riders: Union;
    let noteId: string;
    const db = () => m.muster.database.db;
    before(async () => {
      tdb = await d.create();
      // Every inbox POST through Fedify and the queue (no fast path); no scheduler runs during the test.
      m = await startMuster(tdb, { schedulerIntervalMs: 3_600_000, muster: { fastInbox: false, queue: { pollIntervalMs: 50 } } });
      peer = await startPeer(["ann", "ben", "cy"]);
      riders = await makeUnion(m, "riders", { joinPolicy: "open", leaderHandle: null });
      for (const name of ["ann", "ben", "cy"]) {
        const id = await joinAsRemoteMember(m.muster.membership, riders.id, peer.origin, name, null);
        assert.equal(id, peer.actorId(name).href);
      }
      const action = await composeAction(m.muster.membership, riders.id, OPERATOR, { title: "Picket", text: "Gate 3, 7am.", kind: "show-up" }, { publishNow: true });
      noteId = new URL(`/u/riders/actions/${action.id}`, m.origin).href;
      await eventually(async () => {
        const r = await db().selectFrom("fedify_mq").select((e) => e.fn.countAll<number>().as("n")).where("queue", "in", ["inbox", "outbox", "fanout", "delivery", "domain"]).executeTakeFirstOrThrow();
        return Number(r.n) === 0;
      }, "queues empty", 30_000);
    });
    after(async () => {
      await m?.stop();
      await peer?.close();
      await tdb?.destroy();
    });

    async function reply(name: string, html: string): Promise<{ id: string; statements: string[] }> {
      const actor = peer.actorId(name).href;
      const id = `${actor}/statuses/${crypto.randomUUID()}`;
      const body = JSON.stringify({
        "@context": "https://www.w3.org/ns/activitystreams",
        id: `${id}/activity`, type: "Create", actor,
        to: ["https://www.w3.org/ns/activitystreams#Public"], cc: [new URL("/u/riders", m.origin).href],
        object: { id, type: "Note", attributedTo: actor, inReplyTo: noteId, content: html, to: ["https://www.w3.org/ns/activitystreams#Public"] },
      });
      return { id, statements: await post(name, `${id}/activity`, body) };
    }

    /** POSTs `body` signed by `name` to the union's inbox; the statements (ours) until `activityId` is processed. */
    async function post(name: string, activityId: string, body: string): Promise<string[]> {
      const to = new URL("/u/riders/inbox", m.origin);
      const signed = await peer.signedPost(to, body, { as: name, spec: CAVAGE });
      const done = new Promise<void>((resolve) => {
        const on = (e: { activityId: string }) => {
          if (e.activityId !== activityId) return;
          m.muster.events.off("activity.received", on);
          resolve();
        };
        m.muster.events.on("activity.received", on);
      });
      seen.length = 0;
      counting = true;
      try {
        const res = await fetch(to, { method: "POST", headers: new Headers(signed.headers), body });
        assert.equal(res.status, 202);
        await Promise.race([done, new Promise((_, reject) => setTimeout(() => reject(new Error(`${activityId} not processed`)), 15_000).unref())]);
      } finally {
        counting = false;
      }
      // A transaction left empty by the filter is the queue's (Fedify's tables only).
      const statements: string[] = [];
      for (const s of seen) {
        if (/^commit$/i.test(s) && /^begin( immediate)?$/i.test(statements[statements.length - 1] ?? "")) statements.pop();
        else statements.push(s);
      }
      return statements;
    }

    /** A signed Like of the call by `name`, POSTed and handled through Fedify's path; the statements it cost (as reply's). */
    async function like(name: string): Promise<{ id: string; statements: string[] }> {
      const actor = peer.actorId(name).href;
      const id = `${actor}#likes/${crypto.randomUUID()}`;
      const body = JSON.stringify({ "@context": "https://www.w3.org/ns/activitystreams", id, type: "Like", actor, object: noteId });
      return { id, statements: await post(name, id, body) };
    }

    const responses = (sourceId: string) => db().selectFrom("action_responses").select(["kind", "content"]).where("source_id", "=", sourceId).orderBy("kind").execute();

    it("counts a pledging reply as a comment and a commitment in 12 round trips on PostgreSQL (17 before), 16 statements on SQLite (22)", async () => {
      const events: string[] = [];
      const onResponse = (e: { kind: string }) => events.push(e.kind);
      m.muster.events.on("action.response", onResponse);
      try {
        await reply("ann", "<p>what time?</p>"); // the process's first reply warms what is read once
        // Its response's chapter report is queued a second later (main.ts, reportChapterTotals): not the reply's work.
        await new Promise((r) => setTimeout(r, 1_500));
        events.length = 0;
        const { id, statements: all } = await reply("ben", "<p>I'm in!</p>");
        // The worker's handler: from onCreate's read of the sender's memberships (the web's guard read them before) to the record as processed.
        const claimAt = all.findIndex((s) => s.startsWith("insert into inbox_claims"));
        const start = all.slice(0, claimAt).findLastIndex((s) => /^select "union_id".* from "members" where "actor_id"/.test(s));
        const end = all.findIndex((s) => /insert into "?inbox_activities"? \(id|^with recorded as|^insert into "inbox_activities"/.test(s));
        assert.ok(claimAt > 0 && start >= 0 && end > claimAt, all.join("\n"));
        const statements = all.slice(start, /^begin immediate$/.test(all[end - 1] ?? "") ? end + 3 : end + 1);
        assert.deepEqual((await responses(id)).map((r) => r.kind), ["comment", "commit"]);
        assert.deepEqual(events, ["comment", "commit"], "each event once, after its commit, comment first");
        const firstWrite = statements.findIndex((s) => /^(begin; )?insert into "action_responses"/.test(s));
        const processed = statements.findIndex((s) => /^with recorded as|^insert into "inbox_activities"/.test(s));
        const transactions = statements.slice(firstWrite, processed).filter((s) => /^commit$/i.test(s)).length;
        const unionReads = statements.filter((s) => /from "unions"/.test(s)).length;
        const memberReads = statements.filter((s) => /^select .* from "members"/.test(s) || /from "members" where/.test(s)).length;
        const report = `${statements.length} statements:\n${statements.join("\n")}`;
        assert.equal(unionReads, 1, `the union read once, by actionNamed: ${report}`);
        assert.equal(memberReads, 2, `the member read by onCreate and, with the call, by the response's record only: ${report}`);
        assert.ok(firstWrite >= 0 && processed > firstWrite, report);
        assert.equal(transactions, 1, `the comment and the commitment in one transaction: ${report}`);
        // 17 round trips on PostgreSQL and 22 statements on SQLite before; on PostgreSQL a BEGIN travels with its first statement.
        assert.ok(statements.length <= (d.name === "postgres" ? 12 : 16), report);
      } finally {
        m.muster.events.off("action.response", onResponse);
      }
    });

    it("counts a member's Like in 11 round trips on PostgreSQL (12 before), 15 statements on SQLite (16): the partner check reads the memberships once, no repeat check", async () => {
      await like("ann"); // the process's first Like warms what is read once
      await new Promise((r) => setTimeout(r, 1_500));
      const { id, statements: all } = await like("cy");
      // The worker's handler: from actionNamed's read of the call's union to the record as processed.
      const claimAt = all.findIndex((s) => s.startsWith("insert into inbox_claims"));
      const start = all.slice(0, claimAt).findLastIndex((s) => /^select \* from "unions" where "slug"/.test(s));
      const end = all.findIndex((s) => /insert into "?inbox_activities"? \(id|^with recorded as|^insert into "inbox_activities"/.test(s));
      assert.ok(claimAt > 0 && start >= 0 && end > claimAt, all.join("\n"));
      const statements = all.slice(start, /^begin immediate$/.test(all[end - 1] ?? "") ? end + 3 : end + 1);
      const report = `${statements.length} statements:\n${statements.join("\n")}`;
      const kinds = await db().selectFrom("action_responses").select(["kind", "source"]).where("source_id", "=", id).execute();
      assert.deepEqual(kinds, [{ kind: "commit", source: "like" }]);
      const beforeClaim = statements.slice(0, statements.findIndex((s) => s.startsWith("insert into inbox_claims")));
      // Before: a repeat check (inbox_activities by id) and a member lookup by union and actor, each its own statement.
      assert.deepEqual(beforeClaim.filter((s) => /from "(members|inbox_activities)"/.test(s)), [beforeClaim.find((s) => /^select "union_id", "state" from "members" where "actor_id"/.test(s))], `vouchedBy's one read, the sender's memberships: ${report}`);
      assert.ok(statements.length <= (d.name === "postgres" ? 11 : 15), report);
    });
  });
}
