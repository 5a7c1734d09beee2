// Times migrations 0046-0049 and the Follow prune on rows of the old shape (not committed).
import { randomUUID } from "node:crypto";
import { sql, type Kysely } from "kysely";
import { dialects } from "./test/helpers/databases.ts";
import { migrateTo, migrateToLatest } from "./src/db/migrate.ts";
import { pruneStorage } from "./federation/pruning.ts";
import { ACTIVITY_ID_RETENTION_MS } from "./src/replay-window.ts";

const N = Number(process.env.N ?? 100_000);
const cpu = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1000; };
for (const d of dialects.filter((x) => !x.skip && (process.env.DIALECT ?? x.name) === x.name)) {
  const tdb = await d.create();
  const { db: typed, close } = tdb.open();
  const db = typed as unknown as Kysely<any>;
  try {
    await migrateTo(db, "0045_spends_and_crowdfund_votes");
    await db.insertInto("unions").values({ id: "u1", slug: "u1", name: "u1", purpose: "p", leader_handle: null, icon_url: null, manually_approves_followers: 1, created_at: 1, join_policy: "open", member_invite_limit: 5, welcome_text: null }).execute();
    const now = Date.now() - ACTIVITY_ID_RETENTION_MS * 2;
    for (let from = 0; from < N; from += 2000) {
      const a = [], m = [], f = [];
      for (let i = from; i < Math.min(N, from + 2000); i++) {
        const host = `s${i % 20000}.example.net`, id = `https://${host}/users/u${i}`, follow = `https://${host}/${randomUUID()}`;
        a.push({ id, type: "Person", handle: `@u${i}@${host}`, preferred_username: `u${i}`, name: `Name ${i}`, summary: "<p>organiser, rider, #union</p>", url: `https://${host}/@u${i}`, avatar_url: `https://files.${host}/a/${i}.png`, inbox: `${id}/inbox`, shared_inbox: `https://${host}/inbox`, fetched_at: now });
        m.push({ id: randomUUID(), union_id: "u1", actor_id: id, handle: `@u${i}@${host}`, state: "active", role: "member", subtree_size: 0, follow_id: follow, joined_at: now, created_at: now + i });
        f.push({ id: follow, type: "Follow", actor: id, union_id: "u1", received_at: now });
      }
      await db.transaction().execute(async (trx) => {
        await trx.insertInto("remote_actors").values(a).execute();
        await trx.insertInto("members").values(m).execute();
        await trx.insertInto("inbox_activities").values(f).execute();
      });
    }
    let t = performance.now(), c = cpu();
    await migrateToLatest(db);
    console.log(`${d.name}: ${N} members, migrations 0046-0049 ${((performance.now() - t) / 1000).toFixed(1)} s wall, ${((cpu() - c) / 1000).toFixed(1)} s CPU (this process; PostgreSQL's own CPU not counted)`);
    t = performance.now(); c = cpu();
    const report = await pruneStorage({ db: typed, pruneQueue: async () => 0 });
    console.log(`${d.name}: first prune ${JSON.stringify(report)} ${((performance.now() - t) / 1000).toFixed(1)} s wall, ${((cpu() - c) / 1000).toFixed(1)} s CPU`);
    t = performance.now(); c = cpu();
    const again = await pruneStorage({ db: typed, pruneQueue: async () => 0 });
    console.log(`${d.name}: next prune ${JSON.stringify(again)} ${((performance.now() - t)).toFixed(0)} ms wall, ${(cpu() - c).toFixed(0)} ms CPU`);
    const left = await db.selectFrom("inbox_activities").select((eb) => eb.fn.countAll().as("n")).executeTakeFirstOrThrow();
    console.log(`${d.name}: inbox_activities left ${left.n}; load ${(await import("node:os")).loadavg().map((x) => x.toFixed(1)).join(" ")}`);
  } finally {
    await close();
    await tdb.destroy();
  }
}
