import { describe, it, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { createQueueLanes, type Lane, type QueueLanes } from "../federation/queue-lanes.ts";
import { NOTIFY_CHANNEL } from "../federation/kysely-message-queue.ts";
import { LanePriority } from "../federation/queue-priority.ts";
import { PRIORITY_QUEUE } from "../federation/shared-listen.ts";
import { dialects, type TestDatabase } from "./helpers/databases.ts";

/*
 * With `serve --no-worker` and two `muster worker` processes on PostgreSQL,
 * a reply Fedify's inbox takes is claimed by one worker while the other
 * drains a fan-out's deliveries on the same two cores: its handler took
 * 1.0-1.8 s under the 10^5 fan-out (the claim 0.1 s). So a process handling
 * interactive work tells the others while a fan-out drains, and their bulk
 * lanes start nothing new until it is done (at most maxYieldMs at a time),
 * as a process's own bulk lanes yield to its own interactive work
 * (queue-priority.test.ts). Two pools on one database stand for two processes.
 */

const FAST = { pollIntervalMs: 20, handlerTimeoutMs: 5000, leaseMs: 3000, retryBaseDelayMs: 20, retryMaxDelayMs: 100 };
const BACKLOG = 3000;
/** Longer than any handler here: what is tested is the hold, not its cap. */
const MAX_YIELD_MS = 10_000;

async function waitFor(what: string, condition: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

const postgres = dialects.find((d) => d.name === "postgres")!;

describe("queue priority across processes on postgres", { skip: postgres.skip }, () => {
  /** A "process": lanes on a pool of its own, with a priority of its own, stopped after the test (before its database is dropped). */
  function processOn(t: TestContext & { stops?: (() => Promise<void>)[] }, tdb: TestDatabase): { lanes: QueueLanes; priority: LanePriority; listen(lane: Lane, handler: (m: any) => Promise<void>): void } {
    const database = tdb.open();
    const priority = new LanePriority({ maxYieldMs: MAX_YIELD_MS });
    const lanes = createQueueLanes(database, { ...FAST, concurrency: 4, priority });
    const stop = new AbortController();
    const listening: Promise<void>[] = [];
    (t.stops ??= []).push(async () => {
      stop.abort();
      await Promise.all(listening);
      await lanes.close();
      await database.close();
    });
    return {
      lanes,
      priority,
      listen(lane, handler) {
        listening.push(lanes.lanes[lane].listen(handler, { signal: stop.signal }));
      },
    };
  }

  /** The database, and every priority NOTIFY sent on it from now on (a LISTEN of the test's own). */
  async function database(t: TestContext & { stops?: (() => Promise<void>)[] }): Promise<{ tdb: TestDatabase; said: { busy: boolean; at: number }[] }> {
    const tdb = await postgres.create();
    const said: { busy: boolean; at: number }[] = [];
    const client = new pg.Client({ connectionString: tdb.url });
    await client.connect();
    client.on("notification", (n) => {
      const payload = JSON.parse(n.payload ?? "{}") as { queue?: string; busy?: boolean };
      if (payload.queue === PRIORITY_QUEUE) said.push({ busy: payload.busy === true, at: performance.now() });
    });
    await client.query(`LISTEN ${NOTIFY_CHANNEL}`);
    t.after(async () => {
      for (const stop of t.stops ?? []) await stop();
      await client.end();
      await tdb.destroy();
    });
    return { tdb, said };
  }

  it("a message handled in one process starts no delivery of another's backlog meanwhile, and the backlog goes on after", async (t) => {
    const { tdb, said } = await database(t);
    const a = processOn(t, tdb);
    const b = processOn(t, tdb);
    let handled: { from: number; to: number } | undefined;
    a.listen("inbox", async () => {
      const from = performance.now();
      await sleep(1200);
      handled = { from, to: performance.now() };
    });
    const started: number[] = [];
    await b.lanes.lanes.delivery.enqueueMany(Array.from({ length: BACKLOG }, (_, n) => ({ n })));
    b.listen("delivery", async () => {
      started.push(performance.now());
      await sleep(4);
    });
    await waitFor("the backlog to be draining", () => started.length >= 40);
    // The other process has heard the backlog's heartbeat (sent within 100 ms of its first claim).
    await sleep(300);
    await a.lanes.lanes.inbox.enqueue({ reply: true });
    await waitFor("the inbox message to be handled", () => handled !== undefined);
    // Deliveries claimed before the other process heard of it may still start in its first moments.
    const during = started.filter((at) => at > handled!.from + 250 && at < handled!.to).length;
    assert.equal(during, 0, `${during} deliveries of the other process's backlog started while the inbox message was handled`);
    assert.ok(started.length < BACKLOG, "the backlog was still draining");
    assert.ok(b.priority.stats.yields > 0, "the draining process's bulk lane waited");
    // Said once as it started and once as it ended (once settled), by the process that handled it.
    await waitFor("its end to be said", () => said.length >= 2, 5000);
    assert.deepEqual(said.map((s) => s.busy), [true, false]);
    assert.ok(said[0]!.at >= handled!.from - 50 && said[1]!.at >= handled!.to - 50, "busy was said as it started, done as it ended");
    const after = started.length;
    await waitFor("deliveries to resume", () => started.length > after + 20, 5000);
  });

  it("with no fan-out draining anywhere, interactive work is not announced", async (t) => {
    const { tdb, said } = await database(t);
    const a = processOn(t, tdb);
    processOn(t, tdb).listen("delivery", async () => {});
    let handled = 0;
    a.listen("outbox", async () => {
      await sleep(50);
      handled++;
    });
    for (let i = 0; i < 5; i++) await a.lanes.lanes.outbox.enqueue({ accept: i });
    await waitFor("the outbox messages to be handled", () => handled === 5);
    await sleep(200);
    assert.deepEqual(said, [], "no NOTIFY of interactive work without a fan-out");
  });
});
