import "../src/temporal.ts";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Action, composeAction } from "../src/actions/actions.ts";
import type { Database } from "../src/db/database.ts";
import { createEventBus } from "../src/events.ts";
import { OPERATOR } from "../src/members/members.ts";
import { createUnion, type Union } from "../src/unions/unions.ts";
import { generateActorKeys } from "../federation/keys.ts";
import { KyselyMessageQueue } from "../federation/kysely-message-queue.ts";
import { queueOutbox } from "../federation/outbound.ts";
import { type Receiver, startReceivers } from "../bench/fanout.ts";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { eventually, freePort } from "./helpers/muster.ts";
import { ensureStopped, type MusterProcess, spawnMuster } from "./helpers/muster-process.ts";
import { seedFollowers } from "./helpers/seed-followers.ts";

/*
 * A `muster serve` child process is SIGKILLed in the middle of a streamed
 * fan-out to a large roster (10^5 members by default; FANOUT_CRASH_MEMBERS
 * changes it), then started again on the same database. The members live on
 * simulated servers (bench/fanout-receiver.ts, a child process that verifies
 * every HTTP signature): most on 1,000 servers with shared inboxes, 2,000 on
 * 100 servers without, so new inboxes turn up in every page of the roster,
 * not only the first ones. Every inbox must get the Create; one that gets it
 * twice must be one whose delivery was leased (being handled, or answered
 * and not yet recorded as done) when the process died. Two kill points:
 * once a third of the inboxes have it (by then every page of the roster is
 * queued, on both dialects), and while a page of the roster is still queued.
 */

const MEMBERS = Number(process.env.FANOUT_CRASH_MEMBERS ?? 100_000);
const SHARED_SERVERS = 1_000;
const PERSONAL_SERVERS = 100;
const PERSONAL_MEMBERS = 2_000;
const EXPECTED = SHARED_SERVERS + PERSONAL_MEMBERS;
/** Killed once this many inboxes have the Create: about a third of the way. */
const KILL_AFTER = 1_000;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

