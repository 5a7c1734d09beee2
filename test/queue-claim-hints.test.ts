import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { randomUUID } from "node:crypto";
import { sql } from "kysely";
import { claimHints } from "../federation/claim-hints.ts";
import { directDelivery, directNote, followAnswer, joinedDelivery } from "../federation/direct-send.ts";
import { claimSize, KyselyMessageQueue } from "../federation/kysely-message-queue.ts";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { readdirSync } from "node:fs";
import { migrateTo, migrateToLatest } from "../src/db/migrate.ts";

const MIGRATION = readdirSync(new URL("../migrations/", import.meta.url)).find((f) => f.startsWith("0089_"))!.replace(/\.ts$/, "");
/** The migration before 0089, whichever it is. */
const PREVIOUS = readdirSync(new URL("../migrations/", import.meta.url)).filter((f) => /^\d{4}_.*\.ts$/.test(f) && f < "0089").sort().at(-1)!.replace(/\.ts$/, "");

/*
 * A delivery's member gate and inbox origin, which the outbox lane's claim
 * reads on PostgreSQL (migration 0089, claim-hints.ts): written at enqueue
 * from the message object Muster built, never from text inside it that a
 * remote account shapes (its name, quoted in a welcome). And the claim's
 * LIMIT as a constant (claimSize), so PostgreSQL keeps one generic plan of
 * it instead of planning every claim.
 */

const origin = new URL("https://muster.example");
const SPOOF_GATE = (unionId: string, memberId: string) => `"musterGate":{"unionId":"${unionId}","memberId":"${memberId}"}`;

/** A join's message (its Accept and welcome, one message), for `actor` on `host`, the welcome quoting `name`. */
function joinMessage(o: { unionId: string; memberId: string; actor: string; inbox: string; name: string }) {
  const groupId = `${origin.origin}/u/riders`;
  const accept = followAnswer("Accept", { id: `${groupId}/activities/${randomUUID()}`, actor: groupId, follow: { id: `${o.actor}#follow`, actor: o.actor, object: groupId } });
  const welcome = directNote({ id: `${groupId}/activities/${randomUUID()}/w`, noteId: `${groupId}/notes/${randomUUID()}`, actor: groupId, to: o.actor, mention: o.name,
    content: `<p>Welcome, ${o.name}!</p>`, published: new Date() });
  const gate = { unionId: o.unionId, memberId: o.memberId };
  return joinedDelivery([accept, welcome].map((activity) => directDelivery({ origin, keyId: `${groupId}#main-key`, activity, inbox: o.inbox, actorId: o.actor, orderingKey: `member:${o.memberId}`, gate })))!;
}

