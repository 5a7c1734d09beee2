import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { generateCryptoKeyPair, signRequest } from "@fedify/fedify";
import { Accept, Follow } from "@fedify/vocab";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { eventually, freePort, makeUnion, startMuster, type TestMuster } from "./helpers/muster.ts";
import { type Peer, startPeer } from "./helpers/peer.ts";
import { joinAsRemoteMember } from "./helpers/remote-member.ts";
import { findMemberByActor } from "../src/members/members.ts";
import { htmlToText, MAX_HTML_EXAMINED } from "../src/html-text.ts";
import { isCommitment } from "../src/actions/responses.ts";
import { processOnce } from "../federation/inbox-record.ts";
import { Create } from "@fedify/vocab";
import { connect, type Socket } from "node:net";
import { DepthScan, MAX_JSON_DEPTH } from "../src/http/inbox-guard.ts";

/**
 * A raw HTTP/1.1 POST: sends the head and `body` (which may be only the start
 * of what Content-Length declares) and reports the answer's status line and
 * whether the server closed the connection, each within `waitMs`.
 */
async function rawPost(origin: URL, path: string, headers: Record<string, string>, body: string, waitMs = 5000): Promise<{ status: number | undefined; closed: boolean; socket: Socket }> {
  const socket = connect(Number(origin.port), origin.hostname);
  socket.on("error", () => {});
  await new Promise((r) => socket.once("connect", r));
  let received = "";
  let closed = false;
  socket.on("data", (d) => (received += d.toString("latin1")));
  socket.on("close", () => (closed = true));
  const head = Object.entries({ Host: origin.host, ...headers }).map(([k, v]) => `${k}: ${v}\r\n`).join("");
  socket.write(`POST ${path} HTTP/1.1\r\n${head}\r\n${body}`);
  const until = Date.now() + waitMs;
  while (Date.now() < until && !(closed && received) ) await new Promise((r) => setTimeout(r, 20));
  const m = /^HTTP\/1\.1 (\d{3})/.exec(received);
  return { status: m ? Number(m[1]) : undefined, closed, socket };
}

/** The reference: one pass over decoded text. */
function depthOf(text: string): number {
  let depth = 0, max = 0, inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (inString) {
      if (ch === "\\") i++;
      else if (ch === '"') inString = false;
    } else if (ch === '"') inString = true;
    else if (ch === "[" || ch === "{") max = Math.max(max, ++depth);
    else if (ch === "]" || ch === "}") depth--;
  }
  return max;
}

describe("DepthScan (streaming nesting check)", () => {
  it("agrees with a whole-text scan however the bytes are split, strings and escapes included", () => {
    let seed = 7;
    const rand = (n: number) => (seed = (seed * 1103515245 + 12345) % 2 ** 31) % n;
    const pieces = ["[", "]", "{", "}", '"', "\\", '\\"', "a", "é", "✊", ",", ":", '"[[[["', '"\\\\"'];
    for (let round = 0; round < 400; round++) {
      const text = Array.from({ length: 1 + rand(120) }, () => pieces[rand(pieces.length)]).join("");
      const bytes = Buffer.from(text);
      const expected = depthOf(text) > 4;
      const scan = new DepthScan(4);
      let got = false;
      for (let at = 0; at < bytes.length && !got;) {
        const size = 1 + rand(9);
        got = scan.exceeds(new Uint8Array(bytes.subarray(at, at + size)));
        at += size;
      }
      assert.equal(got, expected, JSON.stringify(text));
    }
  });

  it("stops at the first byte over the limit", () => {
    const scan = new DepthScan(MAX_JSON_DEPTH);
    assert.equal(scan.exceeds(Buffer.from("[".repeat(MAX_JSON_DEPTH))), false);
    assert.equal(scan.exceeds(Buffer.from(`"${"[".repeat(100)}"`)), false, "brackets inside a string do not count");
    assert.equal(scan.exceeds(Buffer.from("[")), true);
  });
});

const AS = "https://www.w3.org/ns/activitystreams";
const PUBLIC = `${AS}#Public`;
const AP_JSON = "application/activity+json";

