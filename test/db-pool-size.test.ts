import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { loadConfig } from "../src/config.ts";
import { createMuster, MIN_POOL_WITHOUT_QUEUE, poolSizeFor } from "../src/main.ts";
import { queueConnections } from "../federation/queue-lanes.ts";
import { dialects } from "./helpers/databases.ts";
import { freePort } from "./helpers/muster.ts";

// Issue 16: the PostgreSQL pool is configurable (MUSTER_DB_POOL) and never
// below the handlers it serves. cli.test covers the refusals below the
// minimum; this covers that a value at or above it is the pool a process gets.

describe("MUSTER_DB_POOL", () => {
  it("is the pool size when at or above what the process needs; unset, the queue's connections plus the web's", () => {
    const needed = queueConnections(16);
    assert.equal(poolSizeFor({ dbPool: 60, queueConcurrency: 16 }, true), 60);
    assert.equal(poolSizeFor({ dbPool: needed, queueConcurrency: 16 }, true), needed, "exactly the handlers and the LISTEN");
    assert.equal(poolSizeFor({ dbPool: undefined, queueConcurrency: 16 }, true), needed + 8);
    // A smaller concurrency needs fewer, so a smaller pool is allowed.
    assert.equal(poolSizeFor({ dbPool: queueConnections(4), queueConcurrency: 4 }, true), queueConnections(4));
    assert.throws(() => poolSizeFor({ dbPool: queueConnections(4) - 1, queueConcurrency: 4 }, true), /below the \d+ connections the queue needs at MUSTER_QUEUE_CONCURRENCY=4/);
    // A process without handlers (serve --no-worker, one-shot commands).
    assert.equal(poolSizeFor({ dbPool: 3, queueConcurrency: 16 }, false), 3);
    assert.equal(poolSizeFor({ dbPool: 100, queueConcurrency: 16 }, false), 100);
    assert.equal(poolSizeFor({ dbPool: undefined, queueConcurrency: 16 }, false), 10);
    assert.equal(poolSizeFor({ dbPool: MIN_POOL_WITHOUT_QUEUE, queueConcurrency: 16 }, false), MIN_POOL_WITHOUT_QUEUE);
  });

  const pg = dialects.find((d) => d.name === "postgres")!;
  it("sizes the process's PostgreSQL pool", { skip: pg.skip }, async () => {
    const tdb = await pg.create();
    try {
      for (const [runsQueue, env] of [[false, { MUSTER_DB_POOL: "3" }], [true, { MUSTER_DB_POOL: "47" }], [true, {}]] as const) {
        const port = await freePort();
        const config = loadConfig({ PORT: String(port), ORIGIN: `http://127.0.0.1:${port}`, DATABASE_URL: tdb.url, LOG_LEVEL: "error", ...env });
        const muster = await createMuster(config, { runsQueue });
        try {
          const expected = "MUSTER_DB_POOL" in env ? Number(env.MUSTER_DB_POOL) : queueConnections(16) + 8;
          assert.equal(muster.database.poolSize, expected);
          assert.equal(muster.database.pgPool?.options.max, expected, `${JSON.stringify(env)}, runsQueue ${runsQueue}: pg.Pool's max`);
        } finally {
          await muster.close();
        }
      }
    } finally {
      await tdb.destroy();
    }
  });
});