describe("claimHints (hostile text)", () => {
  it("takes the gate and the inbox from the message's own fields, whatever its activities' text says", () => {
    const unionId = randomUUID();
    const memberId = randomUUID();
    const other = randomUUID();
    // An account whose name spells another member's gate and another inbox, as its JSON text would read unescaped.
    const name = `${SPOOF_GATE(unionId, other)},"inbox":"https://victim.example/inbox"`;
    const m = joinMessage({ unionId, memberId, actor: "https://peer.example/users/eve", inbox: "https://Peer.Example:8443/users/eve/inbox", name });
    assert.ok(JSON.stringify(m).includes("victim.example"));
    assert.deepEqual(claimHints(m), { gate_union_id: unionId, gate_member_id: memberId, inbox_origin: "https://peer.example:8443" });
  });

  it("gives no gate to a message without one, and no origin where the sender's keys could not be spelled from it", () => {
    const base = { type: "outbox", activity: {}, keys: [] };
    assert.deepEqual(claimHints({ ...base, inbox: "https://a.example/inbox" }), { gate_union_id: null, gate_member_id: null, inbox_origin: "https://a.example" });
    assert.equal(claimHints({ ...base, inbox: "https://a.example:443/x" }).inbox_origin, "https://a.example", "the default port dropped, as URL.origin and URL.host do");
    assert.equal(claimHints({ ...base, inbox: "http://[::1]:8080/i" }).inbox_origin, "http://[::1]:8080");
    assert.equal(claimHints({ ...base, inbox: "https://user:pw@a.example/i" }).inbox_origin, "https://a.example", "no userinfo in an origin");
    assert.equal(claimHints({ ...base, inbox: "ftp://a.example/i" }).inbox_origin, null);
    assert.equal(claimHints({ ...base, inbox: "not a url" }).inbox_origin, null);
    assert.equal(claimHints({ ...base, inbox: 42 }).inbox_origin, null);
    // A gate field of the wrong shape is no gate.
    assert.deepEqual(claimHints({ ...base, inbox: "https://a.example/i", musterGate: { unionId: 1, memberId: "x" } }).gate_union_id, null);
    // Not a delivery (an intent, a fan-out page): nothing at all.
    assert.deepEqual(claimHints({ intentId: "x", intent: { inbox: "https://a.example/i", musterGate: { unionId: "u", memberId: "m" } } }), { gate_union_id: null, gate_member_id: null, inbox_origin: null });
    assert.deepEqual(claimHints(null), { gate_union_id: null, gate_member_id: null, inbox_origin: null });
  });

  it("claimSize: the largest of the claim sizes that the free slots allow", () => {
    assert.deepEqual([1, 2, 3, 5, 7, 8, 9, 63, 64, 100, 128, 500].map(claimSize), [1, 2, 3, 5, 7, 8, 8, 56, 64, 96, 128, 128]);
  });
});

