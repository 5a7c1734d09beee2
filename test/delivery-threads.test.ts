import "../src/temporal.ts";
import { after, before, describe, it } from "node:test";
import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import { createFederation, generateCryptoKeyPair, MemoryKvStore, verifyRequest } from "@fedify/fedify";
import { CryptographicKey } from "@fedify/vocab";
import { processStats } from "../federation/batch-delivery.ts";
import { bodyOf } from "../federation/delivery-sign.ts";
import { DeliveryThreads, deliveryThreadCount, threadStats } from "../federation/delivery-threads.ts";
import { ConfigError, loadConfig } from "../src/config.ts";
import { createMuster } from "../src/main.ts";
import { composeAction } from "../src/actions/actions.ts";
import { OPERATOR } from "../src/members/members.ts";
import { dialects, type TestDatabase } from "./helpers/databases.ts";
import { eventually, makeUnion, startMuster, type TestMuster } from "./helpers/muster.ts";
import { seedFollowers } from "./helpers/seed-followers.ts";

/*
 * federation/delivery-threads.ts: the batch sender's deliveries are signed
 * and POSTed on worker threads. Real loopback servers verify every
 * signature; a thread that goes away mid-delivery loses nothing (the
 * delivery is given back as not sent, for Fedify's retries); the private
 * key crosses to a thread once, never inside a delivery; the
 * private-address rule holds on the thread.
 */

interface Peer {
  readonly origin: string;
  readonly hits: { path: string; verified: boolean }[];
  close(): Promise<void>;
}

/** A member server on loopback: verifies each POST's signature against `publicKey` (or through the sender's actor) and answers 202 after `delayMs`. */
async function peer(o: { senderOrigin?: URL; publicKey?: CryptoKey; delayMs?: number } = {}): Promise<Peer> {
  const federation = createFederation<void>({ kv: new MemoryKvStore(), allowPrivateAddress: true });
  const ctx = federation.createContext(o.senderOrigin ?? new URL("http://127.0.0.1/"));
  const keys = new Map<string, unknown>();
  const hits: Peer["hits"] = [];
  const handle = async (req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const headers = new Headers();
    for (const [k, v] of Object.entries(req.headers)) if (typeof v === "string") headers.set(k, v);
    const request = new Request(`${origin}${req.url}`, { method: "POST", headers, body: Buffer.concat(chunks) });
    const key = await verifyRequest(request, {
      documentLoader: ctx.documentLoader,
      contextLoader: ctx.contextLoader,
      keyCache: o.publicKey
        ? { get: async () => new CryptographicKey({ id: new URL("https://union.example/u/riders#main-key"), owner: new URL("https://union.example/u/riders"), publicKey: o.publicKey }) as never, set: async () => {} }
        : { get: async (id) => keys.get(id.href) as never, set: async (id, k) => void keys.set(id.href, k) },
    }).catch(() => null);
    hits.push({ path: req.url ?? "", verified: key !== null });
    if (o.delayMs) await new Promise((r) => setTimeout(r, o.delayMs));
    res.writeHead(key === null ? 401 : 202).end();
  };
  const server: Server = createServer((req, res) => void handle(req, res).catch(() => res.writeHead(500).end()));
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    origin,
    hits,
    close: () => new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    }),
  };
}

