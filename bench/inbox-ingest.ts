import { fork } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { HttpMessageSignaturesSpec } from "@fedify/fedify";
import { type Activity, Create, Like, Note } from "@fedify/vocab";
import { actionNoteId } from "../federation/action-note.ts";
import { composeAction } from "../src/actions/actions.ts";
import { OPERATOR } from "../src/members/members.ts";
import type { Union } from "../src/unions/unions.ts";
import type { DialectCase } from "../test/helpers/databases.ts";
import { makeUnion, startMuster, type TestMuster } from "../test/helpers/muster.ts";
import { type Peer, startPeer } from "../test/helpers/peer.ts";
import { joinAsRemoteMember } from "../test/helpers/remote-member.ts";
import { type Benchmark, cpuMs, mib, percentile, perSecond, pool, progress, type Row, trackPeakRss, waitFor } from "./lib.ts";

const ACTORS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"];
const CONCURRENCY = 16;
const SPECS: readonly { spec: HttpMessageSignaturesSpec; label: string; round: string }[] = [
  { spec: "draft-cavage-http-signatures-12", label: "draft-cavage", round: "cavage" },
  { spec: "rfc9421", label: "RFC 9421", round: "rfc9421" },
];

interface SignedPost {
  readonly url: URL;
  readonly headers: Headers;
  readonly body: string;
}

export const inboxIngest: Benchmark = {
  name: "inbox-ingest",
  title: "Inbox ingest: members' signed replies and likes to a call-to-action, through the fast path or the queue, into responses",
  summary: "pre-signed replies (Create(Note) inReplyTo the call) and Likes of it, to the union and shared inboxes, through the fast path and through Fedify's; HTTP 202 rate and end-to-end rate",
  notes: [
    `activities from ${ACTORS.length} peer actors who are members, alternating a reply to the published call-to-action ("I'm in, see you there": a comment and a commitment) and a Like of it (a commitment); half to /u/riders/inbox and half to /inbox; POSTed ${CONCURRENCY} at a time`,
    "202 req/s: the HTTP phase only (verify signature, then count (fast path) or enqueue (Fedify), answer 202); p50/p99 are its request latencies",
    "processed/s: first POST until every activity is a row in inbox_activities and fedify_mq is empty; one in-process worker at Muster's default queue concurrency (16) and poll interval (1 s; in-process enqueues wake it at once), running while the POSTs arrive",
    "responses: action_responses rows the round wrote (must be 3 per reply-and-like pair: comment + commitment, commitment)",
    "path: fast = the inbox's fast path (federation/inbox-fast-path.ts) takes what it recognises, Fedify = every POST through Fedify, the queue and the listeners (the code before it, MusterOptions.fastInbox false); run one after the other on fresh servers (BENCH_INBOX_PATHS=fast,fedify)",
    "server CPU ms/act: the bench process (Muster server, its worker, and the idle peer server) per activity; the sender is a separate process (bench/inbox-client.ts, raw keep-alive sockets) with its own CPU column; signing happens before the clock starts",
    `peer GETs: requests Muster made to the peer while ingesting (key fetches for verification, actor fetches by the inbox listener); both rounds follow an unreported warm-up round of ${2 * ACTORS.length} activities on the same server, so keys are already cached`,
  ],
  async run(dialect: DialectCase, { quick }): Promise<Row[]> {
    const rows: Row[] = [];
    const paths = (process.env.BENCH_INBOX_PATHS ?? "fast,fedify").split(",").map((p) => p.trim()).filter(Boolean);
    for (const p of paths) rows.push(...await runPath(dialect, quick, p === "fast"));
    return rows;
  },
};

