import { describe, it } from "node:test";
import assert from "node:assert/strict";
import pg from "pg";
import { sql } from "kysely";
import { joinCommit } from "../federation/join-commit.ts";
import { mergeWrites } from "../federation/join-group.ts";
import { Deferred, sharesRoundTrip } from "../src/db/pipeline.ts";
import { getLeader, findMemberByActor } from "../src/members/members.ts";
import { requestToJoin } from "../src/members/membership.ts";
import { blockedAmongShared } from "../src/servers/blocklist.ts";
import { createUnion } from "../src/unions/unions.ts";
import { dialects } from "./helpers/databases.ts";
import { followId, LEADER, person, sharedKeys, withCtx } from "./helpers/domain-context.ts";

/*
 * The follow's fast path on PostgreSQL (issue 16, joins with workers): the
 * joins of a union waiting together run at once in one transaction, their
 * reads under the union's lock in one round trip and their writes with the
 * COMMIT in another (federation/join-group.ts, join-commit.ts savepoints:
 * false); the blocked-server checks asked in one turn share one query.
 */

/** Round trips any pg client makes while `fn` runs (a pipeline's statements are one entry), as join-roundtrips.test.ts counts them. */
async function roundTripsDuring<T>(fn: () => Promise<T>): Promise<{ value: T; trips: string[] }> {
  const trips: string[] = [];
  const query = pg.Client.prototype.query as (...args: unknown[]) => unknown;
  pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
    const first = args[0];
    const text = (typeof first === "string" ? first : (first as { text?: string } | null)?.text ?? "?").replace(/\s+/g, " ").trim();
    if (sharesRoundTrip(first)) trips[trips.length - 1] += `;\n${text}`;
    else trips.push(text);
    return query.apply(this, args);
  } as typeof pg.Client.prototype.query;
  try {
    return { value: await fn(), trips };
  } finally {
    pg.Client.prototype.query = query as typeof pg.Client.prototype.query;
  }
}

const postgres = dialects.find((d) => d.name === "postgres")!;

