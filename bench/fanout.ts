import { type ChildProcess, spawn } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import { writeHeapSnapshot } from "node:v8";
import { signRequest } from "@fedify/fedify";
import { sql } from "kysely";
import { processStats as batchStats } from "../federation/batch-delivery.ts";
import { threadStats } from "../federation/delivery-threads.ts";
import { composeAction } from "../src/actions/actions.ts";
import { loadConfig } from "../src/config.ts";
import { createMuster, type Muster } from "../src/main.ts";
import { duesParamsFromBylaws } from "../src/treasury/dues-params.ts";
import { recomputeStandings } from "../src/treasury/standing.ts";
import { OPERATOR } from "../src/members/members.ts";
import { createUnion } from "../src/unions/unions.ts";
import type { DialectCase } from "../test/helpers/databases.ts";
import { makeUnion, startMuster, type TestMuster } from "../test/helpers/muster.ts";
import { ensureStopped, type MusterProcess, spawnMuster } from "../test/helpers/muster-process.ts";
import { seedFollowers } from "../test/helpers/seed-followers.ts";
import type { ReceiverMessage, ReceiverStats } from "./fanout-receiver.ts";
import { type Benchmark, cpuMs, forDuration, mib, perSecond, progress, type Row, startProfile, threadTimes, trackPeakRss, waitFor } from "./lib.ts";
import { cpuOf, peakRssOf, resetPeakRss, retriesLogged, scaledOutEnv, trackBackendCpu } from "./workers.ts";

/**
 * One call-to-action fanned out to a union's followers spread over many
 * member servers, all played by child processes (bench/fanout-receiver.ts)
 * answering on thousands of loopback addresses. Muster runs in this process
 * as `muster serve` does (HTTP server and queue worker together), so its CPU
 * and memory are this process's.
 *
 * Two shapes of follower set: every server advertises a shared inbox
 * (Mastodon, Misskey, Pleroma and most others do: one delivery per server),
 * and none does (one delivery per follower, the worst case).
 *
 * Cases: full mode runs 10^5 and 10^6 followers on 2·10^4 shared-inbox
 * servers and 10^5 followers on 10^3 servers without shared inboxes; --quick
 * 10^3 on 10^2 of each. BENCH_FANOUT_CASES overrides, e.g.
 * "shared:1000000:20000,personal:100000:1000" (shape:followers:servers);
 * the older BENCH_FANOUT_FOLLOWERS, BENCH_FANOUT_SERVERS and
 * BENCH_FANOUT_SHAPES still work.
 *
 * BENCH_FANOUT_MODE=workers (PostgreSQL): Muster runs instead as
 * `muster serve --no-worker` and two `muster worker` child processes on one
 * database (issue 16's "PostgreSQL at scale"), as bench/workers.ts starts
 * them; the union is made, the roster seeded and the call published through
 * a Muster opened here without queue handlers (as the CLI opens one). CPU and
 * peak RSS are then each process's own, and the PostgreSQL backends'.
 *
 * Before each fan-out the same process measures the baseline: requests
 * signed exactly as a delivery is (RSA-2048, Fedify's signRequest, RFC 9421),
 * POSTed with the same concurrency to the same receivers, which verify them
 * as they verify deliveries. The ratio is deliveries/s over that rate.
 */

interface Case {
  readonly shared: boolean;
  readonly followers: number;
  readonly servers: number;
}

const QUICK: readonly Case[] = [
  { shared: true, followers: 1_000, servers: 100 },
  { shared: false, followers: 1_000, servers: 100 },
];
const FULL: readonly Case[] = [
  { shared: true, followers: 100_000, servers: 20_000 },
  { shared: true, followers: 1_000_000, servers: 20_000 },
  { shared: false, followers: 100_000, servers: 1_000 },
];
/** Simulated servers per receiver process: each holds a listening socket per server plus the open connections, under the 20,000 descriptors a process may have here. */
const HOSTS_PER_RECEIVER = 8_000;
/** Handler slots of the delivery lane at Muster's default concurrency: the baseline uses as many. */
const CONCURRENCY = 16;

