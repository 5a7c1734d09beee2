import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { dialects } from "./helpers/databases.ts";
import { sharedKeys } from "./helpers/domain-context.ts";
import { overrideBylaws } from "./helpers/bylaws.ts";
import { createEventBus, type DomainEvents } from "../src/events.ts";
import { createUnion } from "../src/unions/unions.ts";
import { duesParamsFromBylaws } from "../src/treasury/dues-params.ts";
import { CHANGES_RETURNED, recomputeStandings, recordedStanding } from "../src/treasury/standing.ts";

// More than one page of the roster (recomputeStandings reads 1,000 at a time).
const MEMBERS = 1_150;

for (const d of dialects) {
  describe(`standing recomputed over a roster in pages on ${d.name}`, { skip: d.skip }, () => {
    it("records and emits every member's change, returns a bounded list, and lapses a recorded member who left", async () => {
      const tdb = await d.create();
      const database = tdb.open();
      const db = database.db;
      try {
        const events = createEventBus();
        const seen: DomainEvents["member.standing"][] = [];
        events.on("member.standing", (e) => seen.push(e));
        const union = await createUnion({ db, events, generateKeys: sharedKeys }, { slug: "riders", name: "Riders", purpose: "Fair pay", joinPolicy: "open" });
        await overrideBylaws({ db, events }, "riders", { duesAmount: 5_000_000n, duesPeriodDays: 30, duesGraceDays: 7 });
        const now = Date.now();
        const ids = Array.from({ length: MEMBERS }, () => randomUUID());
        for (let i = 0; i < ids.length; i += 500) {
          await db.insertInto("members").values(ids.slice(i, i + 500).map((id, k) => ({
            id, union_id: union.id, actor_id: `https://s${(i + k) % 7}.example/users/m${i + k}`, handle: null, state: "active", role: "member", portfolio: null,
            sponsor_id: null, subtree_size: 0, follow_id: `https://s.example/follows/${id}`, invite_id: null, joined_at: now, left_at: null, left_reason: null, removed_by: null, created_at: now,
          }))).execute();
        }
        const deps = { db, events, duesParams: duesParamsFromBylaws };

        const first = await recomputeStandings(deps, union.id, now);
        assert.equal(first.length, CHANGES_RETURNED, "the returned list is capped; the rest are recorded and emitted");
        assert.equal(seen.length, MEMBERS, "one event per member");
        assert.equal(new Set(seen.map((e) => e.memberId)).size, MEMBERS);
        const recorded = await db.selectFrom("member_standing").select((eb) => eb.fn.countAll<number>().as("n")).where("union_id", "=", union.id).executeTakeFirstOrThrow();
        assert.equal(Number(recorded.n), MEMBERS, "every member of every page has a standing");

        // A member who left keeps a recorded standing until the next pass lapses it (the second, non-active page).
        const leaver = ids[ids.length - 1]!;
        assert.equal((await recordedStanding(db, union.id, leaver))?.standing, "grace");
        await db.updateTable("members").set({ state: "left", left_at: now }).where("id", "=", leaver).execute();
        seen.length = 0;
        const second = await recomputeStandings(deps, union.id, now + 1000);
        assert.deepEqual(second.map((c) => [c.memberId, c.from, c.to]), [[leaver, "grace", "lapsed"]]);
        assert.equal(seen.length, 1);
        assert.deepEqual(await recomputeStandings(deps, union.id, now + 2000), [], "nothing changes twice");
      } finally {
        await database.close();
        await tdb.destroy();
      }
    });

    it("lets the event loop turn between pages, a union without dues included, where nearly every member is already good", async () => {
      const tdb = await d.create();
      const database = tdb.open();
      const db = database.db;
      try {
        const events = createEventBus();
        const union = await createUnion({ db, events, generateKeys: sharedKeys }, { slug: "walkers", name: "Walkers", purpose: "Shade", joinPolicy: "open" });
        // No dues (the default bylaws): every active member is good.
        const now = Date.now();
        const members = 3_500;
        for (let i = 0; i < members; i += 500) {
          await db.insertInto("members").values(Array.from({ length: 500 }, (_, k) => {
            const id = randomUUID();
            return {
              id, union_id: union.id, actor_id: `https://s${(i + k) % 7}.example/users/w${i + k}`, handle: null, state: "active", role: "member", portfolio: null,
              sponsor_id: null, subtree_size: 0, follow_id: `https://s.example/follows/${id}`, invite_id: null, joined_at: now, left_at: null, left_reason: null, removed_by: null, created_at: now,
            };
          })).execute();
        }
        const deps = { db, events, duesParams: duesParamsFromBylaws };
        assert.equal((await recomputeStandings(deps, union.id, now)).length, CHANGES_RETURNED, "the first pass makes every member good");
        // The next pass changes nothing. On SQLite every statement runs
        // synchronously and settles as a microtask: unless the pass yields, no
        // timer, request or claim runs until it ends. Before, it was two
        // statements that each walked the whole union to find nothing
        // (300 ms each at 10^5 members, the event loop stopped throughout).
        let turns = 0;
        let spinning = true;
        const spin = () => {
          if (!spinning) return;
          turns++;
          setImmediate(spin);
        };
        setImmediate(spin);
        const second = await recomputeStandings(deps, union.id, now + 1000);
        spinning = false;
        assert.deepEqual(second, []);
        // Four pages of members and four of standings: a turn after each full page at least.
        assert.ok(turns >= 6, `the event loop turned ${turns} times during the pass`);
      } finally {
        await database.close();
        await tdb.destroy();
      }
    });
  });
}