async function runPath(dialect: DialectCase, quick: boolean, fast: boolean): Promise<Row[]> {
  const n = Number(process.env.BENCH_INBOX_N ?? (quick ? 400 : 2000));
  const tdb = await dialect.create();
  let m: TestMuster | undefined;
  let peer: Peer | undefined;
  try {
    // The queue polls at its production default (the test harness polls every 50 ms, which costs the idle lanes' CPU twentyfold).
    m = await startMuster(tdb, { muster: { fastInbox: fast, queue: { pollIntervalMs: 1000 } } });
    peer = await startPeer(ACTORS);
    const peerRequests = countRequests(peer);
    const union = await makeUnion(m, "riders", { joinPolicy: "open" });
    await joinAll(m, union, peer);
    const action = await composeAction(m.muster.membership, union.id, OPERATOR, { title: "Sign the petition", text: "Reply *I'm in* or like this.", kind: "sign" }, { publishNow: true });
    const target = actionNoteId(m.origin, union, action.id);
    // Not reported: warms the JIT and lazily loaded code, and caches each actor's key.
    await ingest(m, peer, await presign(m, peer, target, SPECS[0]!.spec, "warmup", 2 * ACTORS.length), "warmup");
    const rows: Row[] = [];
    for (const s of SPECS) {
      const signStart = performance.now();
      const posts = await presign(m, peer, target, s.spec, s.round, n);
      progress(`${dialect.name}: signed ${n} activities (${s.label}) in ${((performance.now() - signStart) / 1000).toFixed(1)} s`);
      const before = peerRequests.count;
      const row = await ingest(m, peer, posts, s.round);
      rows.push({ dialect: dialect.name, path: fast ? "fast" : "Fedify", signature: s.label, ...row, "peer GETs": peerRequests.count - before });
    }
    return rows;
  } finally {
    await m?.stop();
    await peer?.close();
    await tdb.destroy();
  }
}

/** Counts the requests Muster makes to the peer (key and actor fetches). */
function countRequests(peer: Peer): { count: number } {
  const counter = { count: 0 };
  const fetch = peer.federation.fetch.bind(peer.federation);
  peer.federation.fetch = (request, options) => {
    counter.count++;
    return fetch(request, options);
  };
  return counter;
}

/** Every peer actor joins the (open) union, as its Follow would make it. */
async function joinAll(m: TestMuster, union: Union, peer: Peer): Promise<void> {
  for (const name of ACTORS) await joinAsRemoteMember(m.muster.membership, union.id, peer.origin, name, new URL("/inbox", peer.origin));
}

async function presign(m: TestMuster, peer: Peer, target: URL, spec: HttpMessageSignaturesSpec, round: string, n: number): Promise<SignedPost[]> {
  const union = new URL("/u/riders", m.origin);
  const inboxes = [new URL("/u/riders/inbox", m.origin), new URL("/inbox", m.origin)];
  const posts: SignedPost[] = new Array(n);
  // WebCrypto signs on the libuv thread pool, so a few at a time go faster.
  await pool(n, 8, async (i) => {
    const as = ACTORS[i % ACTORS.length]!;
    const actor = peer.actorId(as);
    const id = new URL(`/activities/${round}/${i}`, peer.origin);
    const activity: Activity = Math.floor(i / 2) % 2 === 0
      ? new Create({
        id,
        actor,
        to: union,
        object: new Note({ id: new URL(`/notes/${round}/${i}`, peer.origin), attribution: actor, to: union, replyTarget: target, content: `<p>I'm in, see you there (${i})</p>` }),
      })
      : new Like({ id, actor, object: target });
    const body = JSON.stringify(await activity.toJsonLd({ format: "compact" }));
    const url = inboxes[i % 2]!;
    const req = await peer.signedPost(url, body, { as, spec });
    posts[i] = { url, headers: req.headers, body };
  });
  return posts;
}

/** With BENCH_CPU_PROFILE=dir, a CPU profile of the bench process over one measured round (the server's side only). */
async function startProfile(round: string): Promise<{ stop(): Promise<void> } | undefined> {
  const dir = process.env.BENCH_CPU_PROFILE;
  if (!dir) return undefined;
  const { Session } = await import("node:inspector/promises");
  const session = new Session();
  session.connect();
  await session.post("Profiler.enable");
  await session.post("Profiler.start");
  return {
    async stop() {
      const { profile } = await session.post("Profiler.stop");
      writeFileSync(path.join(dir, `inbox-${round}-${process.pid}-${Date.now()}.cpuprofile`), JSON.stringify(profile));
      session.disconnect();
    },
  };
}

