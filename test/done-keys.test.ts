import { createHash } from "node:crypto";
import { readdirSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { sql } from "kysely";
import { compactKey, deliveryKey, KyselyMessageQueue, storedDeliveryKeys, storedKey } from "../federation/kysely-message-queue.ts";
import { migrateTo, migrateToLatest } from "../src/db/migrate.ts";
import { dialects, type TestDatabase } from "./helpers/databases.ts";

// Done keys (issue 16, migration 0088): on PostgreSQL a delivery's done key
// is a 16-byte uuid (compactKey) instead of its text, in fedify_mq (while
// queued) and fedify_mq_done (7 days after). What the keys guarantee must
// hold across the upgrade: a fan-out handled again queues nothing twice,
// neither a delivery still queued nor one already made under a text key.

const MIGRATION = readdirSync(new URL("../migrations/", import.meta.url)).find((f) => f.startsWith("0088_"))!.replace(/\.ts$/, "");
/** The migration before 0088, whichever it is (other branches add 0080-0087). */
const PREVIOUS = readdirSync(new URL("../migrations/", import.meta.url)).filter((f) => /^\d{4}_.*\.ts$/.test(f) && f < "0088").sort().at(-1)!.replace(/\.ts$/, "");

const ACTIVITY = "https://union.example/u/riders/actions/01JZ8Q6W3V4N2K5M7P9R0S1T2U/activity";
const delivery = (i: number, attempt = 0) => ({ type: "outbox", activityId: ACTIVITY, inbox: `https://server-${i % 97}.example/users/member-number-${i}/inbox`, attempt });

for (const d of dialects) {
  describe(`done keys on ${d.name} (0088)`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    before(async () => {
      tdb = await d.create();
    });
    after(async () => {
      await tdb?.destroy();
    });

    it("a replayed fan-out after the upgrade queues neither a delivery done under a text key nor one still queued under one", async () => {
      const database = tdb.open();
      const { db } = database;
      try {
        await migrateTo(db, PREVIOUS);
        // Before the upgrade: delivery 1 made (its text key done), delivery 2 queued.
        const name = "upgrade";
        const now = Date.now();
        await db.insertInto("fedify_mq_done").values({ dedupe_key: deliveryKey(delivery(1))!, done_at: now }).execute();
        await db.insertInto("fedify_mq").values({ queue: name, message: JSON.stringify(delivery(2)), ordering_key: null, available_at: now, attempts: 0, created_at: now, dedupe_key: deliveryKey(delivery(2)), payload: null }).execute();
        await migrateTo(db, MIGRATION);
        await migrateToLatest(db);
        const postgres = d.name === "postgres";
        const done = await db.selectFrom("fedify_mq_done").select("dedupe_key").execute();
        assert.deepEqual(done.map((r) => r.dedupe_key), [postgres ? compactKey(deliveryKey(delivery(1))!) : deliveryKey(delivery(1))]);
        // The page handled again: deliveries 1, 2 and 3, and 3 again (a retry's attempt 1 is another delivery).
        const queue = new KyselyMessageQueue(database, { name, pollIntervalMs: 20 });
        await queue.enqueueMany([delivery(1), delivery(2), delivery(3), delivery(3), delivery(1, 1)]);
        const rows = await db.selectFrom("fedify_mq").select(["message", "dedupe_key"]).where("queue", "=", name).orderBy("id").execute();
        assert.deepEqual(rows.map((r) => JSON.parse(r.message)), [delivery(2), delivery(3), delivery(1, 1)]);
        if (postgres) assert.deepEqual(rows.map((r) => r.dedupe_key), [delivery(2), delivery(3), delivery(1, 1)].map((m) => compactKey(deliveryKey(m)!)));
        // Handled, then replayed once more: still nothing queued.
        const handled: unknown[] = [];
        const controller = new AbortController();
        const listening = queue.listen((m) => void handled.push(m), { signal: controller.signal });
        const until = Date.now() + 10_000;
        while (handled.length < 3 && Date.now() < until) await sleep(20);
        await sleep(200);
        await queue.enqueueMany([delivery(1), delivery(2), delivery(3), delivery(1, 1)]);
        controller.abort();
        await listening;
        await queue.close();
        assert.equal(handled.length, 3);
        assert.equal(Number((await db.selectFrom("fedify_mq").select((e) => e.fn.countAll().as("n")).where("queue", "=", name).executeTakeFirstOrThrow()).n), 0);
      } finally {
        await database.close();
      }
    });

    it("a done key is 16 bytes on PostgreSQL: a uuid column, under 60 bytes of index a key (text keys: over 100)", { skip: d.name !== "postgres" && "SQLite keeps its text keys" }, async () => {
      const database = tdb.open();
      const { db } = database;
      try {
        await migrateToLatest(db);
        const types = await sql<{ table_name: string; data_type: string }>`select table_name, data_type from information_schema.columns
          where table_schema = current_schema() and column_name = 'dedupe_key' order by table_name`.execute(db);
        assert.deepEqual(types.rows.map((r) => [r.table_name, r.data_type]), [["fedify_mq", "uuid"], ["fedify_mq_done", "uuid"]]);
        const name = "size";
        const queue = new KyselyMessageQueue(database, { name, pollIntervalMs: 20 });
        const n = 2000;
        await queue.enqueueMany(Array.from({ length: n }, (_, i) => delivery(1000 + i)));
        let handled = 0;
        const controller = new AbortController();
        const listening = queue.listen(() => void handled++, { signal: controller.signal });
        const until = Date.now() + 60_000;
        while (handled < n && Date.now() < until) await sleep(50);
        await sleep(300);
        controller.abort();
        await listening;
        await queue.close();
        const done = Number((await db.selectFrom("fedify_mq_done").select((e) => e.fn.countAll().as("n")).executeTakeFirstOrThrow()).n);
        assert.ok(done >= n, `${done} done keys`);
        const size = await sql<{ index: string; heap: string }>`select pg_indexes_size('fedify_mq_done') as index, pg_relation_size('fedify_mq_done') as heap`.execute(db);
        const perKey = Number(size.rows[0]!.index) / done;
        const heapPerKey = Number(size.rows[0]!.heap) / done;
        assert.ok(perKey < 60, `index ${perKey.toFixed(1)} bytes a done key`);
        assert.ok(heapPerKey < 64, `heap ${heapPerKey.toFixed(1)} bytes a done key`);
      } finally {
        await database.close();
      }
    });
  });
}

