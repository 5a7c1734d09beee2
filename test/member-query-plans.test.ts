import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { type CompiledQuery, type Kysely, type KyselyPlugin, sql } from "kysely";
import { generateActorKeys } from "../federation/keys.ts";
import type { DB } from "../src/db/schema.ts";
import { createEventBus } from "../src/events.ts";
import { findMemberByActor, findMemberByHandle, getLeader, listMembers, countMembers } from "../src/members/members.ts";
import { unionsOfActor } from "../src/members/membership.ts";
import { unionsOutOfLine } from "../src/relationships/featured.ts";
import { committedRecipients, countFollowers, deliveryRecipients, readModerators, readRoster, readTreeRoots } from "../src/members/roster.ts";
import { recruitsOf, sponsorChain } from "../src/members/tree.ts";
import { createUnion, type Union } from "../src/unions/unions.ts";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { seedFollowers } from "./helpers/seed-followers.ts";

// The roster's hot reads must find their rows through an index on both
// dialects: at a million members a scan of `members` is a second of CPU per
// page, and a fan-out reads thousands of pages. Migrations 0046 and 0048
// dropped and narrowed members indexes to save space (issue 16); this keeps
// every query below on an index. The queries are the real functions', caught
// as they run and then explained with their own parameters. SQLite is left
// unanalyzed, as a server runs it; PostgreSQL is told seq scans (and, for
// pages of the whole roster, sorts) cost too much, so the plan shows whether
// an index can serve the query at all. Sorting the few rows an index found
// (a sponsor's recruits, the moderators) is fine.

const MEMBERS = 2000;

/** Catches each query a function sends, compiled as the driver receives it. */
function catching(db: Kysely<DB>): { db: Kysely<DB>; caught: CompiledQuery[] } {
  const caught: CompiledQuery[] = [];
  const plugin: KyselyPlugin = {
    transformQuery({ node, queryId }) {
      caught.push(db.getExecutor().compileQuery(node, queryId));
      return node;
    },
    transformResult: async ({ result }) => result,
  };
  return { db: db.withPlugin(plugin), caught };
}

/** What is wrong with the plan of `q` on members, if anything ("" when every access to members uses an index). */
async function planProblems(db: Kysely<DB>, dialect: "sqlite" | "postgres", q: CompiledQuery, ordered: boolean, narrow: boolean): Promise<string[]> {
  if (dialect === "sqlite") {
    const rows = (await db.executeQuery<{ detail: string }>({ ...q, sql: `explain query plan ${q.sql}` } as CompiledQuery<{ detail: string }>)).rows;
    // "SCAN m" (or "SCAN members USING INDEX …", a walk of a whole index) reads every member; a temp b-tree sorts what was found;
    // a search on the union (and state) alone reads the whole union, which a lookup of a few rows must not.
    // A temp b-tree for the RIGHT PART of an order sorts only rows tied on its left part (members who joined in one millisecond).
    return rows.map((r) => r.detail).filter((d) => /^SCAN (members|m|s)\b/.test(d) || (ordered && /TEMP B-TREE FOR ORDER BY/.test(d)) ||
      (narrow && /^SEARCH (members|m|s) USING (COVERING )?INDEX \S+ \(union_id=\?( AND state[=>]\?)?\)/.test(d)) ||
      // An open range on an index's first column (`actor_id is not null` read as actor_id>?) walks nearly all of it.
      (narrow && /^SEARCH (members|m|s) USING (COVERING )?INDEX \S+ \(\w+>\?\)$/.test(d)));
  }
  return await db.transaction().execute(async (trx) => {
    await sql`set local enable_seqscan = off`.execute(trx);
    if (ordered) await sql`set local enable_sort = off`.execute(trx);
    const plan = (await trx.executeQuery<{ "QUERY PLAN": unknown }>({ ...q, sql: `explain (format json) ${q.sql}` } as CompiledQuery<{ "QUERY PLAN": unknown }>)).rows[0]!["QUERY PLAN"];
    // A partial index's predicate narrows as its Index Cond does (the planner drops a condition the predicate implies).
    const predicates = new Map((await sql<{ name: string; def: string }>`select indexname as name, indexdef as def from pg_indexes where tablename = 'members'`.execute(trx)).rows
      .map((r) => [r.name, / WHERE (.*)$/.exec(r.def)?.[1] ?? ""]));
    const problems: string[] = [];
    const walk = (node: Record<string, unknown>) => {
      const type = node["Node Type"] as string;
      const onMembers = node["Relation Name"] === "members" || /^members/.test(String(node["Index Name"] ?? ""));
      if (onMembers && type === "Seq Scan") problems.push(`Seq Scan on members (${String(node["Filter"] ?? "")})`);
      // All of a partial index on the role holds only the cabinets (members_union_officers), a few rows a union.
      const cabinetOnly = /\brole\b/.test(predicates.get(String(node["Index Name"])) ?? "");
      if (onMembers && /Index/.test(type) && node["Index Cond"] === undefined && !cabinetOnly) problems.push(`${type} of all of ${String(node["Index Name"])}`);
      else if (narrow && onMembers && /Index/.test(type) && !/\b(id|actor_id|handle|sponsor_id|role)\b/.test(`${String(node["Index Cond"])} ${predicates.get(String(node["Index Name"])) ?? ""}`)) problems.push(`${type} of the whole union (${String(node["Index Cond"])})`);
      // An incremental sort orders only rows tied on the index's order, as SQLite's "right part" above.
      if (ordered && type === "Sort") problems.push(`${type} by ${JSON.stringify(node["Sort Key"])}`);
      for (const child of (node["Plans"] as Record<string, unknown>[] | undefined) ?? []) walk(child);
    };
    walk((plan as { Plan: Record<string, unknown> }[])[0]!.Plan);
    return problems;
  });
}

