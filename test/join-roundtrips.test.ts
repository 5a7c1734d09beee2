import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { sql } from "kysely";
import pg from "pg";
import { readAll, WriteBatch } from "../src/db/batch.ts";
import { getLeader, getMember } from "../src/members/members.ts";
import { listInvites } from "../src/members/invites.ts";
import { requestToJoin } from "../src/members/membership.ts";
import { createUnion } from "../src/unions/unions.ts";
import { dialects } from "./helpers/databases.ts";
import { followId, LEADER, person, sharedKeys, withCtx } from "./helpers/domain-context.ts";
import { recordedIntents } from "./helpers/membership-worker.ts";

/** Statements any pg client sends while `fn` runs, in order (text, whitespace folded). */
async function statementsDuring<T>(fn: () => Promise<T>): Promise<{ value: T; statements: string[] }> {
  const statements: string[] = [];
  const query = pg.Client.prototype.query as (...args: unknown[]) => unknown;
  pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
    const first = args[0];
    statements.push((typeof first === "string" ? first : (first as { text?: string } | null)?.text ?? "?").replace(/\s+/g, " ").trim());
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

    it("an open union's newcomer is admitted in a handful of statements under the union's lock, with the same result", async (t) => {
      if (d.name !== "postgres") return t.skip("round trips are counted at the pg driver");
      await withCtx(d, async (c) => {
        const union = await createUnion({ db: c.db, events: c.deps.events, generateKeys: sharedKeys }, { slug: "open", name: "Open", purpose: "p", leaderHandle: LEADER.handle, joinPolicy: "open" });
        await requestToJoin(c.deps, union.id, LEADER, followId());
        const leader = (await getLeader(c.db, union.id))!;
        const ann = person("ann");
        const { value: r, statements } = await statementsDuring(() => requestToJoin(c.deps, union.id, ann, followId()));
        const locked = statements.findIndex((s) => /for update/i.test(s));
        const committed = statements.lastIndexOf("commit");
        assert.ok(locked >= 0 && committed > locked, statements.join("\n"));
        const underLock = statements.slice(locked, committed + 1);
        // The lock (reading the union), one read, the recording outbox's insert, one batch of writes, the commit.
        // The code before sent 18 here (the union read twice, the member read back three times, the invite and badge checks).
        assert.ok(underLock.length <= 5, `${underLock.length} statements under the lock:\n${underLock.join("\n")}`);

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
  });
}
