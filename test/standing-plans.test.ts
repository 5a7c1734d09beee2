import "../src/temporal.ts";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { sql } from "kysely";
import pg from "pg";
import type { Database } from "../src/db/database.ts";
import { createEventBus } from "../src/events.ts";
import { recomputeStandings } from "../src/treasury/standing.ts";
import { duesParamsFromBylaws } from "../src/treasury/dues-params.ts";
import { createUnion } from "../src/unions/unions.ts";
import { generateActorKeys } from "../federation/keys.ts";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { eventually } from "./helpers/muster.ts";
import { seedFollowers } from "./helpers/seed-followers.ts";
import { planNodes, statementRecorder } from "./helpers/query-plans.ts";

/*
 * The standings pass (the dues scan's, at start and every 5 minutes) reads the
 * roster and then the standings a page of 1,000 at a time. On PostgreSQL each
 * page must be read in its index's order from the cursor, whatever the
 * statistics say: with those of an empty member_standing (autovacuum slow or
 * off, as here), a page read every standing past the cursor and sorted them,
 * and a merge join read members from the first row: each page cost what was
 * left or what was passed of the union, so a pass grew with the square of the
 * roster (2·10^5 members: 51 s for the first pass, 44 s for the next; 10^6:
 * most of an hour). Every page statement is explained with its own parameters.
 */

const postgres = dialects.find((d) => d.name === "postgres")!;
const MEMBERS = 12_000;

describe("the standings pass's page statements on PostgreSQL", { skip: postgres.skip }, () => {
  let tdb: TestDatabase;
  let database: Database;
  let unionId: string;
  let recorder: ReturnType<typeof statementRecorder> | undefined;

  // Once the writing backend has reported them (at most seconds later): what the pass's refresh looks at.
  const counted = (table: string, n: number) => eventually(async () => {
    const r = await sql<{ live: string }>`select n_live_tup as live from pg_stat_user_tables where relid = ${table}::regclass`.execute(database.db);
    return Number(r.rows[0]?.live ?? 0) >= n;
  }, `${table}'s rows counted in pg_stat_user_tables`, 30_000);

  before(async () => {
    tdb = await postgres.create();
    database = tdb.open();
    const union = await createUnion({ db: database.db, events: createEventBus(), generateKeys: generateActorKeys }, { slug: "riders", name: "Riders United", purpose: "Fair pay", joinPolicy: "open", leaderHandle: "@lead@example.org" });
    unionId = union.id;
    await seedFollowers(database.db, unionId, MEMBERS, (i) => ({ origin: `http://s${i % 60}.example`, shared: true }));
    await counted("members", MEMBERS);
    recorder = statementRecorder((text) => /^\s*select/i.test(text) && /member_standing/.test(text) && /\blimit\b/i.test(text));
  });
  after(async () => {
    recorder?.restore();
    await database?.close();
    await tdb?.destroy();
  });

  it("reads members and standings a page at a time in their index's order, each page's other row by its key", async () => {
    const deps = { db: database.db, events: createEventBus(), duesParams: duesParamsFromBylaws };
    // The first pass writes every member's standing; the next one reads them back, as every pass after it does.
    await recomputeStandings(deps, unionId);
    await counted("member_standing", MEMBERS);
    recorder!.recording = true;
    await recomputeStandings(deps, unionId);
    recorder!.recording = false;
    const { sent } = recorder!;

    // Told apart by their cursors: the roster's pages go by members' id, the standings' by member_standing's member_id.
    const roster = sent.filter((s) => /"m"\."id" > /.test(s.text));
    const standings = sent.filter((s) => /"s"\."member_id" > /.test(s.text));
    assert.ok(sent.length >= 2 * Math.floor(MEMBERS / 1000), `the pass read both a page at a time (${sent.length} statements)`);
    const problems: string[] = [];
    const client = new pg.Client({ connectionString: tdb.url });
    await client.connect();
    try {
      // The first page of each (cursor "") may read the whole union once a pass: the planner's choice on a small
      // union, and linear. The rest must not read what is left of it.
      for (const s of sent.filter((x) => !x.values.includes(""))) {
        const { rows } = await client.query<{ "QUERY PLAN": unknown }>(`explain (format json) ${s.text}`, s.values);
        const nodes = planNodes(rows[0]!["QUERY PLAN"]);
        const where = `${s.text.replace(/\s+/g, " ").slice(0, 160)}…\n${nodes.map((n) => `${n["Node Type"]}${n["Relation Name"] ? ` on ${n["Relation Name"]}` : ""}`).join(" / ")}`;
        // A roster page of this small union may be sorted by the planner's choice on fresh statistics (it reads
        // the members' index in order once the union is large); a standings page must never be.
        if (standings.includes(s) && nodes.some((n) => n["Node Type"] === "Sort" || n["Node Type"] === "Incremental Sort")) problems.push(`a page read by sorting the rest of the union, not in the index's order:\n${where}`);
        if (nodes.some((n) => n["Node Type"] === "Merge Join" || n["Node Type"] === "Hash Join" || n["Node Type"] === "Seq Scan")) problems.push(`a page joined to a whole table, not by each row's key:\n${where}`);
      }
    } finally {
      await client.end();
    }
    assert.ok(roster.length >= 1 && standings.length >= 1, `roster pages ${roster.length}, standing pages ${standings.length}`);
    assert.deepEqual(problems, []);
  });
});