function cases(quick: boolean): Case[] {
  const env = process.env;
  if (env.BENCH_FANOUT_CASES) {
    return env.BENCH_FANOUT_CASES.split(",").map((c) => {
      const [shape, f, sv] = c.trim().split(":");
      const followers = Number(f);
      const servers = Number(sv);
      if ((shape !== "shared" && shape !== "personal") || !Number.isInteger(followers) || !Number.isInteger(servers)) {
        throw new Error(`BENCH_FANOUT_CASES takes shape:followers:servers entries, e.g. shared:1000000:20000; got ${JSON.stringify(c)}`);
      }
      return { shared: shape === "shared", followers, servers };
    });
  }
  const only = env.BENCH_FANOUT_SHAPES?.split(",").map((x) => x.trim());
  if (only?.some((x) => x !== "shared" && x !== "personal")) throw new Error(`BENCH_FANOUT_SHAPES takes "shared" and/or "personal"; got ${JSON.stringify(env.BENCH_FANOUT_SHAPES)}`);
  const shapes = [true, false].filter((shared) => !only || only.includes(shared ? "shared" : "personal"));
  if (env.BENCH_FANOUT_FOLLOWERS || env.BENCH_FANOUT_SERVERS) {
    const followers = Number(env.BENCH_FANOUT_FOLLOWERS ?? (quick ? 1_000 : 100_000));
    const servers = Number(env.BENCH_FANOUT_SERVERS ?? (quick ? 100 : 1_000));
    return shapes.map((shared) => ({ shared, followers, servers }));
  }
  return (quick ? QUICK : FULL).filter((c) => shapes.includes(c.shared));
}

export const fanout: Benchmark = {
  name: "fanout",
  title: "Fan-out: one call-to-action to every follower, over many simulated member servers on loopback",
  summary: "10^5 and 10^6 followers over 2·10^4 shared-inbox servers, 10^5 over 10^3 without (--quick: 10^3 over 10^2); deliveries/s against the sign+POST rate, time to last server, CPU per delivery, peak RSS",
  notes: [
    "followers and their cached actors are bulk-inserted in one transaction (setup, untimed; seed s); the clock starts when composeAction(publishNow) is called and stops when the receivers have verified the last expected delivery",
    "sign+POST/s: the baseline measured just before the fan-out in the same process: a request signed as a delivery is (RSA-2048, RFC 9421, Fedify's signRequest, key imported once), POSTed by 16 loops to the same receivers, which verify it as they verify deliveries; ratio = deliveries/s ÷ sign+POST/s",
    "shared inboxes: each simulated server advertises /inbox, so one delivery per server; personal inboxes: none does, so one per follower",
    "the receivers (child processes, one HTTP server per address 127.77.x.y) verify every HTTP signature and answer 202: with Muster's synchronous node:crypto verifier (federation/inbox-fast-verify.ts, held to Fedify's by differential tests), and what it does not accept with Fedify's verifyRequest (Fedify-verified counts those; refused means Fedify refused too); each simulated server fetches the union's key once and caches it: key GETs counts those fetches (and 16 more for the baseline, which keeps its own cache)",
    "Muster's queue polls every 1 s as `muster serve` does (BENCH_FANOUT_POLL_MS; the test helper's 50 ms cost 10^2 ms of claims a second); the clock starts after the first dues scan has given every seeded member a standing",
    "Muster CPU ms/delivery and peak RSS are this process's (server, queue worker, SQLite or pg client); the receivers' CPU is reported apart; all share the machine's cores; load is the 1-minute load average at the end of the case",
    "inboxes: distinct inboxes that got it (must equal deliveries); repeats: an activity id POSTed twice to the same inbox (must be 0); refused: deliveries whose signature did not verify (must be 0); key unreachable: deliveries refused because the union's key could not be fetched, which the sender retries",
    "queue concurrency is Muster's default (MUSTER_QUEUE_CONCURRENCY, 16 handlers at a time); the delivery lanes' own sender (federation/batch-delivery.ts) keeps up to 64 deliveries in flight: batch sent counts what it sent, to Fedify what it handed to Fedify's handler (MUSTER_BATCH_DELIVERY=0 sends everything through Fedify, to compare)",
    "RSS before MiB: this process just before publishing (after seeding); BENCH_FANOUT_MEMLOG=1 logs heap and external memory as it goes, BENCH_FANOUT_HEAP_SNAPSHOT=dir writes one heap snapshot at half the servers",
  ],
  async run(dialect, { quick }) {
    const mode = process.env.BENCH_FANOUT_MODE ?? "one";
    if (mode !== "one" && mode !== "workers") throw new Error(`BENCH_FANOUT_MODE takes one or workers; got ${JSON.stringify(mode)}`);
    if (mode === "workers" && dialect.name !== "postgres") return [{ dialect: dialect.name, mode, detail: "PostgreSQL only: processes share the queue only there" }];
    const rows: Row[] = [];
    for (const c of cases(quick)) {
      if (!(c.followers >= c.servers && c.servers >= 1 && c.servers <= 250 * 250)) {
        throw new Error(`a fan-out case needs 1 <= servers <= followers and servers <= 62500; got ${c.servers} servers and ${c.followers} followers`);
      }
      const shape = { label: c.shared ? "shared inboxes" : "personal inboxes", shared: c.shared };
      rows.push(mode === "workers" ? await runWorkers(dialect, shape, c.followers, c.servers, quick) : await runShape(dialect, shape, c.followers, c.servers, quick));
    }
    return rows;
  },
};

