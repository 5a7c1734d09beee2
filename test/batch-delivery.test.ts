import "../src/temporal.ts";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createHash, createPrivateKey, type JsonWebKey as NodeJwk } from "node:crypto";
import { CircuitBreaker, createFederation, exportJwk, generateCryptoKeyPair, MemoryKvStore, signRequest, verifyRequest } from "@fedify/fedify";
import { processStats, signedHeaders } from "../federation/batch-delivery.ts";
import { KyselyKvStore } from "../federation/kysely-kv-store.ts";
import { composeAction } from "../src/actions/actions.ts";
import { OPERATOR } from "../src/members/members.ts";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { eventually, freePort, makeUnion, startMuster, type TestMuster } from "./helpers/muster.ts";
import { seedFollowers } from "./helpers/seed-followers.ts";
import { storedKey } from "./helpers/done-keys.ts";

/*
 * The delivery lanes' own sender (federation/batch-delivery.ts) against real
 * member servers on loopback that verify every HTTP signature with Fedify
 * (fetching the union's key from the running Muster): each inbox gets a
 * call-to-action once, signed so that it verifies, with the spec each
 * server accepts; a failing server goes through Fedify's retries, and one
 * whose circuit is open is parked while the others get theirs at once.
 */

type Mode = "rfc9421" | "cavage-only" | "fail-thrice" | "counting";

interface Member {
  readonly origin: string;
  /** Verified POSTs per `${activity id} ${inbox}`. */
  readonly accepted: Map<string, number>;
  /** Every POST that reached it, with when. */
  readonly posts: { at: number; spec: string; status: number; path: string }[];
  close(): Promise<void>;
}

async function memberServer(mode: Mode, senderOrigin: URL): Promise<Member> {
  const federation = createFederation<void>({ kv: new MemoryKvStore(), allowPrivateAddress: true });
  const ctx = federation.createContext(senderOrigin);
  const keys = new Map<string, unknown>();
  const accepted = new Map<string, number>();
  const posts: Member["posts"] = [];
  const port = await freePort();
  const origin = `http://127.0.0.1:${port}`;
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    const headers = new Headers();
    for (const [k, v] of Object.entries(req.headers)) if (typeof v === "string") headers.set(k, v);
    const spec = headers.has("signature-input") ? "rfc9421" : "draft-cavage-http-signatures-12";
    const answer = (status: number, extra: Record<string, string> = {}) => {
      posts.push({ at: Date.now(), spec, status, path: req.url ?? "" });
      res.writeHead(status, extra).end();
    };
    if (mode === "cavage-only" && spec === "rfc9421") return answer(401);
    // Each inbox refuses its first three POSTs: the batch sender's, then Fedify's own two knocks.
    if (mode === "fail-thrice" && posts.filter((p) => p.status === 503 && p.path === req.url).length < 3) return answer(503, { "retry-after": "1" });
    const key = await verifyRequest(new Request(`${origin}${req.url}`, { method: "POST", headers, body }), {
      documentLoader: ctx.documentLoader,
      contextLoader: ctx.contextLoader,
      keyCache: { get: async (id) => keys.get(id.href) as never, set: async (id, k) => void keys.set(id.href, k) },
      spec,
    }).catch(() => null);
    if (key === null) return answer(401);
    const id = String((JSON.parse(body.toString("utf8")) as { id?: unknown }).id);
    const k = `${id} ${origin}${req.url}`;
    accepted.set(k, (accepted.get(k) ?? 0) + 1);
    answer(202);
  };
  const server: Server = createServer((req, res) => void handle(req, res).catch(() => res.writeHead(500).end()));
  await new Promise<void>((r) => server.listen(port, "127.0.0.1", r));
  return {
    origin,
    accepted,
    posts,
    close: () => new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    }),
  };
}

const PER_SERVER = 4;

