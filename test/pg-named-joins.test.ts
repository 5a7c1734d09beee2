import { describe, it, type TestContext } from "node:test";
import assert from "node:assert/strict";
import { CompiledQuery, type Kysely, sql } from "kysely";
import pgClient from "pg";
import { openDatabase } from "../src/db/database.ts";
import type { DB } from "../src/db/schema.ts";
import { WriteBatch } from "../src/db/batch.ts";
import { sendWithNext, sharesRoundTrip } from "../src/db/pipeline.ts";
import { requestToJoin } from "../src/members/membership.ts";
import { createUnion } from "../src/unions/unions.ts";
import { dialects } from "./helpers/databases.ts";
import { followId, LEADER, person, sharedKeys } from "./helpers/domain-context.ts";
import { createEventBus } from "../src/events.ts";
import { recordingOutbox } from "./helpers/membership-worker.ts";

const pg = dialects.find((d) => d.name === "postgres")!;

/** A fresh PostgreSQL database on one connection, with a table `probe (n integer primary key)`; dropped after the test. */
async function probeDatabase(t: TestContext): Promise<Kysely<DB>> {
  const tdb = await pg.create();
  const database = openDatabase(tdb.url, { poolSize: 1 });
  t.after(async () => {
    await database.close();
    await tdb.destroy();
  });
  await sql`create table probe (n integer primary key)`.execute(database.db);
  return database.db;
}

/** Counts the round trips every pg client makes from now until stop(): a statement pipelined with the next one is not one. */
function countRoundTrips(): { readonly count: number; stop(): void } {
  let count = 0;
  const query = pgClient.Client.prototype.query as (...args: unknown[]) => unknown;
  pgClient.Client.prototype.query = function (this: pgClient.Client, ...args: unknown[]) {
    if (!sharesRoundTrip(args[0])) count++;
    return query.apply(this, args);
  } as typeof pgClient.Client.prototype.query;
  return {
    get count() {
      return count;
    },
    stop() {
      pgClient.Client.prototype.query = query as typeof pgClient.Client.prototype.query;
    },
  };
}

describe("a join's statements on PostgreSQL are prepared once per connection", { skip: pg.skip }, () => {
  it("the lock, the join's read and its writes run as named statements, each parsed once on the connection", async () => {
    const tdb = await pg.create();
    // One connection: every statement of every join runs on it, and pg_prepared_statements shows that backend's.
    const database = openDatabase(tdb.url, { poolSize: 1 });
    try {
      const { db } = database;
      const deps = { db, events: createEventBus(), outbox: recordingOutbox };
      const union = await createUnion({ db, events: deps.events, generateKeys: sharedKeys }, { slug: "open", name: "Open", purpose: "p", leaderHandle: LEADER.handle, joinPolicy: "open" });
      await requestToJoin(deps, union.id, LEADER, followId());
      const joins = 8;
      for (let i = 0; i < joins; i++) assert.equal((await requestToJoin(deps, union.id, person(`p${i}`), followId())).outcome, "accepted");
      const { rows } = await sql<{ statement: string; generic_plans: number; custom_plans: number }>`
        select statement, generic_plans::int, custom_plans::int from pg_prepared_statements`.execute(db);
      const runs = (pattern: RegExp) => rows.filter((r) => pattern.test(r.statement)).map((r) => r.generic_plans + r.custom_plans);
      const fold = rows.map((r) => r.statement.replace(/\s+/g, " ")).join("\n");
      // Each a named statement that ran for every join (and the leader's): parsed once, not once per join.
      assert.ok(runs(/for no key update/i).some((n) => n >= joins), `the union's lock:\n${fold}`);
      assert.ok(runs(/json_agg/).some((n) => n >= joins), `the join's combined read:\n${fold}`);
      assert.ok(runs(/^insert into "members"/).some((n) => n >= joins), `the member's insert:\n${fold}`);
      assert.ok(runs(/^insert into "invites"/).some((n) => n >= joins), `the member's invite:\n${fold}`);
    } finally {
      await database.close();
      await tdb.destroy();
    }
  });
});

