import { describe, it, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { createQueueLanes, type Lane, type QueueLanes } from "../federation/queue-lanes.ts";
import { LanePriority } from "../federation/queue-priority.ts";
import { dialects } from "./helpers/databases.ts";

/*
 * A worker draining a fan-out's deliveries takes a join's Accept (outbox
 * lane), a Follow or a reply (inbox lane) or a domain intent as well: their
 * lanes are claimed independently, but they share the process. While such
 * interactive work is claimed or handled, the process's bulk lanes (fanout,
 * delivery) start nothing new, so it is not slowed behind the fan-out's
 * batches; and they wait at most maxYieldMs at a time, so the fan-out
 * still goes on under a steady stream of interactive work.
 */

const FAST = { pollIntervalMs: 20, handlerTimeoutMs: 5000, leaseMs: 3000, retryBaseDelayMs: 20, retryMaxDelayMs: 100 };
const BACKLOG = 3000;

async function waitFor(what: string, condition: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

for (const d of dialects) {
  describe(`queue priority on ${d.name}`, { skip: d.skip }, () => {
    /** Lanes on a fresh database, every listener stopped and the database closed after the test. */
    async function lanesFor(t: TestContext, priority: LanePriority): Promise<{ lanes: QueueLanes; listen(lane: Lane, handler: (m: any) => Promise<void>): void }> {
      const tdb = await d.create();
      const database = tdb.open();
      const lanes = createQueueLanes(database, { ...FAST, concurrency: 4, priority });
      const stop = new AbortController();
      const listening: Promise<void>[] = [];
      t.after(async () => {
        stop.abort();
        await Promise.all(listening);
        await lanes.close();
        await database.close();
        await tdb.destroy();
      });
      return {
        lanes,
        listen(lane, handler) {
          listening.push(lanes.lanes[lane].listen(handler, { signal: stop.signal }));
        },
      };
    }

    /** A fan-out's backlog being drained: each delivery's start time. */
    async function drainingBacklog(q: Awaited<ReturnType<typeof lanesFor>>): Promise<number[]> {
      const started: number[] = [];
      await q.lanes.lanes.delivery.enqueueMany(Array.from({ length: BACKLOG }, (_, n) => ({ n })), { orderingKey: undefined });
      q.listen("delivery", async () => {
        started.push(performance.now());
        await sleep(4);
      });
      await waitFor("the backlog to be draining", () => started.length >= 40);
      return started;
    }

    for (const lane of ["outbox", "inbox", "domain"] as const) {
      it(`a message of the ${lane} lane is handled with no delivery of an older backlog started meanwhile`, async (t) => {
        const q = await lanesFor(t, new LanePriority());
        const started = await drainingBacklog(q);
        let handled: { from: number; to: number } | undefined;
        q.listen(lane, async () => {
          const from = performance.now();
          await sleep(300);
          handled = { from, to: performance.now() };
        });
        await q.lanes.lanes[lane].enqueue({ interactive: lane });
        await waitFor("the interactive message to be handled", () => handled !== undefined);
        // Deliveries already claimed when it was claimed may still start in its first moments.
        const during = started.filter((at) => at > handled!.from + 50 && at < handled!.to).length;
        assert.equal(during, 0, `${during} deliveries of the backlog started while the ${lane} message was handled`);
        assert.ok(started.length < BACKLOG, "the backlog was still draining");
        // And once it is done the backlog carries on.
        const after = started.length;
        await waitFor("deliveries to resume", () => started.length > after + 20, 5000);
      });
    }

    it("a long interactive handler holds deliveries back at most maxYieldMs at a time", async (t) => {
      const q = await lanesFor(t, new LanePriority({ maxYieldMs: 200 }));
      const started = await drainingBacklog(q);
      let handled: { from: number; to: number } | undefined;
      q.listen("inbox", async () => {
        const from = performance.now();
        await sleep(1500);
        handled = { from, to: performance.now() };
      });
      await q.lanes.lanes.inbox.enqueue({ slow: true });
      await waitFor("the slow inbox message to be handled", () => handled !== undefined);
      const during = started.filter((at) => at > handled!.from && at < handled!.to);
      assert.ok(during.length > 20, `only ${during.length} deliveries started during 1.5 s of inbox work`);
      // None in the first yield (but those claimed as it began), and never a gap much longer than one yield.
      const first = during.find((at) => at > handled!.from + 50)!;
      assert.ok(first - handled!.from >= 150, `a delivery started ${(first - handled!.from).toFixed(0)} ms into the inbox work`);
      const gaps = during.slice(1).map((at, i) => at - during[i]!);
      assert.ok(Math.max(...gaps) < 400, `deliveries stopped for ${Math.max(...gaps).toFixed(0)} ms`);
    });

    it("the ledger lane's work does not hold deliveries back", async (t) => {
      const q = await lanesFor(t, new LanePriority());
      const started = await drainingBacklog(q);
      let handled: { from: number; to: number } | undefined;
      q.listen("ledger", async () => {
        const from = performance.now();
        await sleep(300);
        handled = { from, to: performance.now() };
      });
      await q.lanes.lanes.ledger.enqueue({ chain: "work" });
      await waitFor("the ledger message to be handled", () => handled !== undefined);
      const during = started.filter((at) => at > handled!.from && at < handled!.to).length;
      assert.ok(during > 20, `${during} deliveries started during 300 ms of ledger work`);
    });
  });
}