describe("delivery threads", () => {
  it("sign so that the receiver verifies, and are handed a private key once per thread, never in a delivery", async () => {
    const { privateKey, publicKey } = await generateCryptoKeyPair("RSASSA-PKCS1-v1_5");
    const p = await peer({ publicKey });
    // Every message a delivery thread is sent, as posted.
    const posted: unknown[] = [];
    const postMessage = Worker.prototype.postMessage;
    Worker.prototype.postMessage = function (this: Worker, message: unknown, ...rest: unknown[]) {
      posted.push(message);
      return (postMessage as (...a: unknown[]) => void).call(this, message, ...rest);
    } as typeof postMessage;
    const threads = new DeliveryThreads({ threads: 2, timeoutMs: 10_000 });
    try {
      const body = bodyOf(JSON.stringify({ id: "https://union.example/a/1", type: "Create" }));
      const before = threadStats.sent;
      // Three turns of 20 deliveries each, as the batch sender hands them over.
      for (let turn = 0; turn < 3; turn++) {
        const outcomes = await Promise.all(Array.from({ length: 20 }, (_, i) => threads.send({
          inbox: new URL(`${p.origin}/users/m${turn * 20 + i}/inbox`), key: privateKey, keyId: "https://union.example/u/riders#main-key",
          body, spec: i % 2 === 0 ? "rfc9421" : "draft-cavage-http-signatures-12", reset: false, allowPrivateAddress: true,
        })));
        assert.ok(outcomes.every((o) => o.ok && o.status === 202 && !o.knocked), JSON.stringify(outcomes));
      }
      assert.equal(threadStats.sent - before, 60);
      assert.equal(p.hits.length, 60);
      assert.ok(p.hits.every((h) => h.verified), "every delivery verified");
      const messages = posted as { keys: [number, unknown, string][]; items: unknown[][]; bodies: unknown[] }[];
      const withKeys = messages.filter((m) => m.keys.length > 0);
      assert.ok(withKeys.length >= 1 && withKeys.length <= 2, `the key went to each thread once: ${withKeys.length} messages carried it`);
      for (const m of withKeys) assert.equal(m.keys[0]![1], privateKey, "as the non-extractable CryptoKey");
      // A delivery carries its inbox, handles, spec and flags: no key material.
      for (const m of messages) for (const item of m.items) assert.ok(item.every((x) => typeof x === "number" || typeof x === "string" || typeof x === "boolean"), JSON.stringify(item));
      assert.equal(messages.filter((m) => m.bodies.length > 0).length <= 2, true, "the body went to each thread once");
    } finally {
      Worker.prototype.postMessage = postMessage;
      await threads.close();
      await p.close();
    }
  });

  it("keep the private-address rule of the Muster they send for", async () => {
    const { privateKey } = await generateCryptoKeyPair("RSASSA-PKCS1-v1_5");
    const other = await generateCryptoKeyPair("RSASSA-PKCS1-v1_5");
    // Verifies against another key: every POST that reaches it is refused.
    const p = await peer({ publicKey: other.publicKey });
    const threads = new DeliveryThreads({ threads: 1, timeoutMs: 5_000 });
    try {
      const job = { inbox: new URL(`${p.origin}/users/ann/inbox`), key: privateKey, keyId: "https://union.example/u/riders#main-key", body: bodyOf("{}"), spec: "rfc9421" as const, reset: false };
      const refused = await threads.send({ ...job, allowPrivateAddress: false }).then(() => null, (e: Error) => e);
      assert.ok(refused instanceof Error && /private|Refusing/i.test(refused.message), String(refused));
      assert.equal(p.hits.length, 0, "nothing reached the loopback address");
      const allowed = await threads.send({ ...job, allowPrivateAddress: true });
      assert.equal(allowed.status, 401, "reached when private addresses are allowed (and refused: another key)");
      assert.equal(allowed.ok, false);
      assert.equal(allowed.knocked, true, "401 without a challenge: the other spec was tried too, as Fedify's double knock");
      assert.equal(p.hits.length, 2);
    } finally {
      await threads.close();
      await p.close();
    }
  });

  it("give back what a thread had in hand when it goes away, as not sent", async () => {
    const { privateKey, publicKey } = await generateCryptoKeyPair("RSASSA-PKCS1-v1_5");
    const slow = await peer({ publicKey, delayMs: 5000 });
    const threads = new DeliveryThreads({ threads: 1, timeoutMs: 10_000 });
    try {
      const lost = threadStats.lost;
      // Four: the delivery dispatcher opens at most four connections per origin.
      const sends = Array.from({ length: 4 }, (_, i) => threads.send({
        inbox: new URL(`${slow.origin}/users/m${i}/inbox`), key: privateKey, keyId: "https://union.example/u/riders#main-key",
        body: bodyOf("{}"), spec: "rfc9421", reset: false, allowPrivateAddress: true,
      }).then(() => "sent", (e: Error) => e.message));
      await eventually(async () => slow.hits.length === 4, "the thread is POSTing", 20_000);
      await threads.close();
      const outcomes = await Promise.all(sends);
      assert.deepEqual(outcomes, Array(4).fill("the delivery threads were closed"));
      assert.equal(threadStats.lost - lost, 4);
    } finally {
      await threads.close();
      await slow.close();
    }
  });

  it("start() loads every thread before the first delivery, which then starts none", async () => {
    const { privateKey, publicKey } = await generateCryptoKeyPair("RSASSA-PKCS1-v1_5");
    const p = await peer({ publicKey });
    const threads = new DeliveryThreads({ threads: 2, timeoutMs: 10_000 });
    try {
      const before = { started: threadStats.started, ready: threadStats.ready };
      await threads.start();
      assert.equal(threadStats.started - before.started, 2, "both threads started");
      assert.equal(threadStats.ready - before.ready, 2, "and loaded (their modules evaluated) when start() settles");
      await threads.start();
      assert.equal(threadStats.started - before.started, 2, "a second start() starts nothing more");
      const outcomes = await Promise.all(Array.from({ length: 4 }, (_, i) => threads.send({
        inbox: new URL(`${p.origin}/users/m${i}/inbox`), key: privateKey, keyId: "https://union.example/u/riders#main-key",
        body: bodyOf("{}"), spec: "rfc9421", reset: false, allowPrivateAddress: true,
      })));
      assert.ok(outcomes.every((o) => o.ok), JSON.stringify(outcomes));
      assert.equal(threadStats.started - before.started, 2, "the deliveries went to the threads already loaded");
    } finally {
      await threads.close();
      await p.close();
    }
  });

  it("MUSTER_DELIVERY_THREADS: a number from 0 to 16, else one thread with a second core", () => {
    assert.equal(deliveryThreadCount(loadConfig({ MUSTER_DELIVERY_THREADS: "0" }).deliveryThreads), 0);
    assert.equal(deliveryThreadCount(loadConfig({ MUSTER_DELIVERY_THREADS: "3" }).deliveryThreads), 3);
    assert.throws(() => loadConfig({ MUSTER_DELIVERY_THREADS: "-1" }), ConfigError);
    assert.throws(() => loadConfig({ MUSTER_DELIVERY_THREADS: "two" }), ConfigError);
    assert.throws(() => loadConfig({ MUSTER_DELIVERY_THREADS: "17" }), ConfigError);
    assert.equal(deliveryThreadCount(loadConfig({}).deliveryThreads), availableParallelism() >= 2 ? 1 : 0);
  });
});

