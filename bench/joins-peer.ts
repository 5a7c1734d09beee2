// A child process (bench/joins.ts forks it) playing the people who join:
// SERVERS loopback fediverse servers (Fedify, Person actors at /users/a<i>,
// Mastodon-style), whose actors each send one signed Follow to the union and
// whose inboxes verify every Accept's signature (Fedify's own inbox check).
// Setup is untimed; on "go" it sends the Follows and reports when every
// Accept has arrived.
import "../src/temporal.ts";
import { Agent, createServer, type IncomingMessage, request as httpRequest } from "node:http";
import { createFederation, generateCryptoKeyPair, MemoryKvStore, signRequest } from "@fedify/fedify";
import { Accept, Create, CryptographicKey, Endpoints, Follow, type Group, Person } from "@fedify/vocab";
import { claimSignature } from "../federation/inbox-fast-verify.ts";
import { listenOnLoopback } from "../test/helpers/person-actors.ts";

const [unionUrl, total, servers, concurrency] = [process.argv[2]!, Number(process.argv[3]), Number(process.argv[4]), Number(process.argv[5])];
// Optional: one Follow every intervalMs (a steady trickle of joins, as while a fan-out drains) instead of as fast as possible.
const intervalMs = Number(process.argv[6] ?? 0);
// BENCH_JOINS_WARMUP=W: W other people join first, on "warm", before the timed window (their Accepts are waited for and not counted).
const warmup = Math.max(0, Number(process.env.BENCH_JOINS_WARMUP ?? 0) || 0);
// "http" (the default): a Follow as Mastodon sends it, HTTP-signed only. "ld":
// through Fedify's sender, which also adds a Linked Data signature the union
// then verifies (a full RDF canonicalisation per Follow).
const followSignatures = process.env.BENCH_JOINS_FOLLOW_SIG === "ld" ? "ld" : "http";
// BENCH_JOINS_PEER=fedify: every GET and POST answered by Fedify (JSON-LD compaction of each actor,
// Fedify's inbox and verifier for each Accept and welcome), as before. By default the peers answer
// as a server not built on Fedify would (Mastodon renders its actors from a serializer and verifies
// with OpenSSL): actor documents from a template Fedify rendered once, deliveries verified with
// Muster's synchronous verifier (federation/inbox-fast-verify.ts, held to Fedify's by differential
// tests) against the union's key; whatever it does not accept goes to Fedify's inbox, which decides.
// Their CPU was more than Muster's own per join on the 2 cores they share (issue 16, joins).
const fedifyPeer = process.env.BENCH_JOINS_PEER === "fedify";
/** Deliveries the synchronous verifier left to Fedify's inbox. */
let fedifyInbox = 0;
const sentAt = new Map<string, number>();
const latencies: number[] = [];
// Per Follow, ms from sending it to the union's 202 (the web's part of a join).
const ackLatencies: number[] = [];
// Wall-clock times, to line up with rows the union wrote (members.joined_at).
const timeline: { follow: string; sent: number; acked?: number; accepted?: number }[] = [];
// The same entries by Follow id: a lookup per 202 and per Accept, not a scan of the timeline.
const timelineOf = new Map<string, (typeof timeline)[number]>();
// One key pair for every actor: key generation is setup, and the union still fetches and verifies each actor's key.
const pair = await generateCryptoKeyPair("RSASSA-PKCS1-v1_5");
const accepted = new Set<string>();
let welcomes = 0;
let actorGets = 0;
let firstSent = 0;
let refused = 0;
let lastAccept = 0;
// While the peers warm themselves up (below), deliveries are checked against their own key, not the union's.
let selfCheck: { key: CryptographicKey; group: Group } | undefined;

