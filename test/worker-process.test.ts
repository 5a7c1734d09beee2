import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Add, Note } from "@fedify/vocab";
import type { Database } from "../src/db/database.ts";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { eventually, freePort } from "./helpers/muster.ts";
import { ensureStopped, type MusterProcess, spawnMuster } from "./helpers/muster-process.ts";
import { type Peer, startPeer } from "./helpers/peer.ts";

// The scaled-out deployment: one `muster serve --no-worker` web process and
// two `muster worker` processes sharing one PostgreSQL database, each a real
// child process. Several processes can only share the queue on PostgreSQL.

const pg = dialects.find((d) => d.name === "postgres")!;
const BATCH = 20;

/** What Fedify logs (at debug) in the process that ran an inbox listener. */
function processedIds(p: MusterProcess): string[] {
  return [...p.output().matchAll(/Activity ['"]?([^'"\s]+?)['"]? has been processed\./g)].map((m) => m[1]!);
}

describe("separate worker processes on postgres", { skip: pg.skip }, () => {
  let tdb: TestDatabase;
  let db: Database;
  let peer: Peer;
  let dataDir: string;
  let origin: URL;
  let env: Record<string, string>;
  let web: MusterProcess | undefined;
  const workers: MusterProcess[] = [];
  const sent: { id: string; shared: boolean }[] = [];
  let seq = 0;

  // The union's treasury creation waits in the ledger lane, which only a process with a ledger takes (none here).
  const count = async (table: "fedify_mq" | "fedify_mq_dead" | "inbox_activities") => table === "fedify_mq"
    ? Number((await db.db.selectFrom("fedify_mq").select((e) => e.fn.countAll<number>().as("n")).where("queue", "!=", "ledger").executeTakeFirstOrThrow()).n)
    : Number((await db.db.selectFrom(table).select((e) => e.fn.countAll<number>().as("n")).executeTakeFirstOrThrow()).n);

  /** Signs and POSTs `n` distinct activities from the peer, all at once; returns the HTTP statuses. */
  async function deliver(n: number): Promise<number[]> {
    const actorId = new URL("/u/riders", origin);
    const requests = [];
    for (let i = 0; i < n; i++) {
      const k = ++seq;
      const as = ["alice", "bob", "carol"][k % 3]!;
      const id = new URL(`/activities/worker-${k}`, peer.origin);
      // A plain Add(Note): recorded by the generic listener, with no side
      // effects (a Follow would make the union deliver an Accept back, and a
      // Create from an account that belongs to no union is refused at the door).
      const activity = new Add({
        id,
        actor: peer.actorId(as),
        to: actorId,
        target: new URL(`/users/${as}/collections/featured`, peer.origin),
        object: new Note({ id: new URL(`/notes/worker-${k}`, peer.origin), attribution: peer.actorId(as), content: `note ${k}`, to: actorId }),
      });
      // Every fourth goes to the shared inbox, as Mastodon batches deliveries.
      const shared = k % 4 === 0;
      const inbox = new URL(shared ? "/inbox" : "/u/riders/inbox", origin);
      const body = JSON.stringify(await activity.toJsonLd({ format: "compact" }));
      sent.push({ id: id.href, shared });
      requests.push(await peer.signedPost(inbox, body, { as }));
    }
    return Promise.all(requests.map(async (r) => (await fetch(r)).status));
  }

  before(async () => {
    tdb = await pg.create();
    db = tdb.open();
    peer = await startPeer();
    dataDir = mkdtempSync(join(tmpdir(), "muster-workers-"));
    const port = await freePort();
    origin = new URL(`http://127.0.0.1:${port}`);
    env = {
      PORT: String(port),
      ORIGIN: origin.origin,
      DATABASE_URL: tdb.url,
      DATA_DIR: dataDir,
      MUSTER_ALLOW_PRIVATE_ADDRESS: "1",
      // Debug makes Fedify name each activity a process handled.
      LOG_LEVEL: "debug",
    };
  });

  after(async () => {
    await Promise.all([...workers, web].map(ensureStopped));
    await peer?.close();
    await db?.close();
    await tdb?.destroy();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  it("the web process accepts and queues inbox deliveries but processes none", async () => {
    web = spawnMuster(["serve", "--no-worker"], env);
    await web.waitFor(/queue workers: none in this process/, "serve --no-worker is listening");
    const create = spawnMuster(["union", "create", "riders", "--name", "Riders United", "--purpose", "Fair pay", "--open", "--json"], env);
    assert.equal(await create.exited, 0, create.output());
    assert.equal(JSON.parse(create.stdout()).actor, new URL("/u/riders", origin).href);

    const statuses = await deliver(BATCH);
    assert.deepEqual(statuses, Array(BATCH).fill(202), "every signed delivery is accepted for later processing");
    // Nobody consumes the queue yet: give a (wrongly) running worker time to show itself.
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(await count("fedify_mq"), BATCH, "one queued message per delivery");
    assert.equal(await count("inbox_activities"), 0, "nothing processed without a worker");
    assert.deepEqual(processedIds(web), []);
  });

  it("two worker processes drain the queue together, each activity exactly once", async (t) => {
    workers.push(spawnMuster(["worker"], env), spawnMuster(["worker"], env));
    await Promise.all(workers.map((w) => w.waitFor(/Muster worker started \(postgres\)/, `worker ${w.pid} started`)));
    // More work while both run, all at once so each worker has to take its share.
    const statuses = await deliver(BATCH);
    assert.deepEqual(statuses, Array(BATCH).fill(202));

    await eventually(async () => (await count("fedify_mq")) === 0, "the queue drains", 60_000);
    const rows = await db.db.selectFrom("inbox_activities").select(["id", "union_id"]).execute();
    const ids = rows.map((r) => r.id);
    assert.equal(ids.length, new Set(ids).size, "no activity is recorded twice");
    assert.deepEqual([...ids].sort(), sent.map((s) => s.id).sort(), "every delivered activity is recorded");
    for (const s of sent) {
      const row = rows.find((r) => r.id === s.id)!;
      assert.equal(row.union_id === null, s.shared, `${s.id}: union inbox rows carry the union, shared inbox rows do not`);
    }
    assert.equal(await count("fedify_mq_dead"), 0);

    const [a, b] = workers.map((w) => processedIds(w));
    t.diagnostic(`worker ${workers[0]!.pid} handled ${a!.length}, worker ${workers[1]!.pid} handled ${b!.length}`);
    assert.ok(a!.length > 0 && b!.length > 0, `both workers took part (${a!.length} and ${b!.length} of ${sent.length})`);
    assert.deepEqual(a!.filter((id) => b!.includes(id)), [], "no activity was handled by both workers");
    assert.deepEqual([...a!, ...b!].sort(), sent.map((s) => s.id).sort(), "the workers handled exactly what was delivered");
    assert.deepEqual(processedIds(web!), [], "the web process handled none");
  });

  it("a worker stopped with SIGTERM under load drains and exits 0; the other finishes the rest", async (t) => {
    const [first, second] = workers;
    const already = sent.length;
    const delivering = deliver(BATCH);
    // Stop the first worker while the deliveries are arriving and being handled.
    await eventually(async () => (await count("inbox_activities")) > already, "handling has begun", 30_000);
    assert.equal(await first!.stop(), 0, first!.output());
    assert.match(first!.output(), /Stopped cleanly/);
    assert.deepEqual(await delivering, Array(BATCH).fill(202));

    await eventually(async () => (await count("fedify_mq")) === 0, "the queue drains on the remaining worker", 60_000);
    const ids = (await db.db.selectFrom("inbox_activities").select("id").execute()).map((r) => r.id);
    assert.equal(ids.length, new Set(ids).size, "no activity is recorded twice");
    assert.deepEqual([...ids].sort(), sent.map((s) => s.id).sort(), "nothing was lost when the worker stopped");
    assert.equal(await count("fedify_mq_dead"), 0);
    const handled = [...processedIds(first!), ...processedIds(second!)];
    t.diagnostic(`after the stop: ${processedIds(first!).length} handled by the stopped worker, ${processedIds(second!).length} by the other, in all`);
    assert.equal(handled.length, sent.length, "each activity handled once across both workers");

    assert.equal(await second!.stop(), 0, second!.output());
    assert.match(second!.output(), /Stopped cleanly/);
  });

  it("the web process exits 0 on SIGTERM", async () => {
    assert.equal(await web!.stop(), 0, web!.output());
  });
});
