import "../src/temporal.ts";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join as pathJoin } from "node:path";
import { Accept, Announce, Create, Follow, type Group, Like, Note, PUBLIC_COLLECTION } from "@fedify/vocab";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { eventually, freePort } from "./helpers/muster.ts";
import { ensureStopped, type MusterProcess, spawnMuster } from "./helpers/muster-process.ts";
import { type Peer, startPeer } from "./helpers/peer.ts";

// Issue 17's "Done means", with three `muster serve` child processes (each
// its own database and port; the first on PostgreSQL when it is available)
// and Mastodon-like accounts on a loopback peer. The servers are driven only
// through the CLI (child processes too) and HTTP; the members act over
// ActivityPub from the peer.

const pg = dialects.find((d) => d.name === "postgres")!;
const sqlite = dialects.find((d) => d.name === "sqlite")!;
const WAIT = 60_000;

interface Server {
  readonly name: string;
  readonly origin: URL;
  readonly env: Record<string, string>;
  readonly tdb: TestDatabase;
  readonly dataDir: string;
  proc?: MusterProcess;
}

describe("unions federate with unions across three server processes", () => {
  const servers: Server[] = [];
  let peer: Peer;
  let s1: Server, s2: Server, s3: Server;
  let call: URL;

  async function server(name: string, usePg: boolean): Promise<Server> {
    const tdb = await (usePg ? pg : sqlite).create();
    const dataDir = mkdtempSync(pathJoin(tmpdir(), `muster-rel-${name}-`));
    const port = await freePort();
    const origin = new URL(`http://127.0.0.1:${port}`);
    const env = { PORT: String(port), ORIGIN: origin.origin, DATABASE_URL: tdb.url, DATA_DIR: dataDir, MUSTER_ALLOW_PRIVATE_ADDRESS: "1", LOG_LEVEL: "warning" };
    const s: Server = { name, origin, env, tdb, dataDir };
    servers.push(s);
    s.proc = spawnMuster(["serve"], env);
    return s;
  }
  /** `muster <args>` against a server's database, as its operator; stdout (parsed when --json). */
  async function cli(s: Server, ...args: string[]): Promise<any> {
    const p = spawnMuster(args, s.env);
    const code = await p.exited;
    assert.equal(code, 0, `muster ${args.join(" ")} on ${s.name}: ${p.output()}`);
    return args.includes("--json") ? JSON.parse(p.stdout()) : p.stdout();
  }
  const groupId = (s: Server, slug: string) => new URL(`/u/${slug}`, s.origin);
  const handle = (name: string) => `@${name}@${peer.origin.host}`;
  async function join(s: Server, slug: string, name: string): Promise<void> {
    const group = await peer.lookup(groupId(s, slug)) as Group;
    await peer.send(name, group, new Follow({ id: new URL(`/follows/${name}-${slug}`, peer.origin), actor: peer.actorId(name), object: group.id }));
    await eventually(async () => {
      for (const x of peer.received) if (x instanceof Accept && x.actorId?.href === group.id!.href && (await x.getObject({ crossOrigin: "trust" }))?.id?.href.endsWith(`/follows/${name}-${slug}`)) return true;
      return false;
    }, `${name} joined ${slug}`, WAIT);
  }
  const announces = (from: URL, note: URL) => peer.received.filter((x) => x instanceof Announce && x.actorId?.href === from.href && x.objectId?.href === note.href).length;
  const rel = async (s: Server, slug: string, peerId: URL) => (await cli(s, "ally", "list", slug, "--all", "--json") as { peer: string; state: string; kind: string }[]).filter((r) => r.peer === peerId.href).at(-1);

  /** A resolution naming the other union, voted Yes by a member over ActivityPub (a Mastodon poll vote), closed: its number. */
  async function ratifyByVote(s: Server, slug: string, voter: string, title: string): Promise<string> {
    const p = await cli(s, "proposal", "create", slug, "--kind", "resolution", "--title", title, "--json");
    const question = new URL(`/u/${slug}/proposals/${p.id}`, s.origin);
    const vote = new Note({ id: new URL(`/votes/${voter}-${p.id}`, peer.origin), attribution: peer.actorId(voter), name: "Yes", replyTarget: question, to: groupId(s, slug) });
    await peer.send(voter, await peer.lookup(groupId(s, slug)) as Group, new Create({ id: new URL(`/votes/${voter}-${p.id}/activity`, peer.origin), actor: peer.actorId(voter), object: vote, to: groupId(s, slug) }));
    await eventually(async () => (await cli(s, "proposal", "show", slug, String(p.number), "--json")).voters.length === 1, `${voter}'s vote counted in ${slug}`, WAIT);
    const closed = await cli(s, "proposal", "close", slug, String(p.number), "--json");
    assert.equal(closed.state, "passed", JSON.stringify(closed.outcome));
    return String(p.number);
  }

  before(async () => {
    peer = await startPeer(["alice", "bob", "dave", "carol", "dan", "mallory"]);
    [s1, s2, s3] = await Promise.all([server("one", !pg.skip), server("two", false), server("three", false)]);
    await Promise.all([s1, s2, s3].map((s) => s.proc!.waitFor(/Muster is listening/, `${s.name} listening`, WAIT)));
    await cli(s1, "union", "create", "a", "--name", "Riders A", "--purpose", "Fair pay", "--join-policy", "open", "--json");
    await cli(s2, "union", "create", "b", "--name", "Couriers B", "--purpose", "Fair pay", "--join-policy", "open", "--json");
    for (const [s, slug] of [[s1, "a"], [s2, "b"]] as const) {
      await cli(s, "bylaws", "set", slug, "allianceRatification=member_vote", "actionsVisibility=public", "--reason", "alliances by vote", "--json");
    }
    await join(s1, "a", "alice");
    await join(s2, "b", "bob");
    await join(s2, "b", "dave");
  });
  after(async () => {
    await Promise.all(servers.map((s) => ensureStopped(s.proc)));
    await peer?.close();
    for (const s of servers) {
      await s.tdb.destroy();
      rmSync(s.dataDir, { recursive: true, force: true });
    }
  });

  it("an alliance proposed by A and ratified by member vote on both sides (a vote that was not held is refused)", async () => {
    const atA = await ratifyByVote(s1, "a", "alice", `Ally with ${groupId(s2, "b").href}`);
    const offered = await cli(s1, "ally", "propose", "a", groupId(s2, "b").href, "--proposal", atA, "--json");
    assert.equal(offered.state, "offered");
    const received = await eventually(async () => rel(s2, "b", groupId(s1, "a")), "B receives the offer", WAIT);
    assert.equal(received.state, "received");
    // A named vote is checked even for the operator: B has held no vote yet.
    const unvoted = spawnMuster(["ally", "accept", "b", groupId(s1, "a").href, "--proposal", "1"], s2.env);
    assert.equal(await unvoted.exited, 1, unvoted.output());
    assert.match(unvoted.output(), /no proposal 1/);
    const atB = await ratifyByVote(s2, "b", "bob", `Accept the alliance offered by ${groupId(s1, "a").href}`);
    const accepted = await cli(s2, "ally", "accept", "b", groupId(s1, "a").href, "--proposal", atB, "--json");
    assert.equal(accepted.state, "active");
    await eventually(async () => (await rel(s1, "a", groupId(s2, "b")))?.state === "active", "A sees B's Accept", WAIT);
  });

  it("A's call-to-action is relayed to B's members (their accounts receive B's Announce), and their responses are counted back at A, attributed to B", async () => {
    const action = await cli(s1, "action", "post", "a", "--title", "Picket at noon", "--text", "Gate 2.", "--now", "--json");
    call = new URL(`/u/a/actions/${action.id}`, s1.origin);
    await eventually(async () => announces(groupId(s2, "b"), call) > 0, "bob and dave get B's Announce of A's call", WAIT);
    // Bob, on stock Mastodon, likes and replies to the author, A.
    const aGroup = await peer.lookup(groupId(s1, "a")) as Group;
    await peer.send("bob", aGroup, new Like({ id: new URL("/likes/bob-1", peer.origin), actor: peer.actorId("bob"), object: call }));
    const reply = new Note({ id: new URL("/notes/bob-in", peer.origin), attribution: peer.actorId("bob"), replyTarget: call, content: "<p>I'm in</p>", to: PUBLIC_COLLECTION, cc: groupId(s1, "a") });
    await peer.send("bob", aGroup, new Create({ id: new URL("/notes/bob-in/activity", peer.origin), actor: peer.actorId("bob"), object: reply, to: PUBLIC_COLLECTION, cc: groupId(s1, "a") }));
    // Dave's like reaches B (a client that addresses the relaying Group): B reports its totals to A.
    await peer.send("dave", await peer.lookup(groupId(s2, "b")) as Group, new Like({ id: new URL("/likes/dave-1", peer.origin), actor: peer.actorId("dave"), object: call }));
    // Mallory, nobody's member, likes it at A: not counted.
    await peer.send("mallory", aGroup, new Like({ id: new URL("/likes/mallory-1", peer.origin), actor: peer.actorId("mallory"), object: call }));
    const tally = await eventually(async () => {
      const page = await (await fetch(call, { headers: { Accept: "text/html" } })).text();
      return /data-testid="relayed-tally" data-union="[^"]+"><strong>2<\/strong> from/.exec(page) ?? undefined;
    }, "A's page shows two commitments from B (bob's at A, dave's reported by B)", WAIT);
    assert.match(tally[0], new RegExp(groupId(s2, "b").href));
  });

  it("the alliance ended by A: B is told, and A's next call is not relayed", async () => {
    await cli(s1, "ally", "end", "a", groupId(s2, "b").href, "--json");
    await eventually(async () => (await rel(s2, "b", groupId(s1, "a")))?.state === "ended", "B sees the Undo", WAIT);
    const action = await cli(s1, "action", "post", "a", "--title", "Second call", "--text", "Again.", "--now", "--json");
    const note = new URL(`/u/a/actions/${action.id}`, s1.origin);
    await eventually(async () => peer.received.some((x) => x instanceof Create && x.objectId?.href === note.href), "alice gets the second call", WAIT);
    await new Promise((r) => setTimeout(r, 2000));
    assert.equal(announces(groupId(s2, "b"), note), 0);
  });

  it("a chapter on a third server and a grand-chapter on the second: A's call reaches each chapter's members exactly once, and counts roll up", async () => {
    // C on server three becomes A's chapter; D on server two becomes C's.
    await cli(s3, "chapter", "create", "c", "--parent", groupId(s1, "a").href, "--name", "Chapter C", "--leader", handle("carol"), "--json");
    await eventually(async () => (await rel(s1, "a", groupId(s3, "c")))?.state === "received", "A receives C's request", WAIT);
    await cli(s1, "ally", "accept", "a", groupId(s3, "c").href, "--json");
    await eventually(async () => (await rel(s3, "c", groupId(s1, "a")))?.state === "active", "C is A's chapter", WAIT);
    await cli(s2, "chapter", "create", "d", "--parent", groupId(s3, "c").href, "--name", "Grand D", "--json");
    await eventually(async () => (await rel(s3, "c", groupId(s2, "d")))?.state === "received", "C receives D's request", WAIT);
    await cli(s3, "ally", "accept", "c", groupId(s2, "d").href, "--json");
    await eventually(async () => (await rel(s2, "d", groupId(s3, "c")))?.state === "active", "D is C's chapter", WAIT);
    await cli(s3, "bylaws", "set", "c", "joinPolicy=open", "--reason", "open chapter", "--json");
    await cli(s2, "bylaws", "set", "d", "joinPolicy=open", "--reason", "open chapter", "--json");
    await join(s3, "c", "carol");
    await join(s2, "d", "dan");

    const action = await cli(s1, "action", "post", "a", "--title", "Strike vote", "--text", "Friday.", "--now", "--json");
    const note = new URL(`/u/a/actions/${action.id}`, s1.origin);
    await eventually(async () => announces(groupId(s3, "c"), note) > 0, "carol gets C's relay", WAIT);
    await eventually(async () => announces(groupId(s2, "d"), note) > 0, "dan (grand-chapter) gets D's relay", WAIT);
    await new Promise((r) => setTimeout(r, 2000));
    assert.equal(announces(groupId(s3, "c"), note), 1, "once to C's members");
    assert.equal(announces(groupId(s2, "d"), note), 1, "once to D's members");

    // Carol commits at C; the tree's counts roll up to A.
    await peer.send("carol", await peer.lookup(groupId(s3, "c")) as Group, new Like({ id: new URL("/likes/carol-1", peer.origin), actor: peer.actorId("carol"), object: note }));
    const tree = await eventually(async () => {
      const t = await cli(s1, "chapter", "list", "a", "--json");
      const c = t.tree.chapters[0];
      return c?.members === 1 && c.commitments === 1 && c.chapters[0]?.members === 1 ? t : undefined;
    }, "A holds C's report with D inside it", WAIT);
    assert.equal(tree.tree.chapters[0].actorId, groupId(s3, "c").href);
    assert.equal(tree.tree.chapters[0].chapters[0].actorId, groupId(s2, "d").href);
    assert.deepEqual(tree.totals, { members: 3, commitments: 1, chapters: 2 });
    await cli(s1, "bylaws", "set", "a", "membersVisibility=public", "--reason", "show the tree", "--json");
    const page = await eventually(async () => {
      const html = await (await fetch(groupId(s1, "a"), { headers: { Accept: "text/html" } })).text();
      return /data-testid="tree-totals"/.test(html) ? html : undefined;
    }, "A's page shows the tree's totals", WAIT);
    assert.match(page, /The whole union: 3 members and 1 commitment across 2 chapters\./);
  });
});
