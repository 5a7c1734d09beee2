import "../src/temporal.ts";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import { Accept, Create, Follow, type Group, Mention, Note, Reject } from "@fedify/vocab";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { eventually, makeUnion, startMuster, type TestMuster } from "./helpers/muster.ts";
import { listenOnLoopback, type PersonActors, personActors } from "./helpers/person-actors.ts";
import { joinAsRemoteMember } from "./helpers/remote-member.ts";
import { directNote, followAnswer } from "../federation/direct-send.ts";
import { findMemberByActor } from "../src/members/members.ts";
import { unionKeyOwner } from "../src/unions/unions.ts";

// A join's Accept and welcome DM (and every other activity for one
// recipient) go out as pre-built JSON with an HTTP signature only: no Linked
// Data signature, no object integrity proof (federation/direct-send.ts).

describe("direct activities have the shape Fedify gives the same objects", () => {
  const group = new URL("https://union.example/u/riders");
  const person = new URL("https://social.example/users/ann");
  const follow = { id: "https://social.example/follows/1", actor: person.href, object: group.href };

  for (const [type, Answer] of [["Accept", Accept], ["Reject", Reject]] as const) {
    it(`an ${type} of a Follow`, async () => {
      const id = "https://union.example/u/riders/activities/1/answer";
      const fedify = await new Answer({ id: new URL(id), actor: group, object: new Follow({ id: new URL(follow.id), actor: person, object: group }) }).toJsonLd({ format: "compact" });
      assert.deepEqual(followAnswer(type, { id, actor: group.href, follow }).json, fedify);
    });
  }

  it("a direct message: a Create of a Note to one account that mentions it", async () => {
    const published = new Date("2026-12-05T01:02:03.456Z");
    const instant = Temporal.Instant.fromEpochMilliseconds(published.getTime());
    const content = `<span class="h-card"><a href="${person.href}" class="u-url mention">@ann@social.example</a></span> <p>Welcome</p>`;
    const note = new Note({ id: new URL("https://union.example/u/riders/activities/2#note"), attribution: group, to: person, content, tags: [new Mention({ href: person, name: "@ann@social.example" })], published: instant });
    const fedify = await new Create({ id: new URL("https://union.example/u/riders/activities/2"), actor: group, to: person, object: note, published: instant }).toJsonLd({ format: "compact" });
    const ours = directNote({ id: "https://union.example/u/riders/activities/2", noteId: "https://union.example/u/riders/activities/2#note", actor: group.href, to: person.href, mention: "@ann@social.example", content, published });
    assert.deepEqual(ours.json, fedify);
    assert.equal(ours.typeIri, "https://www.w3.org/ns/activitystreams#Create");
  });
});

interface Post {
  readonly path: string;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: Record<string, unknown>;
  readonly status: number;
}

/**
 * A Fedify server with Mastodon-shaped Person actors that verifies every
 * POST (Fedify's own inbox check) and records each one's raw body, headers
 * and answer. `failNext` makes the next POSTs answer 503 before Fedify sees them.
 */
async function recordingPeer(names: readonly string[]) {
  const server: Server = createServer();
  const origin = await listenOnLoopback(server);
  const actors: PersonActors = await personActors(origin, names);
  const posts: Post[] = [];
  let failNext = 0;
  server.on("request", async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = chunks.length ? Buffer.concat(chunks) : undefined;
    if (req.method === "POST" && failNext > 0) {
      failNext--;
      posts.push({ path: req.url ?? "", headers: req.headers, body: JSON.parse(body!.toString()), status: 503 });
      res.writeHead(503);
      res.end();
      return;
    }
    const response = await actors.answer(req, body);
    if (req.method === "POST") posts.push({ path: req.url ?? "", headers: req.headers, body: JSON.parse(body!.toString()), status: response.status });
    res.writeHead(response.status, Object.fromEntries(response.headers));
    res.end(Buffer.from(await response.arrayBuffer()));
  });
  return {
    origin,
    actors,
    posts,
    failNext: (n: number) => void (failNext = n),
    actorId: (n: string) => new URL(`/users/${n}`, origin),
    close: () => new Promise<void>((r) => {
      server.close(() => r());
      server.closeAllConnections();
    }),
  };
}

