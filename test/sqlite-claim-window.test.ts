import { describe, it } from "node:test";
import assert from "node:assert/strict";
import SQLite from "better-sqlite3";
import { CLAIM_SPAN, CLAIM_WINDOW, KyselyMessageQueue } from "../federation/kysely-message-queue.ts";
import { dialects } from "./helpers/databases.ts";

/*
 * SQLite's claim looks at two windows of a lane, not the whole lane
 * (federation/kysely-message-queue.ts, CLAIM_WINDOW). A personal fan-out on
 * 100 servers left 5·10^4 delivery rows under 100 ordering keys, each key's
 * first message in flight: every claim walked them all to find nothing,
 * hundreds of ms each with the event loop stopped.
 */

const sqlite = dialects.find((d) => d.name === "sqlite")!;

/** Rows straight into the file (a second, plain connection), before the queue opens it. */
function seed(url: string, rows: readonly { key: string | null; leased?: boolean }[], firstId?: number): number[] {
  const db = new SQLite(url.slice("sqlite:".length));
  const now = Date.now();
  const insert = db.prepare("insert into fedify_mq (id, queue, message, ordering_key, available_at, attempts, created_at, lease_owner, lease_until) values (?, 'delivery', ?, ?, ?, 0, ?, ?, ?)");
  const ids: number[] = [];
  db.transaction(() => {
    rows.forEach((r, i) => {
      const { lastInsertRowid } = insert.run(firstId === undefined ? null : firstId + i, JSON.stringify({ n: i, key: r.key }), r.key, now - 1000, now, r.leased ? "elsewhere" : null, r.leased ? now + 600_000 : null);
      ids.push(Number(lastInsertRowid));
    });
  })();
  db.close();
  return ids;
}

