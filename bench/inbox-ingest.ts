import { fork } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { HttpMessageSignaturesSpec } from "@fedify/fedify";
import { type Activity, Create, Like, Note } from "@fedify/vocab";
import { actionNoteId } from "../federation/action-note.ts";
import { composeAction } from "../src/actions/actions.ts";
import { createProposal, type Proposal } from "../src/bylaws/proposals.ts";
import { findMemberByActor, OPERATOR } from "../src/members/members.ts";
import type { Union } from "../src/unions/unions.ts";
import type { DialectCase } from "../test/helpers/databases.ts";
import { makeUnion, startMuster, type TestMuster } from "../test/helpers/muster.ts";
import { type Peer, startPeer } from "../test/helpers/peer.ts";
import { joinAsRemoteMember } from "../test/helpers/remote-member.ts";
import { type Benchmark, cpuMs, loadAverage, mib, percentile, perSecond, pool, progress, type Row, startProfile, trackPeakRss, waitFor } from "./lib.ts";

const ACTORS = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"];
const CONCURRENCY = 16;
const TALLY_WINDOW_MS = 3_600_000;
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
    "counted: action_responses rows a reply+like round wrote (must be 3 per reply-and-like pair: comment + commitment, commitment), or ballot rows a vote round wrote (one per chosen option: n single-choice votes, n anyOf Creates, 2n for GoToSocial's two Notes per Create)",
    "load: the 1-, 5- and 15-minute load averages at the end of the round (the bench's client and Muster share the cores with anything else running)",
    "signatures (BENCH_INBOX_SIGNATURES, default cavage,rfc9421): the schemes the reply+like rounds are signed with, each its own round",
    `votes (BENCH_INBOX_SHAPES, default responses,vote,vote-anyof,vote-gts): poll answers to the union's open proposals from the same member actors, one ballot per actor per proposal, signed with draft-cavage as Mastodon and GoToSocial sign, half to each inbox: Mastodon single choice (one Create(Note name=option)); Mastodon anyOf (one Create per chosen option, 2 per ballot, to an election); GoToSocial (one Create whose object is 2 Notes). Each is checked by castVote (membership, open, option, repeats), written with its hash-chain entry and the running tally's intent; that intent's Update (once per ${TALLY_WINDOW_MS / 60_000} min window per open vote here, instead of 5 s: this bench has one proposal per ${ACTORS.length} ballots where a real vote has thousands per window) falls outside the measurement`,
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
  const shapes = (process.env.BENCH_INBOX_SHAPES ?? "responses,vote,vote-anyof,vote-gts").split(",").map((p) => p.trim()).filter(Boolean);
  const tdb = await dialect.create();
  let m: TestMuster | undefined;
  let peer: Peer | undefined;
  try {
    // The queue polls at its production default (the test harness polls every 50 ms, which costs the idle lanes' CPU twentyfold).
    // The running tally's window is set past the run: its Update goes out once per window per open vote, which
    // a real vote spreads over thousands of ballots, and this bench opens one proposal per 8 of them.
    m = await startMuster(tdb, { env: { MUSTER_TALLY_BATCH_MS: String(TALLY_WINDOW_MS) }, muster: { fastInbox: fast, queue: { pollIntervalMs: 1000 } } });
    peer = await startPeer(ACTORS);
    const peerRequests = countRequests(peer);
    const union = await makeUnion(m, "riders", { joinPolicy: "open" });
    await joinAll(m, union, peer);
    const action = await composeAction(m.muster.membership, union.id, OPERATOR, { title: "Sign the petition", text: "Reply *I'm in* or like this.", kind: "sign" }, { publishNow: true });
    const target = actionNoteId(m.origin, union, action.id);
    const ballots = await openProposals(m, union, peer, shapes, n);
    // Their Questions' fan-out (JSON-LD, signing) is done before anything is measured (what waits for a later time stays).
    const db = m.muster.database.db;
    let queued = -1;
    await waitFor(`${dialect.name}: proposals delivered`, async () => {
      queued = Number((await db.selectFrom("fedify_mq").select((e) => e.fn.countAll().as("n")).where("available_at", "<=", Date.now()).executeTakeFirstOrThrow()).n);
      return queued === 0;
    }, () => `${queued} deliveries queued`);
    // Not reported: warms the JIT and lazily loaded code, and caches each actor's key.
    await ingest(m, peer, await presign(m, peer, target, SPECS[0]!.spec, "warmup", 2 * ACTORS.length), responsesOf(m, peer, "warmup"), "warmup");
    const rows: Row[] = [];
    const measure = async (label: string, spec: (typeof SPECS)[number], posts: SignedPost[], count: Counter) => {
      const before = peerRequests.count;
      const row = await ingest(m!, peer!, posts, count, `${label}-${spec.round}`.replace(/\W+/g, "-"));
      rows.push({ dialect: dialect.name, path: fast ? "fast" : "Fedify", shape: label, signature: spec.label, ...row, "peer GETs": peerRequests.count - before });
    };
    const signatures = (process.env.BENCH_INBOX_SIGNATURES ?? "cavage,rfc9421").split(",").map((p) => p.trim()).filter(Boolean);
    for (const s of shapes.includes("responses") ? SPECS.filter((x) => signatures.includes(x.round)) : []) {
      const signStart = performance.now();
      const posts = await presign(m, peer, target, s.spec, s.round, n);
      progress(`${dialect.name}: signed ${n} activities (${s.label}) in ${((performance.now() - signStart) / 1000).toFixed(1)} s`);
      await measure("reply+like", s, posts, responsesOf(m, peer, s.round));
    }
    for (const shape of VOTE_SHAPES) {
      const open = ballots.get(shape.name);
      if (!open) continue;
      const s = SPECS[0]!; // Mastodon, GoToSocial and Misskey sign with draft-cavage
      const posts = await presignVotes(m, peer, shape, open, s.spec, n);
      await measure(shape.label, s, posts, ballotsOf(m, posts, open));
    }
    return rows;
  } finally {
    await m?.stop();
    await peer?.close();
    await tdb.destroy();
  }
}