const peers = await Promise.all(Array.from({ length: servers }, async () => {
  const server = createServer();
  const origin = await listenOnLoopback(server);
  const federation = createFederation<void>({ kv: new MemoryKvStore(), origin: origin.href, allowPrivateAddress: true });
  federation.setActorDispatcher("/users/{identifier}", async (ctx, identifier) => {
    const keys = await ctx.getActorKeyPairs(identifier);
    return new Person({
      id: ctx.getActorUri(identifier),
      preferredUsername: identifier,
      name: identifier,
      inbox: ctx.getInboxUri(identifier),
      endpoints: new Endpoints({ sharedInbox: ctx.getInboxUri() }),
      publicKey: keys[0]?.cryptographicKey,
      manuallyApprovesFollowers: false,
    });
  }).setKeyPairsDispatcher(() => [pair]);
  federation.setInboxListeners("/users/{identifier}/inbox", "/inbox")
    .on(Accept, (_ctx, a) => {
      const id = a.objectId?.href;
      if (id) accept(id);
    })
    .on(Create, () => void welcomes++);
  const ctx = federation.createContext(origin, undefined);
  const group = await ctx.lookupObject(unionUrl) as Group;
  const unionKey = await group.getPublicKey();
  // An actor document as Fedify renders it, with the name swapped in (the same bytes Fedify would serve).
  const TEMPLATE = "tmplzz";
  const template = await (await federation.fetch(new Request(new URL(`/users/${TEMPLATE}`, origin), { headers: { Accept: "application/activity+json" } }), { contextData: undefined })).text();
  server.on("request", async (req, res) => {
    if (req.method === "GET" && req.url?.startsWith("/users/")) actorGets++;
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    if (!fedifyPeer && req.method === "GET" && /^\/users\/a[0-9]+$/.test(req.url ?? "")) {
      res.writeHead(200, { "content-type": "application/activity+json", vary: "Accept" });
      res.end(template.replaceAll(TEMPLATE, req.url!.slice("/users/".length)));
      return;
    }
    if (!fedifyPeer && req.method === "POST" && unionKey && fastDelivery(req, origin, Buffer.concat(chunks), selfCheck?.key ?? unionKey, selfCheck?.group ?? group)) {
      res.writeHead(202).end();
      return;
    }
    if (req.method === "POST") fedifyInbox++;
    const response = await federation.fetch(new Request(new URL(req.url ?? "/", origin), {
      method: req.method,
      headers: req.headers as Record<string, string>,
      body: req.method === "GET" || req.method === "HEAD" ? undefined : Buffer.concat(chunks),
    }), { contextData: undefined });
    res.writeHead(response.status, Object.fromEntries(response.headers));
    res.end(Buffer.from(await response.arrayBuffer()));
  });
  return { server, origin, ctx, group };
}));

/** A delivery from the union, if Muster's synchronous verifier accepts its signature with the union's key: counted, true. */
function fastDelivery(req: IncomingMessage, origin: URL, body: Buffer, key: CryptographicKey, group: Group): boolean {
  const header = (name: string) => {
    const v = req.headers[name.toLowerCase()];
    return typeof v === "string" ? v : null;
  };
  const request = { method: req.method ?? "", url: new URL(req.url ?? "/", origin).href, headers: { get: header, has: (n: string) => header(n) !== null } } as unknown as Request;
  const claim = claimSignature(request, body, Date.now(), 3_600_000);
  if (!claim || claim.keyId.href !== key.id?.href || !claim.check(key)) return false;
  let activity: { type?: unknown; actor?: unknown; object?: unknown };
  try {
    activity = JSON.parse(body.toString("utf8")) as typeof activity;
  } catch {
    return false;
  }
  // The signer must be the activity's actor, as Fedify's inbox checks.
  if (activity.actor !== group.id?.href || key.ownerId?.href !== group.id?.href) return false;
  if (activity.type === "Accept") {
    const object = activity.object as { id?: unknown } | string | undefined;
    const id = typeof object === "string" ? object : object?.id;
    if (typeof id !== "string") return false;
    accept(id);
    return true;
  }
  if (activity.type === "Create") {
    welcomes++;
    return true;
  }
  return false;
}

/** Forgets what a warm-up (the peers' own, or the union's warm-up joins) counted: the window reports only its own. */
function resetCounts(): void {
  accepted.clear();
  welcomes = 0;
  actorGets = 0;
  refused = 0;
  lastAccept = 0;
  latencies.length = 0;
  ackLatencies.length = 0;
  timeline.length = 0;
  timelineOf.clear();
}

function accept(id: string): void {
  if (accepted.has(id)) return;
  accepted.add(id);
  lastAccept = performance.now();
  const sent = sentAt.get(id);
  if (sent !== undefined) latencies.push(lastAccept - sent);
  const t = timelineOf.get(id);
  if (t) t.accepted = Date.now();
}

/** A Follow POST as signed before the timed window: its inbox, headers (the draft-cavage Signature among them) and body. */
interface SignedFollow {
  readonly inbox: URL;
  readonly headers: Record<string, string>;
  readonly body: Buffer;
}