interface Shape {
  readonly label: string;
  readonly shared: boolean;
}

async function runShape(dialect: DialectCase, shape: Shape, followers: number, servers: number, quick: boolean): Promise<Row> {
  const label = `${dialect.name} ${shape.label}`;
  const tdb = await dialect.create();
  let m: TestMuster | undefined;
  let receiver: Receiver | undefined;
  try {
    // The queue's poll interval as `muster serve` has it (1 s; the test
    // helper's 50 ms made every idle lane claim 20 times a second, a write
    // transaction each: 10^2 ms of CPU a second that were counted as the
    // fan-out's). BENCH_FANOUT_POLL_MS overrides it.
    // The switches to compare senders reach the server through its config (src/config.ts), as under `muster serve`.
    const switches = Object.fromEntries(["MUSTER_BATCH_DELIVERY", "MUSTER_DELIVERY_THREADS", "MUSTER_SQLITE_CHECKPOINT_THREAD"].flatMap((k) => process.env[k] === undefined ? [] : [[k, process.env[k]!]]));
    // BENCH_FANOUT_BATCH: the delivery lane's deliveries in flight (queue-lanes.ts batchSize; 128 when unset), to compare.
    const batchSize = process.env.BENCH_FANOUT_BATCH === undefined ? {} : { batchSize: Number(process.env.BENCH_FANOUT_BATCH) };
    m = await startMuster(tdb, { env: switches, muster: { queue: { pollIntervalMs: Number(process.env.BENCH_FANOUT_POLL_MS ?? 1000), ...batchSize } } });
    receiver = await startReceivers(servers, m.origin.href);
    const union = await makeUnion(m, "fanout");
    const seedStart = performance.now();
    await seedFollowers(m.muster.database.db, union.id, followers, (i) => ({ origin: receiver!.origins[i % servers]!, shared: shape.shared }), (done) => {
      if (done % 100_000 === 0) progress(`${label}: seeded ${done}/${followers}`);
    });
    const seedS = (performance.now() - seedStart) / 1000;
    progress(`${label}: ${followers} followers on ${servers} servers seeded in ${seedS.toFixed(1)} s`);
    // The dues scan (every 30 s with a ledger) first meets the seeded
    // members as new ones and writes a standing for each: 2.5 s of CPU per
    // 10^5 members, which members joining one by one never cause at once.
    // Timed only after it, so the fan-out's CPU is the fan-out's; the
    // scan's later passes (reading the roster) still fall in the window as
    // they would on a server.
    const db = m.muster.database.db;
    // The scan reads the whole roster only every FULL_PASS_MS (5 min) and
    // made its first pass on the empty union: waiting for its next one held
    // the bench lock idle for minutes. Its whole-roster pass is made here
    // instead, the same function the scan calls, untimed; a pass of the
    // scan's own that starts meanwhile is waited for below as before.
    const scanStart = performance.now();
    await recomputeStandings({ db, events: m.muster.events, duesParams: duesParamsFromBylaws }, union.id);
    progress(`${label}: standings of the seeded members recorded in ${((performance.now() - scanStart) / 1000).toFixed(1)} s`);
    let standings = 0;
    await waitFor(`${label}: the first dues scan of the seeded members`, async () => {
      standings = Number((await db.selectFrom("member_standing").select((eb) => eb.fn.countAll<number>().as("n")).where("union_id", "=", union.id).executeTakeFirstOrThrow()).n);
      return standings >= followers;
    }, () => `${standings}/${followers} standings`, { pollMs: 500, stallMs: 900_000 });
    const expected = shape.shared ? servers : followers;
    const baseline = await signAndPostRate(m.muster, m.origin, union.slug, receiver, quick ? 2_000 : 5_000);
    progress(`${label}: baseline ${baseline.toFixed(0)} sign+POST/s`);

    const rssBefore = process.memoryUsage.rss();
    const rss = trackPeakRss();
    const batched = { ...batchStats };
    const threaded = { ...threadStats };
    const cpu = process.cpuUsage();
    const threads = threadCpuMs();
    const byThread = threadTimes();
    // PostgreSQL's backends serving this database (all Muster's here), sampled every 250 ms.
    const backends = dialect.name === "postgres" ? trackBackendCpu(db) : undefined;
    const start = Date.now();
    const t0 = performance.now();
    // BENCH_CPU_PROFILE=dir: the main thread's profile of the timed window.
    const profile = await startProfile(`fanout-${shape.shared ? "shared" : "personal"}-${followers}`);
    await composeAction(m.muster.membership, union.id, OPERATOR, { title: "Benchmark call", text: "Sign the **petition** today.", kind: "sign" }, { publishNow: true });
    let stats = await receiver.stats();
    // BENCH_FANOUT_HEAP_SNAPSHOT=dir: one heap snapshot once half the servers have it (what grows with them).
    const snapshotDir = process.env.BENCH_FANOUT_HEAP_SNAPSHOT;
    let snapshotted = snapshotDir === undefined;
    await waitFor(`${label}: deliveries`, async () => {
      stats = await receiver!.stats();
      if (process.env.BENCH_FANOUT_MEMLOG) {
        const u = process.memoryUsage();
        progress(`${label}: ${stats.delivered} delivered; RSS ${mib(u.rss).toFixed(0)}, heap ${mib(u.heapTotal).toFixed(0)} (${mib(u.heapUsed).toFixed(0)} used), external ${mib(u.external).toFixed(0)}, array buffers ${mib(u.arrayBuffers).toFixed(0)} MiB`);
      }
      if (!snapshotted && stats.inboxes >= expected / 2) {
        snapshotted = true;
        progress(`${label}: heap snapshot ${writeHeapSnapshot(`${snapshotDir}/fanout-${Date.now()}.heapsnapshot`)} at RSS ${mib(process.memoryUsage.rss()).toFixed(0)} MiB`);
      }
      // Distinct inboxes, not POSTs: a repeat must not end the wait early (as in the workers mode).
      return stats.inboxes >= expected;
    }, () => `${stats.inboxes}/${expected} inboxes (${stats.delivered} POSTs), ${stats.refused} refused`, { pollMs: 100 });
    const ms = performance.now() - t0;
    const cpuTotal = cpuMs(cpu);
    const threadsAfter = threadCpuMs();
    const byThreadAfter = threadTimes();
    const peak = rss.stop();
    const backendMs = await backends?.stop();
    await profile?.stop();
    // Late repeats would show up after the last first-time delivery: give them a moment.
    await new Promise((r) => setTimeout(r, 1000));
    stats = await receiver.stats();
    const rate = perSecond(stats.inboxes, ms);
    const row: Row = {
      ...firstColumns({ dialect: dialect.name, shape: shape.label, mode: "one process", followers, servers, seedS, stats, start, ms, rate, baseline }),
      "CPU ms/delivery": cpuTotal / stats.delivered,
      // Split by thread (Linux /proc, 10 ms ticks): the main thread, which
      // alone runs JavaScript, and the rest (libuv's pool signs, V8's GC helpers).
      "main thread ms/delivery": threadsAfter === undefined || threads === undefined ? "n/a" : (threadsAfter.main - threads.main) / stats.delivered,
      "other threads ms/delivery": threadsAfter === undefined || threads === undefined ? "n/a" : (threadsAfter.others - threads.others) / stats.delivered,
      ...(backends === undefined ? {} : { "PostgreSQL backends CPU ms/delivery": backendMs === undefined ? "n/a" : backendMs / stats.delivered }),
      "RSS before MiB": mib(rssBefore),
      "peak RSS MiB": mib(peak),
      "receiver CPU ms/delivery": stats.cpuMs / stats.delivered,
      "key GETs": stats.key_fetches,
      // Verified by Fedify's verifyRequest after the synchronous verifier did not accept them (expected 0).
      "Fedify-verified": stats.fedifyVerified,
      // Deliveries the delivery lane's own sender made, and those it left to Fedify's handler (MUSTER_BATCH_DELIVERY=0: all).
      "batch sent": batchStats.sent - batched.sent,
      "to Fedify": batchStats.fallback - batched.fallback,
      // Of those sent, the ones signed and POSTed on a delivery thread (MUSTER_DELIVERY_THREADS; 0: none).
      "on threads": threadStats.sent - threaded.sent,
      // Given back by a thread as not sent (an error, or a thread that died or did not answer), and the last reason.
      "thread failed": threadStats.failed - threaded.failed + threadStats.lost - threaded.lost,
      ...(threadStats.lastError !== threaded.lastError ? { "thread error": threadStats.lastError.slice(0, 80) } : {}),
      repeats: stats.repeats,
      refused: stats.refused,
      // Refused because the union's key could not be fetched (Muster busy or down); the sender retries them.
      "key unreachable": stats.keyUnreachable,
      load: loadavg()[0]!,
    };
    progress(`${label}: ${stats.delivered} deliveries in ${(ms / 1000).toFixed(1)} s`);
    if (byThread !== undefined && byThreadAfter !== undefined) {
      // Where the process's CPU went, µs per delivery by thread (name as Linux has it, and its id
      // for worker threads: the delivery thread and the SQLite checkpoint thread are both "WorkerThread").
      const parts = diffThreads(byThread, byThreadAfter).map(([name, ms]) => `${name} ${(1000 * ms / stats.delivered).toFixed(0)}`);
      progress(`${label}: CPU µs/delivery by thread: ${parts.join(", ")}`);
    }
    return row;
  } finally {
    await m?.stop();
    await receiver?.stop();
    await tdb.destroy();
  }
}

