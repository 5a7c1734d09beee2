import "../src/temporal.ts";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
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

// Two `muster worker` processes and `muster serve --no-worker` on one
// PostgreSQL database, running normally (nobody crashes): a call-to-action's
// deliveries are claimed by both workers at once, and no inbox may get it
// twice. A claim that let two workers lease one message (the claim's row
// locks, SKIP LOCKED, the lease check) shows here as a repeat at the
// receivers, which verify every delivery's signature.
//
// And they share it: 20 servers are 20 ordering keys (a delivery per key at
// a time), fewer than a worker's 128 slots, and each settle hands its key's
// next delivery to the worker that settled it. The worker whose claim came
// first took every key and kept them all to the end (lane-share.ts); each
// must now send at least a quarter of the deliveries.

const pg = dialects.find((d) => d.name === "postgres")!;
const SERVERS = 20;
/** One POST each (no shared inboxes), so every member is one delivery message. */
const MEMBERS = 3000;

/**
 * Delivery-lane messages a worker took (claimed, or handed over by its
 * settles), from its last MUSTER_QUEUE_TRACE line, printed every 2 s.
 */
function deliveriesTaken(w: MusterProcess): number {
  const last = [...w.output().matchAll(/TRACECLAIMS \d+ (\{.*\})/g)].at(-1)?.[1];
  const lane = last === undefined ? undefined : (JSON.parse(last) as Record<string, number[]>).delivery;
  return (lane?.[1] ?? 0) + (lane?.[2] ?? 0);
}