describe("a union's joins in one transaction with shared round trips, on postgres", { skip: postgres.skip }, () => {
  it("five newcomers waiting together: two round trips in all, each admitted as alone", async () => {
    await withCtx(postgres, async (c) => {
      const union = await createUnion({ db: c.db, events: c.deps.events, generateKeys: sharedKeys }, { slug: "open", name: "Open", purpose: "p", leaderHandle: LEADER.handle, joinPolicy: "open" });
      await requestToJoin(c.deps, union.id, LEADER, followId());
      const leader = (await getLeader(c.db, union.id))!;
      const inTransaction = joinCommit(c.db, undefined, { savepoints: false });
      // A name with lone surrogates among them (a hostile account's): stored as any other.
      const people = ["ann", "bob", "cy\ud800", "dee", "eve\udfff"].map((n) => person(n));
      const joined = c.log.length;
      const { value: results, trips } = await roundTripsDuring(() => Promise.all(people.map((p) => requestToJoin(c.deps, union.id, p, followId(), { inTransaction }))));
      assert.equal(trips.length, 2, trips.join("\n---\n"));
      assert.match(trips[0]!, /^begin;/);
      // The union's lock once for the group (a transaction taking a row lock it holds again is a no-op), then each join's reads.
      assert.equal(trips[0]!.match(/for no key update/gi)?.length, 1, "the union's lock once, in the first round trip");
      assert.ok(trips[0]!.indexOf("for no key update") < trips[0]!.indexOf("coalesce(json_agg"), "the lock before the reads");
      assert.equal(trips[0]!.match(/coalesce\(json_agg\(x\), '\[\]'::json\) from \(select \* from "unions"/g)?.length, 5, "each join's reads");
      assert.match(trips[1]!, /;\ncommit$/);
      assert.deepEqual(results.map((r) => r.outcome), people.map(() => "accepted"));
      for (const [i, p] of people.entries()) {
        const m = await findMemberByActor(c.db, union.id, p.actorId);
        assert.equal(m?.state, "active");
        assert.equal(m?.id, results[i]!.member.id);
        assert.equal(m?.sponsorId, leader.id);
      }
      assert.equal((await getLeader(c.db, union.id))!.subtreeSize, leader.subtreeSize + 5);
      assert.equal(c.log.slice(joined).filter((e) => e.type === "member.joined").length, 5);
    });
  });

  it("five newcomers' writes: two INSERTs per kind (4 + 1 rows), the leader's row updated once (+5), rows exactly as each alone", async () => {
    await withCtx(postgres, async (c) => {
      const union = await createUnion({ db: c.db, events: c.deps.events, generateKeys: sharedKeys }, { slug: "open", name: "Open", purpose: "p", leaderHandle: LEADER.handle, joinPolicy: "open" });
      await requestToJoin(c.deps, union.id, LEADER, followId());
      const leader = (await getLeader(c.db, union.id))!;
      // One newcomer alone first: what each of the group's rows must look like.
      const alone = await requestToJoin(c.deps, union.id, person("solo"), followId());
      const inTransaction = joinCommit(c.db, undefined, { savepoints: false });
      const people = ["ann", "bob", "cy", "dee", "eve"].map((n) => person(n));
      const { value: results, trips } = await roundTripsDuring(() => Promise.all(people.map((p) => requestToJoin(c.deps, union.id, p, followId(), { inTransaction }))));
      assert.equal(trips.length, 2, trips.join("\n---\n"));
      const writes = trips[1]!.split(";\n");
      const count = (re: RegExp) => writes.filter((w) => re.test(w)).length;
      // Five: a run of four and one (runs of 2^k statements, federation/join-group.ts mergeWrites).
      assert.equal(count(/^insert into "members"/), 2, writes.join("\n"));
      assert.equal(count(/^update "members" set "subtree_size"/), 1, "the leader's row: one update (one tuple version), not five");
      assert.equal(count(/^insert into "invites"/), 2);
      assert.equal(count(/^insert into "fedify_mq"/), 2);
      assert.equal((await getLeader(c.db, union.id))!.subtreeSize, leader.subtreeSize + 6);
      // Each member's rows as the one alone's: member, own invite, two queued messages (Accept before welcome).
      const rowsOf = async (memberId: string) => {
        const m = await c.db.selectFrom("members").select(["state", "role", "sponsor_id", "subtree_size", "invite_id", "union_id"]).where("id", "=", memberId).executeTakeFirstOrThrow();
        const invites = await c.db.selectFrom("invites").select(["max_uses", "uses", "welcome", "expires_at", "revoked_at", "union_id"]).where("created_by", "=", memberId).execute();
        const mq = await c.db.selectFrom("fedify_mq").select(["id", "queue", "ordering_key", "attempts", "message"]).where("message", "like", `%${memberId}%`).orderBy("id").execute();
        return { m, invites, mq: mq.map((r) => ({ queue: r.queue, attempts: r.attempts, kind: String(r.message).match(/"kind":"([^"]+)"|"type":"([^"]+)"/)?.[0] ?? null, key: r.ordering_key === null ? null : "keyed" })) };
      };
      const expected = await rowsOf(alone.member.id);
      assert.equal(expected.invites.length, 1);
      assert.ok(expected.mq.length >= 1, "its messages queued");
      for (const r of results) {
        assert.equal(r.outcome, "accepted");
        assert.deepEqual(await rowsOf(r.member.id), expected, r.member.handle ?? "");
      }
      const invites = await c.db.selectFrom("invites").select(sql<number>`count(distinct code)`.as("n")).where("union_id", "=", union.id).where("welcome", "=", 1).executeTakeFirstOrThrow();
      assert.ok(Number(invites.n) >= 7, "every invite its own code");
    });
  });

  it("the same follower twice in one group: rolled back, each runs alone (one admitted, one already a member), one member.joined", async () => {
    await withCtx(postgres, async (c) => {
      const union = await createUnion({ db: c.db, events: c.deps.events, generateKeys: sharedKeys }, { slug: "open", name: "Open", purpose: "p", leaderHandle: LEADER.handle, joinPolicy: "open" });
      await requestToJoin(c.deps, union.id, LEADER, followId());
      const leader = (await getLeader(c.db, union.id))!;
      const inTransaction = joinCommit(c.db, undefined, { savepoints: false });
      const ann = person("ann");
      const joined = c.log.length;
      const { value: results, trips } = await roundTripsDuring(() => Promise.all([
        requestToJoin(c.deps, union.id, ann, followId(), { inTransaction }),
        requestToJoin(c.deps, union.id, ann, followId(), { inTransaction }),
        requestToJoin(c.deps, union.id, person("bob"), followId(), { inTransaction }),
      ]));
      // Both of ann's joins read no member and write one: the group's COMMIT fails, and it is rolled back.
      assert.ok(trips.some((t) => /(^|\n)rollback$/.test(t)), trips.join("\n---\n"));
      assert.deepEqual(results.map((r) => r.outcome), ["accepted", "already_member", "accepted"]);
      assert.equal((await getLeader(c.db, union.id))!.subtreeSize, leader.subtreeSize + 2);
      assert.deepEqual(c.log.slice(joined).filter((e) => e.type === "member.joined").map((e) => (e as { memberId: string }).memberId).sort(),
        [results[0]!.member.id, results[2]!.member.id].sort(), "events of the runs that committed only");
    });
  });

  it("a join failing in a group: the others commit, and it is told its own error", async () => {
    await withCtx(postgres, async (c) => {
      const union = await createUnion({ db: c.db, events: c.deps.events, generateKeys: sharedKeys }, { slug: "open", name: "Open", purpose: "p", leaderHandle: LEADER.handle, joinPolicy: "open" });
      await requestToJoin(c.deps, union.id, LEADER, followId());
      const inTransaction = joinCommit(c.db, undefined, { savepoints: false });
      const failure = new Error("this join fails");
      const { value: outcomes, trips } = await roundTripsDuring(() => Promise.allSettled([
        requestToJoin(c.deps, union.id, person("ann"), followId(), { inTransaction }),
        requestToJoin(c.deps, union.id, person("bob"), followId(), { inTransaction, first: async () => { throw failure; } }).catch(async (e: unknown) => {
          assert.equal((await findMemberByActor(c.db, union.id, person("cy").actorId))?.state, "active", "told once the others committed");
          throw e;
        }),
        requestToJoin(c.deps, union.id, person("cy"), followId(), { inTransaction }),
      ]));
      // No savepoint: the group is rolled back, and each join runs alone.
      assert.ok(trips.some((t) => /(^|\n)rollback$/.test(t)) && !trips.some((t) => /savepoint/i.test(t)), trips.join("\n---\n"));
      assert.deepEqual(outcomes.map((o) => o.status), ["fulfilled", "rejected", "fulfilled"]);
      assert.equal((outcomes[1] as PromiseRejectedResult).reason, failure);
      assert.equal((await findMemberByActor(c.db, union.id, person("ann").actorId))?.state, "active");
      assert.equal(await findMemberByActor(c.db, union.id, person("bob").actorId), undefined);
      assert.equal((await findMemberByActor(c.db, union.id, person("cy").actorId))?.state, "active");
    });
  });

  it("two unions' joins: a group each, in transactions of their own, side by side", async () => {
    await withCtx(postgres, async (c) => {
      const deps = { db: c.db, events: c.deps.events, generateKeys: sharedKeys };
      const a = await createUnion(deps, { slug: "a", name: "A", purpose: "p", leaderHandle: LEADER.handle, joinPolicy: "open" });
      const b = await createUnion(deps, { slug: "b", name: "B", purpose: "p", leaderHandle: LEADER.handle, joinPolicy: "open" });
      await requestToJoin(c.deps, a.id, LEADER, followId());
      await requestToJoin(c.deps, b.id, LEADER, followId());
      const inTransaction = joinCommit(c.db, undefined, { savepoints: false });
      // Another transaction holds union a's lock: a's group waits for it, b's goes on beside it.
      const other = c.tdb.open();
      let release!: () => void;
      const held = new Promise<void>((r) => (release = r));
      let locked!: () => void;
      const isLocked = new Promise<void>((r) => (locked = r));
      const holder = other.db.transaction().execute(async (trx) => {
        await sql`select id from unions where id = ${a.id} for update`.execute(trx);
        locked();
        await held;
      });
      try {
        await isLocked;
        let aSettled = false;
        const { value: results, trips } = await roundTripsDuring(async () => {
          const ofA = Promise.all([
            requestToJoin(c.deps, a.id, person("ann"), followId(), { inTransaction }),
            requestToJoin(c.deps, a.id, person("cy"), followId(), { inTransaction }),
          ]).finally(() => (aSettled = true));
          const ofB = await Promise.all([
            requestToJoin(c.deps, b.id, person("bob"), followId(), { inTransaction }),
            requestToJoin(c.deps, b.id, person("dee"), followId(), { inTransaction }),
          ]);
          assert.equal(aSettled, false, "b's joins committed while a's waited for a's lock");
          release();
          return [...await ofA, ...ofB];
        });
        assert.deepEqual(results.map((r) => r.outcome), ["accepted", "accepted", "accepted", "accepted"]);
        const begins = trips.filter((t) => t.startsWith("begin;") && /for no key update/i.test(t));
        assert.equal(begins.length, 2, trips.join("\n---\n"));
        for (const t of begins) assert.equal(t.match(/for no key update/gi)?.length, 1, "one union's lock, taken once for its two joins");
        for (const [u, p] of [[a, "ann"], [b, "bob"], [a, "cy"], [b, "dee"]] as const) assert.equal((await findMemberByActor(c.db, u.id, person(p).actorId))?.state, "active");
      } finally {
        release();
        await holder;
        await other.close();
      }
    });
  });

  it("blocked-server checks asked in one turn share one query, and see a block committed before they were asked", async () => {
    await withCtx(postgres, async (c) => {
      const other = c.tdb.open();
      try {
        await other.db.insertInto("blocked_servers").values({ host: "bad.example", reason: null, created_at: Date.now() }).execute();
        const urls = ["https://good.example/users/a", "https://bad.example/users/b#main-key", "https://other.example:8443/users/c", "https://good.example/users/d"];
        const { value, trips } = await roundTripsDuring(() => Promise.all(urls.map((u) => blockedAmongShared(c.db, [u]))));
        assert.deepEqual(value, [undefined, urls[1], undefined, undefined]);
        assert.equal(trips.length, 1, trips.join("\n"));
        // Nothing is kept: a block committed elsewhere is seen by the next check.
        await other.db.insertInto("blocked_servers").values({ host: "good.example", reason: null, created_at: Date.now() }).execute();
        assert.equal(await blockedAmongShared(c.db, [urls[0]!]), urls[0]);
        assert.equal(await blockedAmongShared(c.db, ["not a url"]), undefined);
      } finally {
        await other.close();
      }
    });
  });
});

describe("mergeWrites (a group's writes as fewer statements)", () => {
  const d = (text: string, ...values: unknown[]) => new Deferred({ text, values, name: "n" });
  const INS = `insert into "members" ("id", "union_id") values ($1, $2)`;
  const MQ = `insert into "fedify_mq" ("queue", "message") values ($1, $2), ($3, $4) returning pg_notify($5, $6) as "notified"`;
  const GAIN = `update "members" set "subtree_size" = "subtree_size" + $1 where "id" = $2`;
  const CHAIN = `with recursive chain as (select 1) update "members" set "subtree_size" = "subtree_size" + $1 where "id" = $2 or false`;

  it("one INSERT per text (rows in order, outside parameters once), one sponsor update per row adding the sum, the rest in place", async () => {
    const w = [d(INS, "m1", "u"), d(GAIN, 1, "lead"), d(MQ, "q", "a1", "q", "w1", "ch", "0"),
      d(INS, "m2", "u"), d(CHAIN, 1, "s"), d(GAIN, 1, "lead"), d(MQ, "q", "a2", "q", "w2", "ch", "0"),
      d(INS, "m3", "u"), d(GAIN, 1, "other"), d(MQ, "q", "a3", "q", "w3", "ch", "9")];
    const out = mergeWrites(w);
    assert.deepEqual(out.map((o) => [o.statement.text, o.statement.values]), [
      [`insert into "members" ("id", "union_id") values ($1, $2), ($3, $4)`, ["m1", "u", "m2", "u"]],
      // Runs of 2^k statements (3: 2 + 1), so few texts are prepared.
      [INS, ["m3", "u"]],
      [GAIN, [2, "lead"]],
      [`insert into "fedify_mq" ("queue", "message") values ($1, $2), ($3, $4), ($5, $6), ($7, $8) returning pg_notify($9, $10) as "notified"`, ["q", "a1", "q", "w1", "q", "a2", "q", "w2", "ch", "0"]],
      [CHAIN, [1, "s"]],
      [GAIN, [1, "other"]],
      // Another notification: not merged with those of another.
      [MQ, ["q", "a3", "q", "w3", "ch", "9"]],
    ]);
    // Each join's statement settles with the statement it was merged into.
    const r = { rows: [] };
    for (const o of out) o.resolve(r as never);
    assert.deepEqual(await Promise.all(w.map((x) => x.result)), w.map(() => r));
    const failed = mergeWrites([d(INS, "a", "u"), d(INS, "b", "u")]);
    const boom = new Error("duplicate");
    failed[0]!.reject(boom);
    await assert.rejects(failed[0]!.result, boom);
  });
});