/**
 * One case with Muster as `serve --no-worker` and two `muster worker` child
 * processes on PostgreSQL (BENCH_FANOUT_MODE=workers). The workers start
 * after the seed; none of them has a ledger (no SOLANA_RPC_URL), so no dues
 * scan runs, and the clock starts once both are up and the baseline is
 * measured. Their queue concurrency is 8 (BENCH_WORKERS_CONCURRENCY, as in
 * bench/workers.ts: at 16 two workers may hold 104 connections).
 */
async function runWorkers(dialect: DialectCase, shape: Shape, followers: number, servers: number, quick: boolean): Promise<Row> {
  const label = `${dialect.name} ${shape.label}, web + 2 workers`;
  const tdb = await dialect.create();
  const { env, dataDir, origin, concurrency } = await scaledOutEnv(tdb.url, "fanout", process.env.BENCH_FANOUT_LOG_LEVEL);
  const procs: MusterProcess[] = [];
  let local: Muster | undefined;
  let receiver: Receiver | undefined;
  try {
    const web = spawnMuster(["serve", "--no-worker"], env);
    procs.push(web);
    await web.waitFor(/queue workers: none in this process/, "serve --no-worker is listening", 240_000);
    // This process's own Muster (seed, baseline key, publishing): no queue handlers, a small pool.
    local = await createMuster(loadConfig({ ...env, LOG_LEVEL: "error", MUSTER_DB_POOL: "4" }), { runsQueue: false, migrate: false });
    receiver = await startReceivers(servers, origin.href);
    const union = await createUnion(local.unions, { slug: "fanout", name: "Riders United", purpose: "Fair pay for delivery riders", leaderHandle: "@lead@example.org" });
    const db = local.database.db;
    const seedStart = performance.now();
    await seedFollowers(db, union.id, followers, (i) => ({ origin: receiver!.origins[i % servers]!, shared: shape.shared }), (done) => {
      if (done % 100_000 === 0) progress(`${label}: seeded ${done}/${followers}`);
    });
    await sql`analyze`.execute(db);
    const seedS = (performance.now() - seedStart) / 1000;
    progress(`${label}: ${followers} followers on ${servers} servers seeded (and analyzed) in ${seedS.toFixed(1)} s`);
    for (let i = 0; i < 2; i++) procs.push(spawnMuster(["worker"], env));
    await Promise.all(procs.slice(1).map((w) => w.waitFor(/Muster worker started \(postgres\)/, `worker ${w.pid} started`, 240_000)));
    const expected = shape.shared ? servers : followers;
    const baseline = await signAndPostRate(local, origin, union.slug, receiver, quick ? 2_000 : 5_000);
    progress(`${label}: baseline ${baseline.toFixed(0)} sign+POST/s`);

    resetPeakRss(procs);
    const logged = procs.map((p) => p.output().length);
    const backends = trackBackendCpu(db);
    const before = procs.map((p) => cpuOf(p.pid));
    const start = Date.now();
    const t0 = performance.now();
    await composeAction(local.membership, union.id, OPERATOR, { title: "Benchmark call", text: "Sign the **petition** today.", kind: "sign" }, { publishNow: true });
    let stats = await receiver.stats();
    await waitFor(`${label}: deliveries`, async () => {
      stats = await receiver!.stats();
      // Distinct inboxes, not POSTs: a repeat must not end the wait early.
      return stats.inboxes >= expected;
    }, () => `${stats.inboxes}/${expected} inboxes (${stats.delivered} POSTs), ${stats.refused} refused`, { pollMs: 100, stallMs: 300_000 });
    const ms = performance.now() - t0;
    const used = procs.map((p, i) => cpuOf(p.pid) - before[i]!);
    const peaks = procs.map((p) => peakRssOf(p.pid));
    const backendMs = await backends.stop();
    await new Promise((r) => setTimeout(r, 1000));
    // BENCH_FANOUT_OUTPUT_DIR=dir: each process's stdout+stderr (web, w1, w2), e.g. with MUSTER_QUEUE_TRACE=1 for the lanes' claim counts.
    const outputDir = process.env.BENCH_FANOUT_OUTPUT_DIR;
    if (outputDir) procs.forEach((p, i) => writeFileSync(`${outputDir}/${["web", "w1", "w2"][i] ?? `p${i}`}.log`, p.output()));
    stats = await receiver.stats();
    const rate = perSecond(stats.inboxes, ms);
    const total = used.reduce((a, b) => a + b, 0);
    progress(`${label}: ${stats.inboxes} inboxes in ${(ms / 1000).toFixed(1)} s`);
    return {
      ...firstColumns({ dialect: dialect.name, shape: shape.label, mode: "serve --no-worker + 2 workers", followers, servers, seedS, stats, start, ms, rate, baseline }),
      // The three Muster processes' user+system CPU (/proc), summed and apart; PostgreSQL's backends apart (sampled every 250 ms).
      "CPU ms/delivery": total / stats.inboxes,
      "web / w1 / w2 CPU ms/delivery": used.map((c) => (c / stats.inboxes).toFixed(3)).join(" / "),
      "PostgreSQL backends CPU ms/delivery": backendMs === undefined ? "n/a" : backendMs / stats.inboxes,
      "peak RSS MiB": Math.max(...peaks),
      "web / w1 / w2 peak RSS MiB": peaks.map((p) => p.toFixed(0)).join(" / "),
      "receiver CPU ms/delivery": stats.cpuMs / stats.delivered,
      "key GETs": stats.key_fetches,
      "Fedify-verified": stats.fedifyVerified,
      repeats: stats.repeats,
      refused: stats.refused,
      "key unreachable": stats.keyUnreachable,
      "queue concurrency": concurrency,
      detail: retriesLogged(procs, logged),
      load: loadavg()[0]!,
    };
  } finally {
    await receiver?.stop();
    await Promise.all(procs.map(ensureStopped));
    await local?.close();
    await tdb.destroy();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/**
 * This process's CPU by thread, from /proc (Linux only; undefined elsewhere):
 * the main thread, and every other thread together (libuv's pool, where
 * WebCrypto signs; V8's helpers; worker threads, if any).
 */
export function threadCpuMs(): { main: number; others: number } | undefined {
  const threads = threadTimes();
  if (threads === undefined) return undefined;
  let main = 0;
  let others = 0;
  for (const { name, ms } of threads.values()) {
    if (name === "main") main += ms;
    else others += ms;
  }
  return { main, others };
}

/** CPU ms per thread between two snapshots, pools summed by name (worker threads apart, by id), largest first. */
function diffThreads(before: Map<string, { name: string; ms: number }>, after: Map<string, { name: string; ms: number }>): [string, number][] {
  const sums = new Map<string, number>();
  for (const [tid, { name, ms }] of after) {
    const key = name === "WorkerThread" ? `${name}#${tid}` : name;
    sums.set(key, (sums.get(key) ?? 0) + ms - (before.get(tid)?.ms ?? 0));
  }
  return [...sums].filter(([, ms]) => ms > 0).sort((a, b) => b[1] - a[1]);
}

export interface Receiver {
  /** Each simulated server's origin, server i at hosts[i]. */
  readonly origins: readonly string[];
  stats(): Promise<ReceiverStats>;
  /** Verified POSTs of `activityId` per inbox URL. */
  hits(activityId: string): Promise<Map<string, number>>;
  stop(): Promise<void>;
}

/** Enough receiver processes for `hosts` servers, seen as one. */
export async function startReceivers(hosts: number, senderOrigin: string): Promise<Receiver> {
  const parts: Receiver[] = [];
  try {
    for (let offset = 0; offset < hosts; offset += HOSTS_PER_RECEIVER) parts.push(await startReceiver(Math.min(HOSTS_PER_RECEIVER, hosts - offset), offset, senderOrigin));
  } catch (error) {
    await Promise.all(parts.map((p) => p.stop()));
    throw error;
  }
  return {
    origins: parts.flatMap((p) => p.origins),
    async stats() {
      const all = await Promise.all(parts.map((p) => p.stats()));
      const min = (xs: (number | null)[]) => xs.filter((x): x is number => x !== null).reduce<number | null>((a, x) => (a === null || x < a ? x : a), null);
      const max = (xs: (number | null)[]) => xs.filter((x): x is number => x !== null).reduce<number | null>((a, x) => (a === null || x > a ? x : a), null);
      const sum = (f: (s: ReceiverStats) => number) => all.reduce((a, s) => a + f(s), 0);
      return {
        delivered: sum((s) => s.delivered),
        refused: sum((s) => s.refused),
        keyUnreachable: sum((s) => s.keyUnreachable),
        repeats: sum((s) => s.repeats),
        inboxes: sum((s) => s.inboxes),
        firstAt: min(all.map((s) => s.firstAt)),
        lastAt: max(all.map((s) => s.lastAt)),
        cpuMs: sum((s) => s.cpuMs),
        key_fetches: sum((s) => s.key_fetches),
        bare: sum((s) => s.bare),
        fedifyVerified: sum((s) => s.fedifyVerified),
      };
    },
    async hits(activityId) {
      const all = await Promise.all(parts.map((p) => p.hits(activityId)));
      return new Map(all.flatMap((m) => [...m]));
    },
    async stop() {
      await Promise.all(parts.map((p) => p.stop()));
    },
  };
}

async function startReceiver(hosts: number, offset: number, senderOrigin: string): Promise<Receiver> {
  const child: ChildProcess = spawn(process.execPath, [...process.execArgv.filter((a) => !a.startsWith("--cpu-prof")), fileURLToPath(new URL("./fanout-receiver.ts", import.meta.url))], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const listening = await new Promise<Extract<ReceiverMessage, { kind: "listening" }>>((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`the fan-out receiver exited with ${code} before listening`)));
    child.on("message", (msg: ReceiverMessage) => {
      if (msg.kind === "listening") resolve(msg);
    });
    child.send({ hosts, offset, senderOrigin });
  });
  return {
    origins: listening.hosts.map((h) => `http://${h}:${listening.port}`),
    stats: async () => (await ask(child, { kind: "stats" }, "stats")).stats,
    hits: async (activityId) => new Map((await ask(child, { kind: "hits", activityId }, "hits")).hits),
    async stop() {
      if (child.exitCode === null) child.send({ kind: "stop" });
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
      child.kill("SIGKILL");
    },
  };
}