/*
 * compactKey is migration 0088's formula, whatever was asked before (it kept
 * a cache of recent keys once; now a fan-out page computes each key once and
 * hands it to its enqueue), and storedDeliveryKeys (a page's keys, its
 * activity id hashed once) gives the same keys.
 */
describe("compactKey and a page's keys", () => {
  const reference = (key: string): string => {
    const space = key.indexOf(" ");
    const head = createHash("sha256").update(space < 0 ? key : key.slice(0, space)).digest("hex").slice(0, 8);
    const rest = createHash("sha256").update(key).digest("hex");
    return `${head}-${rest.slice(0, 4)}-${rest.slice(4, 8)}-${rest.slice(8, 12)}-${rest.slice(12, 24)}`;
  };
  it("gives the formula's key for keys of interleaved activities, asked again", () => {
    const other = "https://union.example/u/drivers/actions/01JZ8Q6W3V4N2K5M7P9R0S1T2V/activity";
    const keys: string[] = [];
    for (let i = 0; i < 5000; i++) keys.push(`${i % 3 === 0 ? other : ACTIVITY} https://server-${i % 97}.example/users/member-number-${i}/inbox 0`);
    keys.push("fanout", "fanout x 12", `${ACTIVITY}`, "");
    for (const round of [1, 2]) {
      for (const key of keys) assert.equal(compactKey(key), reference(key), `round ${round}: ${key}`);
      for (const key of [...keys].reverse()) assert.equal(compactKey(key), reference(key), `round ${round}, backwards: ${key}`);
    }
    assert.equal(compactKey(deliveryKey(delivery(7))!), reference(`${ACTIVITY} ${delivery(7).inbox} 0`));
  });
});

for (const d of dialects) {
  describe(`a page's done keys carried to the enqueue, on ${d.name}`, { skip: d.skip }, () => {
    it("storedDeliveryKeys gives each delivery's stored key, and enqueue stores the key it is given instead of computing it", async () => {
      const tdb = await d.create();
      const database = tdb.open();
      try {
        await migrateToLatest(database.db);
        const messages = [1, 2, 3].map((i) => delivery(i));
        assert.deepEqual(storedDeliveryKeys(database.db, ACTIVITY, messages.map((m) => m.inbox)), messages.map((m) => storedKey(database.db, deliveryKey(m)!)));
        const queue = new KyselyMessageQueue(database, { name: "carried" });
        // A key other than the one the message would give: the queue takes it as it is.
        const given = storedKey(database.db, deliveryKey(delivery(99))!);
        await queue.enqueue(delivery(5), { storedKey: given });
        await queue.enqueue(delivery(6));
        const rows = await database.db.selectFrom("fedify_mq").select(["message", "dedupe_key"]).where("queue", "=", "carried").orderBy("id").execute();
        assert.deepEqual(rows.map((r) => r.dedupe_key), [given, storedKey(database.db, deliveryKey(delivery(6))!)]);
        await queue.close();
      } finally {
        await database.close();
        await tdb.destroy();
      }
    });
  });
}
