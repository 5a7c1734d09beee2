import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import pg from "pg";
import { sql } from "kysely";
import { dialects } from "./helpers/databases.ts";

const sqlite = dialects.find((d) => d.name === "sqlite")!;
const postgres = dialects.find((d) => d.name === "postgres")!;

describe("the SQLite connection's reused statements", () => {
  it("give the same answers as fresh ones, across many distinct queries and a schema change", async () => {
    const tdb = await sqlite.create();
    const { db, close } = tdb.open();
    try {
      await sql`create table t (id integer primary key, a text)`.execute(db);
      // More distinct statements than the cache holds, each run twice.
      for (let round = 0; round < 2; round++) {
        for (let i = 0; i < 600; i++) {
          const r = await sql<{ v: number }>`select ${sql.lit(i)} + ${round} as v`.execute(db);
          assert.equal(r.rows[0]!.v, i + round);
        }
      }
      await sql`insert into t (a) values ('x')`.execute(db);
      const before = await sql<Record<string, unknown>>`select * from t`.execute(db);
      assert.deepEqual(before.rows, [{ id: 1, a: "x" }]);
      // The same text after the table changed must see the new column.
      await sql`alter table t add column b text default 'y'`.execute(db);
      const after = await sql<Record<string, unknown>>`select * from t`.execute(db);
      assert.deepEqual(after.rows, [{ id: 1, a: "x", b: "y" }]);
      // A statement that failed is usable again.
      await assert.rejects(sql`insert into t (id, a) values (1, 'dup')`.execute(db), /UNIQUE/);
      await assert.rejects(sql`insert into t (id, a) values (1, 'dup')`.execute(db), /UNIQUE/);
      await sql`insert into t (id, a) values (2, 'z')`.execute(db);
      assert.equal((await sql<{ n: number }>`select count(*) as n from t`.execute(db)).rows[0]!.n, 2);
    } finally {
      await close();
      await tdb.destroy();
    }
  });
});

describe("the PostgreSQL pool", { skip: postgres.skip }, () => {
  it("survives the server ending an idle pooled connection, and the next query works", async () => {
    const tdb = await postgres.create();
    const { db, close } = tdb.open();
    const admin = new pg.Client({ connectionString: tdb.url });
    const uncaught: unknown[] = [];
    const onUncaught = (error: unknown) => uncaught.push(error);
    process.on("uncaughtException", onUncaught);
    try {
      const pid = (await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(db)).rows[0]!.pid;
      await admin.connect();
      // The pooled connection is idle now: end it from the server side.
      await admin.query("select pg_terminate_backend($1)", [pid]);
      await sleep(300);
      assert.deepEqual(uncaught, [], "no uncaught exception");
      const r = await sql<{ one: number }>`select 1 as one`.execute(db);
      assert.equal(r.rows[0]!.one, 1);
    } finally {
      process.off("uncaughtException", onUncaught);
      await admin.end();
      await close();
      await tdb.destroy();
    }
  });
});

describe("the PostgreSQL pool when the server has no connection slot left", { skip: postgres.skip }, () => {
  it("waits for a slot (its own pool's, freed) instead of failing the query with 'too many connections'", async () => {
    const tdb = await postgres.create();
    // A role allowed one connection stands in for a server at max_connections
    // (superusers are exempt from connection limits, so not the test's user).
    const role = `muster_one_conn_${process.pid}`;
    const admin = new pg.Client({ connectionString: tdb.url });
    await admin.connect();
    await admin.query(`create role ${role} login connection limit 1`);
    const url = new URL(tdb.url);
    url.username = role;
    url.password = "";
    const { openDatabase } = await import("../src/db/database.ts");
    const database = openDatabase(url.href, { poolSize: 3 });
    try {
      // One connection held by a transaction for a moment; a query beside it
      // needs a second connection, which the server refuses (53300).
      const held = database.db.transaction().execute(async (trx) => {
        await sql`select pg_sleep(0.4)`.execute(trx);
      });
      await sleep(50);
      const beside = await sql<{ one: number }>`select 1 as one`.execute(database.db);
      assert.equal(beside.rows[0]!.one, 1, "the query beside the transaction ran once a connection was free");
      await held;
    } finally {
      await database.close();
      await admin.query(`select pg_terminate_backend(pid) from pg_stat_activity where usename = $1`, [role]);
      // A role is the cluster's, not the database's: dropped once the database is gone.
      await admin.end();
      await tdb.destroy();
      const cleanup = new pg.Client({ connectionString: process.env.TEST_DATABASE_URL });
      await cleanup.connect();
      await cleanup.query(`drop role if exists ${role}`).finally(() => cleanup.end());
    }
  });
});

describe("the connection budget warning (serve and worker, PostgreSQL)", () => {
  it("names the pool, the server's allowance and what is open when they do not fit, and says nothing when they do", async () => {
    const { connectionBudgetWarning } = await import("../src/db/database.ts");
    // Two workers at the default concurrency (52 each) and the web (10) on a server allowing 97.
    const warning = connectionBudgetWarning(52, 97, 62);
    assert.ok(warning, "a second worker's pool does not fit");
    assert.match(warning, /up to 52 PostgreSQL connections; the server allows 97 .* and 62 are open now/);
    assert.match(warning, /MUSTER_QUEUE_CONCURRENCY/);
    assert.equal(connectionBudgetWarning(32, 97, 42), undefined);
  });
});