interface ClientReport {
  readonly cpuMs: number;
  readonly ms: number;
  readonly statuses: Record<string, number>;
  readonly latencies: number[];
}

/** Starts the sender process with the posts; go() sends them all and resolves with its report. */
async function send(posts: readonly SignedPost[]): Promise<{ go(): Promise<ClientReport> }> {
  const dir = mkdtempSync(path.join(tmpdir(), "muster-inbox-bench-"));
  const file = path.join(dir, "posts.json");
  writeFileSync(file, JSON.stringify(posts.map((p) => ({ url: p.url.href, headers: [...p.headers], body: p.body }))));
  const child = fork(fileURLToPath(new URL("./inbox-client.ts", import.meta.url)), [file, String(CONCURRENCY)], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
  await new Promise<void>((resolve, reject) => {
    child.once("message", () => resolve());
    child.once("error", reject);
  });
  return {
    go: () => new Promise<ClientReport>((resolve, reject) => {
      child.once("message", (report) => {
        child.kill();
        rmSync(dir, { recursive: true, force: true });
        resolve(report as ClientReport);
      });
      child.once("exit", (code) => code !== null && code !== 0 && reject(new Error(`inbox client exited with ${code}`)));
      child.send("go");
    }),
  };
}

async function ingest(m: TestMuster, peer: Peer, posts: readonly SignedPost[], round: string): Promise<Row> {
  const db = m.muster.database.db;
  const queued = async () => Number((await db.selectFrom("fedify_mq").select((e) => e.fn.countAll().as("n")).executeTakeFirstOrThrow()).n);
  let processed = 0;
  const onReceived = () => processed++;
  m.muster.events.on("activity.received", onReceived);
  try {
    const sent = await send(posts);
    const rss = trackPeakRss();
    const cpu = process.cpuUsage();
    const start = performance.now();
    const profile = round === "warmup" ? undefined : await startProfile(round);
    const client = await sent.go();
    const httpMs = client.ms;
    const accepted = client.statuses["202"] ?? 0;
    progress(`${m.muster.config.dialect}: ${accepted}/${posts.length} accepted in ${(httpMs / 1000).toFixed(1)} s; waiting for the worker`);
    await waitFor(`${m.muster.config.dialect}: inbox processing`, async () => processed >= accepted && (await queued()) === 0, () => `${processed}/${accepted} processed`);
    const totalMs = performance.now() - start;
    await profile?.stop();
    const cpuTotal = cpuMs(cpu);
    const peak = rss.stop();
    const recorded = await db.selectFrom("inbox_activities")
      .select((e) => e.fn.countAll().as("n"))
      .where("id", "like", `${new URL(`/activities/${round}/`, peer.origin).href}%`)
      .executeTakeFirstOrThrow();
    const responses = await db.selectFrom("action_responses")
      .select((e) => e.fn.countAll().as("n"))
      .where("source_id", "like", `${new URL(`/`, peer.origin).href}%/${round}/%`)
      .executeTakeFirstOrThrow();
    return {
      N: posts.length,
      C: CONCURRENCY,
      "202 req/s": perSecond(accepted, httpMs),
      "p50 ms": percentile(client.latencies, 50),
      "p99 ms": percentile(client.latencies, 99),
      "processed/s": perSecond(Number(recorded.n), totalMs),
      "server CPU ms/act": cpuTotal / posts.length,
      "client CPU ms/act": client.cpuMs / posts.length,
      "peak RSS MiB": mib(peak),
      "non-202": Object.entries(client.statuses).filter(([st]) => st !== "202").map(([st, k]) => `${k}×${st}`).join(" ") || "0",
      recorded: Number(recorded.n),
      responses: Number(responses.n),
    };
  } finally {
    m.muster.events.off("activity.received", onReceived);
  }
}