/** Signs `body` for `inbox` with a draft-cavage HTTP signature and nothing else, as Mastodon sends a Follow. */
async function signFollow(inbox: URL, body: object, actor: URL): Promise<SignedFollow> {
  const request = await signRequest(new Request(inbox, {
    method: "POST",
    headers: { "Content-Type": "application/activity+json", Accept: "application/activity+json" },
    body: JSON.stringify(body),
  }), pair.privateKey, new URL(`${actor.href}#main-key`), { spec: "draft-cavage-http-signatures-12" });
  return { inbox, headers: Object.fromEntries(request.headers), body: Buffer.from(await request.arrayBuffer()) };
}

// Kept-alive connections to the union, as a server's delivery workers keep them (Mastodon's HTTP pool).
const agent = new Agent({ keepAlive: true, maxSockets: concurrency });

/** POSTs a signed Follow over a kept-alive connection; throws unless the union answers 2xx. */
function postSigned(follow: SignedFollow, name: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(follow.inbox, { method: "POST", agent, headers: { ...follow.headers, "content-length": String(follow.body.length) } }, (res) => {
      res.resume();
      res.on("end", () => (res.statusCode! >= 200 && res.statusCode! < 300 ? resolve() : reject(new Error(`the union answered ${res.statusCode} to the Follow of ${name}`))));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(follow.body);
  });
}

// Every Follow is built and RSA-signed before the timed window (BENCH_JOINS_PEER_SIGN_LIVE=1 signs each as it is sent, as before):
// a real server signs its own Follows too, but that is the peers' CPU, not the union's, and both share the 2 cores.
// The Date header stays within the union's signature window (an hour).
const signLive = Boolean(process.env.BENCH_JOINS_PEER_SIGN_LIVE) || followSignatures === "ld" || intervalMs > 0;
function followOf(i: number) {
  const p = peers[Math.abs(i) % servers]!;
  // Warm-up people (i < 0) are w1, w2, ...; the timed ones a0, a1, ...
  const name = i < 0 ? `w${-i}` : `a${i}`;
  const actor = p.ctx.getActorUri(name);
  const json = { "@context": "https://www.w3.org/ns/activitystreams", id: new URL(`/follows/${name}`, p.origin).href, type: "Follow", actor: actor.href, object: p.group.id!.href };
  return { p, name, actor, json };
}
const presigned: SignedFollow[] = [];
const presignStarted = performance.now();
if (!signLive) {
  for (let i = 0; i < total; i++) {
    const { p, actor, json } = followOf(i);
    presigned.push(await signFollow(p.group.inboxId!, json, actor));
  }
}
const presignMs = performance.now() - presignStarted;

// The peers warm themselves up before the timed window, without the union: a
// fresh process's first requests run its code cold (V8 compiling and tiering
// up its HTTP server and client, the actor template, the verifier), and that
// CPU, on the 2 cores the union shares, is the bench's, not the union's. Each
// peer serves actor GETs to itself and verifies Accepts and welcomes it signs
// itself, up to as many as the window will see (BENCH_JOINS_PEER_WARMUP=P; the
// joins bench asks for 300, the other benches that fork these peers for none,
// as before). Nothing of it reaches the union; every count is reset after.
const peerWarmup = Math.min(total, Math.max(0, Number(process.env.BENCH_JOINS_PEER_WARMUP ?? 0) || 0));
let peerWarmupMs = 0;
if (!fedifyPeer && peerWarmup > 0) {
  const started = performance.now();
  const self = peers[0]!;
  const selfActor = new URL("/users/selfcheck", self.origin);
  selfCheck = { key: new CryptographicKey({ id: new URL(`${selfActor.href}#main-key`), owner: selfActor, publicKey: pair.publicKey }), group: { id: selfActor } as Group };
  const deliveries: SignedFollow[] = [];
  for (let i = 0; i < peerWarmup; i++) {
    const p = peers[i % servers]!;
    const inbox = new URL(`/users/a${total + i}/inbox`, p.origin);
    const follow = new URL(`/follows/selfcheck${i}`, p.origin).href;
    deliveries.push(await signFollow(inbox, { "@context": "https://www.w3.org/ns/activitystreams", id: `${follow}#accept`, type: "Accept", actor: selfActor.href, object: { id: follow, type: "Follow" } }, selfActor));
    deliveries.push(await signFollow(inbox, { "@context": "https://www.w3.org/ns/activitystreams", id: `${follow}#welcome`, type: "Create", actor: selfActor.href, object: { type: "Note", content: "welcome" } }, selfActor));
  }
  const get = (url: URL) => new Promise<void>((resolve, reject) => {
    httpRequest(url, { agent, headers: { accept: "application/activity+json" } }, (res) => {
      res.resume();
      res.on("end", () => (res.statusCode === 200 ? resolve() : reject(new Error(`peer warm-up GET ${url.pathname}: ${res.statusCode}`))));
    }).on("error", reject).end();
  });
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < peerWarmup) {
      const i = next++;
      await get(new URL(`/users/a${total + i}`, peers[i % servers]!.origin));
      await postSigned(deliveries[2 * i]!, `self-check ${i}`);
      await postSigned(deliveries[2 * i + 1]!, `self-check ${i}`);
    }
  }));
  if (accepted.size !== peerWarmup || welcomes !== peerWarmup || fedifyInbox !== 0) throw new Error(`peer warm-up: ${accepted.size} Accepts and ${welcomes} welcomes of ${peerWarmup} verified, ${fedifyInbox} left to Fedify's inbox`);
  selfCheck = undefined;
  resetCounts();
  peerWarmupMs = performance.now() - started;
}