describe("SQLite claim windows", () => {
  it("keeps the event loop turning while a long lane's keys are all in flight, and still finds a key's first message at its end", { timeout: 120_000 }, async () => {
    const tdb = await sqlite.create();
    // 150,000 rows under 100 keys, the first of each leased by another
    // worker (in flight): nothing claimable but one message of a new key
    // (a second fan-out's), behind all of them.
    const keys = 100;
    const rows = Array.from({ length: 150_000 }, (_, i) => ({ key: `fan-1\nhttps://h${i % keys}.example`, leased: i < keys }));
    rows.push({ key: "fan-2\nhttps://late.example", leased: false });
    const ids = seed(tdb.url, rows);
    const database = tdb.open();
    const queue = new KyselyMessageQueue(database, { name: "delivery", workerId: "claim-window", pollIntervalMs: 200 });
    const controller = new AbortController();
    const handled: { n: number; key: string }[] = [];
    let found!: () => void;
    const late = new Promise<void>((r) => found = r);
    // How late a 5 ms timer fires, at worst, while the lane claims (from
    // 1.5 s in: the lane's first whole-lane claim, slow, is what moves it to windows).
    let worst = 0;
    let last = performance.now();
    const measureFrom = last + 1500;
    const sampler = setInterval(() => {
      const t = performance.now();
      if (last >= measureFrom) worst = Math.max(worst, t - last - 5);
      last = t;
    }, 5);
    try {
      const started = performance.now();
      const listening = queue.listen((m: { n: number; key: string }) => {
        handled.push(m);
        if (m.key.startsWith("fan-2")) found();
      }, { signal: controller.signal });
      await Promise.race([late, new Promise((_, reject) => setTimeout(() => reject(new Error(`the late key's message was not claimed in 30 s; handled ${handled.length}`)), 30_000).unref())]);
      const tookMs = performance.now() - started;
      // A few more turns of the cursor through the lane, all in vain.
      await new Promise((r) => setTimeout(r, 1500));
      controller.abort();
      await listening;
      clearInterval(sampler);
      // Only the late message was claimable: nothing behind a leased key's first one moved.
      assert.deepEqual(handled.map((m) => m.key), ["fan-2\nhttps://late.example"]);
      // 150,000 ids make about 150 turns of the cursor (CLAIM_SPAN), 20 ms apart with nothing in flight.
      assert.ok(tookMs < 20_000, `the late message took ${Math.round(tookMs)} ms`);
      // The whole-lane claim stopped the loop for each claim (774 ms late at load 10); a window is a few ms (the bound allows for a loaded machine).
      assert.ok(worst < 250, `a timer fired ${Math.round(worst)} ms late while the lane claimed`);
      const left = await database.db.selectFrom("fedify_mq").select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirstOrThrow();
      assert.equal(Number(left.n), ids.length - 1);
    } finally {
      clearInterval(sampler);
      controller.abort();
      await database.close();
      await tdb.destroy();
    }
  });

  it("starts the cursor's turns at the lane's first live id, so a key's first message queued after the lane went to windows is found when ids are millions in", { timeout: 120_000 }, async () => {
    const tdb = await sqlite.create();
    // Ids only grow: after many fan-outs the live rows sit millions of ids
    // in. A cursor starting over at 0 turned through ~5,000 empty windows
    // (20 ms apart) before reaching them: about 100 s for the late message.
    const keys = 100;
    const rows = Array.from({ length: 150_000 }, (_, i) => ({ key: `fan-1\nhttps://h${i % keys}.example`, leased: i < keys }));
    seed(tdb.url, rows, 5_000_000);
    const database = tdb.open();
    const queue = new KyselyMessageQueue(database, { name: "delivery", workerId: "claim-window", pollIntervalMs: 200 });
    const controller = new AbortController();
    const handled: string[] = [];
    let found!: () => void;
    const late = new Promise<void>((r) => found = r);
    try {
      const listening = queue.listen((m: { key: string }) => {
        handled.push(m.key);
        if (m.key.startsWith("fan-2")) found();
      }, { signal: controller.signal });
      // Long enough for the lane's slow whole-lane claims to move it to windows.
      await new Promise((r) => setTimeout(r, 2000));
      const key = "fan-2\nhttps://late.example";
      await queue.enqueue({ key }, { orderingKey: key });
      const started = performance.now();
      await Promise.race([late, new Promise((_, reject) => setTimeout(() => reject(new Error(`the late key's message was not claimed in 30 s; handled ${handled.length}`)), 30_000).unref())]);
      const tookMs = performance.now() - started;
      controller.abort();
      await listening;
      assert.deepEqual(handled, ["fan-2\nhttps://late.example"]);
      // About 150 turns from the first live id (CLAIM_SPAN each), 20 ms apart.
      assert.ok(tookMs < 20_000, `the late message took ${Math.round(tookMs)} ms`);
    } finally {
      controller.abort();
      await database.close();
      await tdb.destroy();
    }
  });

  it("hands out every message of a lane longer than two windows once, each key in order, keys first seen past the windows included", { timeout: 120_000 }, async () => {
    const tdb = await sqlite.create();
    // Three spans of the cursor's window: 20 keys at the front, then keys
    // whose first message lies beyond both windows at the start, then keyless.
    const rows: { key: string | null }[] = [];
    for (let i = 0; i < CLAIM_SPAN + CLAIM_WINDOW; i++) rows.push({ key: `front\n${i % 20}` });
    for (let i = 0; i < CLAIM_SPAN; i++) rows.push({ key: `back\n${i % 7}` });
    for (let i = 0; i < CLAIM_SPAN; i++) rows.push({ key: i % 2 === 0 ? null : `front\n${i % 20}` });
    seed(tdb.url, rows);
    const database = tdb.open();
    const queue = new KyselyMessageQueue(database, { name: "delivery", workerId: "claim-window", concurrency: 8, pollIntervalMs: 200 });
    const controller = new AbortController();
    const seen = new Map<number, number>();
    const lastOfKey = new Map<string, number>();
    let outOfOrder = 0;
    let done!: () => void;
    const all = new Promise<void>((r) => done = r);
    try {
      const listening = queue.listen(async (m: { n: number; key: string | null }) => {
        seen.set(m.n, (seen.get(m.n) ?? 0) + 1);
        if (m.key !== null) {
          if ((lastOfKey.get(m.key) ?? -1) > m.n) outOfOrder++;
          lastOfKey.set(m.key, m.n);
        }
        await new Promise((r) => setImmediate(r));
        if (seen.size === rows.length) done();
      }, { signal: controller.signal });
      await Promise.race([all, new Promise((_, reject) => setTimeout(() => reject(new Error(`only ${seen.size} of ${rows.length} handled in 90 s`)), 90_000).unref())]);
      controller.abort();
      await listening;
      assert.equal(seen.size, rows.length);
      assert.deepEqual([...seen.values()].filter((n) => n !== 1), [], "a message was handled twice");
      assert.equal(outOfOrder, 0, "a key's messages were handled out of order");
      const left = await database.db.selectFrom("fedify_mq").select((eb) => eb.fn.countAll<number>().as("n")).executeTakeFirstOrThrow();
      assert.equal(Number(left.n), 0);
    } finally {
      controller.abort();
      await database.close();
      await tdb.destroy();
    }
  });
});
