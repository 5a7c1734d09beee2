import { fork } from "node:child_process";
import { randomUUID } from "node:crypto";
import { readFileSync, rmSync } from "node:fs";
import { loadavg } from "node:os";
import { createServer, type Server } from "node:http";
import { monitorEventLoopDelay } from "node:perf_hooks";
import { fileURLToPath } from "node:url";
import { Create, Note } from "@fedify/vocab";
import { type Insertable, type Kysely, sql } from "kysely";
import pg from "pg";
import { actionNoteId } from "../federation/action-note.ts";
import { ACTOR_CACHE_MS } from "../federation/inbox-record.ts";
import { composeAction } from "../src/actions/actions.ts";
import { loadConfig } from "../src/config.ts";
import { createMuster, type Muster } from "../src/main.ts";
import { createUnion, type Union } from "../src/unions/unions.ts";
import type { DB, MembersTable, RemoteActorsTable } from "../src/db/schema.ts";
import { followIdOf, OPERATOR, storedFollowId } from "../src/members/members.ts";
import type { DialectCase } from "../test/helpers/databases.ts";
import { makeUnion, startMuster, type TestMuster } from "../test/helpers/muster.ts";
import { ensureStopped, type MusterProcess, spawnMuster } from "../test/helpers/muster-process.ts";
import { type Peer, startPeer } from "../test/helpers/peer.ts";
import { joinAsRemoteMember } from "../test/helpers/remote-member.ts";
import type { PeerReport } from "./joins.ts";
import { type Benchmark, cpuMs, fmt, loadAverage, percentile, pool, progress, type Row, sleep } from "./lib.ts";
import { scaledOutEnv } from "./workers.ts";

/**
 * Issue 16's "never waiting behind a fan-out": a call-to-action is published
 * to a large roster (the fan-out), and while its deliveries drain, people
 * join (signed Follows, answered with an Accept) and members reply to the
 * call (signed Create(Note), counted as responses). What is measured is how
 * long each of those waits: Follow sent → Accept received at the joiner's
 * server, and reply POSTed → its action_responses row exists.
 *
 * Two swarms take the fan-out: "fast" servers answer every POST at once
 * (the fan-out keeps the CPU busy signing), "slow" servers hold every POST
 * for SLOW_MS (the fan-out keeps every delivery handler waiting).
 */

const SWARM_HOSTS = 100;
const SLOW_MS = 2_000;
// One Follow and one reply every TRICKLE_MS: well under what the machine can join per second
// (bench joins), so what is measured is waiting behind the fan-out, not a join backlog of its own.
const TRICKLE_MS = Number(process.env.BENCH_UNDER_FANOUT_EVERY_MS ?? 500);
// Members who reply (BENCH_UNDER_FANOUT_REPLIERS, default 24): each one's first reply is a new committer of
// the call, and none of their keys is cached, so every first reply is a sample of the path a key not yet seen
// takes (24 of the 40 replies of a 20 s run; with the 4 repliers the bench had before, 4 such samples a run set
// the reply p99 alone). The reply rate stays one every TRICKLE_MS; the other replies are repeats.
const REPLIERS = Array.from({ length: Number(process.env.BENCH_UNDER_FANOUT_REPLIERS ?? 24) }, (_, i) => ["alice", "bob", "carol", "dave"][i] ?? `replier${i}`);
// Of them, BENCH_UNDER_FANOUT_STALE (default a quarter) have a cached actor older than ACTOR_CACHE_MS (a day):
// members who last showed up for yesterday's call. Spread evenly through the repliers' order.
const STALE_COUNT = Math.min(REPLIERS.length, Number(process.env.BENCH_UNDER_FANOUT_STALE ?? Math.round(REPLIERS.length / 4)));
const STALE = new Set(REPLIERS.filter((_, i) => Math.floor(((i + 1) * STALE_COUNT) / REPLIERS.length) > Math.floor((i * STALE_COUNT) / REPLIERS.length)));
// A replier's next reply comes at least this many trickle slots after its previous one (4 s at 500 ms), so that a
// repeat is one the first was counted before, not a second copy of the first's path.
const REPEAT_GAP = 8;
const TARGET_MS = 2_000;

