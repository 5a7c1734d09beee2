import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { sql } from "kysely";
import { dialects } from "./helpers/databases.ts";
import { migrateToLatest } from "../src/db/migrate.ts";

for (const d of dialects) {
  describe(`migrations on ${d.name}`, { skip: d.skip }, () => {
    it("create every table, and a second run is a no-op", async () => {
      const tdb = await d.create();
      const { db, close } = tdb.open();
      try {
        const again = await migrateToLatest(db);
        assert.deepEqual(again.results, []);
        const tables = (await db.introspection.getTables()).map((t) => t.name).sort();
        for (const t of ["unions", "actor_keys", "remote_actors", "inbox_activities", "fedify_kv", "fedify_mq", "fedify_mq_dead"]) {
          assert.ok(tables.includes(t), `missing table ${t}`);
        }
        // The auto-increment spelling differs per dialect: both must hand out ids.
        const now = Date.now();
        const ids = [];
        for (let i = 0; i < 2; i++) {
          const r = await db.insertInto("fedify_mq").values({ queue: "q", message: "{}", available_at: now, attempts: 0, created_at: now })
            .returning("id").executeTakeFirstOrThrow();
          ids.push(r.id);
        }
        assert.ok(ids[1]! > ids[0]!);
        const big = await sql<{ n: number }>`select created_at as n from fedify_mq limit 1`.execute(db);
        assert.equal(typeof big.rows[0]!.n, "number");
      } finally {
        await close();
        await tdb.destroy();
      }
    });
  });
}