for (const d of dialects) {
  describe(`a fan-out through two delivery threads on ${d.name}`, { skip: d.skip }, () => {
    let tdb: TestDatabase;
    let m: TestMuster;
    before(async () => {
      tdb = await d.create();
      m = await startMuster(tdb, { env: { MUSTER_DELIVERY_THREADS: "2" } });
    });
    after(async () => {
      await m?.stop();
      await tdb?.destroy();
    });

    it("each personal inbox gets the call once, verified, every delivery made on a thread and settled", async () => {
      const peers = await Promise.all([peer({ senderOrigin: m.origin }), peer({ senderOrigin: m.origin }), peer({ senderOrigin: m.origin })]);
      try {
        const union = await makeUnion(m, "threads");
        const perServer = 5;
        await seedFollowers(m.muster.database.db, union.id, peers.length * perServer, (i) => ({ origin: peers[i % peers.length]!.origin, shared: false }));
        const before = { threads: threadStats.sent, sent: processStats.sent, fallback: processStats.fallback };
        await composeAction(m.muster.membership, union.id, OPERATOR, { title: "Strike", text: "Join the **strike**.", kind: "sign" }, { publishNow: true });
        await eventually(async () => peers.every((p) => p.hits.filter((h) => h.verified).length === perServer), "every inbox verified its delivery", 30_000);
        await new Promise((r) => setTimeout(r, 500));
        for (const p of peers) {
          const paths = p.hits.map((h) => h.path);
          assert.equal(new Set(paths).size, perServer, "each inbox once");
          assert.equal(paths.length, perServer, "no repeats");
          assert.ok(p.hits.every((h) => h.verified));
        }
        assert.equal(threadStats.sent - before.threads, peers.length * perServer, "all made on delivery threads");
        assert.equal(processStats.sent - before.sent, peers.length * perServer);
        assert.equal(processStats.fallback - before.fallback, 0);
        await eventually(async () => (await m.muster.database.db.selectFrom("fedify_mq").select("id").where("queue", "=", "delivery").execute()).length === 0, "every delivery settled", 10_000);
      } finally {
        await Promise.all(peers.map((p) => p.close()));
      }
    });

    it("a shared inbox (one POST to its server per fan-out) is sent from the claiming thread, not handed to a delivery thread", async () => {
      const peers = await Promise.all([peer({ senderOrigin: m.origin }), peer({ senderOrigin: m.origin }), peer({ senderOrigin: m.origin })]);
      try {
        const union = await makeUnion(m, "threads-shared");
        // Four members on each server, all reached through its shared inbox.
        await seedFollowers(m.muster.database.db, union.id, peers.length * 4, (i) => ({ origin: peers[i % peers.length]!.origin, shared: true }));
        const before = { threads: threadStats.sent, sent: processStats.sent, fallback: processStats.fallback };
        await composeAction(m.muster.membership, union.id, OPERATOR, { title: "Rally", text: "Come to the **rally**.", kind: "sign" }, { publishNow: true });
        await eventually(async () => peers.every((p) => p.hits.some((h) => h.verified)), "every server verified its delivery", 30_000);
        await new Promise((r) => setTimeout(r, 500));
        for (const p of peers) assert.deepEqual(p.hits, [{ path: "/inbox", verified: true }], "one verified POST to the shared inbox");
        assert.equal(processStats.sent - before.sent, peers.length, "sent by the batch sender");
        assert.equal(processStats.fallback - before.fallback, 0);
        assert.equal(threadStats.sent - before.threads, 0, "none on a delivery thread");
        await eventually(async () => (await m.muster.database.db.selectFrom("fedify_mq").select("id").where("queue", "=", "delivery").execute()).length === 0, "every delivery settled", 10_000);
      } finally {
        await Promise.all(peers.map((p) => p.close()));
      }
    });
  });
}

for (const d of dialects) {
  describe(`a process that runs the queue on ${d.name}`, { skip: d.skip }, () => {
    it("has its delivery threads started and loaded when createMuster returns, before any delivery; one that runs no queue starts none", async () => {
      const tdb = await d.create();
      try {
        const env = { DATABASE_URL: tdb.url, ORIGIN: "http://127.0.0.1:9", LOG_LEVEL: "error", MUSTER_DELIVERY_THREADS: "2" };
        const before = { started: threadStats.started, ready: threadStats.ready };
        const web = await createMuster(loadConfig(env), { runsQueue: false });
        await web.close();
        assert.equal(threadStats.started - before.started, 0, "runsQueue: false starts no thread");
        const worker = await createMuster(loadConfig(env));
        try {
          assert.equal(threadStats.started - before.started, 2, "both threads started at start-up");
          assert.equal(threadStats.ready - before.ready, 2, "and loaded before createMuster returned");
        } finally {
          await worker.close();
        }
      } finally {
        await tdb.destroy();
      }
    });
  });
}