const warmSigned: SignedFollow[] = [];
for (let i = 1; i <= warmup; i++) {
  const { p, actor, json } = followOf(-i);
  warmSigned.push(await signFollow(p.group.inboxId!, json, actor));
}

process.send!({ ready: true, followSignatures, presigned: !signLive, presignMs, peerWarmup: fedifyPeer ? 0 : peerWarmup, peerWarmupMs });
if (warmup > 0) {
  // "warm": the warm-up joins, 32 at a time, then every one's Accept; nothing of them is reported.
  await new Promise((r) => process.once("message", r));
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < warmup) {
      const i = next++;
      await postSigned(warmSigned[i]!, `w${i + 1}`).catch(() => {});
    }
  }));
  const until = Date.now() + 120_000;
  while ((accepted.size < warmup || welcomes < warmup) && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  resetCounts();
  process.send!({ warmed: warmup });
}
process.once("message", async () => {
  firstSent = performance.now();
  const cpu = process.cpuUsage();
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < total) {
      const i = next++;
      if (intervalMs > 0) {
        const due = firstSent + i * intervalMs;
        if (due > performance.now()) await new Promise((r) => setTimeout(r, due - performance.now()));
      }
      const { p, name, actor, json } = followOf(i);
      sentAt.set(json.id, performance.now());
      const entry = { follow: json.id, sent: Date.now() };
      timeline.push(entry);
      timelineOf.set(json.id, entry);
      // A refused POST (the union could not fetch the key in time on a loaded machine) is sent again, as a server would.
      for (let attempt = 1; ; attempt++) {
        try {
          if (followSignatures === "ld") await p.ctx.sendActivity({ identifier: name }, p.group, new Follow({ id: new URL(json.id), actor, object: p.group.id }), { immediate: true });
          // A re-sent Follow is signed again (a new Date), as a server's retry would be.
          else await postSigned(attempt === 1 && presigned[i] ? presigned[i] : await signFollow(p.group.inboxId!, json, actor), name);
          ackLatencies.push(performance.now() - sentAt.get(json.id)!);
          const t = timelineOf.get(json.id);
          if (t) t.acked = Date.now();
          break;
        } catch (error) {
          refused++;
          if (attempt >= 3) {
            process.stderr.write(`Follow ${name} refused ${attempt} times: ${(error as Error).message}\n`);
            break;
          }
        }
      }
    }
  }));
  const sentMs = performance.now() - firstSent;
  // BENCH_JOINS_NO_ACCEPTS: the union runs no queue (its request path alone is measured); nothing will arrive.
  const until = Date.now() + (process.env.BENCH_JOINS_NO_ACCEPTS ? 0 : 180_000);
  while (accepted.size < total && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
  const used = process.cpuUsage(cpu);
  process.send!({ accepted: accepted.size, welcomes, actorGets, refused, sentMs, ms: lastAccept - firstSent, latencies, ackLatencies, timeline, cpuMs: (used.user + used.system) / 1000, fedifyInbox });
  agent.destroy();
  for (const p of peers) p.server.close();
  setTimeout(() => process.exit(0), 200).unref();
});