interface VoteShape {
  readonly name: string;
  readonly label: string;
  /** Options chosen per ballot, and Creates that carry them (Mastodon: one per option; GoToSocial: one with every Note). */
  readonly options: number;
  readonly createsPerBallot: number;
}

const VOTE_SHAPES: readonly VoteShape[] = [
  { name: "vote", label: "vote (Mastodon, one choice)", options: 1, createsPerBallot: 1 },
  { name: "vote-anyof", label: "vote (Mastodon anyOf, 2 Creates)", options: 2, createsPerBallot: 2 },
  { name: "vote-gts", label: "vote (GoToSocial, 2 Notes in 1 Create)", options: 2, createsPerBallot: 1 },
];

/** Enough open proposals for n vote activities from the peer's actors (one ballot per actor per proposal): single-choice resolutions, or elections between two peer members (multiple choice). */
async function openProposals(m: TestMuster, union: Union, peer: Peer, shapes: readonly string[], n: number): Promise<Map<string, Proposal[]>> {
  const out = new Map<string, Proposal[]>();
  const candidates: string[] = [];
  for (const name of ACTORS.slice(0, 2)) candidates.push((await findMemberByActor(m.muster.database.db, union.id, peer.actorId(name).href))!.id);
  for (const shape of VOTE_SHAPES) {
    if (!shapes.includes(shape.name)) continue;
    const count = Math.ceil(n / shape.createsPerBallot / ACTORS.length);
    const open: Proposal[] = [];
    for (let i = 0; i < count; i++) {
      open.push(await createProposal(m.muster.membership, union.id, OPERATOR, shape.options === 1
        ? { kind: "resolution", title: `Motion ${shape.name} ${i}`, closesAt: new Date(Date.now() + 3600_000) }
        : { kind: "election", title: `Election ${shape.name} ${i}`, role: "officer", candidates, closesAt: new Date(Date.now() + 3600_000) }));
    }
    out.set(shape.name, open);
  }
  // A ballot counts only from a member who joined before the vote opened (same millisecond included).
  await new Promise((r) => setTimeout(r, 5));
  return out;
}

/** n vote activities, as Mastodon and GoToSocial write them (plain JSON, the ActivityStreams context alone), to the union's inbox and the shared one by turns. */
async function presignVotes(m: TestMuster, peer: Peer, shape: VoteShape, open: readonly Proposal[], spec: HttpMessageSignaturesSpec, n: number): Promise<SignedPost[]> {
  const unionActor = new URL("/u/riders", m.origin).href;
  const inboxes = [new URL("/u/riders/inbox", m.origin), new URL("/inbox", m.origin)];
  const posts: SignedPost[] = new Array(n);
  await pool(n, 8, async (i) => {
    const ballot = Math.floor(i / shape.createsPerBallot);
    const as = ACTORS[ballot % ACTORS.length]!;
    const p = open[Math.floor(ballot / ACTORS.length)]!;
    const actor = peer.actorId(as).href;
    const question = new URL(`/u/riders/proposals/${p.id}`, m.origin).href;
    const note = (id: string, name: string) => ({ attributedTo: actor, id, inReplyTo: question, name, to: unionActor, type: "Note" });
    let doc: Record<string, unknown>;
    if (shape.name === "vote-gts") {
      const ulid = `01HEN2R65468ZG657C4Z${String(p.number).padStart(6, "0")}`;
      doc = { "@context": "https://www.w3.org/ns/activitystreams", actor, id: `${actor}/activity#vote/${question}`, object: p.options.slice(0, shape.options).map((o, k) => note(`${actor}#${ulid}/votes/${k + 1}`, o)), published: new Date().toISOString(), to: unionActor, type: "Create" };
    } else {
      const k = i % shape.createsPerBallot;
      const option = shape.options === 1 ? p.options[ballot % 3 === 0 ? 1 : 0]! : p.options[k]!;
      const vote = `${actor}#votes/${p.number}${shape.createsPerBallot > 1 ? `-${k}` : ""}`;
      doc = { "@context": "https://www.w3.org/ns/activitystreams", id: `${vote}/activity`, to: unionActor, actor, type: "Create", object: note(vote, option) };
    }
    const body = JSON.stringify(doc);
    const url = inboxes[i % 2]!;
    const req = await peer.signedPost(url, body, { as, spec });
    posts[i] = { url, headers: req.headers, body };
  });
  return posts;
}