describe("the batch sender's signature headers", () => {
  for (const spec of ["rfc9421", "draft-cavage-http-signatures-12"] as const) it(`are byte for byte Fedify's signRequest (${spec})`, async () => {
    const { privateKey } = await generateCryptoKeyPair("RSASSA-PKCS1-v1_5");
    const keyId = new URL("https://union.example/u/riders#main-key");
    const inbox = new URL("https://member.example:8443/users/ana/inbox?x=1");
    const text = JSON.stringify({ id: "https://union.example/a/1", type: "Create", content: "ü" });
    const bytes = new TextEncoder().encode(text);
    const body = { text, bytes, sha256: createHash("sha256").update(bytes).digest("base64") };
    const now = Date.parse("2026-12-05T01:02:03.456Z");
    const ours = await signedHeaders(inbox, privateKey, keyId, body, spec, now);
    const fedify = await signRequest(new Request(inbox, { method: "POST", headers: { "Content-Type": "application/activity+json" }, body: text }), privateKey, keyId, {
      spec, currentTime: Temporal.Instant.fromEpochMilliseconds(now),
    });
    assert.deepEqual(Object.fromEntries(Object.entries(ours).sort()), Object.fromEntries([...fedify.headers].sort()));
    // The delivery threads sign with node:crypto's KeyObject of the same key: the same bytes (RSASSA-PKCS1-v1_5 is deterministic).
    const keyObject = createPrivateKey({ key: await exportJwk(privateKey) as NodeJwk, format: "jwk" });
    assert.deepEqual(await signedHeaders(inbox, keyObject, keyId, body, spec, now), ours);
  });
});

