import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { sql } from "kysely";
import { ConfigError, loadConfig } from "../src/config.ts";
import { dialects } from "./helpers/databases.ts";
import { startMuster } from "./helpers/muster.ts";

describe("MUSTER_DB_SYNC", () => {
  it("is normal or full (any case, blank for the dialect's default); anything else stops start-up with one line", () => {
    assert.equal(loadConfig({}).dbSync, undefined);
    assert.equal(loadConfig({ MUSTER_DB_SYNC: " " }).dbSync, undefined);
    assert.equal(loadConfig({ MUSTER_DB_SYNC: "normal" }).dbSync, "normal");
    assert.equal(loadConfig({ MUSTER_DB_SYNC: "FULL" }).dbSync, "full");
    for (const bad of ["off", "on", "0", "fsync"]) {
      assert.throws(() => loadConfig({ MUSTER_DB_SYNC: bad }), (e: unknown) => e instanceof ConfigError && e.message.startsWith(`MUSTER_DB_SYNC must be normal`) && e.message.endsWith(`got ${JSON.stringify(bad)}`));
    }
  });

  for (const dialect of dialects) {
    describe(dialect.name, { skip: dialect.skip }, () => {
      // What each setting must be on the server's connections: SQLite's PRAGMA synchronous (1 NORMAL, 2 FULL), PostgreSQL's synchronous_commit.
      const expected = dialect.name === "sqlite" ? { unset: "1", normal: "1", full: "2" } : { unset: "on", normal: "off", full: "on" };
      for (const setting of ["unset", "normal", "full"] as const) {
        it(`${setting}: every connection of a running server commits with synchronous ${expected[setting]}`, async () => {
          const tdb = await dialect.create();
          const m = await startMuster(tdb, { env: setting === "unset" ? {} : { MUSTER_DB_SYNC: setting } });
          try {
            const db = m.muster.database.db;
            const read = async (q: typeof db) => {
              const r = dialect.name === "sqlite" ? await sql<{ synchronous: number }>`pragma synchronous`.execute(q) : await sql<{ synchronous_commit: string }>`show synchronous_commit`.execute(q);
              return String(Object.values(r.rows[0]!)[0]);
            };
            // Several transactions at once, so the pool opens several connections (PostgreSQL); each must have it.
            const seen = await Promise.all(Array.from({ length: 4 }, () => db.transaction().execute(async (trx) => {
              const v = await read(trx);
              await sql`select 1`.execute(trx);
              return v;
            })));
            seen.push(await read(db));
            assert.deepEqual(new Set(seen), new Set([expected[setting]]));
          } finally {
            await m.stop();
            await tdb.destroy();
          }
        });
      }
    });
  }
});
