import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { sql } from "kysely";
import { composeAction, getAction } from "../src/actions/actions.ts";
import * as responses from "../src/actions/responses.ts";
import { insertResponse, withdrawable, withdrawRows } from "../src/actions/responses.ts";
import { requestToJoin } from "../src/members/membership.ts";
import { type Member, OPERATOR } from "../src/members/members.ts";
import { createUnion } from "../src/unions/unions.ts";
import { dialects } from "./helpers/databases.ts";
import { followId, LEADER, person, sharedKeys, withCtx } from "./helpers/domain-context.ts";
import { recordedIntents } from "./helpers/membership-worker.ts";

/**
 * Issue 16: counting a commitment must not hold the call's row (the one row
 * every response to the call shares) while the rest of the transaction runs.
 * A group commit of several members' replies updated it at the first new
 * committer and kept it to the commit; a transaction in another process
 * holding a later member's counter then waited for it or deadlocked with it.
 */
// Read at run time: the old code has no settleCommitters, and must fail here rather than not load.
const settle = (deps: Parameters<typeof responses.settleCommitters>[0], trx: Parameters<typeof responses.settleCommitters>[1]) =>
  (responses as { settleCommitters?: typeof responses.settleCommitters }).settleCommitters?.(deps, trx) ?? Promise.resolve();

for (const d of dialects) {
  describe(`counting commitments without holding the call's row on ${d.name}`, { skip: d.skip }, () => {
    it("members' commitments in one transaction leave the call's row unlocked until the count is settled, counted once each, the goal once", async () => {
      await withCtx(d, async (c) => {
        const union = await createUnion({ db: c.db, events: c.deps.events, generateKeys: sharedKeys }, { slug: "riders", name: "Riders", purpose: "p", leaderHandle: LEADER.handle, joinPolicy: "open" });
        await requestToJoin(c.deps, union.id, LEADER, followId());
        const members: Member[] = [];
        for (const n of ["a", "b", "c"]) members.push((await requestToJoin(c.deps, union.id, person(n), followId())).member);
        const act = await composeAction(c.deps, union.id, OPERATOR, { title: "Sign", text: "Sign it.", kind: "sign", goal: 3 }, { publishNow: true });
        const other = c.tdb.open();
        try {
          await c.db.transaction().execute(async (trx) => {
            // A burst of replies in one group transaction: a new committer each, one of them twice (a like and a reply).
            for (const [i, m] of members.entries()) {
              assert.equal(await insertResponse(trx, c.deps, act, m.id, "commit", "like", `https://remote.example/likes/${i}`, null), true);
            }
            assert.equal(await insertResponse(trx, c.deps, act, members[0]!.id, "commit", "reply", "https://remote.example/notes/0", null), true);
            assert.equal(await insertResponse(trx, c.deps, act, members[0]!.id, "commit", "reply", "https://remote.example/notes/0", null), false, "the same activity twice");
            if (d.name === "postgres") {
              // Another process wants the call's row now (its own replies' count, an officer's edit): it is free.
              await other.db.transaction().execute(async (o) => {
                await sql`select id from actions where id = ${act.id} for no key update nowait`.execute(o);
              });
            }
            await settle(c.deps, trx);
            await settle(c.deps, trx);
          });
        } finally {
          await other.close();
        }
        const after = await c.db.selectFrom("actions").select(["committers", "goal_reached_at"]).where("id", "=", act.id).executeTakeFirstOrThrow();
        assert.equal(Number(after.committers), 3);
        assert.ok(after.goal_reached_at !== null);
        const goals = (await recordedIntents(c.db)).filter((i) => i.kind === "action.progress" && i.actionId === act.id);
        assert.equal(goals.length, 1, "the goal's progress reply is queued once");

        // Withdrawals settle the same way: b's only commitment goes, a keeps one of two.
        await c.db.transaction().execute(async (trx) => {
          const rows = [
            ...await withdrawable(trx, "https://remote.example/likes/1", person("b").actorId),
            ...await withdrawable(trx, "https://remote.example/likes/0", person("a").actorId),
          ];
          assert.equal(await withdrawRows(trx, rows), 2);
          await settle(c.deps, trx);
        });
        assert.equal(Number((await c.db.selectFrom("actions").select("committers").where("id", "=", act.id).executeTakeFirstOrThrow()).committers), 2);
        assert.equal((await getAction(c.db, union.id, act.id))!.goalReachedAt !== null, true);
        assert.equal((await recordedIntents(c.db)).filter((i) => i.kind === "action.progress" && i.actionId === act.id).length, 1);
      });
    });
  });
}