/** user + system CPU of a process so far, ms (Linux, 100 ticks a second). */
function cpuOf(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

describe("two worker processes delivering one fan-out on postgres", { skip: pg.skip }, () => {
  let tdb: TestDatabase;
  let database: Database;
  let receiver: Receiver;
  let union: Union;
  let dataDir: string;
  let env: Record<string, string>;
  const procs: MusterProcess[] = [];

  before(async () => {
    tdb = await pg.create();
    database = tdb.open();
    const port = await freePort();
    const origin = `http://127.0.0.1:${port}`;
    receiver = await startReceivers(SERVERS, origin);
    union = await createUnion({ db: database.db, events: createEventBus(), generateKeys: generateActorKeys }, { slug: "riders", name: "Riders United", purpose: "Fair pay", joinPolicy: "open", leaderHandle: "@lead@example.org" });
    await seedFollowers(database.db, union.id, MEMBERS, (i) => ({ origin: receiver.origins[i % SERVERS]!, shared: false }));
    dataDir = mkdtempSync(join(tmpdir(), "muster-worker-deliveries-"));
    // A long HTTP timeout: on a loaded machine a POST the receiver verified
    // but answered after the default 10 s would be retried by Fedify, a
    // repeat at-least-once allows; this test is about the claim.
    env = { PORT: String(port), ORIGIN: origin, DATABASE_URL: tdb.url, DATA_DIR: dataDir, MUSTER_ALLOW_PRIVATE_ADDRESS: "1", LOG_LEVEL: "warning", MUSTER_HTTP_TIMEOUT_MS: "120000", MUSTER_QUEUE_TRACE: "1" };
    const web = spawnMuster(["serve", "--no-worker"], env);
    procs.push(web);
    await web.waitFor(/queue workers: none in this process/, "serve --no-worker is listening");
  });

  after(async () => {
    await Promise.all(procs.map(ensureStopped));
    await receiver?.stop();
    await database?.close();
    await tdb?.destroy();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  it("every inbox gets the call-to-action exactly once, from both workers' claims", async (t) => {
    const workers = [spawnMuster(["worker"], env), spawnMuster(["worker"], env)];
    procs.push(...workers);
    await Promise.all(workers.map((w) => w.waitFor(/Muster worker started \(postgres\)/, `worker ${w.pid} started`)));
    const cpu0 = workers.map((w) => cpuOf(w.pid));
    // Written where the workers' domain lane reads it, as the console would.
    const deps = { db: database.db, events: createEventBus(), outbox: queueOutbox(new KyselyMessageQueue(database, { name: "domain" })) };
    const action: Action = await composeAction(deps, union.id, OPERATOR, { title: "Both workers", text: "Everyone, now.", kind: "other" }, { publishNow: true });
    const createId = new URL(`/u/riders/actions/${action.id}/activity`, env.ORIGIN).href;

    // Where the fan-out stands, every 15 s while the test waits (a slow machine, or a stalled lane).
    const ticker = setInterval(() => void (async () => {
      const lanes = await database.db.selectFrom("fedify_mq").select(["queue", (e) => e.fn.countAll<number>().as("n"), (e) => e.fn.count("lease_owner").as("leased")]).groupBy("queue").execute();
      console.log(`# ${(await receiver.hits(createId)).size}/${MEMBERS} inboxes; queued: ${lanes.map((l) => `${l.queue} ${l.n} (${l.leased} leased)`).join(", ") || "nothing"}`);
    })().catch(() => {}), 15_000);
    try {
      await eventually(async () => (await receiver.hits(createId)).size >= MEMBERS, `all ${MEMBERS} inboxes have the Create`, 240_000);
    } finally {
      clearInterval(ticker);
    }
    await eventually(async () => {
      const left = await database.db.selectFrom("fedify_mq").select("id").where("queue", "in", ["fanout", "delivery", "outbox"]).executeTakeFirst();
      return left === undefined;
    }, "the fan-out's messages are all settled", 60_000);
    // Anything sent twice would have arrived by now.
    await new Promise((r) => setTimeout(r, 1000));
    const hits = await receiver.hits(createId);
    const used = workers.map((w, i) => cpuOf(w.pid) - cpu0[i]!);
    t.diagnostic(`worker CPU during the fan-out: ${used.map((ms) => `${ms} ms`).join(" / ")}`);

    const lines = workers.flatMap((w) => w.output().split("\n"));
    const logged = (re: RegExp) => lines.filter((l) => re.test(l)).slice(0, 3);
    const twice = [...hits].filter(([, n]) => n !== 1);
    const why = ["handled twice", "Failed to send", "Could not settle", "Could not claim", "Could not renew"].map((w) => `${lines.filter((l) => l.includes(w)).length} "${w}"`).join(", ");
    assert.deepEqual(twice.slice(0, 5), [], `no inbox got it twice (${twice.length} did; the workers logged ${why}: ${logged(/ ERR |handled twice/).join(" | ").slice(0, 2000)})`);
    assert.deepEqual(logged(/handled twice|lease expired/), [], "no lease ran out under a running handler");
    // Fedify retries what it saw fail; none may have, or a repeat would be at-least-once, not the claim.
    assert.deepEqual(logged(/Failed to send|Could not claim/), [], "no delivery failed (so none was retried) and no claim failed");
    assert.equal(hits.size, MEMBERS, "every inbox has it");
    assert.equal((await receiver.stats()).refused, 0);
    assert.ok(used.every((ms) => ms > 0), "both workers took part");

    // The workers' counts, once both have printed them after the last delivery.
    const taken = await eventually(async () => {
      const n = workers.map(deliveriesTaken);
      return n[0]! + n[1]! >= MEMBERS && n;
    }, "both workers' trace counts", 10_000).catch(() => workers.map(deliveriesTaken));
    t.diagnostic(`deliveries taken by each worker: ${taken.join(" / ")}`);
    if (process.env.SHARE_DEBUG) for (const w of workers) t.diagnostic([...w.output().matchAll(/TRACECLAIMS.*/g)].at(-1)?.[0] ?? "");
    const total = taken[0]! + taken[1]!;
    assert.ok(total >= MEMBERS, `the workers took ${total} deliveries, at least ${MEMBERS}`);
    for (const [i, n] of taken.entries()) assert.ok(n >= total / 4, `worker ${i + 1} took ${n} of ${total} deliveries, at least a quarter (${taken.join(" / ")})`);
  });
});