describe("a transaction on PostgreSQL sends its BEGIN with its first statement", { skip: pg.skip }, () => {
  it("one round trip for BEGIN and the first statement, the same outcome: committed, rolled back, or failed on its first statement", async (t) => {
    const db = await probeDatabase(t);
    const trips = countRoundTrips();
    try {
      await db.transaction().execute(async (trx) => {
        await sql`insert into probe (n) values (${1})`.execute(trx);
        await sql`insert into probe (n) values (${2})`.execute(trx);
      });
    } finally {
      trips.stop();
    }
    // BEGIN + the first insert, the second insert, COMMIT (was four).
    assert.equal(trips.count, 3);
    // A rollback after writes, and a first statement that fails: nothing is kept, and the connection serves on.
    await assert.rejects(db.transaction().execute(async (trx) => {
      await sql`insert into probe (n) values (${3})`.execute(trx);
      throw new Error("changed my mind");
    }), /changed my mind/);
    await assert.rejects(db.transaction().execute(async (trx) => {
      await sql`insert into probe (n) values (${1})`.execute(trx);
    }), /duplicate key/);
    await db.transaction().execute(async () => {});
    // A several-statement simple query first (as lockThenReadAll sent before): answered with its last statement's rows.
    const multi = await db.transaction().execute((trx) => trx.executeQuery(CompiledQuery.raw("select 1 as a; select 2 as b")));
    assert.deepEqual(multi.rows, [{ b: 2 }]);
    const { rows } = await sql<{ n: number }>`select n from probe order by n`.execute(db);
    assert.deepEqual(rows.map((r) => r.n), [1, 2]);
    // Still in no transaction: a statement outside one commits by itself.
    const status = await sql<{ now: unknown; x: unknown }>`select now() = statement_timestamp() as x`.execute(db);
    assert.equal(status.rows[0]!.x, true);
  });
});

describe("statements sent with the transaction's next one on PostgreSQL (sendWithNext)", { skip: pg.skip }, () => {
  it("share the next statement's round trip, answer once it ran, and fail it (rolling back) when they fail", async (t) => {
    const db = await probeDatabase(t);
    const trips = countRoundTrips();
    t.after(() => trips.stop());
    // BEGIN, two deferred inserts and a read: one round trip; a batch flushed withNext and the COMMIT: one more.
    const read = await db.transaction().execute(async (trx) => {
      const a = await sendWithNext(trx, sql`insert into probe (n) values (${1}) returning n`.compile(trx));
      const b = await sendWithNext(trx, sql`insert into probe (n) values (${2})`.compile(trx));
      const r = await sql<{ c: number }>`select count(*)::int as c from probe`.execute(trx);
      assert.deepEqual((await a.result).rows, [{ n: 1 }]);
      await b.result;
      const batch = new WriteBatch();
      batch.push(sql`insert into probe (n) values (${3})`.compile(trx));
      batch.push(sql`insert into probe (n) values (${4})`.compile(trx));
      await batch.flush(trx, { withNext: true });
      return r.rows[0]!.c;
    });
    assert.equal(read, 2, "the read ran after the deferred inserts");
    assert.equal(trips.count, 2);
    // A deferred statement that fails fails the one it travels with; nothing of the transaction is kept.
    let failed: Promise<unknown> | undefined;
    await assert.rejects(db.transaction().execute(async (trx) => {
      await sql`insert into probe (n) values (${5})`.execute(trx);
      failed = (await sendWithNext(trx, sql`insert into probe (n) values (${1})`.compile(trx))).result;
      await sql`select 1`.execute(trx);
    }), /duplicate key/);
    await assert.rejects(failed!, /duplicate key/);
    // And one flushed withNext fails the COMMIT, which rolls back.
    await assert.rejects(db.transaction().execute(async (trx) => {
      await sql`insert into probe (n) values (${6})`.execute(trx);
      const batch = new WriteBatch();
      batch.push(sql`insert into probe (n) values (${2})`.compile(trx));
      await batch.flush(trx, { withNext: true });
    }), /duplicate key/);
    // Outside a transaction it runs at once.
    const alone = await sendWithNext(db, sql`insert into probe (n) values (${7}) returning n`.compile(db));
    assert.deepEqual((await alone.result).rows, [{ n: 7 }]);
    const { rows } = await sql<{ n: number }>`select n from probe order by n`.execute(db);
    assert.deepEqual(rows.map((r) => r.n), [1, 2, 3, 4, 7]);
  });
});