/** What a round wrote: activities recorded and what they were counted as. */
type Counter = () => Promise<{ recorded: number; counted: number; countedAs: string }>;

function responsesOf(m: TestMuster, peer: Peer, round: string): Counter {
  const db = m.muster.database.db;
  return async () => {
    const recorded = await db.selectFrom("inbox_activities").select((e) => e.fn.countAll().as("n"))
      .where("id", "like", `${new URL(`/activities/${round}/`, peer.origin).href}%`).executeTakeFirstOrThrow();
    const responses = await db.selectFrom("action_responses").select((e) => e.fn.countAll().as("n"))
      .where("source_id", "like", `${new URL(`/`, peer.origin).href}%/${round}/%`).executeTakeFirstOrThrow();
    return { recorded: Number(recorded.n), counted: Number(responses.n), countedAs: "responses" };
  };
}

function ballotsOf(m: TestMuster, posts: readonly SignedPost[], open: readonly Proposal[]): Counter {
  const db = m.muster.database.db;
  const ids = open.map((p) => p.id);
  const activities = posts.map((p) => (JSON.parse(p.body) as { id: string }).id);
  return async () => {
    let recorded = 0;
    for (let i = 0; i < activities.length; i += 500) {
      const r = await db.selectFrom("inbox_activities").select((e) => e.fn.countAll().as("n")).where("id", "in", activities.slice(i, i + 500)).executeTakeFirstOrThrow();
      recorded += Number(r.n);
    }
    const ballots = await db.selectFrom("ballots").select((e) => e.fn.countAll().as("n")).where("proposal_id", "in", ids).executeTakeFirstOrThrow();
    return { recorded, counted: Number(ballots.n), countedAs: "ballots" };
  };
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

async function ingest(m: TestMuster, peer: Peer, posts: readonly SignedPost[], count: Counter, round = "measured"): Promise<Row> {
  const db = m.muster.database.db;
  // The inbox lane: a vote also queues the running tally's Update for the end of its window, which is not ingesting.
  const queued = async () => Number((await db.selectFrom("fedify_mq").select((e) => e.fn.countAll().as("n")).where("queue", "=", "inbox").executeTakeFirstOrThrow()).n);
  let processed = 0;
  const onReceived = () => processed++;
  m.muster.events.on("activity.received", onReceived);
  try {
    const sent = await send(posts);
    const rss = trackPeakRss();
    const cpu = process.cpuUsage();
    const start = performance.now();
    const profile = round === "warmup" ? undefined : await startProfile(`inbox-${round}`);
    const client = await sent.go();
    const httpMs = client.ms;
    const accepted = client.statuses["202"] ?? 0;
    progress(`${m.muster.config.dialect}: ${accepted}/${posts.length} accepted in ${(httpMs / 1000).toFixed(1)} s; waiting for the worker`);
    await waitFor(`${m.muster.config.dialect}: inbox processing`, async () => processed >= accepted && (await queued()) === 0, () => `${processed}/${accepted} processed`);
    const totalMs = performance.now() - start;
    await profile?.stop();
    const cpuTotal = cpuMs(cpu);
    const peak = rss.stop();
    const counted = await count();
    return {
      N: posts.length,
      C: CONCURRENCY,
      "202 req/s": perSecond(accepted, httpMs),
      "p50 ms": percentile(client.latencies, 50),
      "p99 ms": percentile(client.latencies, 99),
      "processed/s": perSecond(counted.recorded, totalMs),
      "server CPU ms/act": cpuTotal / posts.length,
      "client CPU ms/act": client.cpuMs / posts.length,
      "peak RSS MiB": mib(peak),
      "non-202": Object.entries(client.statuses).filter(([st]) => st !== "202").map(([st, k]) => `${k}×${st}`).join(" ") || "0",
      recorded: counted.recorded,
      counted: `${counted.counted} ${counted.countedAs}`,
      // Issue 16: every figure with the load it was measured under (the header's is the run's start).
      load: loadAverage().replace(/^load average /, ""),
    };
  } finally {
    m.muster.events.off("activity.received", onReceived);
  }
}
