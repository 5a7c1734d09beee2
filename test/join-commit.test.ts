import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { sql, type Kysely } from "kysely";
import type { DB } from "../src/db/schema.ts";
import type { Database } from "../src/db/database.ts";
import { joinCommit } from "../federation/join-commit.ts";
import { dialects, type TestDatabase } from "./helpers/databases.ts";

/*
 * Group commit of the follow's fast path (federation/join-commit.ts): joins
 * that arrive together share one transaction, a savepoint each, and every
 * outcome (a success, a failure) is given only once that transaction has
 * committed, so a 202 still means the join is durable. One join's failure
 * rolls back its own writes only; a transaction that cannot commit fails
 * every join in it and writes none.
 */

for (const d of dialects) {
  describe(`group commit of joins, on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    let database: Database;
    /** Another connection: sees only what is committed. */
    let other: Database;
    let seq = 0;

    before(async () => {
      tdb = await d.create();
      database = tdb.open();
      other = tdb.open();
    });
    after(async () => {
      await other?.close();
      await database?.close();
      await tdb?.destroy();
    });

    const id = () => `https://peer.example/follows/${++seq}`;
    const record = (trx: Kysely<DB>, activity: string) =>
      trx.insertInto("inbox_activities").values({ id: activity, type: "Follow", actor: "https://peer.example/users/a", union_id: null, received_at: Date.now() }).execute();
    const committed = async (ids: string[]) =>
      (await other.db.selectFrom("inbox_activities").select("id").where("id", "in", ids).execute()).map((r) => r.id).sort();

    it("joins submitted together share one transaction and each settles only after it committed", async () => {
      const commit = joinCommit(database.db);
      const ids = [id(), id(), id(), id(), id()];
      const seen: Kysely<DB>[] = [];
      const visibleBefore: string[][] = [];
      const settledWith: string[][] = [];
      await Promise.all(ids.map((activity) => commit(async (trx) => {
        seen.push(trx);
        await record(trx, activity);
        // Nothing of this transaction is visible elsewhere while it runs.
        visibleBefore.push(await committed(ids));
        return activity;
      }).then(async (r) => {
        assert.equal(r, activity);
        settledWith.push(await committed(ids));
      })));
      assert.equal(new Set(seen).size, 1, "one transaction for the five");
      assert.deepEqual(visibleBefore, ids.map(() => []));
      for (const s of settledWith) assert.deepEqual(s, [...ids].sort(), "each settled once all five were committed");
    });

    it("joins arriving in separate callbacks of one event-loop turn share one transaction", async () => {
      // As Follows whose actor fetches answer in the same turn: each reaches the group commit from its own callback.
      // On SQLite a join's statements run between microtasks, so without waiting a turn the first committed before the second arrived.
      // Three immediates queued together run in one check phase, always; three setTimeout(0)s could straddle a
      // millisecond on a loaded machine and fire in two turns (seen once in a whole-suite run).
      const commit = joinCommit(database.db);
      const ids = [id(), id(), id()];
      const seen: Kysely<DB>[] = [];
      await Promise.all(ids.map((activity) => new Promise<void>((resolve, reject) => {
        setImmediate(() => void commit(async (trx) => {
          seen.push(trx);
          await record(trx, activity);
        }).then(resolve, reject));
      })));
      assert.equal(new Set(seen).size, 1, "one transaction for the three");
      assert.deepEqual(await committed(ids), [...ids].sort());
    });

    it("a failing join rolls back its own writes only, and is told after the others committed", async () => {
      const commit = joinCommit(database.db);
      const [a, b, c] = [id(), id(), id()];
      const failure = new Error("this join fails");
      const outcomes = await Promise.allSettled([
        commit(async (trx) => record(trx, a)),
        commit(async (trx) => {
          await record(trx, b);
          throw failure;
        }).catch(async (e: unknown) => {
          assert.deepEqual(await committed([a, c]), [a, c].sort(), "rejected only once the others were committed");
          throw e;
        }),
        commit(async (trx) => record(trx, c)),
      ]);
      assert.deepEqual(outcomes.map((o) => o.status), ["fulfilled", "rejected", "fulfilled"]);
      assert.equal((outcomes[1] as PromiseRejectedResult).reason, failure);
      assert.deepEqual(await committed([a, b, c]), [a, c].sort());
    });

    it("the same Follow twice in one transaction: the second sees the first's row (a repeat, no second record)", async () => {
      const commit = joinCommit(database.db);
      const f = id();
      const inserted = (trx: Kysely<DB>) => trx.insertInto("inbox_activities").values({ id: f, type: "Follow", actor: "https://peer.example/users/a", union_id: null, received_at: Date.now() })
        .onConflict((oc) => oc.column("id").doNothing()).executeTakeFirst().then((r) => Number(r.numInsertedOrUpdatedRows ?? 0n));
      const [first, second] = await Promise.all([commit(inserted), commit(inserted)]);
      assert.deepEqual([first, second], [1, 0]);
      assert.deepEqual(await committed([f]), [f]);
    });

    it("the first join failing rolls back alone; the joins behind it commit in a transaction of their own", async () => {
      const commit = joinCommit(database.db);
      const [a, b] = [id(), id()];
      const seen: Kysely<DB>[] = [];
      const outcomes = await Promise.allSettled([
        commit(async (trx) => {
          seen.push(trx);
          await record(trx, a);
          throw new Error("first fails");
        }),
        commit(async (trx) => {
          seen.push(trx);
          await record(trx, b);
        }),
      ]);
      assert.deepEqual(outcomes.map((o) => o.status), ["rejected", "fulfilled"]);
      assert.notEqual(seen[0], seen[1]);
      assert.deepEqual(await committed([a, b]), [b]);
    });

    it("a transaction that cannot commit fails every join in it, and none is written", async () => {
      const commit = joinCommit(database.db);
      const [a, b] = [id(), id()];
      // A deferred foreign key checked at COMMIT: the second join leaves a row that breaks it.
      await sql`create table if not exists jc_parent (id integer primary key)`.execute(database.db);
      await sql`create table if not exists jc_child (id integer primary key, parent integer references jc_parent (id) deferrable initially deferred)`.execute(database.db);
      const outcomes = await Promise.allSettled([
        commit(async (trx) => record(trx, a)),
        commit(async (trx) => {
          await record(trx, b);
          await sql`insert into jc_child (id, parent) values (${seq}, 424242)`.execute(trx);
        }),
      ]);
      assert.deepEqual(outcomes.map((o) => o.status), ["rejected", "rejected"]);
      assert.deepEqual(await committed([a, b]), []);
      // The queue goes on: the next join commits.
      const c = id();
      await commit(async (trx) => record(trx, c));
      assert.deepEqual(await committed([c]), [c]);
    });
  });
}

describe("group commit of joins, when the transaction cannot begin", () => {
  it("the joins waiting for it fail with that error instead of waiting for another try", async () => {
    const busy = new Error("the database is locked by another process");
    let begun = 0;
    const db = { transaction: () => ({ execute: async () => { begun++; throw busy; } }) } as unknown as Kysely<DB>;
    const commit = joinCommit(db);
    const outcomes = await Promise.allSettled([commit(async () => 1), commit(async () => 2), commit(async () => 3)]);
    assert.deepEqual(outcomes.map((o) => o.status), ["rejected", "rejected", "rejected"]);
    for (const o of outcomes) assert.equal((o as PromiseRejectedResult).reason, busy);
    assert.equal(begun, 1, "one try for the three");
  });
});