export const underFanout: Benchmark = {
  name: "under-fanout",
  title: "Never behind a fan-out: Accept and counted-reply latency while a call-to-action drains",
  summary: "p50/p99 ms from Follow to Accept and from reply POST to counted response while 10^5 deliveries drain (--quick 10^4); target 2 s",
  notes: [
    `the roster (BENCH_UNDER_FANOUT_FOLLOWERS, default 100000, --quick 10000) is bulk-inserted, one personal inbox each, spread over ${SWARM_HOSTS} loopback hosts (127.78.0.x); publishing the call starts the fan-out`,
    `swarm "fast" answers every delivery 202 at once (the fan-out is CPU-bound); "slow" holds each for ${SLOW_MS / 1000} s (every delivery handler is busy waiting)`,
    `one second after publishing, a child process (bench/joins-peer.ts) sends one signed Follow every ${TRICKLE_MS} ms and members send one signed reply every ${TRICKLE_MS} ms (BENCH_UNDER_FANOUT_EVERY_MS), for BENCH_UNDER_FANOUT_SECONDS (default 20, --quick 10)`,
    "Accept ms: Follow sent until its Accept arrived at the joiner's server (signature verified there); reply ms: POST sent until the response row exists (polled every 20 ms)",
    "processes: \"one process\" is Muster inside this process (BENCH_UNDER_FANOUT_MODES=one); \"serve --no-worker + 2 workers\" (PostgreSQL, BENCH_UNDER_FANOUT_MODES=workers) real child processes, the Follows and replies to the web one; CPU s is theirs (this process's for one process)",
    "queued before/after: delivery-lane messages waiting when the trickle started and when it ended (the fan-out must still be draining for the figures to mean anything)",
    `replies come from BENCH_UNDER_FANOUT_REPLIERS members (default 24), none of whose keys is cached; BENCH_UNDER_FANOUT_STALE of them (default a quarter) have a cached actor older than a day (ACTOR_CACHE_MS); each one's first reply is spread through the run, a repeat at least ${(REPEAT_GAP * TRICKLE_MS) / 1000} s after its previous reply`,
    "fast path / Fedify path: each counted reply by what counted it; Fedify's when its queue handler wrote the activity's idempotence key (fedify_kv [_fedify, activityIdempotence, origin, id]), which the web's fast path never writes; cross-checked with whether the response row already existed when the 202 came back (the fast path answers after its commit, Fedify's inbox after enqueueing). n: p50 / p99 / max ms",
    "via Fedify: how many of the first replies of fresh repliers, of stale repliers, and of the repeats went through Fedify's inbox and a worker",
    "load start / end: the 1-minute load average when the trickle started and when the row was made (the 1/5/15 at the end in 'load end')",
    `target: p99 of both under ${TARGET_MS / 1000} s (issue 16)`,
  ],
  async run(dialect: DialectCase, { quick }): Promise<Row[]> {
    const followers = Number(process.env.BENCH_UNDER_FANOUT_FOLLOWERS ?? (quick ? 10_000 : 100_000));
    const seconds = Number(process.env.BENCH_UNDER_FANOUT_SECONDS ?? (quick ? 10 : 20));
    const swarms = (process.env.BENCH_UNDER_FANOUT_SWARMS ?? "fast,slow").split(",").map((s) => s.trim());
    // "one": Muster in this process, as before. "workers" (PostgreSQL only):
    // `muster serve --no-worker` and two `muster worker` child processes.
    const modes = (process.env.BENCH_UNDER_FANOUT_MODES ?? (dialect.name === "postgres" ? "one,workers" : "one")).split(",").map((s) => s.trim());
    const rows: Row[] = [];
    for (const mode of modes) {
      if (mode !== "one" && mode !== "workers") throw new Error(`BENCH_UNDER_FANOUT_MODES takes one and/or workers; got ${mode}`);
      if (mode === "workers" && dialect.name !== "postgres") continue;
      for (const swarm of swarms) {
        if (swarm !== "fast" && swarm !== "slow") throw new Error(`BENCH_UNDER_FANOUT_SWARMS takes fast and/or slow; got ${swarm}`);
        rows.push(mode === "one" ? await runOnce(dialect, swarm, followers, seconds) : await runWorkers(dialect, swarm, followers, seconds));
      }
    }
    return rows;
  },
};

async function runOnce(dialect: DialectCase, swarm: "fast" | "slow", followers: number, seconds: number): Promise<Row> {
  const label = `${dialect.name} ${swarm}`;
  const tdb = await dialect.create();
  let m: TestMuster | undefined;
  let peer: Peer | undefined;
  const swarmServers: Server[] = [];
  try {
    m = await startMuster(tdb);
    const union = await makeUnion(m, "riders", { joinPolicy: "open", leaderHandle: "@lead@leader.invalid" });
    const port = await startSwarm(swarmServers, swarm === "slow" ? SLOW_MS : 0);
    await seedRoster(m.muster.database.db, union.id, port, followers, label);
    peer = await startPeer(REPLIERS);
    for (const name of REPLIERS) await joinAsRemoteMember(m.muster.membership, union.id, peer.origin, name, new URL("/inbox", peer.origin));
    await prepareRepliers(m.muster.database.db, dialect, peer, label);
    const cpu = process.cpuUsage();
    // How late this process's event loop ran (Muster, the replies' poller and the repliers' server share it).
    const lag = monitorEventLoopDelay({ resolution: 10 });
    lag.enable();
    const measured = await measure(label, { origin: m.origin, muster: m.muster, databaseUrl: tdb.url }, m.muster, union, peer, seconds);
    lag.disable();
    return row(dialect, "one process", swarm, followers, measured, { "CPU s": cpuMs(cpu) / 1000, "loop lag p99/max ms": `${(lag.percentile(99) / 1e6).toFixed(0)} / ${(lag.max / 1e6).toFixed(0)}` });
  } finally {
    await m?.stop();
    await peer?.close();
    await Promise.all(swarmServers.map((s) => new Promise((r) => s.close(r))));
    await tdb.destroy();
  }
}