for (const d of dialects) {
  describe(`one-recipient activities on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    let m: TestMuster;
    let peer: Awaited<ReturnType<typeof recordingPeer>>;
    let group: Group;
    before(async () => {
      peer = await recordingPeer(["lead", "ann", "ben", "cat", "dan"]);
      tdb = await d.create();
      // Fast queue retries, and few: the dead-letter case below must not take minutes.
      m = await startMuster(tdb, { muster: { queue: { pollIntervalMs: 50, retryBaseDelayMs: 100, maxAttempts: 3 } } });
      await makeUnion(m, "riders", { leaderHandle: `@lead@${peer.origin.host}`, joinPolicy: "open" });
      group = await peer.actors.lookup(new URL("/u/riders", m.origin)) as Group;
    });
    after(async () => {
      await m?.stop();
      await tdb?.destroy();
      await peer?.close();
    });

    const postsOf = (name: string, type: string) => peer.posts.filter((p) => p.path === `/users/${name}/inbox` && p.body.type === type);
    const follow = async (name: string) => {
      const f = new Follow({ id: new URL(`/follows/${name}-${Date.now()}`, peer.origin), actor: peer.actorId(name), object: group.id });
      await peer.actors.send(name, group, f);
      return f;
    };

    it("a join's Accept and welcome DM arrive HTTP-signed, verify at the peer, and carry no LD signature and no proof", async () => {
      const f = await follow("ann");
      const [accept, welcome] = await eventually(async () => {
        const a = postsOf("ann", "Accept").find((p) => p.status === 202);
        const w = postsOf("ann", "Create").find((p) => p.status === 202);
        return a && w ? [a, w] as const : undefined;
      }, "ann's Accept and welcome");
      for (const p of [accept, welcome]) {
        assert.equal(p.body.signature, undefined, `${p.body.type}: no Linked Data signature`);
        assert.equal(p.body.proof, undefined, `${p.body.type}: no object integrity proof`);
        assert.ok(p.headers["signature"], `${p.body.type}: HTTP-signed`);
        assert.equal(p.body.actor, group.id!.href);
      }
      // Fedify's inbox accepted both (202 after verifying the HTTP signature) and parsed them.
      const received = peer.actors.received;
      assert.ok(received.some((a) => a instanceof Accept && a.id?.href === accept.body.id), "the peer's Fedify took the Accept");
      assert.ok(received.some((a) => a instanceof Create && a.id?.href === welcome.body.id), "the peer's Fedify took the welcome");
      assert.deepEqual((accept.body.object as { id: string }).id, f.id!.href, "the Accept names ann's Follow");
      const note = welcome.body.object as { to: string; content: string; tag: { type: string; href: string } };
      assert.equal(note.to, peer.actorId("ann").href);
      assert.deepEqual([note.tag.type, note.tag.href], ["Mention", peer.actorId("ann").href]);
      assert.match(note.content, /Your own invite link/);
      assert.ok(peer.posts.indexOf(accept) < peer.posts.indexOf(welcome), "the Accept arrives before the welcome");
      assert.equal((await findMemberByActor(m.muster.database.db, (await m.muster.database.db.selectFrom("unions").select("id").executeTakeFirstOrThrow()).id, peer.actorId("ann").href))?.state, "active");
    });

    it("a join's Accept and welcome keep their activities in their own queue rows: no payload row written or read, and both arrive with their ids", async () => {
      const db = m.muster.database.db;
      const payloads = async () => Number((await db.selectFrom("fedify_mq_payloads").select((e) => e.fn.countAll<number>().as("n")).executeTakeFirstOrThrow()).n);
      const before = await payloads();
      const f = await follow("dan");
      const [accept, welcome] = await eventually(async () => {
        const a = postsOf("dan", "Accept").find((p) => p.status === 202);
        const w = postsOf("dan", "Create").find((p) => p.status === 202);
        return a && w ? [a, w] as const : undefined;
      }, "dan's Accept and welcome");
      assert.equal(await payloads(), before, "no payload row for one recipient's activities");
      assert.equal((accept.body.object as { id: string }).id, f.id!.href);
      assert.match(String(accept.body.id), /\/u\/riders\/activities\//);
      assert.match(String(welcome.body.id), /\/u\/riders\/activities\//);
      assert.notEqual(accept.body.id, welcome.body.id);
      assert.equal(postsOf("dan", "Accept").length + postsOf("dan", "Create").length, 2, "each once");
    });

    it("a failed delivery is retried by Fedify's handler and arrives, once", async () => {
      peer.failNext(1);
      await follow("ben");
      const accepted = await eventually(async () => postsOf("ben", "Accept").find((p) => p.status === 202), "ben's Accept after a 503", 30_000);
      const tries = postsOf("ben", "Accept");
      assert.equal(tries[0]!.status, 503, "the first try failed");
      assert.equal(tries.filter((p) => p.status === 202).length, 1, "delivered once");
      assert.equal(accepted.body.id, tries[0]!.body.id, "the retry is the same activity");
      await eventually(async () => postsOf("ben", "Create").find((p) => p.status === 202), "ben's welcome");
    });

    it("a delivery that cannot be signed is dead-lettered with its activity and without any key", async () => {
      const db = m.muster.database.db;
      const union = await db.selectFrom("unions").select("id").where("slug", "=", "riders").executeTakeFirstOrThrow();
      const other = await makeUnion(m, "couriers", { joinPolicy: "open" });
      // The union's keys are gone (as when it is deleted) before its Accept to cat is sent.
      await db.deleteFrom("actor_keys").where("owner", "=", unionKeyOwner(other.id)).execute();
      const cat = await joinAsRemoteMember(m.muster.membership, other.id, peer.origin, "cat", null);
      const dead = await eventually(async () => {
        const rows = await db.selectFrom("fedify_mq_dead").select(["message", "last_error"]).execute();
        const mine = rows.filter((r) => r.message.includes(cat) && r.message.includes("/u/couriers"));
        // One message for both (direct-send.ts, joinedDelivery).
        return mine.length >= 1 ? mine : undefined;
      }, "cat's Accept and welcome dead-lettered", 30_000);
      const types = new Set<string>();
      for (const row of dead) {
        const message = JSON.parse(row.message) as { type: string; activity: { type: string; signature?: unknown; proof?: unknown }; keys: { keyId: string; privateKey?: unknown }[]; musterThen?: { activity: { type: string } }[] };
        assert.equal(message.type, "outbox", "a delivery, not the intent");
        assert.match(row.last_error ?? "", /signing key/);
        assert.deepEqual(message.keys, [{ keyId: `${new URL("/u/couriers", m.origin).href}#main-key` }], "the key's id, no key");
        assert.doesNotMatch(row.message, /"d"|privateKey/, "no private key material");
        assert.equal(message.activity.signature, undefined);
        types.add(message.activity.type);
        for (const part of message.musterThen ?? []) types.add(part.activity.type);
      }
      assert.deepEqual([...types].sort(), ["Accept", "Create"]);
      assert.equal(postsOf("cat", "Accept").length, 0, "nothing unsigned was sent");
      assert.ok(union.id);
    });
  });
}
