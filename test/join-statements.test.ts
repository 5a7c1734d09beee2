import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import type { HttpMessageSignaturesSpec } from "@fedify/fedify";
import type { Union } from "../src/unions/unions.ts";
import { findMemberByActor } from "../src/members/members.ts";
import { recordUnclaimedFollow } from "../federation/follow-fast-path.ts";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { makeUnion, startMuster, type TestMuster } from "./helpers/muster.ts";
import { type Peer, startPeer } from "./helpers/peer.ts";
import { onSqliteStatement } from "./helpers/sqlite-statements.ts";

/*
 * What a join costs SQLite (issue 16, joins per second): the statements the
 * follow's fast path runs for one plain Follow of an open union, up to its
 * 202. Its Accept and welcome rows go in with one INSERT, the union is not
 * "locked" by a read SQLite does not need (a write transaction already holds
 * the only write lock), and the Follow's record checks Fedify's claim on it
 * in the same statement.
 */

const CAVAGE: HttpMessageSignaturesSpec = "draft-cavage-http-signatures-12";

/** Every statement better-sqlite3 runs in this process while `counting` is on, by text. */
const counts = new Map<string, number>();
let counting = false;
function countStatements(): void {
  onSqliteStatement((key) => {
    if (counting) counts.set(key, (counts.get(key) ?? 0) + 1);
  });
}

describe("the statements of one join on sqlite", { skip: dialects.find((d) => d.name === "sqlite")?.skip }, () => {
  let tdb: TestDatabase;
  let m: TestMuster;
  let peer: Peer;
  let riders: Union;
  before(async () => {
    countStatements();
    tdb = await dialects.find((d) => d.name === "sqlite")!.create();
    // No queue: only the Follow's request runs statements.
    m = await startMuster(tdb, { worker: false });
    peer = await startPeer(["ann", "ben"]);
    riders = await makeUnion(m, "riders", { joinPolicy: "open", leaderHandle: "@lead@leader.invalid" });
  });
  after(async () => {
    await m?.stop();
    await peer?.close();
    await tdb?.destroy();
  });

  async function join(name: string): Promise<Map<string, number>> {
    const actor = peer.actorId(name).href;
    const body = JSON.stringify({ "@context": "https://www.w3.org/ns/activitystreams", id: `${actor}/follows/${crypto.randomUUID()}`, type: "Follow", actor, object: new URL("/u/riders", m.origin).href });
    const to = new URL("/u/riders/inbox", m.origin);
    const signed = await peer.signedPost(to, body, { as: name, spec: CAVAGE });
    counts.clear();
    counting = true;
    try {
      const res = await fetch(to, { method: "POST", headers: new Headers(signed.headers), body });
      assert.equal(res.status, 202);
    } finally {
      counting = false;
    }
    assert.equal((await findMemberByActor(m.muster.database.db, riders.id, actor))?.state, "active", `${name} joined before the 202`);
    return new Map(counts);
  }

  it("one INSERT for the Accept's and the welcome's queue rows, no union-lock read, and at most 17 statements", async () => {
    await join("ann"); // the first join of the process prepares its statements
    const seen = await join("ben");
    const total = [...seen.values()].reduce((a, b) => a + b, 0);
    const of = (prefix: string) => [...seen].filter(([text]) => text.startsWith(prefix)).reduce((n, [, c]) => n + c, 0);
    assert.equal(of('insert into "fedify_mq"'), 1, "the Accept and the welcome in one INSERT");
    assert.equal(of('select "id" from "unions" where "id" = ?'), 0, "no read standing in for a lock SQLite does not have");
    assert.equal(of('select "id" from "inbox_claims"'), 0, "Fedify's claim checked by the Follow's record itself");
    assert.ok(total <= 17, `${total} statements for a join (20 before): ${JSON.stringify([...seen])}`);
    // One row for both, the Accept first, the welcome after it (direct-send.ts, joinedDelivery).
    const rows = await m.muster.database.db.selectFrom("fedify_mq").select(["id", "message", "ordering_key"]).where("queue", "=", "outbox").where("message", "like", `%${peer.actorId("ben").href}%`).orderBy("id").execute();
    assert.deepEqual(rows.map((r) => JSON.parse(r.message) as { activity: { type: string }; musterThen: { activity: { type: string } }[] }).map((m) => [m.activity.type, ...m.musterThen.map((p) => p.activity.type)]), [["Accept", "Create"]]);
  });
});

for (const d of dialects) {
  describe(`the Follow's record with Fedify's claim check, on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    let db: ReturnType<TestDatabase["open"]>;
    before(async () => {
      tdb = await d.create();
      db = tdb.open();
    });
    after(async () => {
      await db?.close();
      await tdb?.destroy();
    });
    const recorded = async (id: string) => (await db.db.selectFrom("inbox_activities").select("id").where("id", "=", id).execute()).length;

    it("records a new id once, and nothing for an id Fedify's path holds a live claim on", async () => {
      const now = Date.now();
      const r = (id: string, at = now) => recordUnclaimedFollow(db.db, id, "https://peer.example/users/a", null as never, at).then((x) => Number(x.numAffectedRows ?? 0n));
      assert.equal(await r("https://peer.example/f/1"), 1);
      assert.equal(await recorded("https://peer.example/f/1"), 1);
      assert.equal(await r("https://peer.example/f/1"), 0, "a repeat writes nothing");
      await db.db.insertInto("inbox_claims").values({ id: "https://peer.example/f/2", claimed_until: now + 60_000 }).execute();
      assert.equal(await r("https://peer.example/f/2"), 0, "claimed by Fedify's path");
      assert.equal(await recorded("https://peer.example/f/2"), 0);
      await db.db.insertInto("inbox_claims").values({ id: "https://peer.example/f/3", claimed_until: now - 1 }).execute();
      assert.equal(await r("https://peer.example/f/3"), 1, "a lapsed claim does not hold it");
    });
  });
}