/** A loopback server whose answers a test scripts, counting the requests per path. */
async function scripted(answer: (req: IncomingMessage, res: ServerResponse, hit: number) => void): Promise<{ origin: URL; hits: (path?: string) => number; close(): Promise<void> }> {
  const hits = new Map<string, number>();
  const server: Server = createServer((req, res) => {
    const path = new URL(req.url ?? "/", "http://x").pathname;
    const n = (hits.get(path) ?? 0) + 1;
    hits.set(path, n);
    req.resume();
    answer(req, res, n);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    origin: new URL(`http://127.0.0.1:${(server.address() as AddressInfo).port}`),
    hits: (path) => path === undefined ? [...hits.values()].reduce((a, b) => a + b, 0) : hits.get(path) ?? 0,
    close: () => new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    }),
  };
}

describe("htmlToText (one pass)", () => {
  it("drops tags, keeps line breaks, skips scripts and decodes entities", () => {
    assert.equal(htmlToText("<p>a<br>b</p><script>x<y</script>c &amp; d &lt;e&gt; &rsquo;", { skipScripts: true }), "a\nb\nc & d <e> \u2019");
    assert.equal(htmlToText("<script>alert(1)</script>"), "alert(1)", "shown as inert text unless asked");
    assert.equal(htmlToText("<p>one</p><p>two", { tagGap: " " }), " one\n two");
    assert.equal(htmlToText('<a href="x" class="u-url mention">@<span>riders</span></a> hi', { dropMentions: true }), " hi");
  });

  it("reads no more than MAX_HTML_EXAMINED characters, and keeps an unclosed < as text", () => {
    const hostile = "<".repeat(150_000);
    const text = htmlToText(hostile);
    assert.equal(text, "<".repeat(MAX_HTML_EXAMINED));
    assert.equal(htmlToText("a < b and c"), "a < b and c");
    assert.equal(htmlToText(`${'<a class="mention">'.repeat(50_000)}x`, { dropMentions: true }).length <= MAX_HTML_EXAMINED, true);
    assert.equal(isCommitment(`${"<".repeat(150_000)} I'm in`, ["in"]), false, "words past the cap are not read");
  });
});

