import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { sql } from "kysely";
import { KyselyKvStore, keySweepSlice } from "../federation/kysely-kv-store.ts";
import { dialects } from "./helpers/databases.ts";

// SQLite, storage at scale (issue 16): the KV store's purge used to delete
// the expired keys of the whole of fedify_public_keys every minute, a scan of
// every cached key (one a member). Now a slice of the primary key's range
// each time, as PostgreSQL's TID-range slices (pg-actor-hash-id-and-key-sweep),
// every key within a few purges.

const sqlite = dialects.find((d) => d.name === "sqlite")!;

describe("the KV store's purge of expired keys on sqlite: bounded slices by key id, no table scan", { skip: sqlite.skip }, () => {
  it("each purge reads a slice of fedify_public_keys by its primary key; every expired key goes within a few purges, live ones stay", async (t) => {
    const tdb = await sqlite.create();
    const { db, close } = tdb.open();
    try {
      const realNow = Date.now();
      // 30,000 cached keys (more than a purge's slice of 10,000), every other one expired.
      await sql`with recursive g(i) as (select 0 union all select i + 1 from g where i < 29999)
        insert into fedify_public_keys (key_id, owner, key, form, expires_at)
        select 'astranger-' || i || '.example/users/x', null, randomblob(256), 2, case when i % 2 = 0 then 1 else ${realNow + 10 * 86400_000} end from g`.execute(db);
      const count = async (query: ReturnType<typeof sql<{ n: number }>>) => Number((await query.execute(db)).rows[0]!.n);
      const expired = () => count(sql<{ n: number }>`select count(*) as n from fedify_public_keys where expires_at <= ${realNow}`);

      t.mock.timers.enable({ apis: ["Date"], now: realNow });
      const kv = new KyselyKvStore(db);
      // The first write purges.
      await kv.set(["test", "purge", "0"], 1);
      const left = await expired();
      assert.ok(left > 0 && left < 15_000, `a slice, not the whole table: ${left} of 15,000 expired keys left`);
      for (let purge = 1; purge <= 3; purge++) {
        t.mock.timers.tick(61_000);
        await kv.set(["test", "purge", String(purge)], 1);
      }
      assert.equal(await expired(), 0, "every expired key deleted within four purges");
      assert.equal(await count(sql<{ n: number }>`select count(*) as n from fedify_public_keys`), 15_000, "live keys kept");

      // The plans of the slice's statements: a search of the primary key's range, never a scan of the table.
      const { end, clear } = keySweepSlice(db, "astranger-1", 10_000, "astranger-2", realNow);
      for (const statement of [end, clear]) {
        const compiled = statement.compile();
        const plan = (await db.executeQuery<{ detail: string }>({ ...compiled, sql: `explain query plan ${compiled.sql}` })).rows;
        const details = plan.map((r) => r.detail).join("\n");
        assert.match(details, /SEARCH fedify_public_keys USING PRIMARY KEY \(key_id>\?/, details);
        assert.doesNotMatch(details, /SCAN fedify_public_keys/, details);
      }
    } finally {
      await close();
      await tdb.destroy();
    }
  });
});