for (const d of dialects) {
  describe(`SIGKILL in the middle of a ${MEMBERS}-member streamed fan-out, on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    let database: Database;
    let receiver: Receiver;
    let union: Union;
    let dataDir: string;
    let env: Record<string, string>;
    let child: MusterProcess | undefined;
    const db = () => database.db;

    async function startChild(): Promise<MusterProcess> {
      const p = spawnMuster(["serve"], env);
      await p.waitFor(/Muster is listening/, "muster serve is listening");
      return p;
    }

    before(async () => {
      tdb = await d.create();
      database = tdb.open();
      const port = await freePort();
      const origin = `http://127.0.0.1:${port}`;
      receiver = await startReceivers(SHARED_SERVERS + PERSONAL_SERVERS, origin);
      union = await createUnion({ db: db(), events: createEventBus(), generateKeys: generateActorKeys }, { slug: "riders", name: "Riders United", purpose: "Fair pay", joinPolicy: "open", leaderHandle: "@lead@example.org" });
      const t0 = Date.now();
      await seedFollowers(db(), union.id, MEMBERS, (i) => i < PERSONAL_MEMBERS
        ? { origin: receiver.origins[SHARED_SERVERS + (i % PERSONAL_SERVERS)]!, shared: false }
        : { origin: receiver.origins[i % SHARED_SERVERS]!, shared: true });
      console.log(`# [${d.name}] ${MEMBERS} members seeded in ${Date.now() - t0} ms`);
      dataDir = mkdtempSync(join(tmpdir(), "muster-crash-scale-"));
      env = { PORT: String(port), ORIGIN: origin, DATABASE_URL: tdb.url, DATA_DIR: dataDir, MUSTER_ALLOW_PRIVATE_ADDRESS: "1", LOG_LEVEL: "warning" };
      child = await startChild();
    });

    after(async () => {
      await ensureStopped(child);
      await receiver?.stop();
      await database?.close();
      await tdb?.destroy();
      if (dataDir) rmSync(dataDir, { recursive: true, force: true });
    });

    /** Where the fan-out stands, printed every 15 s while the test waits. */
    async function status(): Promise<string> {
      const lanes = await db().selectFrom("fedify_mq").select(["queue", (e) => e.fn.countAll<number>().as("n")]).groupBy("queue").execute();
      const s = await receiver.stats();
      return `${s.delivered} delivered (${s.inboxes} inboxes, ${s.refused} refused), queued: ${lanes.map((l) => `${l.queue} ${l.n}`).join(", ") || "nothing"}`;
    }

    it("every inbox gets the Create after a restart; only deliveries leased at the kill are sent twice", async () => {
      await crashAndRestart("served");
    });

    // Killed while the roster is still being streamed: a page of it still
    // queued and the deliveries of an earlier one already queued. On SQLite
    // the pages are all queued before the first inbox is served, so the kill
    // above never falls there.
    it("killed while the roster is still being streamed: the same", async () => {
      await crashAndRestart("mid-stream");
    });

    /** A page of the roster, and a delivery, of this activity queued now. */
    async function streaming(createId: string): Promise<{ page: boolean; delivery: boolean }> {
      const rows = await db().selectFrom("fedify_mq").select("message").where("message", "like", `%${createId}%`).execute();
      const types = rows.map((r) => (JSON.parse(r.message) as { type?: string }).type);
      return { page: types.includes("muster.fanout"), delivery: types.includes("outbox") };
    }

    /** crash, with the queue's and the receiver's state logged every 15 s meanwhile (a slow CI run says where it is). */
    async function crashAndRestart(at: "served" | "mid-stream"): Promise<void> {
      const ticker = setInterval(() => void status().then((s) => console.log(`# [${d.name}] ${s}`), () => {}), 15_000);
      try {
        await crash(at);
      } finally {
        clearInterval(ticker);
      }
    }

    async function crash(at: "served" | "mid-stream"): Promise<void> {
      // Written where the child's domain worker reads it, as the console would.
      const deps = { db: db(), events: createEventBus(), outbox: queueOutbox(new KyselyMessageQueue(database, { name: "domain" })) };
      const t0 = Date.now();
      const action: Action = await composeAction(deps, union.id, OPERATOR, { title: "Crash at scale", text: "Everyone, now.", kind: "other" }, { publishNow: true });
      const createId = new URL(`/u/riders/actions/${action.id}/activity`, env.ORIGIN).href;

      if (at === "served") {
        await eventually(async () => (await receiver.hits(createId)).size >= KILL_AFTER, `${KILL_AFTER} inboxes have the Create`, 240_000);
      } else {
        // Watched as closely as the database allows: on SQLite the roster is streamed in well under a second.
        for (;;) {
          const now = await streaming(createId);
          if (now.page && now.delivery) break;
          assert.ok(Date.now() - t0 < 120_000, "never saw a page of the roster and a delivery queued together");
          await sleep(1);
        }
      }
      child!.child.kill("SIGKILL");
      await child!.exited;
      const killedAt = Date.now();
      const before = await receiver.hits(createId);

      // What the dead process left. Its leases would run out within 20 s; we let that pass at once.
      const rows = await db().selectFrom("fedify_mq").select(["queue", "message", "lease_until"]).where("queue", "in", ["fanout", "delivery", "outbox"]).execute();
      const leasedInboxes = new Set<string>();
      // A retry Fedify queued after an attempt it saw fail (timed out under
      // load, say) while the receiver had in fact verified it: a repeat of
      // at-least-once delivery that has nothing to do with the crash.
      const retriedInboxes = new Set<string>();
      let pagesLeft = 0;
      let queuedDeliveries = 0;
      for (const r of rows) {
        const m = JSON.parse(r.message) as { type?: string; activityId?: string; inbox?: string; attempt?: number };
        if (m.activityId !== createId) continue;
        if (m.type === "muster.fanout") pagesLeft++;
        if (m.type !== "outbox") continue;
        queuedDeliveries++;
        if ((m.attempt ?? 0) > 0) retriedInboxes.add(m.inbox!);
        if (r.lease_until !== null && Number(r.lease_until) > killedAt) leasedInboxes.add(m.inbox!);
      }
      await db().updateTable("fedify_mq").set({ lease_until: killedAt - 1 }).where("lease_until", ">", killedAt - 1).execute();

      const restarting = Date.now();
      child = await startChild();
      await eventually(async () => (await receiver.hits(createId)).size >= EXPECTED, `all ${EXPECTED} inboxes have the Create after the restart`, 300_000);
      const done = Date.now();
      await eventually(async () => {
        const left = await db().selectFrom("fedify_mq").select("id").where("queue", "in", ["fanout", "delivery", "outbox"]).where("message", "like", `%${createId}%`).executeTakeFirst();
        return left === undefined;
      }, "the queue settled", 60_000);
      await sleep(500);
      const hits = await receiver.hits(createId);
      const stats = await receiver.stats();
      const twice = [...hits].filter(([, n]) => n > 1).map(([inbox]) => inbox);
      const twiceBeforeKill = new Set([...before].filter(([, n]) => n > 1).map(([inbox]) => inbox));
      const unexplained = twice.filter((i) => !leasedInboxes.has(i) && !retriedInboxes.has(i) && !twiceBeforeKill.has(i));
      console.log(`# [${d.name}] ${MEMBERS} members, ${EXPECTED} inboxes: killed ${killedAt - t0} ms after publishing with ${before.size} inboxes served, ` +
        `${pagesLeft} roster page message(s) and ${queuedDeliveries} deliveries still queued, ${leasedInboxes.size} deliveries leased; ` +
        `after the restart (${Date.now() - restarting} ms ago) all inboxes had it in ${done - restarting} ms; ` +
        `${twice.length} inbox(es) got it twice: ${twice.filter((i) => leasedInboxes.has(i)).length} leased at the kill, ${twice.filter((i) => retriedInboxes.has(i)).length} with a retry queued at the kill, ` +
        `${twice.filter((i) => twiceBeforeKill.has(i)).length} twice before the kill, ${unexplained.length} none of these; ${stats.refused} signatures refused; ` +
        `${stats.keyUnreachable} refused while the union's key could not be fetched (retried)`);

      if (at === "mid-stream") assert.ok(pagesLeft >= 1, "killed with a page of the roster still queued");
      assert.equal(hits.size, EXPECTED, "every inbox got it");
      for (const [inbox, n] of hits) assert.ok(n <= 2, `${inbox} got it ${n} times`);
      assert.deepEqual(unexplained, [], "every repeat is a delivery leased when the process died, or one the sender retried after an attempt it saw fail");
      // A receiver that could not fetch the union's key while the process was
      // dead answers 401, as Mastodon does, and the retry gets in: counted
      // apart. A signature checked against the key must never fail.
      assert.equal(stats.refused, 0, "every delivery's signature verified against the union's key");
      for (const inbox of hits.keys()) assert.ok(inbox.endsWith("/inbox"), inbox);
    }
  });
}
