import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { sql } from "kysely";
import { openDatabase } from "../src/db/database.ts";
import { executeGenericPlanned } from "../src/db/named-statement.ts";
import { dialects } from "./helpers/databases.ts";

const pg = dialects.find((d) => d.name === "postgres")!;

describe("a statement run on its generic plan (executeGenericPlanned, PostgreSQL)", { skip: pg.skip }, () => {
  it("answers with the statement's own rows, commits it, plans it once for any values, and leaves the connection's setting as it was; a failure rolls back and is thrown", async (t) => {
    const tdb = await pg.create();
    // One connection: every statement below, and the checks, run on it.
    const database = openDatabase(tdb.url, { poolSize: 1 });
    t.after(async () => {
      await database.close();
      await tdb.destroy();
    });
    const { db } = database;
    await sql`create table probe (n integer primary key, v text)`.execute(db);
    await sql`insert into probe select i, 'x' from generate_series(1, 1000) i`.execute(db);
    await sql`analyze probe`.execute(db);
    const update = (n: number) => sql<{ n: number }>`update probe set v = 'y' where n <= ${n} returning n`.compile(db);
    for (const n of [1, 2, 500, 3, 4, 5, 6, 7]) {
      const { rows } = await executeGenericPlanned(db, update(n));
      assert.equal(rows.length, n, "the statement's rows, not COMMIT's");
    }
    assert.equal((await sql<{ c: number }>`select count(*)::int as c from probe where v = 'y'`.execute(db)).rows[0]!.c, 500, "committed");
    const plans = (await sql<{ generic_plans: string; custom_plans: string }>`select generic_plans, custom_plans from pg_prepared_statements where statement like 'update probe%'`.execute(db)).rows;
    assert.deepEqual(plans.map((p) => [Number(p.generic_plans), Number(p.custom_plans)]), [[8, 0]], "planned generically for every run, never for its values");
    assert.equal((await sql<{ m: string }>`select current_setting('plan_cache_mode') as m`.execute(db)).rows[0]!.m, "auto", "the setting was the transaction's only");
    await assert.rejects(executeGenericPlanned(db, sql`update probe set v = 'z' where n = 1 or n / 0 = 1 returning n`.compile(db)), /division by zero/);
    assert.equal((await sql<{ c: number }>`select count(*)::int as c from probe where v = 'z'`.execute(db)).rows[0]!.c, 0, "rolled back");
    assert.equal((await sql<{ m: string }>`select current_setting('plan_cache_mode') as m`.execute(db)).rows[0]!.m, "auto");
    const { rows } = await executeGenericPlanned(db, update(2));
    assert.equal(rows.length, 2, "the connection goes on after a failure");
    await assert.rejects(db.transaction().execute((trx) => executeGenericPlanned(trx, update(1))), TypeError, "refused inside a transaction, whose COMMIT it would send");
  });
});