for (const d of dialects) {
  describe(`members queries use an index on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    let database: ReturnType<TestDatabase["open"]>;
    let union: Union;
    let member: { id: string; actor_id: string; handle: string };

    before(async () => {
      tdb = await d.create();
      database = tdb.open();
      const deps = { db: database.db, events: createEventBus(), generateKeys: generateActorKeys };
      union = await createUnion(deps, { slug: "big", name: "Big", purpose: "Plans at size", membersVisibility: "public", leaderHandle: "@lead@example.org" });
      const other = await createUnion(deps, { slug: "small", name: "Small", purpose: "Another union's rows", membersVisibility: "public", leaderHandle: "@lead@example.org" });
      // The union read is the smaller one, so that an index that narrows to it beats walking all members in id order.
      await seedFollowers(database.db, union.id, MEMBERS / 5, (i) => ({ origin: `https://s${i % 50}.example`, shared: i % 2 === 0 }));
      await seedFollowers(database.db, other.id, MEMBERS, (i) => ({ origin: `https://o${i % 50}.example`, shared: true }));
      member = await database.db.selectFrom("members").select(["id", "actor_id", "handle"]).where("union_id", "=", union.id)
        .where("actor_id", "is not", null).orderBy("id").offset(MEMBERS / 10).limit(1).executeTakeFirstOrThrow() as typeof member;
      if (d.name === "postgres") await sql`analyze members`.execute(database.db);
    });
    after(async () => {
      await database?.close();
      await tdb?.destroy();
    });

    const viewer = { via: "web" } as const;
    // "page": a page of an unbounded set, which must come out of the index in order (no sort of the whole union).
    // "few": a lookup of a few rows, which must not read the whole union to find them.
    const cases: [string, "page" | "few" | "count", (db: Kysely<DB>) => Promise<unknown>][] = [
      ["a fan-out page (followers collection)", "page", (db) => deliveryRecipients(db, union.id, "", 500)],
      ["the next fan-out page", "page", (db) => deliveryRecipients(db, union.id, member.id, 500)],
      ["the members committed to a call", "page", (db) => committedRecipients(db, union.id, "no-such-action", member.id, 500)],
      ["the follower count", "count", (db) => countFollowers(db, union.id)],
      ["the member count", "count", (db) => countMembers(db, union.id)],
      ["a roster page and its total", "page", (db) => readRoster(db, union, viewer, { after: member.id, limit: 50 })],
      ["the moderators", "few", (db) => readModerators(db, union, viewer)],
      ["the tree's roots", "few", (db) => readTreeRoots(db, union, viewer)],
      ["a member's recruits", "few", (db) => recruitsOf(db, union.id, member.id)],
      ["a sponsor chain", "few", (db) => sponsorChain(db, member.id)],
      ["a member by actor (every inbox activity)", "few", (db) => findMemberByActor(db, union.id, member.actor_id)],
      ["a member by handle (sign-in, invites)", "few", (db) => findMemberByHandle(db, union.id, member.handle)],
      ["the leader", "few", (db) => getLeader(db, union.id)],
      ["an actor's unions (Delete, Move)", "few", (db) => unionsOfActor(db, member.actor_id)],
      ["the console's first page of members", "page", (db) => listMembers(db, union.id, { limit: 50 })],
      // Every 30 s in each worker: the officers of every union, not a walk of every member.
      ["the featured sync's officers of every union", "few", (db) => unionsOutOfLine(db)],
    ];
    for (const [what, kind, run] of cases) {
      it(what, async () => {
        const { db, caught } = catching(database.db);
        await run(db);
        const onMembers = caught.filter((q) => /\bmembers\b/.test(q.sql));
        assert.ok(onMembers.length > 0, "the function read members");
        for (const q of onMembers) {
          const ordered = kind === "page" && /order by/i.test(q.sql) && !/with recursive/i.test(q.sql);
          assert.deepEqual(await planProblems(database.db, d.name, q, ordered, kind === "few"), [], q.sql);
        }
      });
    }
  });
}
