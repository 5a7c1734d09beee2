import { KyselyMessageQueue } from "../federation/kysely-message-queue.ts";
import { openDatabase } from "../src/db/database.ts";
import type { DialectCase } from "../test/helpers/databases.ts";
import { type Benchmark, cpuMs, loadAverage, perSecond, progress, type Row, waitFor } from "./lib.ts";

/**
 * Listen concurrency, and whether messages come in pairs sharing an ordering
 * key (a join's Accept and welcome: the second waits for the first).
 */
const CASES: { concurrency: number; paired: boolean }[] = [
  { concurrency: 1, paired: false },
  { concurrency: 8, paired: false },
  { concurrency: 8, paired: true },
];
/** Roughly the size of a small Fedify inbox message. */
const PAYLOAD = "x".repeat(400);

export const queueThroughput: Benchmark = {
  name: "queue-throughput",
  title: "KyselyMessageQueue alone: enqueueMany, then listen with a no-op handler",
  summary: "messages/s for one enqueueMany of N messages and for draining them at listen concurrency 1 and 8",
  notes: [
    "enqueue: one enqueueMany() call (multi-row INSERTs of 1000 in one transaction); handle: from listen() until all N are handled and deleted",
    "each case gets its own fresh batch of N on the same database; default queue options otherwise (openDatabase's default pool of 10 on PostgreSQL)",
    "paired: messages two by two share an ordering key, as a join's Accept and welcome do (the second is claimable once the first is settled)",
    "CPU ms/msg: this process's CPU time while handling, per message (on PostgreSQL the server's own CPU is not included)",
  ],
  async run(dialect: DialectCase, { quick }): Promise<Row[]> {
    const n = quick ? 2000 : 20_000;
    const messages = Array.from({ length: n }, (_, i) => ({ type: "bench", id: i, payload: PAYLOAD }));
    const bytes = JSON.stringify(messages[0]).length;
    const tdb = await dialect.create();
    const database = openDatabase(tdb.url);
    let queue: KyselyMessageQueue | undefined;
    try {
      const rows: Row[] = [];
      for (const { concurrency, paired } of CASES) {
        queue = new KyselyMessageQueue(database, { concurrency });
        const enqueueStart = performance.now();
        if (paired) {
          for (let i = 0; i < n; i += 2) await queue.enqueueMany(messages.slice(i, i + 2), { orderingKey: `pair ${i}` });
        } else {
          await queue.enqueueMany(messages);
        }
        const enqueueMs = performance.now() - enqueueStart;
        progress(`${dialect.name}: enqueued ${n} in ${(enqueueMs / 1000).toFixed(1)} s; handling at concurrency ${concurrency}`);

        let handled = 0;
        const handleStart = performance.now();
        const cpu = process.cpuUsage();
        void queue.listen(() => {
          handled++;
        });
        // On SQLite every query completes synchronously, so with a no-op handler the
        // listen loop runs on microtasks alone and this poll (and its progress
        // line) only gets a turn once the backlog is drained.
        await waitFor(`${dialect.name}: concurrency ${concurrency}`, () => handled >= n, () => `${handled}/${n} handled`, { pollMs: 5 });
        // close() resolves once the last handlers' messages are deleted.
        await queue.close();
        const handleMs = performance.now() - handleStart;
        const handleCpu = cpuMs(cpu);
        const left = (await queue.getDepth()).queued;
        if (left !== 0) throw new Error(`${left} messages left in the queue after handling ${handled}`);
        rows.push({
          dialect: dialect.name,
          N: n,
          "msg bytes": bytes,
          concurrency,
          paired: paired ? "yes" : "no",
          "enqueue msg/s": perSecond(n, enqueueMs),
          "handle msg/s": perSecond(n, handleMs),
          "CPU ms/msg": Number((handleCpu / n).toFixed(3)),
          load: loadAverage().replace("load average ", ""),
        });
      }
      return rows;
    } finally {
      await queue?.close();
      await database.close();
      await tdb.destroy();
    }
  },
};
