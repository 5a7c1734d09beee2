import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { type Kysely, sql } from "kysely";
import pg from "pg";
import { lockThenReadAll, readAll, WriteBatch } from "../src/db/batch.ts";
import { sendWithNext, sharesRoundTrip } from "../src/db/pipeline.ts";
import { getLeader, getMember, lockUnion } from "../src/members/members.ts";
import { listInvites, newInviteRow } from "../src/members/invites.ts";
import type { DB } from "../src/db/schema.ts";
import { requestToJoin } from "../src/members/membership.ts";
import { createUnion } from "../src/unions/unions.ts";
import { dialects } from "./helpers/databases.ts";
import { followId, LEADER, person, sharedKeys, withCtx } from "./helpers/domain-context.ts";
import { recordedIntents } from "./helpers/membership-worker.ts";

/**
 * Round trips any pg client makes while `fn` runs, in order (text, whitespace
 * folded): a pipeline's later statements (src/db/pipeline.ts) are appended to
 * its first one's entry.
 */
async function statementsDuring<T>(fn: () => Promise<T>): Promise<{ value: T; statements: string[] }> {
  const statements: string[] = [];
  const query = pg.Client.prototype.query as (...args: unknown[]) => unknown;
  pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
    const first = args[0];
    const text = (typeof first === "string" ? first : (first as { text?: string } | null)?.text ?? "?").replace(/\s+/g, " ").trim();
    // A BEGIN goes out with the statement after it (database.ts): that statement's round trip.
    if (sharesRoundTrip(first)) statements[statements.length - 1] = statements[statements.length - 1] === "begin" ? text : `${statements[statements.length - 1]};\n${text}`;
    else statements.push(text);
    return query.apply(this, args);
  } as typeof pg.Client.prototype.query;
  try {
    return { value: await fn(), statements };
  } finally {
    pg.Client.prototype.query = query as typeof pg.Client.prototype.query;
  }
}

// Values a batch writes as literals on PostgreSQL: each must come back exactly as a bound parameter would have stored it.
const HOSTILE = [
  "it's",
  "back\\slash and \\' quote",
  "$1 and $2, $10",
  "'; drop table members; --",
  "E'\\x00'",
  "ünïcødé 😀 \u2028",
  "",
  "a\nb\tc",
];

