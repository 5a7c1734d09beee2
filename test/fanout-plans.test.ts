import "../src/temporal.ts";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { Create, Note } from "@fedify/vocab";
import { sql } from "kysely";
import pg from "pg";
import { type FanoutDeps, fanOut, type FanoutPage, handleFanoutPage } from "../federation/fanout-pages.ts";
import { asBulkWork } from "../federation/queue-lanes.ts";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { eventually, makeUnion, startMuster, type TestMuster } from "./helpers/muster.ts";
import { seedFollowers } from "./helpers/seed-followers.ts";
import { planNodes, statementRecorder } from "./helpers/query-plans.ts";

/*
 * A fan-out's pages on PostgreSQL read fanout_targets a page at a time and
 * look up each page's 500 done keys (queued, or made within the week), twice:
 * before signing, and after the enqueue's insert. Each of those must read
 * what the page needs, not the whole table: a plan that scans fedify_mq_done
 * or reads the rest of the roster for every page makes a fan-out's
 * PostgreSQL time grow with the square of its size. The planner's choice
 * depends on the statistics: fedify_mq_done analyzed while it was small (a
 * week of fan-outs then fills it), and fanout_targets never analyzed after
 * 12,000 members joined (autovacuum slow or off). Every statement the pages
 * send to either table is explained afterwards, with its own parameters.
 */

const postgres = dialects.find((d) => d.name === "postgres")!;
const MEMBERS = 12_000;
const DONE_KEYS = 40_000;

describe("a fan-out's page statements on PostgreSQL", { skip: postgres.skip }, () => {
  let tdb: TestDatabase;
  let m: TestMuster;
  let unionId: string;
  let recorder: ReturnType<typeof statementRecorder> | undefined;

  before(async () => {
    tdb = await postgres.create();
    m = await startMuster(tdb, { worker: false });
    const union = await makeUnion(m, "riders");
    unionId = union.id;
    const db = m.muster.database.db;
    await sql`analyze fedify_mq_done`.execute(db);
    await sql`insert into fedify_mq_done (dedupe_key, done_at) select gen_random_uuid(), ${Date.now()}::bigint from generate_series(1, ${DONE_KEYS}::int)`.execute(db);
    await seedFollowers(db, unionId, MEMBERS, (i) => ({ origin: `http://s${i % 60}.example`, shared: false }));
    // Counted by PostgreSQL's statistics once the seeding's backend reports them (at most 10 s after): what a fan-out's first page looks at.
    await eventually(async () => {
      const r = await sql<{ changed: string }>`select n_mod_since_analyze as changed from pg_stat_user_tables where relid = 'fanout_targets'::regclass`.execute(db);
      return Number(r.rows[0]?.changed ?? 0) >= MEMBERS;
    }, "the seeded targets counted in pg_stat_user_tables", 30_000);
    recorder = statementRecorder((text) => /fedify_mq_done|fanout_targets/.test(text) && !/^\s*(explain|analyze)/i.test(text));
  });
  after(async () => {
    recorder?.restore();
    await m?.stop();
    await tdb?.destroy();
  });

  it("probe fedify_mq_done's key per done key and read fanout_targets a page at a time in its order, whatever the statistics", async () => {
    const db = m.muster.database.db;
    const deps: FanoutDeps = {
      db, federation: m.muster.federation, origin: m.origin,
      enqueue: (page, o) => m.muster.lanes.fedify.fanout.enqueue(page, o),
      enqueueDelivery: (message, o) => m.muster.lanes.lanes.delivery.enqueue(message, o),
    };
    const ctx = m.muster.federation.createContext(m.origin, undefined);
    const activityId = new URL("/u/riders/test-plans/activity", m.origin);
    recorder!.recording = true;
    await fanOut(deps, ctx, unionId, new Create({ id: activityId, actor: ctx.getActorUri("riders"), object: new Note({ content: "Planned." }) }), "plans");
    for (let page = 0; page < 3; page++) {
      const row = await db.selectFrom("fedify_mq").select(["id", "message"]).where("queue", "=", "fanout").orderBy("id").executeTakeFirstOrThrow();
      await asBulkWork(() => handleFanoutPage(deps, JSON.parse(row.message) as FanoutPage));
      await db.deleteFrom("fedify_mq").where("id", "=", row.id).execute();
    }
    recorder!.recording = false;
    const { sent } = recorder!;
    const queued = await db.selectFrom("fedify_mq").select((eb) => eb.fn.countAll<number>().as("n")).where("queue", "=", "delivery").executeTakeFirstOrThrow();
    assert.equal(Number(queued.n), 1500, "three pages of 500 personal inboxes queued");

    const targets = sent.filter((s) => /from "?fanout_targets"?/.test(s.text));
    const done = sent.filter((s) => /fedify_mq_done/.test(s.text));
    assert.ok(targets.length >= 3, `the pages read fanout_targets (${targets.length} statements)`);
    assert.ok(done.length >= 6, `each page looked its done keys up before signing and after its insert (${done.length} statements)`);
    const problems: string[] = [];
    const client = new pg.Client({ connectionString: tdb.url });
    await client.connect();
    try {
      for (const s of [...targets, ...done]) {
        const { rows } = await client.query<{ "QUERY PLAN": unknown }>(`explain (format json) ${s.text}`, s.values);
        const nodes = planNodes(rows[0]!["QUERY PLAN"]);
        const where = `${s.text.replace(/\s+/g, " ").slice(0, 140)}…\n${nodes.map((n) => `${n["Node Type"]}${n["Relation Name"] ? ` on ${n["Relation Name"]}` : ""}`).join(" / ")}`;
        if (nodes.some((n) => n["Relation Name"] === "fedify_mq_done" && n["Node Type"] !== "Index Only Scan" && n["Node Type"] !== "Index Scan")) problems.push(`fedify_mq_done read other than by its key:\n${where}`);
        if (targets.includes(s) && nodes.some((n) => n["Node Type"] === "Sort")) problems.push(`a page of fanout_targets read by sorting the rest of the roster, not in the index's order:\n${where}`);
      }
    } finally {
      await client.end();
    }
    assert.deepEqual(problems, []);
  });
});
