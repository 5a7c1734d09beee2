import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Database } from "../src/db/database.ts";
import { createEventBus } from "../src/events.ts";
import { chainOf, verifyChain } from "../src/actions/chain.ts";
import { castVote, createProposal, getProposal, type Proposal } from "../src/bylaws/proposals.ts";
import { findMemberByActor, OPERATOR } from "../src/members/members.ts";
import { getUnionBySlug } from "../src/unions/unions.ts";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { eventually, freePort } from "./helpers/muster.ts";
import { ensureStopped, type MusterProcess, spawnMuster } from "./helpers/muster-process.ts";
import { joinAsRemoteMember } from "./helpers/remote-member.ts";
import { type CountingPeer, startCountingPeer } from "./helpers/counting-peer.ts";

/*
 * Issue 14: "close ... with two workers on PostgreSQL (closes once)". Two
 * `muster worker` child processes and a `muster serve --no-worker` share one
 * database; both workers look for due proposals every 5 s, started at the
 * same moment, so their looks coincide. Each proposal whose end time passes
 * is closed once: one outcome, one bylaws version, one closing Update and
 * one result Note delivered, whichever worker got there.
 */

const pg = dialects.find((d) => d.name === "postgres")!;

/** What the workers logged as closed, by proposal id. */
function closedIn(p: MusterProcess): string[] {
  return [...p.output().matchAll(/Closed proposal ['"]?([0-9a-f-]{36})/g)].map((m) => m[1]!);
}

describe("proposals closed by two worker processes on postgres", { skip: pg.skip }, () => {
  let tdb: TestDatabase;
  let db: Database;
  let peer: CountingPeer;
  let dataDir: string;
  let env: Record<string, string>;
  let origin: URL;
  const procs: MusterProcess[] = [];

  before(async () => {
    tdb = await pg.create();
    db = tdb.open();
    peer = await startCountingPeer(["ana", "ben", "cy"]);
    dataDir = mkdtempSync(join(tmpdir(), "muster-votes-workers-"));
    const port = await freePort();
    origin = new URL(`http://127.0.0.1:${port}`);
    env = { PORT: String(port), ORIGIN: origin.origin, DATABASE_URL: tdb.url, DATA_DIR: dataDir, MUSTER_ALLOW_PRIVATE_ADDRESS: "1", LOG_LEVEL: "info" };
  });

  after(async () => {
    await Promise.all(procs.map(ensureStopped));
    await peer?.close();
    await db?.close();
    await tdb?.destroy();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });

  it("each proposal whose end time passes is closed exactly once: one outcome applied, one result Note", async (t) => {
    const create = spawnMuster(["union", "create", "riders", "--name", "Riders United", "--purpose", "Fair pay", "--open", "--json"], env);
    assert.equal(await create.exited, 0, create.output());
    const union = (await getUnionBySlug(db.db, "riders"))!;
    procs.push(spawnMuster(["serve", "--no-worker"], env));
    await procs[0]!.waitFor(/queue workers: none in this process/, "serve --no-worker is listening");
    const workers = [spawnMuster(["worker"], env), spawnMuster(["worker"], env)];
    procs.push(...workers);
    await Promise.all(workers.map((w) => w.waitFor(/Muster worker started \(postgres\)/, `worker ${w.pid} started`)));
    // Members join and vote straight through the domain; what is under test is the close.
    const deps = { db: db.db, events: createEventBus(), outbox: { add: async () => {} } };
    for (const name of ["ana", "ben", "cy"]) await joinAsRemoteMember(deps, union.id, peer.origin, name, new URL("/inbox", peer.origin));
    await new Promise((r) => setTimeout(r, 5));
    const closesAt = new Date(Date.now() + 11_000);
    const amendment = await createProposal(deps, union.id, OPERATOR, { kind: "amendment", title: "Fewer invites", params: { memberInviteLimit: 2 }, closesAt });
    const resolution = await createProposal(deps, union.id, OPERATOR, { kind: "resolution", title: "Strike on Friday", closesAt });
    const proposals: Proposal[] = [amendment, resolution];
    for (const name of ["ana", "ben"]) {
      const member = (await findMemberByActor(db.db, union.id, peer.actorId(name).href))!;
      for (const p of proposals) assert.deepEqual(await castVote(deps, union.id, p.id, { memberId: member.id }, ["Yes"], { kind: "web" }), { counted: true });
    }
    assert.ok(Date.now() < closesAt.getTime(), "the votes are in before the end time");


    for (const p of proposals) {
      await eventually(async () => (await getProposal(db.db, union.id, p.id))?.state !== "open", `#${p.number} closed`, 60_000);
    }
    const qid = (p: Proposal) => new URL(`/u/riders/proposals/${p.id}`, origin).href;
    for (const p of proposals) {
      await eventually(async () => peer.hitsOf(`${qid(p)}/closed`).length > 0 && peer.hitsOf(`${qid(p)}/result/activity`).length > 0, `#${p.number}'s close and result delivered`, 60_000);
    }
    // Two more looks by each worker: nothing is closed or sent again.
    await new Promise((r) => setTimeout(r, 11_000));

    const closes = workers.map(closedIn);
    t.diagnostic(`worker ${workers[0]!.pid} closed ${closes[0]!.length}, worker ${workers[1]!.pid} closed ${closes[1]!.length}`);
    assert.deepEqual([...closes[0]!, ...closes[1]!].sort(), proposals.map((p) => p.id).sort(), "each closed by one worker, once");
    for (const p of proposals) {
      const now = (await getProposal(db.db, union.id, p.id))!;
      assert.equal(now.state, "passed", now.outcome?.reason);
      // Three members, each on the peer's shared inbox: one delivery of each activity.
      assert.equal(peer.hitsOf(`${qid(p)}/closed`).length, 1, `#${p.number}: the closing Update went out once`);
      assert.equal(peer.hitsOf(`${qid(p)}/result/activity`).length, 1, `#${p.number}: the result Note went out once`);
    }
    const chain = await chainOf(db.db, union.id);
    assert.deepEqual(chain.filter((e) => e.event === "outcome").map((e) => e.actionId).sort(), proposals.map((p) => p.id).sort(), "one outcome each in the chain");
    assert.ok((await verifyChain(db.db, union.id)).ok);
    const versions = await db.db.selectFrom("bylaws_versions").select(["version", "params"]).where("union_id", "=", union.id).orderBy("version").execute();
    assert.equal(versions.length, 2, "the amendment applied once: one new bylaws version");
    assert.equal(JSON.parse(versions[1]!.params).memberInviteLimit, 2);
    for (const w of workers) assert.doesNotMatch(w.output(), /Closing due proposals failed/);
  });
});