for (const d of dialects) {
  describe(`hostile inbox input on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    let m: TestMuster;
    let peer: Peer;
    let unionId: string;
    let inbox: URL;
    let seq = 0;
    const id = (what: string) => new URL(`/activities/${what}-${Date.now()}-${++seq}`, peer.origin).href;

    before(async () => {
      tdb = await d.create();
      m = await startMuster(tdb);
      peer = await startPeer(["alice", "bob", "carol"]);
      unionId = (await makeUnion(m, "riders", { joinPolicy: "open" })).id;
      inbox = new URL("/u/riders/inbox", m.origin);
    });
    after(async () => {
      await m?.stop();
      await peer?.close();
      await tdb?.destroy();
    });

    const db = () => m.muster.database.db;
    const union = () => new URL("/u/riders", m.origin).href;
    const recorded = async (activityId: string) => (await db().selectFrom("inbox_activities").select("id").where("id", "=", activityId).execute()).length;
    /** Queue messages (inbox copies, the Accept's delivery) that carry this activity id. */
    const queuedWith = async (activityId: string) => Number((await db().selectFrom("fedify_mq").select((e) => e.fn.countAll<number>().as("n"))
      .where("message", "like", `%${activityId}%`).executeTakeFirstOrThrow()).n);
    const ensureMember = async (name: string) => {
      if (!(await findMemberByActor(db(), unionId, peer.actorId(name).href))) await joinAsRemoteMember(m.muster.membership, unionId, peer.origin, name, null);
    };
    const post = async (req: Request) => {
      const res = await fetch(req);
      return { status: res.status, body: await res.text() };
    };
    /** A Delete of the account by itself, signed with a key that claims to be the account's own. */
    async function forgedDelete(actor: string): Promise<Request> {
      const body = JSON.stringify({ "@context": AS, id: `${actor}#delete-${++seq}`, type: "Delete", actor, object: actor, to: [PUBLIC] });
      const forger = await generateCryptoKeyPair("RSASSA-PKCS1-v1_5");
      const req = new Request(inbox, { method: "POST", headers: { "Content-Type": AP_JSON }, body });
      return signRequest(req, forger.privateKey, new URL(`${actor}#main-key`), { spec: "draft-cavage-http-signatures-12" });
    }

    it("an unverifiable Delete evicts no member whose server is failing or down, even at …/users/410", async () => {
      const failing = await scripted((_req, res) => res.writeHead(503).end("busy"));
      const gone = await scripted((_req, res) => res.writeHead(410).end());
      try {
        const closedPort = await freePort();
        const deps = m.muster.membership;
        const at503 = await joinAsRemoteMember(deps, unionId, failing.origin, "410", null);
        const atDown = await joinAsRemoteMember(deps, unionId, new URL(`http://127.0.0.1:${closedPort}`), "410", null);
        const reallyGone = await joinAsRemoteMember(deps, unionId, gone.origin, "old", null);

        for (const actor of [at503, atDown]) {
          const r = await post(await forgedDelete(actor));
          assert.notEqual(r.status, 202, `the Delete of ${actor} was not accepted`);
          assert.equal((await findMemberByActor(db(), unionId, actor))?.state, "active", `${actor} is still a member`);
        }
        assert.ok(failing.hits("/users/410") >= 1, "the failing server was asked (the Delete reached the check)");

        // The check still does its job: an account whose own URL answers 410 is gone.
        const r = await post(await forgedDelete(reallyGone));
        assert.equal(r.status, 202);
        assert.notEqual((await findMemberByActor(db(), unionId, reallyGone))?.state, "active", "the deleted account is no longer a member");
      } finally {
        await failing.close();
        await gone.close();
      }
    });

    it("refuses unsigned, malformed, deeply nested and remote-context bodies before parsing them as JSON-LD", async () => {
      const contexts = await scripted((_req, res) => res.writeHead(200, { "Content-Type": "application/ld+json" }).end(JSON.stringify({ "@context": { x: "http://x/" } })));
      try {
        // Not the signer's host: the peer signs as 127.0.0.1, this names localhost.
        const remoteContext = `http://localhost:${contexts.origin.port}/ctx.jsonld`;
        const create = (ctx: unknown) => JSON.stringify({
          "@context": ctx, id: id("create"), type: "Create", actor: peer.actorId("alice").href, to: [PUBLIC],
          object: { id: id("note"), type: "Note", attributedTo: peer.actorId("alice").href, content: "hi", to: [PUBLIC] },
        });
        const expectError = (r: { status: number; body: string }, status: number, code: string) => {
          assert.equal(r.status, status, r.body);
          assert.equal((JSON.parse(r.body) as { error: { code: string } }).error.code, code, r.body);
        };

        const unsigned = await post(new Request(inbox, { method: "POST", headers: { "Content-Type": AP_JSON }, body: create([AS, remoteContext]) }));
        expectError(unsigned, 401, "unsigned");

        const deep = "[".repeat(100_000) + "]".repeat(100_000);
        expectError(await post(await peer.signedPost(inbox, deep, { as: "alice" })), 400, "too_deep");
        expectError(await post(await peer.signedPost(inbox, "{\"type\": \"Create\",", { as: "alice" })), 400, "invalid_json");
        expectError(await post(await peer.signedPost(inbox, create([AS, remoteContext]), { as: "alice" })), 400, "unsupported_context");
        expectError(await post(await peer.signedPost(inbox, create([AS, { "@import": remoteContext }]), { as: "alice" })), 400, "unsupported_context");
        assert.equal(contexts.hits(), 0, "no remote context was fetched");

        // A well-formed signed delivery with preloaded contexts from a member still goes through.
        await ensureMember("alice");
        const ok = create([AS, "https://w3id.org/security/v1"]);
        const accepted = await post(await peer.signedPost(inbox, ok, { as: "alice" }));
        assert.equal(accepted.status, 202, accepted.body);
        await eventually(async () => (await recorded((JSON.parse(ok) as { id: string }).id)) === 1, "the good Create recorded");
      } finally {
        await contexts.close();
      }
    });

    it("a stranger's Create (many <) is refused 403 before Fedify: nothing fetched, queued or recorded", async () => {
      const notes = await scripted((req, res) => res.writeHead(200, { "Content-Type": AP_JSON }).end(JSON.stringify({
        "@context": AS, id: new URL(req.url!, "http://127.0.0.1").href, type: "Note", attributedTo: peer.actorId("carol").href,
        content: "<".repeat(150_000), to: [PUBLIC], tag: [{ type: "Mention", href: union() }],
      })));
      try {
        const byRef = id("stranger");
        const embedded = id("stranger");
        for (const [createId, object] of [
          [byRef, new URL("/notes/1", notes.origin).href],
          [embedded, { id: id("note"), type: "Note", attributedTo: peer.actorId("carol").href, content: "<".repeat(150_000), to: [PUBLIC], tag: [{ type: "Mention", href: union() }] }],
        ] as const) {
          const body = JSON.stringify({ "@context": AS, id: createId, type: "Create", actor: peer.actorId("carol").href, to: [PUBLIC], cc: [union()], object });
          for (const target of [inbox, new URL("/inbox", m.origin)]) {
            const r = await post(await peer.signedPost(target, body, { as: "carol" }));
            assert.equal(r.status, 403, r.body);
            assert.equal((JSON.parse(r.body) as { error: { code: string } }).error.code, "not_member");
          }
          assert.equal(await queuedWith(createId), 0, "nothing queued");
          assert.equal(await recorded(createId), 0, "nothing recorded");
        }
        assert.equal(notes.hits(), 0, "a non-member's object is never fetched");

        // The same post from a member is taken (and its Create recorded).
        await ensureMember("carol");
        const memberCreate = id("member");
        const body = JSON.stringify({
          "@context": AS, id: memberCreate, type: "Create", actor: peer.actorId("carol").href, to: [PUBLIC], cc: [union()],
          object: { id: id("note"), type: "Note", attributedTo: peer.actorId("carol").href, content: "<".repeat(150_000), to: [PUBLIC], tag: [{ type: "Mention", href: union() }] },
        });
        const r = await post(await peer.signedPost(inbox, body, { as: "carol" }));
        assert.equal(r.status, 202, r.body);
        await eventually(async () => (await recorded(memberCreate)) === 1, "the member's Create recorded");
      } finally {
        await notes.close();
      }
    });

    it("copies of one Follow delivered at once are processed once: one Accept", async () => {
      const follow = new Follow({ id: new URL(id("follow")), actor: peer.actorId("bob"), object: new URL(union()) });
      const body = JSON.stringify(await follow.toJsonLd());
      // Both inboxes: Fedify drops a repeat to the same inbox itself, so only Muster's check sees these as one.
      const shared = new URL("/inbox", m.origin);
      const requests = await Promise.all(Array.from({ length: 6 }, (_, i) => peer.signedPost(i % 2 ? shared : inbox, body, { as: "bob" })));
      const answers = await Promise.all(requests.map(post));
      assert.deepEqual(answers.map((a) => a.status), [202, 202, 202, 202, 202, 202]);
      const acceptsOf = async () => {
        let n = 0;
        for (const a of peer.received) {
          if (!(a instanceof Accept)) continue;
          const obj = await a.getObject({ crossOrigin: "trust" });
          if (obj instanceof Follow && obj.id?.href === follow.id!.href) n++;
        }
        return n;
      };
      await eventually(async () => (await acceptsOf()) >= 1 && (await queuedWith(follow.id!.href)) === 0, "an Accept sent and every copy handled");
      assert.equal(await acceptsOf(), 1, "exactly one Accept");
      assert.equal(await recorded(follow.id!.href), 1);
      assert.equal((await findMemberByActor(db(), unionId, peer.actorId("bob").href))?.state, "active");
    });

    it("processOnce runs the work once for parallel copies, and again after work that failed", async () => {
      const activity = new Create({ id: new URL(id("once")), actor: peer.actorId("alice") });
      await ensureMember("alice"); // a fresh cache: no fetch
      const deps = { db: db(), events: m.muster.events, documentLoader: m.muster.federation.createContext(m.origin).documentLoader, contextLoader: m.muster.federation.createContext(m.origin).contextLoader };
      let runs = 0;
      const slow = async () => {
        runs++;
        await new Promise((r) => setTimeout(r, 50));
      };
      const results = await Promise.all(Array.from({ length: 5 }, () => processOnce(deps, activity, unionId, slow)));
      assert.equal(runs, 1, "the work ran once");
      assert.equal(results.filter(Boolean).length, 1);

      const failing = new Create({ id: new URL(id("retry")), actor: peer.actorId("alice") });
      await assert.rejects(processOnce(deps, failing, unionId, async () => { throw new Error("fetch failed"); }), /fetch failed/);
      assert.equal(await recorded(failing.id!.href), 0, "a failed attempt is not recorded");
      let retried = 0;
      assert.equal(await processOnce(deps, failing, unionId, async () => void retried++), true);
      assert.equal(retried, 1, "the redelivery ran the work");
    });

    it("a member's post whose object fetch fails once is processed when it comes again", async () => {
      await db().updateTable("unions").set({ relay_policy: "approval" }).where("id", "=", unionId).execute();
      await ensureMember("alice");
      let fail = true;
      const notes = await scripted((req, res) => {
        if (fail) return void res.writeHead(503).end("try later");
        res.writeHead(200, { "Content-Type": AP_JSON }).end(JSON.stringify({
          "@context": AS, id: new URL(req.url!, notes.origin).href, type: "Note", attributedTo: peer.actorId("alice").href,
          content: "<p>Rally at the depot at 6</p>", to: [PUBLIC], cc: [union()], tag: [{ type: "Mention", href: union() }],
        }));
      });
      try {
        const noteId = new URL("/notes/rally", notes.origin).href;
        const createId = id("rally");
        const body = JSON.stringify({ "@context": AS, id: createId, type: "Create", actor: peer.actorId("alice").href, to: [PUBLIC], cc: [union()], object: noteId });
        assert.equal((await post(await peer.signedPost(inbox, body, { as: "alice" }))).status, 202);
        // Done once it is recorded (as it was before the fix) or has failed and waits for a retry
        // (Fedify queues the retry as a new message with the next attempt number).
        const failedOnce = async () => (await db().selectFrom("fedify_mq").select("id").where("message", "like", `%${createId}%`)
          .where((e) => e.or([e("last_error", "is not", null), e("message", "like", '%"attempt":1%')])).execute()).length;
        await eventually(async () => notes.hits("/notes/rally") >= 1 && ((await recorded(createId)) === 1 || (await failedOnce()) >= 1), "the first attempt finished");
        fail = false;
        // The sender's redelivery of the same activity (to the shared inbox, so Fedify's own per-inbox check does not drop it).
        assert.equal((await post(await peer.signedPost(new URL("/inbox", m.origin), body, { as: "alice" }))).status, 202);
        const relay = await eventually(
          () => db().selectFrom("relay_requests").selectAll().where("note_id", "=", noteId).executeTakeFirst(),
          "the post offered for relaying",
        );
        assert.equal(relay.state, "pending");
        assert.equal(relay.excerpt?.trim(), "Rally at the depot at 6");
        await eventually(async () => (await recorded(createId)) === 1, "the Create recorded once");
      } finally {
        await notes.close();
      }
    });

    it("refuses deep nesting at the first levels, before the rest of the body arrives, and closes the connection", async () => {
      const deep = "[".repeat(100_000) + "]".repeat(100_000);
      const signed = await peer.signedPost(inbox, deep, { as: "alice" });
      const headers = Object.fromEntries([...signed.headers].filter(([k]) => k !== "host"));
      // Only the first 1,000 of 200,000 declared bytes are sent.
      const r = await rawPost(m.origin, inbox.pathname, { ...headers, "content-length": String(deep.length) }, deep.slice(0, 1000));
      r.socket.destroy();
      assert.equal(r.status, 400, "answered before the body was complete");
      assert.ok(r.closed, "the server closed the connection instead of waiting for the rest");
    });

    it("refuses unsigned and over-limit bodies from their headers alone", async () => {
      const max = m.muster.config.maxBodyBytes;
      const unsigned = await rawPost(m.origin, inbox.pathname, { "content-type": AP_JSON, "content-length": "1000000" }, "");
      unsigned.socket.destroy();
      assert.equal(unsigned.status, 401);
      assert.ok(unsigned.closed, "closed: the megabyte is never read");
      for (const path of [inbox.pathname, "/setup"]) {
        const big = await rawPost(m.origin, path, { "content-type": AP_JSON, "content-length": String(max + 1), signature: 'keyId="x"' }, "");
        big.socket.destroy();
        assert.equal(big.status, 413, path);
        assert.ok(big.closed, path);
      }
    });

    it("clients that reset mid-upload or keep sending after a refusal cannot crash the server", async () => {
      const crashes: unknown[] = [];
      const onCrash = (e: unknown) => crashes.push(e);
      process.on("uncaughtException", onCrash);
      process.on("unhandledRejection", onCrash);
      try {
        const deep = "[".repeat(50_000);
        const signed = await peer.signedPost(inbox, deep, { as: "alice" });
        const signedHeaders = Object.fromEntries([...signed.headers].filter(([k]) => k !== "host"));
        const good = JSON.stringify({ "@context": AS, id: id("x"), type: "Like", actor: peer.actorId("alice").href, object: union() });
        const goodSigned = await peer.signedPost(inbox, good, { as: "alice" });
        const goodHeaders = Object.fromEntries([...goodSigned.headers].filter(([k]) => k !== "host"));
        const attempts = Array.from({ length: 30 }, async (_, i) => {
          const kind = i % 3;
          const socket = connect(Number(m.origin.port), m.origin.hostname);
          socket.on("error", () => {});
          await new Promise((r) => socket.once("connect", r));
          const send = (headers: Record<string, string>, body: string) =>
            socket.write(`POST ${inbox.pathname} HTTP/1.1\r\n${Object.entries({ Host: m.origin.host, ...headers }).map(([k, v]) => `${k}: ${v}\r\n`).join("")}\r\n${body}`);
          if (kind === 0) {
            // Unsigned, then a reset right after the head.
            send({ "content-type": AP_JSON, "content-length": "1000000" }, "x".repeat(10_000));
            socket.resetAndDestroy();
          } else if (kind === 1) {
            // Refused at the nesting check, and still writing afterwards.
            send({ ...signedHeaders, "content-length": String(1_000_000) }, deep);
            for (let k = 0; k < 20 && !socket.destroyed; k++) {
              socket.write("[".repeat(16_384));
              await new Promise((r) => setTimeout(r, 5));
            }
            socket.resetAndDestroy();
          } else {
            // A signed body cut off halfway.
            send({ ...goodHeaders }, good.slice(0, good.length >> 1));
            await new Promise((r) => setTimeout(r, 20));
            socket.resetAndDestroy();
          }
        });
        await Promise.all(attempts);
        await new Promise((r) => setTimeout(r, 300));
        const health = await fetch(new URL("/healthz", m.origin));
        assert.equal(health.status, 200);
        assert.deepEqual(crashes, [], "no uncaught error");
      } finally {
        process.off("uncaughtException", onCrash);
        process.off("unhandledRejection", onCrash);
      }
    });

    it("/healthz answers from memory while a transaction holds the database", async () => {
      assert.equal((await fetch(new URL("/healthz", m.origin))).status, 200);
      let release!: () => void;
      const held = db().transaction().execute(async (trx) => {
        await trx.selectFrom("unions").select("id").execute();
        await new Promise<void>((r) => (release = r));
      });
      try {
        await new Promise((r) => setTimeout(r, 50));
        const t = performance.now();
        const res = await fetch(new URL("/healthz", m.origin), { signal: AbortSignal.timeout(4000) });
        const ms = performance.now() - t;
        assert.equal(res.status, 200);
        assert.ok(ms < 1500, `answered in ${Math.round(ms)} ms while the transaction was open`);
      } finally {
        release();
        await held;
      }
    });
  });
}
