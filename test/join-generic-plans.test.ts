import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { sql } from "kysely";
import { openDatabase } from "../src/db/database.ts";
import { requestToJoin } from "../src/members/membership.ts";
import { createUnion } from "../src/unions/unions.ts";
import { createEventBus } from "../src/events.ts";
import { joinCommit } from "../federation/join-commit.ts";
import { dialects } from "./helpers/databases.ts";
import { followId, LEADER, person, sharedKeys } from "./helpers/domain-context.ts";
import { recordingOutbox } from "./helpers/membership-worker.ts";

/*
 * The follow's fast path runs joins through joinCommit; on PostgreSQL each
 * join transaction sets plan_cache_mode = force_generic_plan for itself
 * (SET LOCAL, sent with its first statement): its named statements are
 * planned once per connection, not at every run (with the default, the
 * first five runs of each are always planned anew, and then every run
 * whose generic plan looks dearer: planning was about a quarter of the web's
 * PostgreSQL backend during joins). Outside those transactions the
 * connection keeps the default.
 */

const pg = dialects.find((d) => d.name === "postgres")!;

describe("join transactions on PostgreSQL run their statements with generic plans", { skip: pg.skip }, () => {
  it("every named statement of eight joins, alone and in groups, ran with a generic plan, none planned per run; the setting ends with the transaction", async () => {
    const tdb = await pg.create();
    // One connection: every join runs on it, and pg_prepared_statements shows that backend's statements.
    const database = openDatabase(tdb.url, { poolSize: 1 });
    try {
      const { db } = database;
      const deps = { db, events: createEventBus(), outbox: recordingOutbox };
      const union = await createUnion({ db, events: deps.events, generateKeys: sharedKeys }, { slug: "open", name: "Open", purpose: "p", leaderHandle: LEADER.handle, joinPolicy: "open" });
      await requestToJoin(deps, union.id, LEADER, followId());
      const plans = async () => new Map((await sql<{ statement: string; generic_plans: number; custom_plans: number }>`
        select statement, generic_plans::int, custom_plans::int from pg_prepared_statements`.execute(db)).rows.map((r) => [r.statement, r]));
      // The leader's join ran outside joinCommit (the default): its plans are taken away below.
      const before = await plans();
      const inTransaction = joinCommit(db, undefined, { savepoints: false });
      // Two alone, then six at once (grouped by joinCommit).
      for (let i = 0; i < 2; i++) assert.equal((await requestToJoin(deps, union.id, person(`a${i}`), followId(), { inTransaction })).outcome, "accepted");
      const together = await Promise.all(Array.from({ length: 6 }, (_, i) => requestToJoin(deps, union.id, person(`g${i}`), followId(), { inTransaction })));
      assert.deepEqual(together.map((r) => r.outcome), Array(6).fill("accepted"));
      const rows = [...(await plans()).values()].map((r) => ({ ...r, generic_plans: r.generic_plans - (before.get(r.statement)?.generic_plans ?? 0), custom_plans: r.custom_plans - (before.get(r.statement)?.custom_plans ?? 0) }));
      const fold = rows.map((r) => `${r.generic_plans}/${r.custom_plans} ${r.statement.replace(/\s+/g, " ").slice(0, 100)}`).join("\n");
      const of = (pattern: RegExp) => rows.filter((r) => pattern.test(r.statement));
      for (const [what, pattern] of [["the union's lock", /for no key update/i], ["the combined read", /json_agg/], ["the member's insert", /^insert into "members"/]] as const) {
        const runs = of(pattern);
        assert.ok(runs.some((r) => r.generic_plans >= 2), `${what} ran with its generic plan:\n${fold}`);
      }
      // Not one statement of the joins was planned for its run.
      assert.deepEqual(rows.filter((r) => r.custom_plans > 0).map((r) => r.statement), [], fold);
      const members = await sql<{ n: number }>`select count(*)::int as n from members where union_id = ${union.id}`.execute(db);
      assert.equal(members.rows[0]!.n, 9);
      // SET LOCAL: gone once the transaction ended.
      const mode = await sql<{ m: string }>`select current_setting('plan_cache_mode') as m`.execute(db);
      assert.equal(mode.rows[0]!.m, "auto");
    } finally {
      await database.close();
      await tdb.destroy();
    }
  });
});
