import { after, before, describe, it, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { setTimeout as sleep } from "node:timers/promises";
import { Temporal } from "@js-temporal/polyfill";
import type { MessageQueue } from "@fedify/fedify";
import pg from "pg";
import { sql } from "kysely";
import { KyselyMessageQueue, type KyselyMessageQueueOptions } from "../federation/kysely-message-queue.ts";
import { LanePriority } from "../federation/queue-priority.ts";
import type { Database } from "../src/db/database.ts";
import { dialects, type TestDatabase } from "./helpers/databases.ts";

// Short polls, leases and backoffs keep each case well under a second or two;
// timing assertions only ever check lower bounds or generous upper ones.
const FAST: KyselyMessageQueueOptions = {
  pollIntervalMs: 20,
  handlerTimeoutMs: 2000,
  leaseMs: 3000,
  retryBaseDelayMs: 20,
  retryMaxDelayMs: 100,
};

const ms = (milliseconds: number) => Temporal.Duration.from({ milliseconds });

async function waitFor(what: string, condition: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

function gate(): { promise: Promise<void>; open(): void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

function withoutTestContext(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const { NODE_TEST_CONTEXT: _, ...rest } = env;
  return rest;
}

let queueCounter = 0;
const uniqueName = (label: string) => `${label}-${++queueCounter}`;

for (const d of dialects) {
  describe(`KyselyMessageQueue on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    before(async () => {
      tdb = await d.create();
    });
    after(async () => {
      await tdb?.destroy();
    });

    /**
     * Per-test resources, torn down in order: listeners are stopped and
     * drained first, then their databases closed, so `node --test` can exit.
     */
    function harness(t: TestContext) {
      const listeners: { controller: AbortController; done: Promise<void> }[] = [];
      const databases: Database[] = [];
      const children: ChildProcess[] = [];
      t.after(async () => {
        for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
        for (const l of listeners) l.controller.abort();
        await Promise.all(listeners.map((l) => l.done));
        for (const db of databases) await db.close();
      });
      return {
        children,
        open(): Database {
          const database = tdb.open();
          databases.push(database);
          return database;
        },
        /**
         * A separate Node process listening on the queue: it prints each
         * message it is handed and then either finishes it ("complete", after
         * a few random milliseconds) or never settles ("hang").
         */
        spawnWorker(name: string, options: KyselyMessageQueueOptions, mode: "complete" | "hang") {
          const script = `
            import { openDatabase } from ${JSON.stringify(import.meta.resolve("../src/db/database.ts"))};
            import { KyselyMessageQueue } from ${JSON.stringify(import.meta.resolve("../federation/kysely-message-queue.ts"))};
            const database = openDatabase(process.env.MQ_URL);
            const queue = new KyselyMessageQueue(database, { ...JSON.parse(process.env.MQ_OPTIONS), name: process.env.MQ_NAME });
            queue.listen(async (m) => {
              process.stdout.write(JSON.stringify(m) + "\\n");
              if (process.env.MQ_MODE === "hang") await new Promise(() => {});
              await new Promise((resolve) => setTimeout(resolve, Math.random() * 4));
            });
          `;
          const child = spawn(process.execPath, ["--input-type=module", "-e", script], {
            // Without NODE_TEST_CONTEXT the child is a plain process, not a
            // test-runner child whose stdout node:test would try to parse.
            env: { ...withoutTestContext(process.env), MQ_URL: tdb.url, MQ_NAME: name, MQ_OPTIONS: JSON.stringify(options), MQ_MODE: mode },
            stdio: ["ignore", "pipe", "pipe"],
          });
          children.push(child);
          const lines: string[] = [];
          let partial = "";
          let stderr = "";
          child.stdout!.setEncoding("utf8").on("data", (chunk: string) => {
            const parts = (partial + chunk).split("\n");
            partial = parts.pop()!;
            lines.push(...parts);
          });
          child.stderr!.setEncoding("utf8").on("data", (chunk: string) => (stderr += chunk));
          return { process: child, lines, stderr: () => stderr };
        },
        listen(queue: KyselyMessageQueue, handler: (message: any) => unknown) {
          const controller = new AbortController();
          const done = queue.listen(async (m) => {
            await handler(m);
          }, { signal: controller.signal });
          const listener = { controller, done };
          listeners.push(listener);
          return listener;
        },
      };
    }

    async function rows(database: Database, queue: string) {
      return database.db.selectFrom("fedify_mq").selectAll().where("queue", "=", queue).orderBy("id").execute();
    }

    it("satisfies Fedify's MessageQueue interface", (t) => {
      const h = harness(t);
      const asFedify: MessageQueue = new KyselyMessageQueue(h.open());
      assert.equal(asFedify.nativeRetrial, false);
      assert.throws(() => new KyselyMessageQueue(h.open(), { leaseMs: 0 }), RangeError);
    });

    it("renews the lease of a message whose handler outlasts it, so no other worker takes it meanwhile", async (t) => {
      const h = harness(t);
      const database = h.open();
      const name = uniqueName("renewal");
      const options = { ...FAST, name, leaseMs: 400, handlerTimeoutMs: 5000 };
      const first = new KyselyMessageQueue(database, { ...options, workerId: "first" });
      const second = new KyselyMessageQueue(database, { ...options, workerId: "second" });
      await first.enqueue({ job: "slow" });
      const calls: string[] = [];
      let leaseSeen = 0;
      const slow = h.listen(first, async () => {
        calls.push("first");
        const claimedUntil = (await rows(database, name))[0]!.lease_until!;
        await sleep(1500); // almost four leases long
        leaseSeen = (await rows(database, name))[0]!.lease_until!;
        assert.ok(leaseSeen > claimedUntil + 500, "the lease was pushed forward while the handler ran");
      });
      await waitFor("the first worker's claim", () => calls.length === 1);
      h.listen(second, () => void calls.push("second"));
      await waitFor("the row to be deleted", async () => (await rows(database, name)).length === 0, 10_000);
      await sleep(300);
      assert.deepEqual(calls, ["first"], "handled once, by the worker that claimed it");
      assert.ok(leaseSeen > 0);
      slow.controller.abort();
      await slow.done;
    });

    it("hands an enqueued message to the handler exactly once, then deletes it", async (t) => {
      const h = harness(t);
      const database = h.open();
      const name = uniqueName("once");
      const queue = new KyselyMessageQueue(database, { ...FAST, name });
      const message = { type: "outbox", nested: { list: [1, "two", null], flag: true } };
      await queue.enqueue(message);
      const stored = await rows(database, name);
      assert.equal(stored.length, 1);
      assert.equal(stored[0]!.lease_owner, null);

      const seen: unknown[] = [];
      h.listen(queue, (m) => void seen.push(m));
      await waitFor("the message", () => seen.length === 1);
      await waitFor("the row to be deleted", async () => (await rows(database, name)).length === 0);
      await sleep(150);
      assert.deepStrictEqual(seen, [message]);
    });

    it("keeps a message whose handler throws and retries it later", async (t) => {
      const h = harness(t);
      const database = h.open();
      const name = uniqueName("retry");
      const queue = new KyselyMessageQueue(database, { ...FAST, name, retryBaseDelayMs: 200, retryMaxDelayMs: 200 });
      await queue.enqueue({ n: 1 });
      const calls: number[] = [];
      let rowDuringRetry: Awaited<ReturnType<typeof rows>>[number] | undefined;
      h.listen(queue, async () => {
        calls.push(Date.now());
        if (calls.length === 1) throw new Error("first failure");
        rowDuringRetry = (await rows(database, name))[0];
      });
      await waitFor("the failure to be recorded", async () => {
        const [row] = await rows(database, name);
        return row?.last_error != null && row.lease_owner === null;
      });
      const [failed] = await rows(database, name);
      assert.equal(failed!.attempts, 1);
      assert.match(failed!.last_error!, /first failure/);
      assert.ok(failed!.available_at > calls[0]!, "the retry is scheduled in the future");

      await waitFor("the retry", () => calls.length === 2);
      await waitFor("the row to be deleted", async () => (await rows(database, name)).length === 0);
      assert.ok(calls[1]! - calls[0]! >= 150, `retried after backoff (${calls[1]! - calls[0]!} ms)`);
      assert.equal(rowDuringRetry?.attempts, 2, "the same row is delivered again, not a copy");
      await sleep(100);
      assert.equal(calls.length, 2);
    });

    it("gives a message whose handler hangs past the timeout to another delivery", async (t) => {
      const h = harness(t);
      const database = h.open();
      const name = uniqueName("timeout");
      const queue = new KyselyMessageQueue(database, { ...FAST, name, handlerTimeoutMs: 150, leaseMs: 3000 });
      await queue.enqueue({ n: 1 });
      const calls: number[] = [];
      let completed = 0;
      const listener = h.listen(queue, async () => {
        calls.push(Date.now());
        if (calls.length === 1) await new Promise(() => {});
        completed++;
      });
      await waitFor("the redelivery", () => completed === 1);
      await waitFor("the row to be deleted", async () => (await rows(database, name)).length === 0);
      assert.equal(calls.length, 2);
      assert.ok(calls[1]! - calls[0]! >= 150, "not before the timeout");
      assert.ok(calls[1]! - calls[0]! < 2500, "released at the timeout, not left to the lease");
      // The hung handler never settles, yet listen() still ends: it no longer counts.
      listener.controller.abort();
      await listener.done;
    });

    it("redelivers a message whose worker process was killed while handling it", async (t) => {
      const h = harness(t);
      const database = h.open();
      const name = uniqueName("crash");
      const queue = new KyselyMessageQueue(database, { ...FAST, name });
      await queue.enqueue({ job: "survives a crash" });

      // A real second process claims the message and is SIGKILLed mid-handler.
      const child = h.spawnWorker(name, { workerId: "doomed", pollIntervalMs: 20, handlerTimeoutMs: 1500, leaseMs: 2000 }, "hang");
      await waitFor("the child to claim the message", () => child.lines.length > 0 || child.process.exitCode !== null, 20_000);
      assert.deepStrictEqual(child.lines, ['{"job":"survives a crash"}'], `the child exited early: ${child.stderr()}`);
      const exited = new Promise((resolve) => child.process.once("exit", resolve));
      child.process.kill("SIGKILL");
      await exited;

      const [held] = await rows(database, name);
      assert.match(held!.lease_owner!, /^doomed#/);
      assert.equal(held!.attempts, 1);
      const leaseUntil = held!.lease_until!;

      const handled: { at: number; attempts: number; lastError: string | null }[] = [];
      h.listen(queue, async () => {
        const [row] = await rows(database, name);
        handled.push({ at: Date.now(), attempts: row!.attempts, lastError: row!.last_error });
      });
      await waitFor("the redelivery", () => handled.length === 1);
      await waitFor("the row to be deleted", async () => (await rows(database, name)).length === 0);
      await sleep(100);
      assert.equal(handled.length, 1);
      assert.ok(handled[0]!.at >= leaseUntil, "the dead worker's lease was respected until it ran out");
      assert.equal(handled[0]!.attempts, 2);
      assert.match(handled[0]!.lastError!, /lease expired/);
    });

    it("dead-letters a message whose worker died on its last allowed attempt", async (t) => {
      const h = harness(t);
      const database = h.open();
      const name = uniqueName("crash-loop");
      const options = { ...FAST, maxAttempts: 1, handlerTimeoutMs: 1500, leaseMs: 2000 };
      const queue = new KyselyMessageQueue(database, { ...options, name });
      await queue.enqueue({ job: "kills its worker" });
      const child = h.spawnWorker(name, { ...options, workerId: "doomed" }, "hang");
      await waitFor("the child to claim the message", () => child.lines.length > 0 || child.process.exitCode !== null, 20_000);
      const exited = new Promise((resolve) => child.process.once("exit", resolve));
      child.process.kill("SIGKILL");
      await exited;

      let calls = 0;
      h.listen(queue, () => void calls++);
      const dead = () => database.db.selectFrom("fedify_mq_dead").selectAll().where("queue", "=", name).execute();
      await waitFor("the dead letter", async () => (await dead()).length === 1);
      const [row] = await dead();
      assert.equal(calls, 0, "a message that keeps killing workers is not handed out again");
      assert.deepStrictEqual(JSON.parse(row!.message), { job: "kills its worker" });
      assert.match(row!.last_error!, /lease expired/);
      assert.equal((await rows(database, name)).length, 0);
    });

    it("wakes at a delayed message's time even when it woke for another message before then", async (t) => {
      const h = harness(t);
      const database = h.open();
      const name = uniqueName("delay-wake");
      // No polling to fall back on: only the announced time can wake it.
      const queue = new KyselyMessageQueue(database, { ...FAST, name, pollIntervalMs: 60_000 });
      const handled = new Map<string, number>();
      h.listen(queue, (m: { id: string }) => void handled.set(m.id, Date.now()));
      await sleep(200);
      await queue.enqueue({ id: "warm-up" });
      await waitFor("the warm-up message", () => handled.has("warm-up"));
      // The listener is asleep until "later" is due; "now" wakes it earlier, and it must not forget "later".
      const enqueuedAt = Date.now();
      await queue.enqueue({ id: "later" }, { delay: ms(800) });
      await sleep(100);
      await queue.enqueue({ id: "now" });
      await waitFor("both messages", () => handled.has("now") && handled.has("later"), 10_000);
      const waited = handled.get("later")! - enqueuedAt;
      assert.ok(waited >= 800 && waited < 5000, `handled ${waited} ms after enqueue`);
    });

    it("does not hand out a delayed message before its time", async (t) => {
      const h = harness(t);
      const database = h.open();
      const name = uniqueName("delay");
      const queue = new KyselyMessageQueue(database, { ...FAST, name });
      const handled = new Map<string, number>();
      h.listen(queue, (m: { id: string }) => void handled.set(m.id, Date.now()));
      const enqueuedAt = Date.now();
      await queue.enqueue({ id: "later" }, { delay: ms(600) });
      await queue.enqueue({ id: "now" });
      const depth = await queue.getDepth();
      assert.equal(depth.delayed, 1);
      await waitFor("both messages", () => handled.size === 2);
      assert.ok(handled.get("now")! < handled.get("later")!);
      const waited = handled.get("later")! - enqueuedAt;
      assert.ok(waited >= 600, `handled ${waited} ms after enqueue`);
      assert.ok(waited < 5000, `handled ${waited} ms after enqueue`);
    });

    it("handles messages sharing an ordering key one at a time, in order", async (t) => {
      const h = harness(t);
      const database = h.open();
      const name = uniqueName("ordering");
      const queue = new KyselyMessageQueue(database, { ...FAST, name, concurrency: 3 });
      const events: string[] = [];
      const unkeyedDone = gate();
      h.listen(queue, async (m: { id: string }) => {
        events.push(`start ${m.id}`);
        // The first keyed message cannot finish until the unkeyed one has,
        // which only happens if the key does not hold up unrelated messages.
        if (m.id === "k1") await unkeyedDone.promise;
        await sleep(20);
        events.push(`end ${m.id}`);
        if (m.id === "free") unkeyedDone.open();
      });
      await queue.enqueue({ id: "k1" }, { orderingKey: "k" });
      await queue.enqueue({ id: "k2" }, { orderingKey: "k" });
      await queue.enqueue({ id: "free" });
      await waitFor("all three", () => events.filter((e) => e.startsWith("end")).length === 3);
      assert.ok(events.indexOf("end free") < events.indexOf("end k1"));
      assert.ok(events.indexOf("end k1") < events.indexOf("start k2"), events.join(", "));

      // An earlier message still waiting for its delay holds back later ones with its key.
      const order: string[] = [];
      h.listen(new KyselyMessageQueue(database, { ...FAST, name: `${name}-delayed`, concurrency: 3 }), (m: { id: string }) => void order.push(m.id));
      const delayedQueue = new KyselyMessageQueue(database, { ...FAST, name: `${name}-delayed` });
      await delayedQueue.enqueue({ id: "first" }, { orderingKey: "k", delay: ms(300) });
      await delayedQueue.enqueue({ id: "second" }, { orderingKey: "k" });
      await delayedQueue.enqueue({ id: "other key" }, { orderingKey: "j" });
      await waitFor("all three", () => order.length === 3);
      assert.deepStrictEqual(order, ["other key", "first", "second"]);
    });

    it("gives each message to exactly one of two processes sharing the queue", async (t) => {
      const h = harness(t);
      const name = uniqueName("shared");
      const first = h.open();
      const second = h.open();
      const options = { ...FAST, name, concurrency: 4 };
      const total = 200;
      const counts = new Map<number, number>();
      const byWorker = { first: 0, second: 0 };
      const handler = (worker: keyof typeof byWorker) => async (m: { n: number }) => {
        await sleep(Math.random() * 4);
        counts.set(m.n, (counts.get(m.n) ?? 0) + 1);
        byWorker[worker]++;
      };
      h.listen(new KyselyMessageQueue(first, { ...options, workerId: "first" }), handler("first"));
      h.listen(new KyselyMessageQueue(second, { ...options, workerId: "second" }), handler("second"));
      await new KyselyMessageQueue(first, { name }).enqueueMany(Array.from({ length: total }, (_, n) => ({ n })));
      await waitFor("every message", () => byWorker.first + byWorker.second >= total, 30_000);
      await waitFor("the table to drain", async () => (await rows(first, name)).length === 0);
      await sleep(200);
      assert.equal(counts.size, total);
      assert.deepStrictEqual([...counts.values()].filter((c) => c !== 1), [], "no message handled twice");
      assert.equal(byWorker.first + byWorker.second, total);
      t.diagnostic(`split between the two processes: ${byWorker.first} / ${byWorker.second}`);
    });

    it("gives each message to exactly one of two OS processes sharing the queue", async (t) => {
      const h = harness(t);
      const database = h.open();
      const name = uniqueName("processes");
      const options = { ...FAST, concurrency: 4 };
      const workers = [h.spawnWorker(name, { ...options, workerId: "one" }, "complete"), h.spawnWorker(name, { ...options, workerId: "two" }, "complete")];
      const total = 300;
      await new KyselyMessageQueue(database, { name }).enqueueMany(Array.from({ length: total }, (_, n) => ({ n })));
      const handledCount = () => workers.reduce((sum, w) => sum + w.lines.length, 0);
      await waitFor("every message", () => handledCount() >= total || workers.some((w) => w.process.exitCode !== null), 60_000);
      for (const w of workers) assert.equal(w.process.exitCode, null, `a worker died: ${w.stderr()}`);
      await waitFor("the table to drain", async () => (await rows(database, name)).length === 0);
      await sleep(200);
      const counts = new Map<number, number>();
      for (const w of workers) for (const line of w.lines) {
        const { n } = JSON.parse(line) as { n: number };
        counts.set(n, (counts.get(n) ?? 0) + 1);
      }
      assert.equal(counts.size, total);
      assert.deepStrictEqual([...counts.entries()].filter(([, c]) => c !== 1), [], "no message handled twice");
      t.diagnostic(`split between the two processes: ${workers.map((w) => w.lines.length).join(" / ")}`);
    });

    it("keeps messages across a restart", async (t) => {
      const h = harness(t);
      const name = uniqueName("restart");
      const before = tdb.open();
      await new KyselyMessageQueue(before, { ...FAST, name }).enqueue({ survives: "restart" });
      await before.close();

      const after = h.open();
      const seen: unknown[] = [];
      h.listen(new KyselyMessageQueue(after, { ...FAST, name }), (m) => void seen.push(m));
      await waitFor("the message", () => seen.length === 1);
      await waitFor("the row to be deleted", async () => (await rows(after, name)).length === 0);
      await sleep(100);
      assert.deepStrictEqual(seen, [{ survives: "restart" }]);
    });

    it("dead-letters a message after maxAttempts failures, never dropping it", async (t) => {
      const h = harness(t);
      const database = h.open();
      const name = uniqueName("dead");
      const queue = new KyselyMessageQueue(database, { ...FAST, name, maxAttempts: 3 });
      await queue.enqueue({ poison: true }, { orderingKey: "p" });
      await queue.enqueue({ behind: "the poison" }, { orderingKey: "p" });
      let calls = 0;
      const after: unknown[] = [];
      h.listen(queue, (m: { poison?: boolean }) => {
        if (!m.poison) return void after.push(m);
        calls++;
        throw new Error(`boom ${calls}`);
      });
      const dead = () => database.db.selectFrom("fedify_mq_dead").selectAll().where("queue", "=", name).execute();
      await waitFor("the dead letter", async () => (await dead()).length === 1);
      await waitFor("the message behind it", () => after.length === 1);
      await sleep(150);
      assert.equal(calls, 3);
      const [row] = await dead();
      assert.equal(row!.attempts, 3);
      assert.deepStrictEqual(JSON.parse(row!.message), { poison: true });
      assert.equal(row!.ordering_key, "p");
      assert.match(row!.last_error!, /boom 3/);
      assert.ok(row!.died_at >= row!.created_at);
      assert.equal((await rows(database, name)).length, 0);
    });

    it("keeps no private key in a dead letter of a Fedify delivery, only which key it was", async (t) => {
      const h = harness(t);
      const database = h.open();
      const name = uniqueName("dead-keys");
      const queue = new KyselyMessageQueue(database, { ...FAST, name, maxAttempts: 1 });
      const jwk = { kty: "RSA", n: "AQAB-modulus", e: "AQAB", d: "private-exponent", p: "prime-p", q: "prime-q" };
      const delivery = { type: "outbox", activityId: "https://union.example/a/1", inbox: "https://member.example/inbox", attempt: 0, keys: [{ keyId: "https://union.example/u/riders#main-key", privateKey: jwk }] };
      await queue.enqueue(delivery);
      let handedKey: unknown;
      h.listen(queue, (m: typeof delivery) => {
        handedKey = m.keys[0]!.privateKey;
        throw new Error("the inbox is gone");
      });
      const dead = () => database.db.selectFrom("fedify_mq_dead").selectAll().where("queue", "=", name).execute();
      await waitFor("the dead letter", async () => (await dead()).length === 1);
      assert.deepEqual(handedKey, jwk, "the handler had the key while the message was queued");
      const [row] = await dead();
      assert.doesNotMatch(row!.message, /private-exponent|prime-p/);
      const kept = JSON.parse(row!.message) as typeof delivery;
      assert.equal(kept.keys[0]!.keyId, "https://union.example/u/riders#main-key");
      assert.equal(kept.inbox, delivery.inbox);
      assert.match(row!.last_error!, /the inbox is gone/);
    });

    it("resolves listen() after abort only once the running handler has finished", async (t) => {
      const h = harness(t);
      const database = h.open();
      const name = uniqueName("drain");
      const queue = new KyselyMessageQueue(database, { ...FAST, name });
      const release = gate();
      const started = gate();
      let finished = false;
      const listener = h.listen(queue, async () => {
        started.open();
        await release.promise;
        await sleep(20);
        finished = true;
      });
      await queue.enqueue({ n: 1 });
      await started.promise;
      listener.controller.abort();
      let resolved = false;
      void listener.done.then(() => (resolved = true));
      await sleep(200);
      assert.equal(resolved, false, "still draining");
      release.open();
      await listener.done;
      assert.equal(finished, true);
      assert.equal((await rows(database, name)).length, 0, "the drained message was completed");
    });

    it("reports its depth, leaving out leased messages", async (t) => {
      const h = harness(t);
      const database = h.open();
      const name = uniqueName("depth");
      const queue = new KyselyMessageQueue(database, { ...FAST, name });
      assert.deepStrictEqual(await queue.getDepth(), { queued: 0, ready: 0, delayed: 0 });
      await queue.enqueueMany([{ n: 1 }, { n: 2 }]);
      await queue.enqueue({ n: 3 }, { delay: Temporal.Duration.from({ hours: 1 }) });
      assert.deepStrictEqual(await queue.getDepth(), { queued: 3, ready: 2, delayed: 1 });

      const release = gate();
      const handled: number[] = [];
      h.listen(queue, async (m: { n: number }) => {
        handled.push(m.n);
        if (m.n === 1) await release.promise;
      });
      await waitFor("the first message", () => handled.length === 1);
      assert.deepStrictEqual(await queue.getDepth(), { queued: 2, ready: 1, delayed: 1 });
      release.open();
      await waitFor("the second message", () => handled.length === 2);
      await waitFor("the depth to settle", async () => (await queue.getDepth()).queued === 1);
      assert.deepStrictEqual(await queue.getDepth(), { queued: 1, ready: 0, delayed: 1 });
    });

    it("wakes an idle listener at once instead of waiting for its poll", async (t) => {
      const h = harness(t);
      const database = h.open();
      const name = uniqueName("wake");
      const slow = { ...FAST, name, pollIntervalMs: 60_000 };
      const queue = new KyselyMessageQueue(database, slow);
      const handled = new Map<string, number>();
      const listener = h.listen(queue, (m: { id: string }) => void handled.set(m.id, Date.now()));
      await sleep(50);

      let sentAt = Date.now();
      await new KyselyMessageQueue(database, { name }).enqueue({ id: "local" });
      await waitFor("the local message", () => handled.has("local"), 5000);
      assert.ok(handled.get("local")! - sentAt < 2000);

      sentAt = Date.now();
      await queue.enqueue({ id: "delayed" }, { delay: ms(300) });
      await waitFor("the delayed message", () => handled.has("delayed"), 5000);
      assert.ok(handled.get("delayed")! - sentAt >= 300);

      // An abort ends the 60-second sleep straight away as well.
      const abortedAt = Date.now();
      listener.controller.abort();
      await listener.done;
      assert.ok(Date.now() - abortedAt < 2000);
    });

    it("wakes a listener in another process through LISTEN/NOTIFY", { skip: d.name === "sqlite" && "SQLite has no NOTIFY; other processes find messages by polling" }, async (t) => {
      const h = harness(t);
      const producer = h.open();
      const worker = h.open();
      const name = uniqueName("notify");
      const handled = new Map<string, number>();
      h.listen(new KyselyMessageQueue(worker, { ...FAST, name, pollIntervalMs: 60_000 }), (m: { id: string }) => void handled.set(m.id, Date.now()));
      const remote = new KyselyMessageQueue(producer, { name });
      // Handled either by the first poll or by a notification; once it is,
      // the worker is certainly LISTENing (it subscribes before polling).
      await remote.enqueue({ id: "warm-up" });
      await waitFor("the warm-up message", () => handled.has("warm-up"), 5000);

      let sentAt = Date.now();
      await remote.enqueue({ id: "notified" });
      await waitFor("the notified message", () => handled.has("notified"), 5000);
      assert.ok(handled.get("notified")! - sentAt < 2000);

      sentAt = Date.now();
      await remote.enqueue({ id: "delayed" }, { delay: ms(300) });
      await waitFor("the delayed message", () => handled.has("delayed"), 5000);
      assert.ok(handled.get("delayed")! - sentAt >= 300);
    });

    it("settling a message claims the next one of its ordering key for the same worker, with no NOTIFY to wake the others", { skip: d.name === "sqlite" && "SQLite has no NOTIFY; its settle only wakes the process's own lanes" }, async (t) => {
      const h = harness(t);
      const name = uniqueName("handoff");
      // Two worker processes' pools; neither polls during the test, so only
      // NOTIFY, an in-process wake or the hand-over can start a claim.
      const workers = { first: h.open(), second: h.open() };
      const handled: { id: string; worker: string }[] = [];
      const firstStarted = gate();
      const releaseFirst = gate();
      for (const [worker, database] of Object.entries(workers)) {
        h.listen(new KyselyMessageQueue(database, { ...FAST, name, pollIntervalMs: 3_600_000, workerId: worker }), async (m: { id: string }) => {
          handled.push({ id: m.id, worker });
          if (m.id === "accept") {
            firstStarted.open();
            await releaseFirst.promise;
          }
        });
      }
      // Everything announced on the channel for this lane, heard from outside.
      const outside = new pg.Client({ connectionString: tdb.url });
      await outside.connect();
      t.after(() => outside.end());
      const notices: string[] = [];
      outside.on("notification", (n) => {
        if (n.payload && (JSON.parse(n.payload) as { queue?: string }).queue === name) notices.push(n.payload);
      });
      await outside.query("LISTEN muster_mq");
      // As a join's transaction queues its Accept and welcome: one key, one commit.
      const producer = new KyselyMessageQueue(h.open(), { name });
      await Promise.all([producer.enqueue({ id: "accept" }, { orderingKey: "join" }), producer.enqueue({ id: "welcome" }, { orderingKey: "join" })]);
      await firstStarted.promise;
      await outside.query("select 1");
      const beforeSettle = notices.length;
      releaseFirst.open();
      await waitFor("the welcome", () => handled.some((x) => x.id === "welcome"));
      await waitFor("the table to drain", async () => (await rows(workers.first, name)).length === 0);
      // Anything sent at the settle's commit has reached this idle client once it answers.
      await outside.query("select 1");
      assert.deepEqual(handled.map((x) => x.id), ["accept", "welcome"]);
      assert.equal(handled[1]!.worker, handled[0]!.worker, "the worker that settled the Accept handled the welcome");
      assert.deepEqual(notices.slice(beforeSettle), [], "no NOTIFY woke the other worker for the welcome");
    });

    it("two processes' listeners of an interactive lane: the one whose claim found nothing lets the other take what is announced for a while, and still takes the lane over when that one is gone", { skip: d.name === "sqlite" && "PostgreSQL only: SQLite has no NOTIFY to wake both" }, async (t) => {
      const h = harness(t);
      const name = uniqueName("loser");
      // Claims of this lane sent by any pool of this process.
      let claims = 0;
      const query = pg.Client.prototype.query as (...args: unknown[]) => unknown;
      pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
        const q = args[0] as { text?: string } | string | undefined;
        const text = typeof q === "string" ? q : q?.text ?? "";
        const values = (Array.isArray(args[1]) ? args[1] : (q as { values?: unknown[] } | undefined)?.values) ?? [];
        if (text.startsWith('update "fedify_mq" set "lease_owner"') && values.includes(name)) claims++;
        return query.apply(this, args);
      } as typeof pg.Client.prototype.query;
      t.after(() => {
        pg.Client.prototype.query = query as typeof pg.Client.prototype.query;
      });
      const handled = new Map<string, { worker: string; at: number }>();
      const twice: string[] = [];
      const listeners = new Map<string, { controller: AbortController; done: Promise<void> }>();
      // Two worker processes' pools; neither polls during the test: only NOTIFY starts a claim.
      for (const worker of ["first", "second"]) {
        const queue = new KyselyMessageQueue(h.open(), { ...FAST, name, pollIntervalMs: 3_600_000, workerId: worker, rank: { priority: new LanePriority(), bulk: false } });
        listeners.set(worker, h.listen(queue, (m: { id: string }) => {
          if (handled.has(m.id)) twice.push(m.id);
          handled.set(m.id, { worker, at: Date.now() });
        }));
      }
      const producer = new KyselyMessageQueue(h.open(), { name });
      await producer.enqueue({ id: "warm-up" });
      await waitFor("the warm-up message", () => handled.has("warm-up"));
      await sleep(100);
      // One message at a time, each with its own NOTIFY to both, as joins' Accepts arrive.
      const n = 40;
      claims = 0;
      const sent = new Map<string, number>();
      for (let i = 0; i < n; i++) {
        sent.set(`m${i}`, Date.now());
        await producer.enqueue({ id: `m${i}` });
        await sleep(10);
      }
      await waitFor("every message", () => [...sent.keys()].every((id) => handled.has(id)));
      await sleep(100);
      assert.deepEqual(twice, [], "each message handled once");
      t.diagnostic(`${claims} claims for ${n} messages`);
      assert.ok(claims >= n, `${claims} claims counted for ${n} messages`);
      assert.ok(claims <= n * 1.6, `${claims} claims for ${n} messages (both listeners claimed for each: ${2 * n})`);
      const waits = [...sent].map(([id, at]) => handled.get(id)!.at - at);
      assert.ok(Math.max(...waits) < 1000, `each handled soon after it was announced: ${Math.max(...waits)} ms at most`);

      // The listener that took the most stops: the other takes every message again, each within its back-off.
      const counts = new Map<string, number>();
      for (const id of sent.keys()) counts.set(handled.get(id)!.worker, (counts.get(handled.get(id)!.worker) ?? 0) + 1);
      const busiest = [...counts].sort((a, b) => b[1] - a[1])[0]![0];
      const other = busiest === "first" ? "second" : "first";
      listeners.get(busiest)!.controller.abort();
      await listeners.get(busiest)!.done;
      for (let i = 0; i < 5; i++) {
        const at = Date.now();
        await producer.enqueue({ id: `after${i}` });
        await waitFor(`after${i}`, () => handled.has(`after${i}`), 2000);
        assert.equal(handled.get(`after${i}`)!.worker, other);
        assert.ok(handled.get(`after${i}`)!.at - at < 500, `handled ${handled.get(`after${i}`)!.at - at} ms after it was announced`);
      }
    });

    it("a settle hands the next messages of several ordering keys to the batch sender as one batch", { skip: d.name === "sqlite" && "SQLite's settle claims for its own listener's free slots (refill), not the next message of each ordering key" }, async (t) => {
      const h = harness(t);
      const name = uniqueName("handoff-batch");
      const database = h.open();
      // As a fan-out's deliveries: one ordering key per server, two deliveries each.
      const servers = ["a", "b", "c", "d"];
      const producer = new KyselyMessageQueue(h.open(), { name });
      await Promise.all(servers.map((s) => producer.enqueue({ n: 1, s }, { orderingKey: s })));
      await Promise.all(servers.map((s) => producer.enqueue({ n: 2, s }, { orderingKey: s })));
      const batches: { n: number; s: string }[][] = [];
      const batch = {
        async deliver(messages: readonly unknown[]) {
          batches.push(messages as { n: number; s: string }[]);
          return messages.map(() => "sent" as const);
        },
      };
      // No polls: only the first claim (at start) and the settles' hand-overs start work.
      h.listen(new KyselyMessageQueue(database, { ...FAST, name, pollIntervalMs: 3_600_000, batch }), () => {});
      await waitFor("every message sent", () => batches.flat().length === servers.length * 2);
      assert.deepEqual(batches.map((b) => b.map((m) => m.n)), [[1, 1, 1, 1], [2, 2, 2, 2]], "the second messages of the four keys went as one batch");
    });

    it("a batch waiting on one slow POST settles what it sent after a while, and its keys' next messages go on meanwhile", async (t) => {
      const h = harness(t);
      const name = uniqueName("straggler");
      const database = h.open();
      const producer = new KyselyMessageQueue(h.open(), { name });
      // One batch: a fast server's two deliveries (one key) and a slow server's one.
      await Promise.all([producer.enqueue({ id: "fast 1" }, { orderingKey: "fast" }), producer.enqueue({ id: "slow" }, { orderingKey: "slow" })]);
      await producer.enqueue({ id: "fast 2" }, { orderingKey: "fast" });
      const slow = gate();
      const sent: string[] = [];
      const batch = {
        async deliver(messages: readonly unknown[], each?: (index: number, outcome: "sent" | "fallback") => void) {
          return Promise.all((messages as { id: string }[]).map(async (m, i) => {
            if (m.id === "slow") await slow.promise;
            sent.push(m.id);
            each?.(i, "sent");
            return "sent" as const;
          }));
        },
      };
      h.listen(new KyselyMessageQueue(database, { ...FAST, name, batch, batchSize: 8 }), () => {});
      try {
        // Before: every message of the batch waited for the slowest (up to the 10 s HTTP timeout).
        await waitFor("the fast server's second delivery while the slow one still hangs", () => sent.includes("fast 2"), 8000);
        assert.deepEqual(sent, ["fast 1", "fast 2"]);
        await waitFor("the fast deliveries settled", async () => (await rows(database, name)).length === 1);
        assert.deepEqual((await rows(database, name)).map((r) => JSON.parse(r.message).id), ["slow"], "the slow one is still held");
      } finally {
        // Else the listener's close waits for it forever.
        slow.open();
      }
      await waitFor("the table to drain", async () => (await rows(database, name)).length === 0);
      assert.deepEqual(sent, ["fast 1", "fast 2", "slow"]);
    });

    it("two processes' listeners of a shared lane (share) split its ordering keys, each key still in order and each message once", { skip: d.name === "sqlite" && "PostgreSQL only: its settle hands over the next message of a key, and processes hear each other's heartbeats by NOTIFY" }, async (t) => {
      const h = harness(t);
      const name = uniqueName("share");
      // As a fan-out to personal inboxes: fewer ordering keys (servers) than
      // either listener has slots, many messages each.
      const keys = 10;
      const perKey = 40;
      const handled: { key: number; n: number; worker: string }[] = [];
      /** The listener handling each key now, and keys found being handled by both at once. */
      const handling = new Map<number, string>();
      const overlaps: string[] = [];
      for (const worker of ["first", "second"]) {
        h.listen(new KyselyMessageQueue(h.open(), { ...FAST, name, concurrency: 32, workerId: worker, share: true }), async (m: { key: number; n: number }) => {
          const other = handling.get(m.key);
          if (other !== undefined) overlaps.push(`key ${m.key} message ${m.n} by ${worker} while ${other} had one`);
          handling.set(m.key, worker);
          await sleep(3);
          handling.delete(m.key);
          handled.push({ ...m, worker });
        });
      }
      const producer = new KyselyMessageQueue(h.open(), { name });
      // Written together (one transaction), in order: each key's messages in n order.
      await Promise.all(Array.from({ length: keys * perKey }, (_, i) => producer.enqueue({ key: i % keys, n: Math.floor(i / keys) }, { orderingKey: `server ${i % keys}` })));
      await waitFor("every message", () => handled.length >= keys * perKey, 60_000);
      const database = h.open();
      await waitFor("the table to drain", async () => (await rows(database, name)).length === 0);
      const seen = new Set(handled.map((m) => `${m.key} ${m.n}`));
      assert.equal(seen.size, keys * perKey);
      assert.equal(handled.length, keys * perKey, "no message handled twice");
      for (let key = 0; key < keys; key++) {
        const order = handled.filter((m) => m.key === key).map((m) => m.n);
        assert.deepEqual(order, [...order].sort((a, b) => a - b), `key ${key} in order`);
      }
      assert.deepEqual(overlaps, [], "no key handled by both listeners at once");
      const first = handled.filter((m) => m.worker === "first").length;
      // The share is a cap each listener applies once it has heard the other's
      // heartbeat (lane-share.ts: about once a second while it has work or was
      // woken lately). Until then, alone as far as it knows, whoever claimed
      // first holds every key, handing each key's next message to itself. How
      // long that lasts is how soon the heartbeats cross: hundreds of
      // milliseconds or more on a loaded machine, a large part of this short
      // run, which decided the whole run's split (37/363 and 55/345 under
      // load). A fan-out of minutes hardly notices it. So the split is counted
      // from the moment both took part: from there, each must hold its share.
      const firsts = ["first", "second"].map((w) => handled.findIndex((m) => m.worker === w));
      assert.ok(firsts.every((i) => i >= 0), `both listeners took part: ${first} / ${handled.length - first}`);
      const joined = Math.max(...firsts);
      const shared = handled.slice(joined);
      const firstShared = shared.filter((m) => m.worker === "first").length;
      t.diagnostic(`split between the two processes: ${first} / ${handled.length - first}; once both took part (from message ${joined + 1}): ${firstShared} / ${shared.length - firstShared}`);
      assert.ok(firstShared >= shared.length / 4 && shared.length - firstShared >= shared.length / 4, `once both took part, each took at least a quarter: ${firstShared} / ${shared.length - firstShared}`);
    });

    it("two processes' listeners of a shared lane claim in batches while there is more work than slots (a message per ordering key, as a fan-out through shared inboxes)", { skip: d.name === "sqlite" && "PostgreSQL only: the share (lane-share.ts) is heard by NOTIFY" }, async (t) => {
      const h = harness(t);
      const name = uniqueName("share-batches");
      // 20,000 servers in the 10^6 fan-out: each delivery its own key, nothing handed over by a settle.
      const count = 1200;
      const batches: number[] = [];
      let sent = 0;
      const sender = {
        async deliver(messages: readonly unknown[]) {
          batches.push(messages.length);
          await sleep(5);
          sent += messages.length;
          return messages.map(() => "sent" as const);
        },
      };
      for (const worker of ["first", "second"]) {
        h.listen(new KyselyMessageQueue(h.open(), { ...FAST, name, concurrency: 8, workerId: worker, share: true, batch: sender, batchSize: 64 }), () => {
          throw new Error("every message goes through the batch sender");
        });
      }
      const producer = new KyselyMessageQueue(h.open(), { name });
      // Queued in waves, as a fan-out's pages are, while both listeners are busy and hear each other.
      for (let wave = 0; wave < 6; wave++) {
        await Promise.all(Array.from({ length: count / 6 }, (_, i) => producer.enqueue({ i: wave * 1000 + i }, { orderingKey: `server ${wave} ${i}` })));
        await sleep(150);
      }
      await waitFor("every message", () => sent >= count, 60_000);
      const database = h.open();
      await waitFor("the table to drain", async () => (await rows(database, name)).length === 0);
      const mean = count / batches.length;
      t.diagnostic(`${batches.length} batches, ${mean.toFixed(1)} messages each`);
      // Held to the share whenever a peer was heard, each claim took a few messages (3-5 in the fan-out bench's workers).
      assert.ok(mean >= 16, `claimed in batches: ${batches.length} batches for ${count} messages (${mean.toFixed(1)} each)`);
    });

    it("a busy lane on SQLite claims in the transaction that settles its finished messages, each message still handled once and in its key's order", { skip: d.name !== "sqlite" && "PostgreSQL's settle hands over the next message of its ordering key instead" }, async (t) => {
      const h = harness(t);
      const database = h.open();
      const name = uniqueName("refill");
      const count = 240;
      const producer = new KyselyMessageQueue(database, { name });
      // Six ordering keys, as a fan-out's servers: each key's messages one at a time, in order.
      await Promise.all(Array.from({ length: count }, (_, i) => producer.enqueue({ i, key: i % 6 }, { orderingKey: `k${i % 6}` })));
      // Every claim the database runs, and whether it ran inside a transaction.
      const claims: boolean[] = [];
      const scratch = new (await import("better-sqlite3")).default(":memory:");
      const Statement = Object.getPrototypeOf(scratch.prepare("select 1")) as { all: (...a: unknown[]) => unknown };
      scratch.close();
      const all = Statement.all;
      Statement.all = function (this: { source: string; database: { inTransaction: boolean } }, ...args: unknown[]) {
        if (/^update "fedify_mq" set "lease_owner"/.test(this.source)) claims.push(this.database.inTransaction);
        return all.apply(this, args);
      };
      t.after(() => {
        Statement.all = all;
      });
      const handled: { i: number; key: number }[] = [];
      h.listen(new KyselyMessageQueue(database, { ...FAST, name, concurrency: 6 }), async (m: { i: number; key: number }) => {
        handled.push(m);
        await sleep(1);
      });
      await waitFor("every message", () => handled.length >= count);
      await waitFor("the table to drain", async () => (await rows(database, name)).length === 0);
      assert.equal(handled.length, count);
      assert.equal(new Set(handled.map((m) => m.i)).size, count, "each message once");
      for (let key = 0; key < 6; key++) {
        const order = handled.filter((m) => m.key === key).map((m) => m.i);
        assert.deepEqual(order, [...order].sort((a, b) => a - b), `key ${key} in order`);
      }
      const inSettle = claims.filter(Boolean).length;
      assert.ok(inSettle > claims.length / 2, `most claims ran in a settle's transaction: ${inSettle} of ${claims.length}`);
    });

    it("a lane with payloadsWithClaim gets each delivery's activity with its claim and its settle's hand-over: no read of fedify_mq_payloads", { skip: d.name === "sqlite" && "PostgreSQL only: SQLite's claim is unchanged" }, async (t) => {
      const h = harness(t);
      const name = uniqueName("bodies");
      const jwk = { kty: "RSA", n: "AQAB-modulus", e: "AQAB", d: "private-exponent" };
      const options = { ...FAST, name, pollIntervalMs: 3_600_000, resolveKey: async () => jwk, payloadsWithClaim: true };
      const delivery = (id: string) => ({ type: "outbox", activityId: `https://union.example/a/${id}`, inbox: "https://member.example/inbox", attempt: 0,
        activity: { id: `https://union.example/a/${id}`, type: id === "accept" ? "Accept" : "Create" }, keys: [{ keyId: "https://union.example/u/riders#main-key", privateKey: jwk }] });
      const handled: { id: unknown; type: unknown }[] = [];
      const reads: string[] = [];
      const query = pg.Client.prototype.query as (...args: unknown[]) => unknown;
      pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
        const first = args[0];
        const text = typeof first === "string" ? first : (first as { text?: string } | null)?.text ?? "";
        if (/^select "body" from "fedify_mq_payloads"/.test(text)) reads.push(text);
        return query.apply(this, args);
      } as typeof pg.Client.prototype.query;
      t.after(() => (pg.Client.prototype.query = query as typeof pg.Client.prototype.query));
      // As a join's transaction queues its Accept and welcome: one key, one commit; the welcome comes with the Accept's settle.
      const producer = new KyselyMessageQueue(h.open(), { name, resolveKey: async () => jwk });
      await Promise.all([producer.enqueue(delivery("accept"), { orderingKey: "join" }), producer.enqueue(delivery("welcome"), { orderingKey: "join" })]);
      assert.equal((await rows(h.open(), name)).filter((r) => r.payload !== null).length, 2, "each delivery's activity is stored apart");
      h.listen(new KyselyMessageQueue(h.open(), options), (m: ReturnType<typeof delivery>) => {
        handled.push({ id: m.activity.id, type: m.activity.type });
      });
      await waitFor("both", () => handled.length === 2);
      assert.deepEqual(handled, [{ id: "https://union.example/a/accept", type: "Accept" }, { id: "https://union.example/a/welcome", type: "Create" }]);
      assert.deepEqual(reads, [], "no payload read");
    });

    it("close() stops its listeners; enqueueMany stores a large fan-out at once", async (t) => {
      const h = harness(t);
      const database = h.open();
      const name = uniqueName("fanout");
      const queue = new KyselyMessageQueue(database, { ...FAST, name });
      const idle = queue.listen(() => {});
      await sleep(50);
      await queue.close();
      await idle;

      const count = 2500;
      const startedAt = performance.now();
      await queue.enqueueMany(Array.from({ length: count }, (_, i) => ({ inbox: `https://example.com/users/${i}/inbox` })));
      t.diagnostic(`enqueueMany(${count}) took ${Math.round(performance.now() - startedAt)} ms`);
      assert.deepStrictEqual(await queue.getDepth(), { queued: count, ready: count, delayed: 0 });
      const ids = (await rows(database, name)).map((r) => JSON.parse(r.message).inbox as string);
      assert.equal(ids[0], "https://example.com/users/0/inbox");
      assert.equal(ids[count - 1], `https://example.com/users/${count - 1}/inbox`);
    });

    it("a delivery already made is not queued again by a fan-out handled again; other attempts and held copies are", async (t) => {
      const h = harness(t);
      const database = h.open();
      const name = uniqueName("rerun");
      const queue = new KyselyMessageQueue(database, { ...FAST, name });
      const delivery = (inbox: string, extra: Record<string, unknown> = {}) =>
        ({ type: "outbox", activityId: "https://union.example/u/riders/actions/1/activity", inbox, attempt: 0, ...extra });
      const handled: unknown[] = [];
      const listener = h.listen(queue, (m) => void handled.push(m));
      await queue.enqueue(delivery("https://a.example/inbox"));
      await waitFor("the first delivery", () => handled.length === 1);
      await waitFor("its row to go", async () => (await rows(database, name)).length === 0);
      listener.controller.abort();
      await listener.done;
      // The fan-out, handled again, enqueues every inbox once more.
      await queue.enqueueMany([delivery("https://a.example/inbox"), delivery("https://b.example/inbox")]);
      await queue.enqueue(delivery("https://a.example/inbox"));
      await queue.enqueue(delivery("https://a.example/inbox", { attempt: 1 }));
      await queue.enqueue(delivery("https://a.example/inbox", { circuitHeld: true }));
      const left = (await rows(database, name)).map((r) => JSON.parse(r.message) as { inbox: string; attempt: number; circuitHeld?: boolean });
      assert.deepEqual(left.map((m) => [m.inbox, m.attempt, m.circuitHeld ?? false]), [
        ["https://b.example/inbox", 0, false],
        ["https://a.example/inbox", 1, false],
        ["https://a.example/inbox", 0, true],
      ]);
    });

    it("a delivery another worker finishes while its fan-out is enqueued again is not queued a second time", { skip: d.name !== "postgres" && "SQLite has one writer: no other worker can finish a delivery in between" }, async (t) => {
      const h = harness(t);
      const database = h.open();
      const name = uniqueName("rerun-race");
      const queue = new KyselyMessageQueue(database, { ...FAST, name });
      // Shaped like one of Fedify's per-inbox deliveries, so it has a dedupe key.
      const delivery = { type: "outbox", activityId: "https://union.example/u/riders/actions/1/activity", inbox: "https://member.example/inbox", attempt: 0 };
      await queue.enqueue(delivery);
      const [row] = await rows(database, name);
      assert.ok(row?.dedupe_key);
      // Another worker completes it in a transaction still open while the
      // fan-out, handled again, enqueues the same delivery.
      const other = new pg.Client({ connectionString: tdb.url });
      await other.connect();
      try {
        await other.query("begin");
        await other.query("delete from fedify_mq where id = $1", [row.id]);
        await other.query("insert into fedify_mq_done (dedupe_key, done_at) values ($1, $2)", [row.dedupe_key, Date.now()]);
        const again = queue.enqueue(delivery);
        await sleep(300); // the insert now waits on the unique index for that transaction
        await other.query("commit");
        await again;
      } finally {
        await other.end();
      }
      assert.deepEqual(await rows(database, name), [], "the finished delivery is not queued again");
    });

    it("concurrent enqueue() calls (written together) keep call order and their own options while a listener handles them", async (t) => {
      const h = harness(t);
      const database = h.open();
      const name = uniqueName("group-commit");
      const queue = new KyselyMessageQueue(database, { ...FAST, name, concurrency: 4 });
      const handled: string[] = [];
      const listening = queue.listen((m: { id: string }) => void handled.push(m.id));
      // As Fedify enqueues a fan-out with ordering keys: every call at once.
      const count = 2500;
      const calls = Array.from({ length: count }, (_, i) =>
        queue.enqueue({ id: `m${i}` }, { orderingKey: `origin-${i % 50}`, ...(i === 7 ? { delay: ms(60_000) } : {}) }));
      await Promise.all(calls);
      const stored = await rows(database, name);
      // Rows already handled are gone; those left keep the call order.
      const order = stored.map((r) => Number((JSON.parse(r.message) as { id: string }).id.slice(1)));
      assert.deepEqual(order, [...order].sort((a, b) => a - b));
      const delayed = stored.find((r) => JSON.parse(r.message).id === "m7");
      assert.ok(delayed && delayed.available_at > Date.now() + 50_000, "the delay of one call applies to that call only");
      // Everything but m7 and what queues behind it under origin-7 gets handled.
      const blocked = Array.from({ length: count }, (_, i) => i).filter((i) => i % 50 === 7).length;
      const until = Date.now() + 60_000;
      while (handled.length < count - blocked && Date.now() < until) await sleep(20);
      assert.equal(handled.length, count - blocked);
      assert.equal(new Set(handled).size, handled.length, "each handled once");
      const origin3 = handled.filter((id) => Number(id.slice(1)) % 50 === 3).map((id) => Number(id.slice(1)));
      assert.deepEqual(origin3, [...origin3].sort((a, b) => a - b), "one ordering key's messages in enqueue order");
      await queue.close();
      await listening;
    });

    it("a claim's and a hand-over's lease is a HOT update on PostgreSQL: fedify_mq_key_lease is gone and the table keeps room on its pages (0079)", { skip: d.name !== "postgres" && "PostgreSQL only: SQLite has no HOT updates (0072 dropped the index there)" }, async (t) => {
      const h = harness(t);
      // Closed by the test itself (see below), not by the harness.
      const database = tdb.open();
      t.after(() => database.close().catch(() => {}));
      const { db } = database;
      const indexes = (await sql<{ indexname: string }>`select indexname from pg_indexes where tablename = 'fedify_mq'`.execute(db)).rows.map((r) => r.indexname);
      assert.ok(!indexes.includes("fedify_mq_key_lease"), `indexes of fedify_mq: ${indexes.join(", ")}`);
      assert.ok(indexes.includes("fedify_mq_key_order"), "the leased-key check goes through fedify_mq_key_order");
      const options = (await sql<{ reloptions: string[] | null }>`select reloptions from pg_class where relname = 'fedify_mq'`.execute(db)).rows[0]!.reloptions;
      assert.deepEqual(options, ["fillfactor=50"]);
      // Counted by every backend that updated the table, once its statistics
      // are flushed: a backend flushes them when its connection ends, so the
      // queue's database is closed before they are read from another one.
      const stats = h.open();
      const updates = async () => (await sql<{ upd: string; hot: string }>`select n_tup_upd as upd, n_tup_hot_upd as hot from pg_stat_user_tables where relname = 'fedify_mq'`.execute(stats.db)).rows[0]!;
      await sql`select pg_stat_clear_snapshot()`.execute(stats.db);
      const before = await updates();
      const name = uniqueName("hot");
      const queue = new KyselyMessageQueue(database, { ...FAST, name });
      // As a fan-out to personal inboxes: a few ordering keys (servers), each
      // key's messages leased one at a time, by a claim or a settle's hand-over.
      // A delivery's row holds its inbox, activity id and keys' ids: a few
      // hundred bytes, as here.
      const count = 300;
      const body = (i: number) => ({ i, inbox: `https://server-${i % 10}.example/users/member-${i}/inbox`, activity: `https://muster.example/unions/u1/actions/${"a".repeat(36)}`, keyIds: ["https://muster.example/unions/u1#main-key", "https://muster.example/unions/u1#ed25519-key"] });
      await queue.enqueueMany(Array.from({ length: count }, (_, i) => body(i)));
      await Promise.all(Array.from({ length: count }, (_, i) => queue.enqueue(body(count + i), { orderingKey: `server ${i % 10}` })));
      let handled = 0;
      const listening = queue.listen(() => void handled++);
      await waitFor(`${2 * count} messages handled`, async () => handled >= 2 * count && (await rows(database, name)).length === 0, 60_000);
      await queue.close();
      await listening;
      await database.close();
      let after = before;
      await waitFor("the queue's updates counted", async () => {
        await sql`select pg_stat_clear_snapshot()`.execute(stats.db);
        after = await updates();
        return Number(after.upd) - Number(before.upd) >= 2 * count;
      }, 20_000);
      const upd = Number(after.upd) - Number(before.upd);
      const hot = Number(after.hot) - Number(before.hot);
      // Every message was leased once (no retries): 600 updates, each HOT
      // unless its page had no room left for the new version.
      assert.ok(hot >= 0.9 * upd, `${hot} of ${upd} updates of fedify_mq were HOT`);
    });

    it("a message of an ordering key committed with a lower id after a later one of its key was claimed waits for it (PostgreSQL; the check fedify_mq_key_lease served)", { skip: d.name !== "postgres" && "PostgreSQL only: SQLite gives ids in commit order" }, async (t) => {
      const h = harness(t);
      const database = h.open();
      const name = uniqueName("late-commit");
      const queue = new KyselyMessageQueue(database, { ...FAST, name });
      const handling: string[] = [];
      const started: string[] = [];
      let overlap = false;
      const releaseLater = gate();
      h.listen(queue, async (m: { id: string }) => {
        if (handling.length > 0) overlap = true;
        handling.push(m.id);
        started.push(m.id);
        if (m.id === "later") await releaseLater.promise;
        handling.splice(handling.indexOf(m.id), 1);
      });
      // "earlier" takes its id first, in a transaction that commits only
      // once "later" (a higher id, same key, committed at once) is claimed.
      const inserted = gate();
      const commit = gate();
      const writer = database.db.transaction().execute(async (trx) => {
        await queue.enqueueWith(trx, { id: "earlier" }, { orderingKey: "k" });
        inserted.open();
        await commit.promise;
      });
      await inserted.promise;
      await queue.enqueue({ id: "later" }, { orderingKey: "k" });
      await waitFor("the later message claimed", () => started.includes("later"));
      commit.open();
      await writer;
      const ids = (await rows(database, name)).map((r) => [r.id, JSON.parse(r.message).id, r.lease_until !== null]);
      assert.ok(Number(ids[0]![0]) < Number(ids[1]![0]) && ids[0]![1] === "earlier" && ids[1]![2] === true, `rows: ${JSON.stringify(ids)}`);
      // Claimable by every other check (the first of its key by id, ready):
      // only the leased "later" holds it back. Many polls go by.
      await sleep(400);
      assert.deepEqual(started, ["later"], "the earlier message waits while the later one of its key is being handled");
      releaseLater.open();
      await waitFor("both handled", async () => started.length === 2 && (await rows(database, name)).length === 0);
      assert.deepEqual(started, ["later", "earlier"]);
      assert.equal(overlap, false, "never two messages of one key at once");
    });

    it("vacuums fedify_mq itself once a burst of messages has been settled, without autovacuum (PostgreSQL)", { skip: d.name !== "postgres" && "PostgreSQL only: SQLite reuses deleted rows' space" }, async (t) => {
      const h = harness(t);
      const database = h.open();
      const { db } = database;
      // Manual VACUUMs only (autovacuum has its own counter): the queue's.
      const vacuums = async () => Number((await sql<{ n: string }>`select vacuum_count as n from pg_stat_user_tables where relname = 'fedify_mq'`.execute(db)).rows[0]?.n ?? 0);
      const before = await vacuums();
      const name = uniqueName("vacuum");
      const queue = new KyselyMessageQueue(database, { ...FAST, name });
      const count = 12_000;
      await queue.enqueueMany(Array.from({ length: count }, (_, i) => ({ n: i })));
      let handled = 0;
      const listening = queue.listen(() => void handled++);
      try {
        await waitFor(`${count} messages handled`, async () => handled >= count && (await rows(database, name)).length === 0, 120_000);
      } finally {
        // close() waits for a VACUUM still running. Also when the wait failed:
        // a listener left running kept the test file's process alive for good.
        await queue.close();
        await listening;
      }
      await waitFor("the queue's VACUUM counted", async () => (await vacuums()) > before, 5_000);
    });
  });
}