const CLK_TCK = 100;
/** user + system CPU of a process so far, ms (Linux). */
function cpuOfPid(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
}

/**
 * The same measurement with `muster serve --no-worker` and two `muster
 * worker` child processes on one PostgreSQL database (issue 16's "PostgreSQL
 * at scale"): the Follows and replies go to the web process, the fan-out
 * and the Accepts are the workers'. The union, roster and repliers are set
 * up, and the call published, through a Muster opened here without queue
 * handlers (as the CLI opens one), on the same database and origin.
 */
async function runWorkers(dialect: DialectCase, swarm: "fast" | "slow", followers: number, seconds: number): Promise<Row> {
  const label = `${dialect.name} workers ${swarm}`;
  const tdb = await dialect.create();
  const { env, dataDir, origin } = await scaledOutEnv(tdb.url, "under-fanout", process.env.BENCH_UNDER_FANOUT_LOG_LEVEL);
  const procs: MusterProcess[] = [];
  let local: Muster | undefined;
  let peer: Peer | undefined;
  const swarmServers: Server[] = [];
  try {
    const web = spawnMuster(["serve", "--no-worker"], env);
    procs.push(web);
    await web.waitFor(/queue workers: none in this process/, "serve --no-worker is listening");
    local = await createMuster(loadConfig({ ...env, LOG_LEVEL: "error" }), { runsQueue: false, migrate: false });
    const union = await createUnion(local.unions, { slug: "riders", name: "Riders United", purpose: "Fair pay for delivery riders", joinPolicy: "open", leaderHandle: "@lead@leader.invalid" });
    const swarmPort = await startSwarm(swarmServers, swarm === "slow" ? SLOW_MS : 0);
    await seedRoster(local.database.db, union.id, swarmPort, followers, label);
    peer = await startPeer(REPLIERS);
    for (const name of REPLIERS) await joinAsRemoteMember(local.membership, union.id, peer.origin, name, new URL("/inbox", peer.origin));
    await prepareRepliers(local.database.db, dialect, peer, label);
    for (let i = 0; i < 2; i++) procs.push(spawnMuster(["worker"], env));
    await Promise.all(procs.slice(1).map((w) => w.waitFor(/Muster worker started \(postgres\)/, `worker ${w.pid} started`)));
    const cpu = procs.map((p) => cpuOfPid(p.pid));
    // The trace counts only what was logged from here (the repliers' joins were answered at start-up).
    const mark = procs.map((p) => p.output().length);
    const measured = await measure(label, { origin, muster: local, databaseUrl: tdb.url }, local, union, peer, seconds);
    const used = procs.map((p, i) => cpuOfPid(p.pid) - cpu[i]!);
    const logs = procs.map((p) => p.output()).join("\n");
    if (process.env.BENCH_UNDER_FANOUT_VERBOSE) for (const line of logs.split("\n").filter((l) => / (WRN|ERR) /.test(l) && !l.includes("TRACE")).slice(0, 30)) progress(line.slice(0, 400));
    if (process.env.MUSTER_QUEUE_TRACE === "1") traceSummary(procs.map((p, i) => p.output().slice(mark[i])).join("\n"));
    return row(dialect, "serve --no-worker + 2 workers", swarm, followers, measured, {
      "CPU s": used.reduce((a, b) => a + b, 0) / 1000,
      "web / w1 / w2 CPU s": used.map((ms) => (ms / 1000).toFixed(1)).join(" / "),
      logged: `${(logs.match(/ ERR /g) ?? []).length} errors, ${(logs.match(/handled twice/g) ?? []).length} lease lost`,
    });
  } finally {
    await Promise.all(procs.map(ensureStopped));
    await local?.close();
    await peer?.close();
    await Promise.all(swarmServers.map((s) => new Promise((r) => s.close(r))));
    await tdb.destroy();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/** Where the Follows and replies go (origin) and the database the counts are read from. */
interface Site {
  readonly origin: URL;
  readonly muster: Pick<Muster, "database">;
  /** For BENCH_UNDER_FANOUT_SAMPLE. */
  readonly databaseUrl?: string;
}

interface Measured {
  readonly queuedBefore: number;
  readonly queuedAfter: number;
  readonly joins: number;
  readonly report: PeerReport;
  readonly toMember: number[];
  readonly toAccept: number[];
  readonly replies: number;
  /** One per counted reply. */
  readonly samples: ReplySample[];
  readonly drainedS?: number | undefined;
  /** 1-minute load average when the trickle started. */
  readonly loadStart: number;
}

/** A counted reply: who sent it, which of the sender's replies it was, how long until counted, and what counted it. */
interface ReplySample {
  readonly kind: "first" | "stale first" | "repeat";
  readonly ms: number;
  readonly path: "fast" | "fedify" | "unknown";
}

/** Publishes the call, then trickles Follows and replies while its deliveries drain. */
async function measure(label: string, site: Site, muster: Pick<Muster, "membership">, union: Union, peer: Peer, seconds: number): Promise<Measured> {
  const joins = Math.ceil((seconds * 1000) / TRICKLE_MS);
  const child = fork(fileURLToPath(new URL("./joins-peer.ts", import.meta.url)), [new URL(`/u/${union.slug}`, site.origin).href, String(joins), "4", "8", String(TRICKLE_MS)], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
  try {
    await new Promise<void>((resolve, reject) => {
      child.once("message", () => resolve());
      child.once("exit", (code) => reject(new Error(`join peers exited with ${code} before they were ready`)));
    });
    const published = performance.now();
    const action = await composeAction(muster.membership, union.id, OPERATOR, { title: "Sign the petition", text: "Reply *I'm in*.", kind: "sign" }, { publishNow: true });
    const target = actionNoteId(site.origin, union, action.id);
    const replies = await presignReplies(site, peer, target, replySchedule(joins, REPLIERS.length));
    await sleep(1000);
    const queuedBefore = await queuedDeliveries(site);
    const firsts = replies.filter((r) => r.kind !== "repeat").length;
    progress(`${label}: ${queuedBefore} deliveries queued; ${joins} joins and ${joins} replies over ${seconds} s (${firsts} first replies, ${replies.filter((r) => r.kind === "stale first").length} of them stale; ${joins - firsts} repeats)`);
    const loadStart = loadavg()[0]!;

    const joined = new Promise<PeerReport>((resolve, reject) => {
      child.once("message", (r) => resolve(r as PeerReport));
      child.once("exit", (code) => reject(new Error(`join peers exited with ${code}`)));
      child.send("go");
    });
    // Awaited after the replies; a failure in between must not leave it unhandled.
    joined.catch(() => {});
    const stopSampling = startSampler(site.databaseUrl, label);
    let counted: Counted[];
    let report: PeerReport;
    try {
      counted = await trickleReplies(site, replies);
      report = await joined;
    } finally {
      await stopSampling();
    }
    const queuedAfter = await queuedDeliveries(site);
    // BENCH_UNDER_FANOUT_DRAIN=1: how long the whole fan-out took, publish to the last delivery settled (fairness: the trickle must not slow it much).
    const drainedS = process.env.BENCH_UNDER_FANOUT_DRAIN === "1" ? await drained(site, published) : undefined;
    const samples = await pathsOf(site, counted, label);
    // Follow ids are stored relative to the follower's origin (0058): matched as stored, read back whole.
    const stored = report.timeline.map((t) => storedFollowId(t.follow.replace(/#.*$/, ""), t.follow)!);
    const rows = await site.muster.database.db.selectFrom("members").select(["actor_id", "follow_id", "joined_at"]).where("follow_id", "in", stored).execute();
    const joinedAt = new Map(rows.map((r) => [followIdOf(r.actor_id, r.follow_id), Number(r.joined_at)]));
    const toMember = report.timeline.flatMap((t) => joinedAt.has(t.follow) ? [joinedAt.get(t.follow)! - t.sent] : []);
    const toAccept = report.timeline.flatMap((t) => joinedAt.has(t.follow) && t.accepted ? [t.accepted - joinedAt.get(t.follow)!] : []);
    return { queuedBefore, queuedAfter, joins, report, toMember, toAccept, replies: replies.length, samples, drainedS, loadStart };
  } finally {
    child.kill();
  }
}

function row(dialect: DialectCase, processes: string, swarm: string, followers: number, r: Measured, extra: Row): Row {
  const { report } = r;
  const replyLatencies = r.samples.map((s) => s.ms);
  const worst = Math.max(percentile(report.latencies, 99), percentile(replyLatencies, 99));
  return {
    dialect: dialect.name,
    processes,
    swarm,
    followers,
    "queued before": r.queuedBefore,
    "queued after": r.queuedAfter,
    joins: r.joins,
    accepted: report.accepted,
    "Accept p50 ms": percentile(report.latencies, 50),
    "Accept p99 ms (n)": withN(report.latencies, 99),
    "Follow→member p50": percentile(r.toMember, 50),
    "member→Accept p50": percentile(r.toAccept, 50),
    "Follow→member p99": percentile(r.toMember, 99),
    "member→Accept p99": percentile(r.toAccept, 99),
    replies: r.replies,
    counted: replyLatencies.length,
    "reply p50 ms": percentile(replyLatencies, 50),
    "reply p99 ms (n)": withN(replyLatencies, 99),
    "fast path n: p50 / p99 / max": byPath(r.samples, "fast"),
    "Fedify path n: p50 / p99 / max": byPath(r.samples, "fedify"),
    ...(r.samples.some((s) => s.path === "unknown") ? { "path unknown": r.samples.filter((s) => s.path === "unknown").length } : {}),
    "via Fedify: first / stale first / repeat": (["first", "stale first", "repeat"] as const).map((k) => `${r.samples.filter((s) => s.kind === k && s.path === "fedify").length}/${r.samples.filter((s) => s.kind === k).length}`).join(", "),
    ...(r.drainedS === undefined ? {} : { "fan-out drained s": Number(r.drainedS.toFixed(1)) }),
    ...extra,
    "load start / end": `${r.loadStart.toFixed(2)} / ${loadavg()[0]!.toFixed(2)}`,
    "load end": loadAverage().replace(/^load average /, ""),
    "vs 2 s": report.accepted < r.joins || replyLatencies.length < r.replies ? "MISS (not all answered)" : r.queuedAfter === 0 ? "n/a (fan-out finished first)" : worst <= TARGET_MS ? "PASS" : "MISS",
  };
}

/** One port on SWARM_HOSTS loopback addresses; every POST is answered 202 after delayMs. */
async function startSwarm(servers: Server[], delayMs: number): Promise<number> {
  let port = 0;
  for (let i = 1; i <= SWARM_HOSTS; i++) {
    const server = createServer((req, res) => {
      req.resume();
      req.once("end", () => setTimeout(() => res.writeHead(202).end(), delayMs));
    });
    server.keepAliveTimeout = 60_000;
    servers.push(server);
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, `127.78.0.${i}`, () => resolve());
    });
    port = (server.address() as { port: number }).port;
  }
  return port;
}

async function seedRoster(db: Kysely<DB>, unionId: string, port: number, followers: number, label: string): Promise<void> {
  const root = await db.selectFrom("members").select("id").where("union_id", "=", unionId).where("role", "=", "leader").executeTakeFirstOrThrow();
  const now = Date.now();
  const BATCH = 1000;
  for (let from = 0; from < followers; from += BATCH) {
    const actors: Insertable<RemoteActorsTable>[] = [];
    const members: Insertable<MembersTable>[] = [];
    for (let i = from; i < Math.min(followers, from + BATCH); i++) {
      const host = `127.78.0.${1 + (i % SWARM_HOSTS)}:${port}`;
      const id = `http://${host}/users/m${i}`;
      actors.push({ id, type: "Person", handle: `@m${i}@${host}`, name: `m${i}`, inbox: `${id}/inbox`, shared_inbox: null, fetched_at: now });
      members.push({
        id: randomUUID(), union_id: unionId, actor_id: id, handle: `@m${i}@${host}`, state: "active", role: "member", portfolio: null, sponsor_id: root.id,
        subtree_size: 0, follow_id: `${id}#follow`, invite_id: null, joined_at: now, left_at: null, left_reason: null, removed_by: null, created_at: now,
      });
    }
    await db.transaction().execute(async (trx) => {
      await trx.insertInto("remote_actors").values(actors).execute();
      await trx.insertInto("members").values(members).execute();
    });
  }
  await db.updateTable("members").set({ subtree_size: followers }).where("id", "=", root.id).execute();
  progress(`${label}: ${followers} members seeded`);
}

interface SignedReply {
  readonly kind: ReplySample["kind"];
  readonly activityId: string;
  readonly noteId: string;
  readonly url: URL;
  readonly headers: Headers;
  readonly body: string;
}

/**
 * Which replier sends each of n replies (indices into REPLIERS): the
 * repliers' first replies spread evenly through the run (about one in
 * REPLIERS/n slots), the slots between them repeats by the replier who
 * replied longest ago, at least REPEAT_GAP slots back; a first reply when
 * no one is due yet.
 */
export function replySchedule(n: number, repliers: number): number[] {
  const out: number[] = [];
  const last: number[] = [];
  for (let slot = 0; slot < n; slot++) {
    const firstsDue = Math.ceil(((slot + 1) * Math.min(repliers, n)) / n);
    const due = last.map((at, who) => ({ at, who })).filter((r) => r.at <= slot - REPEAT_GAP).sort((a, b) => a.at - b.at)[0];
    const next = last.length < repliers && (last.length < firstsDue || due === undefined) ? last.length : (due ?? last.map((at, who) => ({ at, who })).sort((a, b) => a.at - b.at)[0]!).who;
    last[next] = slot;
    out.push(next);
  }
  return out;
}

/**
 * The stale repliers' cached actors set a day and an hour old, and a check
 * that no replier's key is cached (in Fedify's KV, its compact table, or
 * the actor's row on PostgreSQL): each first reply must find none.
 */
async function prepareRepliers(db: Kysely<DB>, dialect: DialectCase, peer: Peer, label: string): Promise<void> {
  if (STALE.size) await db.updateTable("remote_actors").set({ fetched_at: Date.now() - ACTOR_CACHE_MS - 3_600_000 }).where("id", "in", [...STALE].map((n) => peer.actorId(n).href)).execute();
  const keyIds = REPLIERS.map((n) => peer.keyId(n).href);
  const compact = await db.selectFrom("fedify_public_keys").select((e) => e.fn.countAll().as("n")).where("key_id", "in", keyIds).executeTakeFirstOrThrow();
  const kv = await db.selectFrom("fedify_kv").select((e) => e.fn.countAll().as("n")).where("key", "in", keyIds.map((k) => JSON.stringify(["_fedify", "publicKey", k]))).executeTakeFirstOrThrow();
  const onRow = dialect.name === "postgres"
    ? (await sql<{ n: string }>`select count(*) as n from remote_actors where key is not null and id in (${sql.join(REPLIERS.map((n) => peer.actorId(n).href))})`.execute(db)).rows[0]!.n
    : 0;
  const cached = Number(compact.n) + Number(kv.n) + Number(onRow);
  if (cached) throw new Error(`${label}: ${cached} of the repliers' keys are cached before the run; every first reply must find none`);
  progress(`${label}: ${REPLIERS.length} repliers, ${STALE.size} with a cached actor older than a day; no key cached`);
}

async function presignReplies(m: Site, peer: Peer, target: URL, schedule: readonly number[]): Promise<SignedReply[]> {
  const union = new URL("/u/riders", m.origin);
  const inbox = new URL("/u/riders/inbox", m.origin);
  const out: SignedReply[] = new Array(schedule.length);
  const kinds = schedule.map((who, i) => schedule.indexOf(who) < i ? "repeat" as const : STALE.has(REPLIERS[who]!) ? "stale first" as const : "first" as const);
  await pool(schedule.length, 8, async (i) => {
    const as = REPLIERS[schedule[i]!]!;
    const actor = peer.actorId(as);
    const noteId = new URL(`/notes/under-fanout/${i}`, peer.origin);
    const activityId = new URL(`/activities/under-fanout/${i}`, peer.origin);
    const create = new Create({ id: activityId, actor, to: union, object: new Note({ id: noteId, attribution: actor, to: union, replyTarget: target, content: `<p>I'm in (${i})</p>` }) });
    const body = JSON.stringify(await create.toJsonLd({ format: "compact" }));
    const req = await peer.signedPost(inbox, body, { as });
    out[i] = { kind: kinds[i]!, activityId: activityId.href, noteId: noteId.href, url: inbox, headers: req.headers, body };
  });
  return out;
}

/** A counted reply, before its path is known. */
interface Counted {
  readonly reply: SignedReply;
  readonly ms: number;
  /** Whether its response row existed when the 202 came back (read right then). */
  readonly atAck: boolean | undefined;
}

/** POSTs one reply every TRICKLE_MS; resolves with each counted reply's latency (POST sent → response row). */
async function trickleReplies(m: Site, replies: readonly SignedReply[]): Promise<Counted[]> {
  const db = m.muster.database.db;
  const pending = new Map<string, number>();
  const atAck = new Map<string, boolean>();
  const latencies: { noteId: string; ms: number }[] = [];
  let sending = true;
  const watcher = (async () => {
    const until = () => !sending && pending.size === 0;
    const deadline = () => performance.now() + 60_000;
    let giveUp = Number.POSITIVE_INFINITY;
    while (!until() && performance.now() < giveUp) {
      if (!sending && giveUp === Number.POSITIVE_INFINITY) giveUp = deadline();
      const ids = [...pending.keys()];
      if (ids.length) {
        const rows = await db.selectFrom("action_responses").select("source_id").where("source_id", "in", ids).where("kind", "=", "comment").execute();
        const now = performance.now();
        for (const r of rows) {
          const sent = pending.get(r.source_id);
          if (sent === undefined) continue;
          latencies.push({ noteId: r.source_id, ms: now - sent });
          pending.delete(r.source_id);
        }
      }
      await sleep(20);
    }
  })();
  const start = performance.now();
  await Promise.all(replies.map(async (r, i) => {
    const due = start + i * TRICKLE_MS;
    if (due > performance.now()) await sleep(due - performance.now());
    pending.set(r.noteId, performance.now());
    try {
      const res = await fetch(r.url, { method: "POST", headers: r.headers, body: r.body });
      await res.arrayBuffer();
      if (res.status !== 202) progress(`reply ${i}: HTTP ${res.status}`);
      else atAck.set(r.noteId, (await db.selectFrom("action_responses").select("source_id").where("source_id", "=", r.noteId).where("kind", "=", "comment").executeTakeFirst()) !== undefined);
    } catch (error) {
      pending.delete(r.noteId);
      progress(`reply ${i}: ${(error as Error).message} (${String((error as Error).cause)})`);
    }
  })).finally(() => sending = false);
  await watcher;
  const byNote = new Map(replies.map((r) => [r.noteId, r]));
  return latencies.map((l) => ({ reply: byNote.get(l.noteId)!, ms: l.ms, atAck: atAck.get(l.noteId) }));
}

/**
 * What counted each reply. Fedify's inbox queue handler writes the
 * activity's idempotence key ([_fedify, activityIdempotence, origin, id],
 * a day's TTL) once its listener has run; the web's fast path never does.
 * So a key means Fedify's path. No key, with the response row already there
 * when the 202 came back, means the fast path (it answers only after its
 * commit); the reverse does not hold (Fedify's inbox answers once the
 * activity is queued, but a queue idle enough, in this very process, has
 * counted it before the bench reads the row). The keys are read a second
 * after the last reply was counted (each is written just after its row); a
 * reply with neither waits up to 3 s more for its key, then is "unknown".
 */
async function pathsOf(m: Site, counted: readonly Counted[], label: string): Promise<ReplySample[]> {
  const db = m.muster.database.db;
  const origin = m.origin.origin;
  const keys = new Map(counted.map((c) => [JSON.stringify(["_fedify", "activityIdempotence", origin, c.reply.activityId]), c]));
  const marked = new Set<Counted>();
  const read = async () => {
    const ask = [...keys].filter(([, c]) => !marked.has(c)).map(([k]) => k);
    for (let i = 0; i < ask.length; i += 500) {
      for (const r of await db.selectFrom("fedify_kv").select("key").where("key", "in", ask.slice(i, i + 500)).execute()) marked.add(keys.get(r.key)!);
    }
  };
  await sleep(1000);
  await read();
  const deadline = performance.now() + 3000;
  while (counted.some((c) => !marked.has(c) && !c.atAck) && performance.now() < deadline) {
    await sleep(100);
    await read();
  }
  const fedify = counted.filter((c) => marked.has(c));
  progress(`${label}: ${fedify.length} of ${counted.length} counted replies marked processed by Fedify's queue, ${fedify.filter((c) => c.atAck).length} of them already counted when their 202 came back; ${counted.filter((c) => !marked.has(c) && c.atAck).length} counted at their 202 and not marked (the fast path)`);
  const samples = counted.map((c): ReplySample => ({ kind: c.reply.kind, ms: c.ms, path: marked.has(c) ? "fedify" : c.atAck ? "fast" : "unknown" }));
  progress(`${label}: by kind, n: p50 / p99 / max ms (path): ${(["first", "stale first", "repeat"] as const).map((k) => {
    const of = samples.filter((s) => s.kind === k);
    return `${k} ${of.length ? `${of.length}: ${[percentile(of.map((s) => s.ms), 50), percentile(of.map((s) => s.ms), 99), Math.max(...of.map((s) => s.ms))].map(fmt).join(" / ")} (${of.filter((s) => s.path === "fast").length} fast)` : "0"}`;
  }).join("; ")}`);
  return samples;
}

/** "p (n)": the percentile with its sample count. */
function withN(samples: readonly number[], p: number): string {
  return `${fmt(percentile(samples, p))} (${samples.length})`;
}

/** "n: p50 / p99 / max" of the replies one path counted. */
function byPath(samples: readonly ReplySample[], path: ReplySample["path"]): string {
  const ms = samples.filter((s) => s.path === path).map((s) => s.ms);
  return ms.length ? `${ms.length}: ${[percentile(ms, 50), percentile(ms, 99), Math.max(...ms)].map(fmt).join(" / ")}` : "0";
}

/**
 * Seconds from `since` until no fan-out page or delivery is ready or being
 * sent (polled every 100 ms, at most 5 minutes). Retries and copies the
 * circuit breaker holds for later are left out: the repliers' server is a
 * member too, and a delivery it failed under load waits minutes for its retry.
 */
async function drained(m: Site, since: number): Promise<number> {
  const db = m.muster.database.db;
  const deadline = performance.now() + 300_000;
  while (performance.now() < deadline) {
    const r = await db.selectFrom("fedify_mq").select((e) => e.fn.countAll().as("n")).where("queue", "in", ["delivery", "fanout"])
      .where((e) => e.or([e("available_at", "<=", Date.now()), e("lease_until", "is not", null)])).executeTakeFirstOrThrow();
    if (Number(r.n) === 0) return (performance.now() - since) / 1000;
    await sleep(100);
  }
  return Number.NaN;
}

async function queuedDeliveries(m: Site): Promise<number> {
  const r = await m.muster.database.db.selectFrom("fedify_mq").select((e) => e.fn.countAll().as("n")).where("queue", "=", "delivery").executeTakeFirstOrThrow();
  return Number(r.n);
}

/**
 * BENCH_UNDER_FANOUT_SAMPLE=1 (PostgreSQL): samples pg_stat_activity of the
 * bench's database every 100 ms while the trickle runs and prints what the
 * backends were doing (wait event and the statement's first words), most
 * frequent first: what waits on what.
 */
function startSampler(url: string | undefined, label: string): () => Promise<void> {
  if (!process.env.BENCH_UNDER_FANOUT_SAMPLE || !url?.startsWith("postgres")) return async () => {};
  const name = new URL(url).pathname.slice(1);
  const client = new pg.Client({ connectionString: url });
  const counts = new Map<string, number>();
  let samples = 0;
  let running = true;
  const loop = (async () => {
    await client.connect();
    while (running) {
      // A backend waiting for a lock is shown with what its first blocker was doing.
      const { rows } = await client.query<{ state: string | null; w: string | null; q: string; b: string | null }>(
        `SELECT a.state, coalesce(a.wait_event_type || ':' || a.wait_event, 'cpu') AS w, left(regexp_replace(a.query, '\\s+', ' ', 'g'), 60) AS q,
           (SELECT coalesce(b.state, '?') || ' ' || left(regexp_replace(b.query, '\\s+', ' ', 'g'), 50) FROM pg_stat_activity b WHERE b.pid = (pg_blocking_pids(a.pid))[1] LIMIT 1) AS b
         FROM pg_stat_activity a WHERE a.datname = $1 AND a.backend_type = 'client backend' AND a.pid <> pg_backend_pid() AND a.state <> 'idle'`,
        [name],
      );
      samples++;
      for (const r of rows) {
        const key = `${r.state === "active" ? r.w : r.state} | ${r.q}${r.b ? ` <- blocked by: ${r.b}` : ""}`;
        counts.set(key, (counts.get(key) ?? 0) + 1);
      }
      await sleep(100);
    }
    await client.end();
  })();
  return async () => {
    running = false;
    await loop;
    progress(`${label}: pg_stat_activity, ${samples} samples (non-idle backends; state or wait event | statement):`);
    for (const [k, n] of [...counts].sort((a, b) => b[1] - a[1]).slice(0, 25)) progress(`  ${String(n).padStart(5)}  ${k}`);
  };
}

/** MUSTER_QUEUE_TRACE=1: the workers' interactive messages, enqueued → claimed and claimed → settled, per lane. */
function traceSummary(logs: string): void {
  const by = new Map<string, { wait: number[]; handle: number[] }>();
  for (const m of logs.matchAll(/TRACE ['"]?(\w+)['"]? wait (\d+) handle (\d+)/g)) {
    const e = by.get(m[1]!) ?? { wait: [], handle: [] };
    by.set(m[1]!, e);
    e.wait.push(Number(m[2]));
    e.handle.push(Number(m[3]));
  }
  const last = new Map<string, string>();
  for (const m of logs.matchAll(/TRACECLAIMS (\d+) (.*)/g)) last.set(m[1]!, m[2]!);
  for (const [pid, counts] of last) progress(`  claims by ${pid} [claims, rows]: ${counts}`);
  for (const [queue, e] of by) progress(`  trace ${queue}: ${e.wait.length} messages; enqueued→claimed p50/p99/max ${percentile(e.wait, 50)} / ${percentile(e.wait, 99)} / ${Math.max(...e.wait)} ms; claimed→done ${percentile(e.handle, 50)} / ${percentile(e.handle, 99)} / ${Math.max(...e.handle)} ms; waits over 1 s: ${e.wait.filter((w) => w > 1000).join(", ") || "none"}`);
}
