import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Like } from "@fedify/vocab";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { eventually, freePort, makeUnion, startMuster, type TestMuster } from "./helpers/muster.ts";
import { ensureStopped, type MusterProcess, spawnMuster } from "./helpers/muster-process.ts";
import { type Peer, startPeer } from "./helpers/peer.ts";

// By default a Muster server must not fetch from loopback or private
// addresses (SSRF protection): a signed delivery whose key lives on
// 127.0.0.1 cannot be verified and is refused. MUSTER_ALLOW_PRIVATE_ADDRESS=1
// lifts that for local development, and `muster serve` says so loudly.

interface PeerHit {
  readonly path: string;
  readonly userAgent: string;
}

/** Records every request the peer serves, to see who fetched what from it. */
function observe(peer: Peer): PeerHit[] {
  const hits: PeerHit[] = [];
  const fetch = peer.federation.fetch.bind(peer.federation);
  peer.federation.fetch = (request, options) => {
    hits.push({ path: new URL(request.url).pathname, userAgent: request.headers.get("user-agent") ?? "" });
    return fetch(request, options);
  };
  return hits;
}

for (const d of dialects) {
  describe(`private addresses on ${d.name}`, { skip: d.skip }, () => {
    let offDb: TestDatabase;
    let onDb: TestDatabase;
    let off: TestMuster;
    let on: TestMuster;
    let peer: Peer;
    let hits: PeerHit[];
    let seq = 0;

    before(async () => {
      [offDb, onDb] = await Promise.all([d.create(), d.create()]);
      peer = await startPeer(["alice"]);
      hits = observe(peer);
      off = await startMuster(offDb, { env: { MUSTER_ALLOW_PRIVATE_ADDRESS: "0" } });
      on = await startMuster(onDb, { env: { MUSTER_ALLOW_PRIVATE_ADDRESS: "1" } });
      await makeUnion(off, "riders");
      await makeUnion(on, "riders");
    });
    after(async () => {
      await off?.stop();
      await on?.stop();
      await peer?.close();
      await offDb?.destroy();
      await onDb?.destroy();
    });

    /** The same signed delivery from alice@peer, addressed to `m`'s union. */
    async function delivery(m: TestMuster, inboxPath: string) {
      const union = new URL("/u/riders", m.origin);
      const id = new URL(`/activities/private-${++seq}`, peer.origin);
      // A Like: a stranger's Create would be refused (403) before its signature is looked at.
      const like = new Like({ id, actor: peer.actorId("alice"), to: union, object: new URL(`/notes/private-${seq}`, peer.origin) });
      const body = JSON.stringify(await like.toJsonLd({ format: "compact" }));
      return { id: id.href, request: await peer.signedPost(new URL(inboxPath, m.origin), body, { as: "alice" }) };
    }

    const fromServer = (m: TestMuster) => hits.filter((h) => h.userAgent.includes(m.origin.host));
    const rowCounts = async (m: TestMuster) => {
      const db = m.muster.database.db;
      const n = async (t: "inbox_activities" | "remote_actors" | "fedify_mq") =>
        Number((await db.selectFrom(t).select((e) => e.fn.countAll<number>().as("n")).executeTakeFirstOrThrow()).n);
      return { inbox_activities: await n("inbox_activities"), remote_actors: await n("remote_actors"), fedify_mq: await n("fedify_mq") };
    };

    it("by default, refuses a signed delivery whose key is on a loopback address, without fetching it", async () => {
      assert.equal(off.muster.config.allowPrivateAddress, false);
      for (const path of ["/u/riders/inbox", "/inbox"]) {
        const { request } = await delivery(off, path);
        const res = await fetch(request);
        assert.equal(res.status, 401, `${path}: a key that cannot be fetched cannot verify the signature`);
      }
      // Give anything wrongly queued time to be processed before looking.
      await new Promise((r) => setTimeout(r, 500));
      assert.deepEqual(await rowCounts(off), { inbox_activities: 0, remote_actors: 0, fedify_mq: 0 }, "nothing recorded, cached or queued");
      assert.deepEqual(fromServer(off), [], "the server never connected to the loopback peer");
      assert.deepEqual(hits, [], "nobody fetched anything from the peer");
    });

    it("with MUSTER_ALLOW_PRIVATE_ADDRESS=1, the same delivery is verified, accepted and recorded", async () => {
      assert.equal(on.muster.config.allowPrivateAddress, true);
      const { id, request } = await delivery(on, "/u/riders/inbox");
      const res = await fetch(request);
      assert.equal(res.status, 202);
      const row = await eventually(
        () => on.muster.database.db.selectFrom("inbox_activities").selectAll().where("id", "=", id).executeTakeFirst(),
        "the activity is recorded",
      );
      assert.equal(row.actor, peer.actorId("alice").href);
      await eventually(
        () => on.muster.database.db.selectFrom("remote_actors").select("id").where("id", "=", peer.actorId("alice").href).executeTakeFirst(),
        "the sender is cached",
      );
      assert.ok(fromServer(on).some((h) => h.path === "/users/alice"), "this server fetched alice's actor and key from the peer");
      assert.deepEqual(fromServer(off), [], "still nothing from the default server");
    });
  });
}

describe("muster serve and MUSTER_ALLOW_PRIVATE_ADDRESS", () => {
  const dirs: string[] = [];
  const running: MusterProcess[] = [];
  after(async () => {
    await Promise.all(running.map(ensureStopped));
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  /** Starts `muster serve` on a fresh embedded database; returns its stdout once start-up is printed. */
  async function serve(allow: string | undefined): Promise<{ out: string; code: number | null }> {
    const dir = mkdtempSync(join(tmpdir(), "muster-private-"));
    dirs.push(dir);
    const port = await freePort();
    const env: Record<string, string> = { PORT: String(port), ORIGIN: `http://127.0.0.1:${port}`, DATA_DIR: dir, LOG_LEVEL: "warning" };
    if (allow !== undefined) env.MUSTER_ALLOW_PRIVATE_ADDRESS = allow;
    const p = spawnMuster(["serve"], env);
    running.push(p);
    // A fresh database has no union, so start-up ends with the setup token,
    // printed after the warning would be.
    await p.waitFor(/Setup token \(one use\): \S+/, "start-up finished");
    // An answer proves the child is back in its event loop, so the code after
    // the banner (which installs the SIGTERM handler) has run; a signal sent
    // before that kills it outright (`muster serve` installs its handler last).
    assert.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200);
    const code = await p.stop();
    return { out: p.stdout(), code };
  }

  it("warns loudly when it is on", async () => {
    const { out, code } = await serve("1");
    assert.equal(code, 0, out);
    assert.match(out, /\*\*\* WARNING: MUSTER_ALLOW_PRIVATE_ADDRESS=1 \*\*\*/);
    assert.match(out, /fetch from and deliver to loopback and private addresses/);
    assert.match(out, /never in production/);
    assert.ok(out.indexOf("WARNING") < out.indexOf("Setup token"), "the warning comes with the start-up banner");
  });

  it("says nothing of it when it is off", async () => {
    for (const allow of [undefined, "0"]) {
      const { out, code } = await serve(allow);
      assert.equal(code, 0, out);
      assert.match(out, /Muster is listening/);
      assert.doesNotMatch(out, /WARNING|MUSTER_ALLOW_PRIVATE_ADDRESS/, `MUSTER_ALLOW_PRIVATE_ADDRESS=${allow ?? "(unset)"}`);
    }
  });
});