for (const d of dialects) {
  describe(`the delivery lane's batch sender on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    let m: TestMuster;

    before(async () => {
      tdb = await d.create();
      m = await startMuster(tdb);
    });
    after(async () => {
      await m?.stop();
      await tdb?.destroy();
    });

    /** A union whose followers live on `servers` (personal inboxes, PER_SERVER each), and a published call. */
    async function publishTo(slug: string, origins: readonly string[]): Promise<void> {
      const union = await makeUnion(m, slug);
      await seedFollowers(m.muster.database.db, union.id, origins.length * PER_SERVER, (i) => ({ origin: origins[i % origins.length]!, shared: false }));
      await composeAction(m.muster.membership, union.id, OPERATOR, { title: "Strike", text: "Join the **strike**.", kind: "sign" }, { publishNow: true });
    }

    const inboxesOf = (origin: string, from: number, servers: number) =>
      Array.from({ length: PER_SERVER }, (_, j) => `${origin}/users/m${from + j * servers}/inbox`);

    it("sends each inbox the call once, signed so a real receiver verifies it, in the spec each server accepts", async () => {
      const servers = await Promise.all([memberServer("rfc9421", m.origin), memberServer("rfc9421", m.origin), memberServer("cavage-only", m.origin)]);
      try {
        const before = { ...processStats };
        await publishTo("senders", servers.map((s) => s.origin));
        const expected = servers.length * PER_SERVER;
        await eventually(async () => servers.every((s) => s.accepted.size === PER_SERVER), "every inbox verified a delivery", 30_000);
        // Late repeats would show after the last first delivery.
        await new Promise((r) => setTimeout(r, 500));
        servers.forEach((s, i) => {
          const inboxes = [...s.accepted.keys()].map((k) => k.split(" ")[1]).sort();
          assert.deepEqual(inboxes, inboxesOf(s.origin, i, servers.length).sort(), `server ${i} got the call at each of its inboxes`);
          for (const [k, n] of s.accepted) assert.equal(n, 1, `${k} got it once`);
        });
        assert.equal(processStats.sent - before.sent, expected, "the batch sender made every delivery");
        assert.equal(processStats.fallback - before.fallback, 0, "none went to Fedify's handler");
        // The cavage-only server refused the first knock once, then was sent cavage only.
        const cavage = servers[2]!;
        assert.equal(cavage.posts.filter((p) => p.spec === "rfc9421").length >= 1, true);
        assert.equal(cavage.posts.filter((p) => p.status === 202).every((p) => p.spec === "draft-cavage-http-signatures-12"), true);
        assert.ok(cavage.posts.filter((p) => p.spec === "rfc9421").length < PER_SERVER, "the accepted spec is remembered, not knocked for again every time");
        const kv = new KyselyKvStore(m.muster.database.db);
        assert.equal(await kv.get(["_fedify", "httpMessageSignaturesSpec", cavage.origin]), "draft-cavage-http-signatures-12");
        // Settled: nothing left queued for them, and each inbox's done key written.
        const db = m.muster.database.db;
        const left = await db.selectFrom("fedify_mq").select("id").where("queue", "in", ["delivery", "outbox"]).execute();
        assert.equal(left.length, 0);
        const done = await db.selectFrom("fedify_mq_done").select("dedupe_key").execute();
        const activityIds = [...new Set(servers.flatMap((s) => [...s.accepted.keys()].map((k) => k.split(" ")[0]!)))];
        for (const [i, s] of servers.entries()) {
          for (const inbox of inboxesOf(s.origin, i, servers.length)) assert.ok(done.some((r) => activityIds.some((a) => r.dedupe_key === storedKey(db, `${a} ${inbox} 0`))), `done key for ${inbox}`);
        }
      } finally {
        await Promise.all(servers.map((s) => s.close()));
      }
    });

    it("hands a failing server to Fedify's retries, which keep its Retry-After and deliver once it answers", async () => {
      const flaky = await memberServer("fail-thrice", m.origin);
      const good = await memberServer("rfc9421", m.origin);
      try {
        await publishTo("retried", [flaky.origin, good.origin]);
        await eventually(async () => good.accepted.size === PER_SERVER, "the healthy server got its deliveries", 30_000);
        await eventually(async () => flaky.accepted.size === PER_SERVER, "the failing server got its deliveries once it answered", 60_000);
        for (const path of new Set(flaky.posts.map((p) => p.path))) {
          const posts = flaky.posts.filter((p) => p.path === path);
          // Three refusals (the batch sender's try, if the server had no failures on record yet, and
          // Fedify's double knock), then the retry Fedify scheduled after Retry-After.
          assert.deepEqual(posts.map((p) => p.status), [503, 503, 503, 202], path);
          assert.ok(posts[3]!.at - posts[0]!.at >= 900, `${path} retried after Retry-After (1 s), not at once: ${posts[3]!.at - posts[0]!.at} ms`);
        }
        const firstAccepted = Math.min(...flaky.posts.filter((p) => p.status === 202).map((p) => p.at));
        for (const [k, n] of flaky.accepted) assert.equal(n, 1, `${k} got it once`);
        assert.ok(good.posts.every((p) => p.at < firstAccepted), "the healthy server did not wait for the failing one");
      } finally {
        await Promise.all([flaky.close(), good.close()]);
      }
    });

    it("parks deliveries to a server whose circuit is open, without a request to it, while the others get theirs", async () => {
      const parked = await memberServer("counting", m.origin);
      const good = await Promise.all([memberServer("rfc9421", m.origin), memberServer("rfc9421", m.origin)]);
      try {
        // Open the parked server's circuit as Fedify's breaker would after five failures.
        const breaker = new CircuitBreaker({ kv: new KyselyKvStore(m.muster.database.db), prefix: ["_fedify", "circuit"] });
        for (let i = 0; i < 5; i++) await breaker.recordFailure(new URL(parked.origin).host);
        assert.equal((await breaker.getState(new URL(parked.origin).host))?.state, "open");
        const t0 = Date.now();
        await publishTo("parked", [parked.origin, ...good.map((s) => s.origin)]);
        await eventually(async () => good.every((s) => s.accepted.size === PER_SERVER), "the healthy servers got every delivery", 30_000);
        assert.ok(Date.now() - t0 < 20_000);
        await new Promise((r) => setTimeout(r, 500));
        assert.equal(parked.posts.length, 0, "nothing was sent to the open circuit");
        const held = await m.muster.database.db.selectFrom("fedify_mq").select(["message", "available_at"]).where("queue", "=", "delivery").execute();
        const parkedRows = held.map((r) => ({ ...r, message: JSON.parse(r.message) as { inbox: string; circuitHeld?: boolean } }))
          .filter((r) => r.message.inbox.startsWith(parked.origin));
        assert.ok(parkedRows.length >= 1, "the parked server's deliveries are still queued");
        assert.ok(parkedRows.some((r) => r.message.circuitHeld === true && r.available_at > Date.now() + 1000), "held by Fedify's breaker until later");
      } finally {
        await Promise.all([parked.close(), ...good.map((s) => s.close())]);
      }
    });
  });
}