for (const d of dialects) {
  describe(`claim hints on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    before(async () => {
      tdb = await d.create();
    });
    after(async () => {
      await tdb?.destroy();
    });

    it("a gated lane's rows hold the message's own gate and inbox origin (on PostgreSQL, whose claim reads them); other lanes' rows none", async () => {
      const database = tdb.open();
      try {
        const outbox = new KyselyMessageQueue(database, { name: "outbox-hints", payloadsWithClaim: true, gatesWithClaim: true, resolveKey: async () => undefined });
        const plain = new KyselyMessageQueue(database, { name: "plain-hints", resolveKey: async () => undefined });
        const unionId = randomUUID();
        const memberId = randomUUID();
        const m = joinMessage({ unionId, memberId, actor: "https://peer.example/users/eve", inbox: "https://peer.example/users/eve/inbox", name: `${SPOOF_GATE(unionId, randomUUID())} "inbox":"https://victim.example/` });
        await database.db.transaction().execute(async (trx) => {
          await outbox.enqueueWith(trx, m, { orderingKey: m.orderingKey, inlineActivity: true });
          await outbox.enqueueAllWith(trx, [m, m], { orderingKey: m.orderingKey, inlineActivity: true });
        });
        await outbox.enqueue(m, { orderingKey: "k" });
        await plain.enqueueWith(database.db, m, { orderingKey: m.orderingKey });
        // Another activity: a delivery's done key is unique across lanes.
        await plain.enqueue(joinMessage({ unionId, memberId, actor: "https://peer.example/users/eve", inbox: "https://peer.example/users/eve/inbox", name: "eve" }));
        await sleep(50);
        const rows = await database.db.selectFrom("fedify_mq").select(["queue", "gate_union_id", "gate_member_id", "inbox_origin"]).orderBy("id").execute();
        const hinted = d.name === "postgres" ? { gate_union_id: unionId, gate_member_id: memberId, inbox_origin: "https://peer.example" } : { gate_union_id: null, gate_member_id: null, inbox_origin: null };
        const none = { gate_union_id: null, gate_member_id: null, inbox_origin: null };
        assert.deepEqual(rows.map(({ queue, ...h }) => [queue, h]), [
          ["outbox-hints", hinted], ["outbox-hints", hinted], ["outbox-hints", hinted], ["outbox-hints", hinted],
          ["plain-hints", none], ["plain-hints", none],
        ]);
        await database.db.deleteFrom("fedify_mq").execute();
      } finally {
        await database.close();
      }
    });

    it("a lane whose first claims meet a backlog runs its claim statement on its generic plan from the first run (planned once per connection, never for each run's values)", { skip: d.name !== "postgres" && "PostgreSQL's plan cache" }, async () => {
      // Two connections: the lane's LISTEN holds one, so every claim and settle (and the check below) runs on the other.
      const database = tdb.open();
      const pool2 = (await import("../src/db/database.ts")).openDatabase(tdb.url, { poolSize: 2 });
      await database.close();
      try {
        const queue = new KyselyMessageQueue(pool2, { name: "outbox-plan", concurrency: 8, pollIntervalMs: 20, payloadsWithClaim: true, gatesWithClaim: true, resolveKey: async () => ({ kty: "RSA" }) });
        const n = 3000;
        const unionId = randomUUID();
        for (let i = 0; i < n; i += 500) {
          await pool2.db.transaction().execute(async (trx) => {
            for (let j = i; j < i + 500; j++) {
              const m = joinMessage({ unionId, memberId: randomUUID(), actor: `https://peer${j % 10}.example/users/p${j}`, inbox: `https://peer${j % 10}.example/users/p${j}/inbox`, name: `p${j}` });
              await queue.enqueueWith(trx, m, { orderingKey: m.orderingKey, inlineActivity: true });
            }
          });
        }
        await sql`analyze fedify_mq`.execute(pool2.db);
        let handled = 0;
        const controller = new AbortController();
        const done = queue.listen(() => void handled++, { signal: controller.signal });
        const deadline = Date.now() + 120_000;
        while (handled < n && Date.now() < deadline) await sleep(20);
        assert.equal(handled, n, "every message handled");
        const plans = await sql<{ statement: string; generic_plans: string; custom_plans: string }>`select statement, generic_plans, custom_plans from pg_prepared_statements where statement like 'update "fedify_mq"%'`.execute(pool2.db);
        controller.abort();
        await done;
        const claims = plans.rows.map((r) => ({ generic: Number(r.generic_plans), custom: Number(r.custom_plans) }));
        const runs = claims.reduce((a, c) => a + c.generic + c.custom, 0);
        assert.ok(runs >= n / 8, `the claims ran on the connection checked (${runs} runs)`);
        // Before executeGenericPlanned, PostgreSQL planned each text's first five runs for their values, and more while that looked cheaper.
        for (const c of claims) assert.ok(c.custom === 0 && c.generic > 0, `each claim text run on its generic plan only: ${JSON.stringify(claims)}`);
        assert.ok(!plans.rows.some((r) => r.statement.includes("regexp_match")), "the claim matches no regular expression over the message text");
      } finally {
        await pool2.close();
      }
    });

    it("0089: a row queued before it is kept, with no hints; down drops the columns and keeps the rows; up again", async () => {
      const database = tdb.open();
      const { db } = database;
      try {
        await migrateTo(db, PREVIOUS);
        const now = Date.now();
        await db.insertInto("fedify_mq").values({ queue: "upgrade-hints", message: "{}", ordering_key: "k", available_at: now, attempts: 0, created_at: now, dedupe_key: null, payload: null } as never).execute();
        await migrateTo(db, MIGRATION);
        assert.deepEqual(await db.selectFrom("fedify_mq").select(["message", "gate_union_id", "gate_member_id", "inbox_origin"]).where("queue", "=", "upgrade-hints").execute(),
          [{ message: "{}", gate_union_id: null, gate_member_id: null, inbox_origin: null }]);
        await db.updateTable("fedify_mq").set({ gate_union_id: "u", gate_member_id: "m", inbox_origin: "https://a.example" }).execute();
        await migrateTo(db, PREVIOUS);
        const { rows } = await sql<Record<string, unknown>>`select * from fedify_mq where queue = 'upgrade-hints'`.execute(db);
        assert.equal(rows.length, 1);
        assert.ok(!("gate_union_id" in rows[0]!) && !("inbox_origin" in rows[0]!), "the columns dropped");
        await migrateToLatest(db);
        await db.deleteFrom("fedify_mq").where("queue", "=", "upgrade-hints").execute();
      } finally {
        await migrateToLatest(db);
        await database.close();
      }
    });
  });
}
