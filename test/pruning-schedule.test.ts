import { after, describe, it } from "node:test";
import assert from "node:assert/strict";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { eventually, makeUnion, startMuster, type TestMuster } from "./helpers/muster.ts";
import { ACTIVITY_ID_RETENTION_MS } from "../src/replay-window.ts";
import { createInvite } from "../src/members/invites.ts";
import { OPERATOR } from "../src/members/members.ts";
import { storedKey } from "./helpers/done-keys.ts";

// Issue 16: inbox_activities, join claims, done keys and expired sessions are
// pruned on a schedule. pruning.test calls pruneStorage itself; this checks
// that a process running the queue does it unasked (at start, then every
// PRUNE_INTERVAL_MS), and that a web process without queue handlers leaves it
// to the workers.

const HOUR = 3600_000;
const DAY = 24 * HOUR;

for (const d of dialects) {
  describe(`pruning on a schedule, on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    let running: TestMuster | undefined;
    after(async () => {
      await running?.stop();
      await tdb?.destroy();
    });

    it("a process running the queue prunes old inbox ids, spent join claims, expired sessions and old done keys without being asked; serve --no-worker does not", async () => {
      tdb = await d.create();
      // A web process only (no queue handlers): it makes the union and must not prune.
      running = await startMuster(tdb, { worker: false });
      const db = () => running!.muster.database.db;
      const unionId = (await makeUnion(running, "riders")).id;
      const now = Date.now();
      const old = now - ACTIVITY_ID_RETENTION_MS - HOUR;
      await db().insertInto("inbox_activities").values([
        { id: "https://x.example/old-like", type: "Like", actor: "https://x.example/a", union_id: unionId, received_at: old },
        { id: "https://x.example/recent-like", type: "Like", actor: "https://x.example/a", union_id: unionId, received_at: now - HOUR },
      ]).execute();
      const invite = await createInvite(running.muster.membership, unionId, { by: OPERATOR, maxUses: 5 });
      const claim = (id: string, expiresAt: number) => ({ id, union_id: unionId, invite_id: invite.id, handle: `@${id}@x.example`, created_at: expiresAt - DAY, expires_at: expiresAt, used_at: null });
      await db().insertInto("join_claims").values([claim("lapsed", now - 2 * DAY), claim("open", now + HOUR)]).execute();
      const session = (id: string, expiresAt: number) => ({ id, token_hash: `hash-${id}`, union_id: unionId, member_id: "m1", created_at: expiresAt - DAY, expires_at: expiresAt, revoked_at: null });
      await db().insertInto("sessions").values([session("old-session", now - 2 * DAY), session("new-session", now + DAY)]).execute();
      await db().insertInto("fedify_mq_done").values([{ dedupe_key: storedKey(db(), "old-key"), done_at: now - 8 * DAY }, { dedupe_key: storedKey(db(), "new-key"), done_at: now - HOUR }]).execute();

      const state = async () => ({
        inbox: (await db().selectFrom("inbox_activities").select("id").execute()).map((r) => r.id).sort(),
        claims: (await db().selectFrom("join_claims").select("id").execute()).map((r) => r.id).sort(),
        sessions: (await db().selectFrom("sessions").select("id").execute()).map((r) => r.id).sort(),
        keys: (await db().selectFrom("fedify_mq_done").select("dedupe_key").execute()).map((r) => r.dedupe_key),
      });
      const all = await state();
      await new Promise((r) => setTimeout(r, 1000));
      assert.deepEqual(await state(), all, "a process without queue handlers prunes nothing");

      // The same database under a process that runs the queue, as `muster serve` or `muster worker`.
      await running.stop();
      running = undefined;
      running = await startMuster(tdb, { worker: true });
      const pruned = await eventually(async () => {
        const s = await state();
        return s.inbox.length === 1 && s.claims.length === 1 && s.sessions.length === 1 && s.keys.length === 1 ? s : undefined;
      }, "the old rows pruned by the running process", 30_000);
      assert.deepEqual(pruned.inbox, ["https://x.example/recent-like"]);
      assert.deepEqual(pruned.claims, ["open"]);
      assert.deepEqual(pruned.sessions, ["new-session"]);
      assert.deepEqual(pruned.keys, [storedKey(db(), "new-key")]);
    });
  });
}