/** Sends a receiver a question and waits for its answer of kind `kind`. */
function ask<K extends ReceiverMessage["kind"]>(child: ChildProcess, question: object, kind: K): Promise<Extract<ReceiverMessage, { kind: K }>> {
  return new Promise((resolve, reject) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      reject(new Error(`the fan-out receiver has exited (${child.exitCode ?? child.signalCode})`));
      return;
    }
    const gone = () => reject(new Error(`the fan-out receiver exited (${child.exitCode ?? child.signalCode})`));
    const on = (msg: ReceiverMessage) => {
      if (msg.kind !== kind) return;
      child.off("message", on);
      child.off("exit", gone);
      resolve(msg as Extract<ReceiverMessage, { kind: K }>);
    };
    child.on("message", on);
    child.once("exit", gone);
    child.send(question);
  });
}

/**
 * Signed POSTs per second, signed exactly as a delivery (the union's RSA key,
 * imported once; RFC 9421, what Fedify tries first) with a fresh body id each,
 * to the receivers' /bare path, which verifies them like deliveries but does
 * not count them as ones. CONCURRENCY loops for `ms`, spread over the first
 * servers, each connection kept alive.
 */
async function signAndPostRate(muster: Pick<Muster, "federation">, origin: URL, slug: string, receiver: Receiver, ms: number): Promise<number> {
  const ctx = muster.federation.createContext(origin, undefined);
  const pair = (await ctx.getActorKeyPairs(slug)).find((p) => p.privateKey.algorithm.name === "RSASSA-PKCS1-v1_5");
  if (!pair) throw new Error(`union ${slug} has no RSA key`);
  const targets = receiver.origins.slice(0, CONCURRENCY).map((o) => new URL("/bare", o));
  const actor = ctx.getActorUri(slug).href;
  let n = 0;
  let failed = 0;
  const post = async (i: number) => {
    const body = JSON.stringify({ "@context": "https://www.w3.org/ns/activitystreams", id: `${actor}/bare/${i}`, type: "Create", actor, object: { type: "Note", content: "baseline" } });
    const request = new Request(targets[i % targets.length]!, { method: "POST", body, headers: { "content-type": "application/activity+json" } });
    const signed = await signRequest(request, pair.privateKey, pair.keyId, { spec: "rfc9421" });
    const res = await fetch(signed);
    await res.arrayBuffer();
    if (res.status !== 202) failed++;
  };
  // Untimed: each receiving server fetches the key once, and the connections open.
  await Promise.all(targets.map(() => post(n++)));
  const warm = n;
  const t0 = performance.now();
  await forDuration(ms, CONCURRENCY, () => post(n++));
  const elapsed = performance.now() - t0;
  n -= warm;
  if (failed > 0) throw new Error(`${failed} of ${n} baseline POSTs were not accepted`);
  return perSecond(n, elapsed);
}

/** The columns a fan-out's row begins with in both modes: what was fanned out, how fast, against the same run's sign+POST rate. */
function firstColumns(c: {
  dialect: string; shape: string; mode: string; followers: number; servers: number; seedS: number;
  stats: ReceiverStats; start: number; ms: number; rate: number; baseline: number;
}): Row {
  return {
    dialect: c.dialect,
    shape: c.shape,
    mode: c.mode,
    followers: c.followers,
    servers: c.servers,
    "seed s": c.seedS,
    deliveries: c.stats.delivered,
    inboxes: c.stats.inboxes,
    "first s": (c.stats.firstAt! - c.start) / 1000,
    "last s": c.ms / 1000,
    "deliveries/s": c.rate,
    "sign+POST/s": c.baseline,
    ratio: c.rate / c.baseline,
  };
}