for (const d of dialects) {
  describe(`joins in few round trips on ${d.name}`, { skip: d.skip }, () => {
    it("a batch and a combined read store and return hostile values as bound parameters would", async () => {
      await withCtx(d, async (c) => {
        await c.db.transaction().execute(async (trx) => {
          await sql`create temporary table batch_probe (i integer, t text, n bigint, z integer)`.execute(trx);
          const batch = new WriteBatch();
          let ran = false;
          batch.after(() => (ran = true));
          HOSTILE.forEach((t, i) => batch.push(sql`insert into batch_probe (i, t, n, z) values (${i}, ${t}, ${2 ** 50 + i}, ${i % 2 === 0 ? null : -i})`.compile(trx)));
          assert.equal(ran, false, "nothing runs before the flush");
          await batch.flush(trx);
          assert.equal(ran, true);
          const stored = await sql<{ i: number; t: string; n: string | number; z: number | null }>`select i, t, n, z from batch_probe order by i`.execute(trx);
          assert.deepEqual(stored.rows.map((r) => [Number(r.i), r.t, Number(r.n), r.z === null ? null : Number(r.z)]),
            HOSTILE.map((t, i) => [i, t, 2 ** 50 + i, i % 2 === 0 ? null : -i]));
          // The same values as parameters of a combined read (parameters renumbered per query).
          const read = await readAll(trx, {
            quoted: trx.selectNoFrom(sql<string>`${HOSTILE[1]}`.as("t")),
            rows: sql`select i, t from batch_probe where t in (${sql.join(HOSTILE)}) and i >= ${0} order by i`.compile(trx),
            none: sql`select t from batch_probe where t = ${"absent"}`.compile(trx),
          });
          assert.deepEqual(read.quoted, [{ t: HOSTILE[1] }]);
          assert.deepEqual(read.rows.map((r) => [Number(r.i), r.t]), HOSTILE.map((t, i) => [i, t]));
          assert.deepEqual(read.none, []);
          // And after a lock statement, in one round trip (lockThenReadAll): the values bound.
          const locked = await lockThenReadAll(trx, sql`select ${HOSTILE[3]} as t`.compile(trx), {
            rows: sql`select i, t from batch_probe where t in (${sql.join(HOSTILE)}) and i >= ${0} order by i`.compile(trx),
            quoted: trx.selectNoFrom(sql<string>`${HOSTILE[2]}`.as("t")),
          });
          assert.deepEqual(locked.rows.map((r) => [Number(r.i), r.t]), HOSTILE.map((t, i) => [i, t]));
          assert.deepEqual(locked.quoted, [{ t: HOSTILE[2] }]);
          await sql`drop table batch_probe`.execute(trx);
        });
      });
    });

    it("a failed statement in a batch fails the flush and rolls the transaction back", async () => {
      await withCtx(d, async (c) => {
        const union = await createUnion({ db: c.db, events: c.deps.events, generateKeys: sharedKeys }, { slug: "b", name: "b", purpose: "p", leaderHandle: null, joinPolicy: "open" });
        await assert.rejects(c.db.transaction().execute(async (trx) => {
          const batch = new WriteBatch();
          batch.push(trx.updateTable("unions").set({ name: "changed" }).where("id", "=", union.id));
          // Duplicate primary key.
          batch.push(trx.insertInto("unions").values({ ...(await trx.selectFrom("unions").selectAll().where("id", "=", union.id).executeTakeFirstOrThrow()) }));
          await batch.flush(trx);
        }));
        const after = await c.db.selectFrom("unions").select("name").where("id", "=", union.id).executeTakeFirstOrThrow();
        assert.equal(after.name, "b");
      });
    });

    it("an open union's newcomer's Follow id is stored relative to its actor's origin and read back whole (migration 0058)", async () => {
      await withCtx(d, async (c) => {
        const union = await createUnion({ db: c.db, events: c.deps.events, generateKeys: sharedKeys }, { slug: "open", name: "Open", purpose: "p", leaderHandle: LEADER.handle, joinPolicy: "open" });
        await requestToJoin(c.deps, union.id, LEADER, followId());
        const follow = followId();
        const r = await requestToJoin(c.deps, union.id, person("bea"), follow);
        assert.equal(r.outcome, "accepted");
        const raw = await c.db.selectFrom("members").select("follow_id").where("id", "=", r.member.id).executeTakeFirstOrThrow();
        assert.equal(raw.follow_id, new URL(follow).pathname);
        assert.equal((await getMember(c.db, union.id, r.member.id))!.followId, follow);
      });
    });

    it("an open union's newcomer is admitted in a handful of statements under the union's lock, with the same result", async (t) => {
      if (d.name !== "postgres") return t.skip("round trips are counted at the pg driver");
      await withCtx(d, async (c) => {
        const union = await createUnion({ db: c.db, events: c.deps.events, generateKeys: sharedKeys }, { slug: "open", name: "Open", purpose: "p", leaderHandle: LEADER.handle, joinPolicy: "open" });
        await requestToJoin(c.deps, union.id, LEADER, followId());
        const leader = (await getLeader(c.db, union.id))!;
        const ann = person("ann");
        const { value: r, statements } = await statementsDuring(() => requestToJoin(c.deps, union.id, ann, followId()));
        const locked = statements.findIndex((s) => /for (no key )?update/i.test(s));
        // The COMMIT may travel with the writes before it (one entry).
        const committed = statements.findLastIndex((s) => s === "commit" || s.endsWith(";\ncommit"));
        assert.ok(locked >= 0 && committed > locked, statements.join("\n"));
        const underLock = statements.slice(locked, committed + 1);
        // The lock and one read after it (one round trip), the batch of writes (with the outbox's insert) with the commit.
        // Stop 22 sent 18 here (the union read twice, the member read back three times, the invite and badge checks),
        // stop 23 four (the lock and the read apart), stop 24 three (the writes, then the commit).
        assert.ok(underLock.length <= 2, `${underLock.length} statements under the lock:\n${underLock.join("\n")}`);

        // What it wrote: as insertApplicant + admit left it.
        assert.equal(r.outcome, "accepted");
        const stored = (await getMember(c.db, union.id, r.member.id))!;
        assert.deepEqual({ ...stored, joinedAt: stored.joinedAt?.getTime() }, { ...r.member, joinedAt: r.member.joinedAt?.getTime() });
        assert.equal(stored.state, "active");
        assert.equal(stored.sponsorId, leader.id);
        assert.equal((await getMember(c.db, union.id, leader.id))!.subtreeSize, leader.subtreeSize + 1);
        const invites = await listInvites(c.db, union.id, { createdBy: stored.id });
        assert.equal(invites.length, 1);
        assert.equal(invites[0]!.maxUses, union.memberInviteLimit);
        const join = (await recordedIntents(c.db)).filter((i) => i.kind === "member.join" && i.memberId === stored.id);
        assert.deepEqual(join, [{ kind: "member.join", unionId: union.id, memberId: stored.id, inviteCode: invites[0]!.code }]);
        assert.ok(c.log.some((e) => e.type === "member.joined" && e.memberId === stored.id && e.via === "open" && e.sponsorId === leader.id));

        // A repeat from the same account changes nothing but the Follow id.
        const again = await requestToJoin(c.deps, union.id, ann, followId());
        assert.equal(again.outcome, "already_member");
        assert.equal((await getMember(c.db, union.id, leader.id))!.subtreeSize, leader.subtreeSize + 1);
      });
    });

    it("the caller's own writes (first) go before the union's lock, and a member's repeated Follow holds the lock for three statements", async (t) => {
      if (d.name !== "postgres") return t.skip("round trips are counted at the pg driver");
      await withCtx(d, async (c) => {
        const union = await createUnion({ db: c.db, events: c.deps.events, generateKeys: sharedKeys }, { slug: "open", name: "Open", purpose: "p", leaderHandle: LEADER.handle, joinPolicy: "open" });
        await requestToJoin(c.deps, union.id, LEADER, followId());
        const bo = person("bo");
        const follow = followId();
        // As the Follow's fast path records the Follow: inside the join's transaction.
        const { value: r, statements } = await statementsDuring(() => requestToJoin(c.deps, union.id, bo, follow, {
          first: async (trx) => {
            await trx.insertInto("inbox_activities").values({ id: follow, type: "Follow", actor: bo.actorId, union_id: union.id, received_at: Date.now() }).execute();
          },
        }));
        assert.equal(r.outcome, "accepted");
        const recorded = statements.findIndex((s) => s.startsWith("insert into \"inbox_activities\""));
        const locked = statements.findIndex((s) => /for (no key )?update/i.test(s));
        assert.ok(recorded >= 0 && locked > recorded, `the Follow's record is written before the lock:\n${statements.join("\n")}`);
        assert.ok(statements.length - locked <= 3, statements.join("\n"));
        assert.ok(await c.db.selectFrom("inbox_activities").select("id").where("id", "=", follow).executeTakeFirst(), "first()'s write commits with the join");

        // The same account follows again (its server lost the Accept): the Follow id is updated and an Accept queued.
        const again = followId();
        const { value: r2, statements: s2 } = await statementsDuring(() => requestToJoin(c.deps, union.id, bo, again));
        assert.equal(r2.outcome, "already_member");
        const locked2 = s2.findIndex((s) => /for (no key )?update/i.test(s));
        const underLock = s2.slice(locked2, s2.lastIndexOf("commit") + 1);
        // The code before sent four: the lock, the read, the update, the outbox's insert, then the commit (five).
        assert.ok(locked2 >= 0 && underLock.length <= 3, `${underLock.length} statements under the lock:\n${underLock.join("\n")}`);
        assert.equal((await getMember(c.db, union.id, r.member.id))!.followId, again);
        const accepts = (await recordedIntents(c.db)).filter((i) => i.kind === "follow.accept" && i.memberId === r.member.id);
        assert.equal(accepts.length, 1);
      });
    });

    it("the caller's own writes sent with the lock (as the follow's fast path sends them): a newcomer's whole join in two round trips, and a repeat found there rolls back", async (t) => {
      if (d.name !== "postgres") return t.skip("round trips are counted at the pg driver");
      await withCtx(d, async (c) => {
        const union = await createUnion({ db: c.db, events: c.deps.events, generateKeys: sharedKeys }, { slug: "open", name: "Open", purpose: "p", leaderHandle: LEADER.handle, joinPolicy: "open" });
        await requestToJoin(c.deps, union.id, LEADER, followId());
        const record = (follow: string, actor: string) => async (trx: Kysely<DB>) => {
          const { result } = await sendWithNext(trx, trx.insertInto("inbox_activities").values({ id: follow, type: "Follow", actor, union_id: union.id, received_at: Date.now() })
            .onConflict((oc) => oc.column("id").doNothing()).returning("id").compile());
          return async () => {
            if ((await result).rows.length === 0) throw new Error("repeat");
          };
        };
        const cy = person("cy");
        const follow = followId();
        const { value: r, statements } = await statementsDuring(() => requestToJoin(c.deps, union.id, cy, follow, { first: record(follow, cy.actorId) }));
        assert.equal(r.outcome, "accepted");
        // BEGIN, the record, the lock and the read; the writes and the COMMIT. The code before sent the record apart, and the writes apart from the COMMIT.
        assert.equal(statements.length, 2, statements.join("\n"));
        assert.ok(/^with|^insert into "inbox_activities"/.test(statements[0]!) && /for no key update/.test(statements[0]!), statements[0]);
        assert.ok(statements[1]!.endsWith("commit"), statements[1]);
        assert.ok(await c.db.selectFrom("inbox_activities").select("id").where("id", "=", follow).executeTakeFirst(), "the record commits with the join");
        // The same Follow again: the check finds it recorded and throws; nothing of the second join is kept.
        const dee = person("dee");
        await assert.rejects(requestToJoin(c.deps, union.id, dee, follow, { first: record(follow, dee.actorId) }), /repeat/);
        assert.equal(await c.db.selectFrom("members").select("id").where("actor_id", "=", dee.actorId).executeTakeFirst(), undefined);
      });
    });

    it("the union's lock lets rows that reference the union be inserted meanwhile, and still serialises the union's writers", async (t) => {
      if (d.name !== "postgres") return t.skip("PostgreSQL row locks");
      await withCtx(d, async (c) => {
        const union = await createUnion({ db: c.db, events: c.deps.events, generateKeys: sharedKeys }, { slug: "open", name: "Open", purpose: "p", leaderHandle: LEADER.handle, joinPolicy: "open" });
        const other = c.tdb.open();
        try {
          // A join under way: it holds the union's lock until it commits.
          let release!: () => void;
          const held = new Promise<void>((r) => (release = r));
          let locked!: () => void;
          const isLocked = new Promise<void>((r) => (locked = r));
          const join = c.db.transaction().execute(async (trx) => {
            await lockUnion(trx, union.id);
            locked();
            await held;
          });
          await isLocked;
          // Meanwhile another connection inserts a row referencing the union (its foreign key takes FOR KEY SHARE
          // on the union's row): an officer's invite here. With FOR UPDATE it waited for the join to commit.
          let pid!: (n: number) => void;
          const pidOf = new Promise<number>((r) => (pid = r));
          const insert = other.db.transaction().execute(async (trx) => {
            pid(Number((await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(trx)).rows[0]!.pid));
            await trx.insertInto("invites").values(newInviteRow(union.id, { createdBy: null, maxUses: 1, expiresInMs: null, welcome: false })).execute();
          });
          const outcome = await Promise.race([insert.then(() => "inserted" as const), untilBlocked(c.db, await pidOf).then(() => "blocked" as const)]);
          release();
          await join;
          await insert;
          assert.equal(outcome, "inserted", "the insert waited for the union's lock");

          // Two writers of the union still wait for each other.
          let release2!: () => void;
          const held2 = new Promise<void>((r) => (release2 = r));
          let locked2!: () => void;
          const isLocked2 = new Promise<void>((r) => (locked2 = r));
          const first = c.db.transaction().execute(async (trx) => {
            await lockUnion(trx, union.id);
            locked2();
            await held2;
          });
          await isLocked2;
          let pid2!: (n: number) => void;
          const pidOf2 = new Promise<number>((r) => (pid2 = r));
          const second = other.db.transaction().execute(async (trx) => {
            pid2(Number((await sql<{ pid: number }>`select pg_backend_pid() as pid`.execute(trx)).rows[0]!.pid));
            await lockUnion(trx, union.id);
          });
          const outcome2 = await Promise.race([second.then(() => "locked" as const), untilBlocked(c.db, await pidOf2).then(() => "blocked" as const)]);
          release2();
          await first;
          await second;
          assert.equal(outcome2, "blocked");
        } finally {
          await other.close();
        }
      });
    });
  });
}

/** Resolves once the backend `pid` waits for a lock (never resolves if it does not). */
async function untilBlocked(db: Kysely<DB>, pid: number): Promise<void> {
  for (;;) {
    const r = await sql<{ n: number }>`select count(*)::int as n from pg_stat_activity where pid = ${pid} and wait_event_type = 'Lock'`.execute(db);
    if (Number(r.rows[0]!.n) > 0) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
