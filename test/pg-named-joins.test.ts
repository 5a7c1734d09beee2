import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { sql } from "kysely";
import { openDatabase } from "../src/db/database.ts";
import { requestToJoin } from "../src/members/membership.ts";
import { createUnion } from "../src/unions/unions.ts";
import { dialects } from "./helpers/databases.ts";
import { followId, LEADER, person, sharedKeys } from "./helpers/domain-context.ts";
import { createEventBus } from "../src/events.ts";
import { recordingOutbox } from "./helpers/membership-worker.ts";

const pg = dialects.find((d) => d.name === "postgres")!;

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
