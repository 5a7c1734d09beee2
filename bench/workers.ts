import { type ChildProcess, fork } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { followIdOf } from "../src/members/members.ts";
import { type Kysely, sql } from "kysely";
import { openDatabase } from "../src/db/database.ts";
import type { DB } from "../src/db/schema.ts";
import type { DialectCase } from "../test/helpers/databases.ts";
import { freePort } from "../test/helpers/muster.ts";
import { ensureStopped, type MusterProcess, spawnMuster } from "../test/helpers/muster-process.ts";
import type { ReceiverMessage, ReceiverStats } from "./fanout-receiver.ts";
import { allProcessCpu, type Benchmark, cpuMs, loadAverage, machineCpu, otherProcesses, perSecond, pgBackgroundCpu, pgBackgroundSplit, progress, type Row, waitFor } from "./lib.ts";
import { hopLatencies, machineLine, type PeerReport } from "./joins.ts";

/**
 * The scaled-out deployment, measured: `muster serve --no-worker` and two
 * `muster worker` processes, each a real child process started as an
 * operator would, sharing one PostgreSQL database. Two runs on it:
 *
 * - joins: the people of bench/joins-peer.ts (loopback Fedify servers) each
 *   send a signed Follow to an open union; timed to the last verified Accept;
 * - fan-out: a second union's followers (bulk-inserted, on the loopback
 *   servers of bench/fanout-receiver.ts, which verify every signature) get
 *   one call-to-action posted with `muster action post --now`; timed to the
 *   last expected delivery.
 *
 * CPU is each Muster process's own (/proc/<pid>/stat), summed and apart;
 * peak RSS each one's VmHWM, reset before each run (/proc/<pid>/clear_refs).
 * Sizes: BENCH_WORKERS_JOINS (default 400; --quick 60), BENCH_WORKERS_FOLLOWERS
 * and BENCH_WORKERS_SERVERS (default 100000 on 1000; --quick 1000 on 100;
 * BENCH_WORKERS_FOLLOWERS=1000000 for the 10^6 run, seeded in SQL in about a
 * minute), BENCH_WORKERS_SHARED=0 for personal inboxes, BENCH_WORKERS_POOL
 * for each process's MUSTER_DB_POOL, BENCH_WORKERS_CONCURRENCY for their
 * MUSTER_QUEUE_CONCURRENCY (default 8; "default" leaves it unset, 16),
 * BENCH_WORKERS_WARMUP=W for W untimed joins first (warm processes), BENCH_WORKERS_HTTP_TIMEOUT_MS for their MUSTER_HTTP_TIMEOUT_MS (a short one
 * shows how repeats come from slow answers: the receiver prints each repeat's
 * timing), BENCH_WORKERS_LOG_LEVEL for their LOG_LEVEL, BENCH_WORKERS_CPU_PROF=<dir>
 * for a V8 CPU profile of each, BENCH_WORKERS_NODE_OPTIONS for node options
 * of the Muster processes only (e.g. --max-semi-space-size=32, --import of a
 * tracer), BENCH_WORKERS_WINDOW=<file> for the joins' window on the wall
 * clock (to slice per-process traces). The joins row also gives each
 * process's CPU a join by thread kind (main, libuv pool, V8 workers: GC and
 * JIT compiles, other: delivery threads), user+system. PostgreSQL only.
 */

const JOIN_SERVERS = 10;
/** application_name of this benchmark's own connections. */
const BENCH_APP = "muster-bench-workers";
/** Follows in flight at once (BENCH_JOINS_INFLIGHT, as in the joins bench). */
const JOIN_CONCURRENCY = Number(process.env.BENCH_JOINS_INFLIGHT) || 32;
const CLK_TCK = 100;

/** user + system CPU of a process so far, ms (Linux). */
export function cpuOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
}

/** CPU ms (user, system) of each thread of a process by thread id, with its kind (main, libuv, V8/GC, other). */
function threadCpuOf(pid: number): Map<string, { kind: string; user: number; sys: number }> {
  const out = new Map<string, { kind: string; user: number; sys: number }>();
  let tids: string[] = [];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
      const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const kind = Number(tid) === pid ? "main" : name.startsWith("libuv") ? "libuv" : name.startsWith("V8") ? "V8/GC" : "other";
      out.set(tid, { kind, user: (Number(f[11]) * 1000) / CLK_TCK, sys: (Number(f[12]) * 1000) / CLK_TCK });
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}

/** "main 1.20+0.40, libuv 0.30+0.01, …": ms a op, user+system, by thread kind, between two threadCpuOf snapshots. */
function threadSplit(before: ReturnType<typeof threadCpuOf>, after: ReturnType<typeof threadCpuOf>, n: number): string {
  const by = new Map<string, { user: number; sys: number }>();
  for (const [tid, t] of after) {
    const b = before.get(tid);
    const k = by.get(t.kind) ?? { user: 0, sys: 0 };
    k.user += t.user - (b?.user ?? 0);
    k.sys += t.sys - (b?.sys ?? 0);
    by.set(t.kind, k);
  }
  return [...by].filter(([, t]) => t.user + t.sys > 0).sort((a, b) => b[1].user + b[1].sys - a[1].user - a[1].sys).map(([k, t]) => `${k} ${(t.user / n).toFixed(2)}+${(t.sys / n).toFixed(2)}`).join(", ");
}

function cpuOfAll(processes: readonly MusterProcess[]): number[] {
  return processes.map((p) => cpuOf(p.pid));
}

/** Peak resident set of a process since it started or since resetPeakRss, MiB (Linux VmHWM). */
export function peakRssOf(pid: number): number {
  const kib = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
  return Number(kib) / 1024;
}

/** Starts a new peak (VmHWM := current RSS), so each run reports its own. */
export function resetPeakRss(processes: readonly MusterProcess[]): void {
  for (const p of processes) {
    try {
      writeFileSync(`/proc/${p.pid}/clear_refs`, "5");
    } catch {
      // Not allowed here: the peak is then since start.
    }
  }
}

/**
 * Samples the database's connections (every client of the private database:
 * the three processes, the CLI and this benchmark's pool) until stopped;
 * returns the peak. The shared server allows 100 in all.
 */
function trackConnections(db: Kysely<DB>, every = 250): { stop(): Promise<number> } {
  let peak = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      const r = await sql<{ n: number }>`select count(*)::int as n from pg_stat_activity where datname = current_database()`.execute(db).catch(() => undefined);
      peak = Math.max(peak, r?.rows[0]?.n ?? 0);
      await new Promise((resolve) => setTimeout(resolve, every));
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return peak;
    },
  };
}

/**
 * CPU of the PostgreSQL backends serving this database (the server runs on
 * this machine), the benchmark's own connections left out: each backend's CPU since the first sample that saw it
 * (since its start for backends that connect meanwhile), summed at stop.
 * Sampled every `every` ms, so a backend that exits between samples loses
 * its last slice. Undefined when /proc of the server's processes is unreadable.
 */
export function trackBackendCpu(db: Kysely<DB>, every = 250): { stop(): Promise<number | undefined>; pids(): number[] } {
  const first = new Map<number, number>();
  const last = new Map<number, number>();
  let running = true;
  let readable = true;
  let initial = true;
  const sample = async () => {
    const r = await sql<{ pid: number }>`select pid from pg_stat_activity where datname = current_database() and application_name <> ${BENCH_APP}`.execute(db).catch(() => undefined);
    for (const { pid } of r?.rows ?? []) {
      let cpu: number;
      try {
        cpu = cpuOf(pid);
      } catch {
        readable = false;
        continue;
      }
      if (!first.has(pid)) first.set(pid, initial ? cpu : 0);
      last.set(pid, cpu);
    }
    initial = false;
  };
  const loop = (async () => {
    while (running) {
      await sample();
      await new Promise((resolve) => setTimeout(resolve, every));
    }
  })();
  return {
    pids: () => [...last.keys()],
    async stop() {
      running = false;
      await loop;
      await sample();
      if (!readable && last.size === 0) return undefined;
      let total = 0;
      for (const [pid, cpu] of last) total += cpu - (first.get(pid) ?? 0);
      return total;
    },
  };
}

/** Statements each process sent so far (BENCH_WORKERS_STATEMENTS=1; bench/pg-count.ts), or undefined. */
async function statementsOf(processes: readonly MusterProcess[], dir: string | undefined): Promise<number[] | undefined> {
  if (!dir) return undefined;
  for (const p of processes) process.kill(p.pid, "SIGUSR2");
  await new Promise((r) => setTimeout(r, 300));
  try {
    return processes.map((p) => Number(readFileSync(join(dir, String(p.pid)), "utf8")));
  } catch {
    return undefined;
  }
}

/** Each process's pool acquisitions so far, [acquires, waits over 1 ms, total ms waited] (bench/pg-count.ts), or undefined. Read after statementsOf. */
function poolWaitsOf(processes: readonly MusterProcess[], dir: string | undefined): number[][] | undefined {
  if (!dir) return undefined;
  try {
    return processes.map((p) => readFileSync(join(dir, `${p.pid}.pool`), "utf8").split(" ").map(Number));
  } catch {
    return undefined;
  }
}

/** Lines of the processes' logs that would explain a repeated delivery. */
export function retriesLogged(processes: readonly MusterProcess[], since: readonly number[]): string {
  const count = (re: RegExp) => processes.reduce((n, p, i) => n + (p.output().slice(since[i]).match(re)?.length ?? 0), 0);
  if (process.env.BENCH_WORKERS_VERBOSE) {
    for (const p of processes) for (const line of p.output().slice(since[processes.indexOf(p)]).split("\n").filter((l) => / (WRN|ERR) |failed here/.test(l)).slice(0, 20)) progress(`${p.pid}: ${line.slice(0, 400)}`);
  }
  // "failed here" is the batch sender's (logged at debug: BENCH_WORKERS_LOG_LEVEL=debug): a POST it gave up on, which Fedify's handler sends again.
  return `logged: ${count(/handled twice/g)} lease lost, ${count(/Failed to send/gi)} failed sends, ${count(/failed here; Fedify retries it/g)} batch sends handed to Fedify, ${count(/refused a new connection/g)} connections refused`;
}

async function run(args: string[], env: Record<string, string>): Promise<string> {
  const p = spawnMuster(args, env);
  const code = await p.exited;
  if (code !== 0) throw new Error(`muster ${args.join(" ")} exited ${code}:\n${p.output()}`);
  return p.stdout();
}

/**
 * What a bench needs to run Muster as `serve --no-worker` plus `muster
 * worker` processes on `databaseUrl`: a data directory (the caller removes
 * it), a free port and its origin, and their environment, with the queue
 * concurrency BENCH_WORKERS_CONCURRENCY sets (8 by default: at Muster's 16
 * each worker's pool may hold 52 connections, and two of them with the web's
 * 10 are over PostgreSQL's default max_connections of 100 before anything
 * else connects; "default" leaves Muster's).
 */
export async function scaledOutEnv(databaseUrl: string, name: string, logLevel: string | undefined): Promise<{ env: Record<string, string>; dataDir: string; origin: URL; concurrency: string }> {
  const dataDir = mkdtempSync(join(tmpdir(), `muster-bench-${name}-`));
  const port = await freePort();
  const origin = new URL(`http://127.0.0.1:${port}`);
  const env: Record<string, string> = { PORT: String(port), ORIGIN: origin.origin, DATABASE_URL: databaseUrl, DATA_DIR: dataDir, MUSTER_ALLOW_PRIVATE_ADDRESS: "1", LOG_LEVEL: logLevel ?? "warning" };
  const concurrency = process.env.BENCH_WORKERS_CONCURRENCY ?? "8";
  if (concurrency !== "default") env.MUSTER_QUEUE_CONCURRENCY = concurrency;
  return { env, dataDir, origin, concurrency };
}

export const workers: Benchmark = {
  name: "workers",
  title: "PostgreSQL scaled out: serve --no-worker plus two muster worker processes (joins, then a fan-out)",
  summary: "joins/s and fan-out deliveries/s with a web process and two worker processes on PostgreSQL; CPU per process",
  notes: [
    "three real child processes (bin/muster.js serve --no-worker, worker, worker) on one PostgreSQL database, MUSTER_QUEUE_CONCURRENCY=8 (BENCH_WORKERS_CONCURRENCY) and the pool sized to it",
    `joins: ${JOIN_SERVERS} loopback servers' people each send one signed Follow (${JOIN_CONCURRENCY} in flight) to an open union; timed from the first Follow to the last verified Accept`,
    "fan-out: followers bulk-inserted (untimed) on the receiver's loopback servers; `muster action post --now` (its own process, timed) to the last verified delivery",
    "CPU ms/op: the web and both workers' user+system CPU from /proc, summed (each apart in 'web / w1 / w2'); the peers' and receiver's CPU are not included",
    "joins: the peers' process CPU a join apart (warmed up before the window as the joins bench's are, BENCH_JOINS_PEER_WARMUP=300), PostgreSQL's background processes (walwriter, checkpointer, …) and the bench's own; 'machine': the cores' busy, idle and iowait share over the window from /proc/stat (idle also over its middle 80%), the processes measured against the busy cores, and the other processes that ran (a shared machine's other work skews the rate)",
    "hops p50/p99 ms: Follow sent → member row (members.joined_at) → 202 at the peer; row → Accept verified at the peer; Follow → Accept",
  ],
  async run(dialect: DialectCase, { quick }): Promise<Row[]> {
    if (dialect.name !== "postgres") return [{ dialect: dialect.name, run: "-", detail: "PostgreSQL only: processes share the queue only there" }];
    const joins = Number(process.env.BENCH_WORKERS_JOINS ?? (quick ? 60 : 400));
    const followers = Number(process.env.BENCH_WORKERS_FOLLOWERS ?? (quick ? 1000 : 100_000));
    const servers = Number(process.env.BENCH_WORKERS_SERVERS ?? (quick ? 100 : 1000));
    const shared = process.env.BENCH_WORKERS_SHARED !== "0";
    const tdb = await dialect.create();
    // Named, so the backends CPU per op leaves out this benchmark's own sampling (trackBackendCpu).
    const benchUrl = new URL(tdb.url);
    benchUrl.searchParams.set("application_name", BENCH_APP);
    const database = openDatabase(benchUrl.href, { poolSize: 4 });
    // BENCH_WORKERS_PG_LOG=1: PostgreSQL logs every statement of this database
    // only, with its duration and its backend's CPU (log_statement_stats), for
    // bench/pg-log-top.ts; no restart, nothing else on the server changes.
    const pgLog = process.env.BENCH_WORKERS_PG_LOG === "1";
    if (pgLog) {
      const name = new URL(tdb.url).pathname.slice(1);
      await sql.raw(`alter database ${name} set log_min_duration_statement = 0`).execute(database.db);
      await sql.raw(`alter database ${name} set log_statement_stats = on`).execute(database.db);
    }
    const { env, dataDir, origin, concurrency } = await scaledOutEnv(tdb.url, "workers", process.env.BENCH_WORKERS_LOG_LEVEL);
    if (process.env.BENCH_WORKERS_HTTP_TIMEOUT_MS) env.MUSTER_HTTP_TIMEOUT_MS = process.env.BENCH_WORKERS_HTTP_TIMEOUT_MS;
    if (process.env.BENCH_WORKERS_POOL) env.MUSTER_DB_POOL = process.env.BENCH_WORKERS_POOL;
    // BENCH_WORKERS_DB_SYNC=normal|full: the processes' MUSTER_DB_SYNC (commit durability; README, configuration).
    if (process.env.BENCH_WORKERS_DB_SYNC) env.MUSTER_DB_SYNC = process.env.BENCH_WORKERS_DB_SYNC;
    // BENCH_WORKERS_STATEMENTS=1: each process counts the statements it sends (bench/pg-count.ts).
    const countDir = process.env.BENCH_WORKERS_STATEMENTS === "1" ? mkdtempSync(join(tmpdir(), "muster-bench-pgcount-")) : undefined;
    if (countDir) {
      env.BENCH_PG_COUNT_DIR = countDir;
      env.NODE_OPTIONS = `${process.env.NODE_OPTIONS ?? ""} --import ${fileURLToPath(new URL("./pg-count.ts", import.meta.url))}`.trim();
    }
    // BENCH_WORKERS_CPU_PROF=<dir>: each Muster process writes a V8 CPU profile there when it stops.
    // BENCH_WORKERS_NODE_OPTIONS: node options for the Muster processes only (e.g. V8 heap flags), not the bench's own or its peers'.
    if (process.env.BENCH_WORKERS_NODE_OPTIONS) env.NODE_OPTIONS = `${env.NODE_OPTIONS ?? process.env.NODE_OPTIONS ?? ""} ${process.env.BENCH_WORKERS_NODE_OPTIONS}`.trim();
    if (process.env.BENCH_WORKERS_CPU_PROF) env.NODE_OPTIONS = `${env.NODE_OPTIONS ?? process.env.NODE_OPTIONS ?? ""} --cpu-prof --cpu-prof-dir=${process.env.BENCH_WORKERS_CPU_PROF}`.trim();
    const maxConnections = (await sql<{ max: string }>`select current_setting('max_connections') as max`.execute(database.db)).rows[0]!.max;
    const procs: MusterProcess[] = [];
    let receiver: Receiver | undefined;
    let peers: ChildProcess | undefined;
    try {
      // BENCH_WORKERS_WEB_POOL: the web process's own MUSTER_DB_POOL (the workers keep BENCH_WORKERS_POOL or theirs).
      const web = spawnMuster(["serve", "--no-worker"], process.env.BENCH_WORKERS_WEB_POOL ? { ...env, MUSTER_DB_POOL: process.env.BENCH_WORKERS_WEB_POOL } : env);
      procs.push(web);
      // On a machine loaded by other work a process took over a minute to start.
      await web.waitFor(/queue workers: none in this process/, "serve --no-worker is listening", 240_000);
      await run(["union", "create", "riders", "--name", "Riders United", "--purpose", "Fair pay", "--leader", "@lead@leader.invalid", "--join-policy", "open", "--json"], env);
      for (let i = 0; i < 2; i++) procs.push(spawnMuster(["worker"], env));
      await Promise.all(procs.slice(1).map((w) => w.waitFor(/Muster worker started \(postgres\)/, `worker ${w.pid} started`, 240_000)));
      const rows: Row[] = [];
      const row = (what: string, n: number, ms: number, cpu: number[], connections: number, extra: Record<string, string | number>) => {
        const total = cpu.reduce((a, b) => a + b, 0);
        rows.push({
          dialect: dialect.name,
          run: what,
          n,
          "last s": ms / 1000,
          "per s": perSecond(n, ms),
          "CPU ms/op": total / n,
          "web / w1 / w2 CPU ms/op": cpu.map((c) => (c / n).toFixed(2)).join(" / "),
          "web / w1 / w2 peak RSS MiB": procs.map((p) => peakRssOf(p.pid).toFixed(0)).join(" / "),
          "pg conns": `${connections} of ${maxConnections}`,
          "queue concurrency": concurrency,
          ...extra,
          load: loadAverage().replace(/^load average /, ""),
        });
      };

      // Joins.
      // BENCH_WORKERS_WARMUP=W: W other people join first, untimed (their Accepts and welcomes waited for), so the
      // processes' JIT, delivery threads and connections are warm as on a deployment that has been running.
      const warmup = Math.max(0, Number(process.env.BENCH_WORKERS_WARMUP ?? 0) || 0);
      // The peers as the joins bench runs them against SQLite (like for like): Node's defaults, and warmed up
      // before the window (BENCH_JOINS_PEER_WARMUP, 300 unless set): a cold peer spent ≈0.35 ms a join more on the cores Muster shares.
      peers = fork(fileURLToPath(new URL("./joins-peer.ts", import.meta.url)), [new URL("/u/riders", origin).href, String(joins), String(JOIN_SERVERS), String(JOIN_CONCURRENCY)], { stdio: ["ignore", "inherit", "inherit", "ipc"], execArgv: [], env: { ...process.env, BENCH_JOINS_WARMUP: String(warmup), BENCH_JOINS_PEER_WARMUP: process.env.BENCH_JOINS_PEER_WARMUP ?? "300" } });
      await new Promise<void>((resolve, reject) => {
        peers!.once("message", () => resolve());
        peers!.once("exit", (code) => reject(new Error(`join peers exited with ${code} before they were ready`)));
      });
      if (warmup > 0) {
        progress(`${dialect.name}: ${warmup} warm-up joins, not measured`);
        await new Promise<void>((resolve, reject) => {
          peers!.once("message", () => resolve());
          peers!.once("exit", (code) => reject(new Error(`join peers exited with ${code} during the warm-up`)));
          peers!.send("warm");
        });
      }
      progress(`${dialect.name}: ${joins} joins through serve --no-worker + 2 workers (database ${new URL(tdb.url).pathname.slice(1)})`);
      resetPeakRss(procs);
      let logged = procs.map((p) => p.output().length);
      let connections = trackConnections(database.db);
      const backends = trackBackendCpu(database.db);
      const statementsBefore = await statementsOf(procs, countDir);
      const poolBefore = poolWaitsOf(procs, countDir);
      if (pgLog) progress(`pg log: joins start ${new Date().toISOString()}`);
      const threadsBefore = procs.map((p) => threadCpuOf(p.pid));
      let before = cpuOfAll(procs);
      const pgQuery = async (text: string) => (await sql.raw<{ pid: number; backend_type: string }>(text).execute(database.db)).rows;
      const pgBgBefore = await pgBackgroundCpu(pgQuery);
      const selfCpu = process.cpuUsage();
      const machine = machineCpu();
      const everyBefore = allProcessCpu();
      // The joins' window on the profiles' clock (V8's and process.hrtime are both CLOCK_MONOTONIC), for slicing them.
      const joinsFrom = process.hrtime.bigint() / 1000n;
      const joinsFromMs = Date.now();
      const report = await new Promise<PeerReport>((resolve, reject) => {
        peers!.once("message", (r) => resolve(r as never));
        peers!.once("exit", (code) => reject(new Error(`join peers exited with ${code}`)));
        peers!.send("go");
      });
      let after = cpuOfAll(procs);
      const machineUse = machine.stop();
      const everyAfter = allProcessCpu();
      const selfMs = cpuMs(selfCpu);
      const pgBgAfter = await pgBackgroundCpu(pgQuery);
      const pgBg = pgBackgroundSplit(pgBgBefore, pgBgAfter, joins);
      const others = otherProcesses(everyBefore, everyAfter, new Set([...procs.map((p) => p.pid), process.pid, peers.pid!, ...backends.pids(), ...pgBgAfter.keys()]), report.ms + 20);
      // BENCH_WORKERS_WINDOW=<file>: the joins' window on the wall clock (ms), for per-process traces (GC, logs).
      if (process.env.BENCH_WORKERS_WINDOW) writeFileSync(process.env.BENCH_WORKERS_WINDOW, JSON.stringify({ fromMs: joinsFromMs, toMs: Date.now(), pids: { web: procs[0]!.pid, workers: procs.slice(1).map((p) => p.pid) } }));
      const threads = procs.map((p, i) => threadSplit(threadsBefore[i]!, threadCpuOf(p.pid), joins));
      if (process.env.BENCH_WORKERS_CPU_PROF) {
        writeFileSync(join(process.env.BENCH_WORKERS_CPU_PROF, "joins-window.json"), JSON.stringify({ fromUs: Number(joinsFrom), toUs: Number(process.hrtime.bigint() / 1000n), pids: { web: procs[0]!.pid, workers: procs.slice(1).map((p) => p.pid) } }));
      }
      if (pgLog) progress(`pg log: joins end ${new Date().toISOString()}`);
      const backendCpu = await backends.stop();
      const statementsAfter = await statementsOf(procs, countDir);
      const poolAfter = poolWaitsOf(procs, countDir);
      const joinedRows = await database.db.selectFrom("members").select(["actor_id", "follow_id", "joined_at"]).where("follow_id", "is not", null).execute();
      const joinedAt = new Map(joinedRows.map((r) => [followIdOf(r.actor_id, r.follow_id)!, Number(r.joined_at)]));
      const musterMs = after.reduce((a, c, i) => a + c - before[i]!, 0);
      const accounted = musterMs + (backendCpu ?? 0) + pgBg.total + (report.cpuMs ?? 0) + selfMs;
      row("joins (Follow → verified Accept)", joins, report.ms, after.map((c, i) => c - before[i]!), await connections.stop(), {
        "PostgreSQL backends CPU ms/op": backendCpu === undefined ? "-" : (backendCpu / joins).toFixed(2),
        "PostgreSQL background CPU ms/op": pgBg.text,
        "peer CPU ms/op": report.cpuMs === undefined ? "-" : (report.cpuMs / joins).toFixed(2),
        "bench CPU ms/op": (selfMs / joins).toFixed(2),
        "machine": `${machineLine(machineUse, accounted, report.ms + 20)}; ${others}`,
        "hops p50/p99 ms": hopLatencies(report, joinedAt),
        "db sync": env.MUSTER_DB_SYNC ?? "default",
        ...(statementsBefore && statementsAfter ? { "statements/op web / w1 / w2": statementsAfter.map((n, i) => ((n - statementsBefore[i]!) / joins).toFixed(1)).join(" / ") } : {}),
        // Per join: connections taken from the pool, how many of those waited over 1 ms, and the ms waited.
        ...(poolBefore && poolAfter ? { "pool acquires / waits>1ms / ms waited per op web | w1 | w2": poolAfter.map((a, i) => a.map((v, k) => ((v - poolBefore[i]![k]!) / joins).toFixed(2)).join(" / ")).join(" | ") } : {}),
        ...(warmup > 0 ? { "warm-up joins": warmup } : {}),
        "threads ms/op user+sys web | w1 | w2": threads.join(" | "),
        detail: `${report.accepted}/${joins} accepted, ${report.welcomes} welcome DMs, ${report.refused} POSTs refused; ${retriesLogged(procs, logged)}; target 300/s on SQLite, more here`,
      });
      peers.kill();
      peers = undefined;

      // Fan-out.
      receiver = await startReceiver(servers, origin.href);
      await run(["union", "create", "callers", "--name", "Callers", "--purpose", "Fan-out", "--leader", "@lead@leader.invalid", "--join-policy", "open", "--json"], env);
      const unionId = (await database.db.selectFrom("unions").select("id").where("slug", "=", "callers").executeTakeFirstOrThrow()).id;
      const seedStart = performance.now();
      await seedFollowers(database.db, unionId, receiver, followers, shared);
      const seedMs = performance.now() - seedStart;
      progress(`${dialect.name}: ${followers} followers on ${servers} servers seeded in ${(seedMs / 1000).toFixed(1)} s`);
      const expected = shared ? servers : followers;
      await sql`analyze`.execute(database.db);
      resetPeakRss(procs);
      logged = procs.map((p) => p.output().length);
      connections = trackConnections(database.db);
      before = cpuOfAll(procs);
      const t0 = performance.now();
      const wallStart = Date.now();
      await run(["action", "post", "callers", "--title", "Benchmark call", "--text", "Sign the **petition** today.", "--kind", "sign", "--now"], env);
      const posted = performance.now() - t0;
      let stats = await receiver.stats();
      await waitFor(`${dialect.name}: deliveries`, async () => {
        stats = await receiver!.stats();
        // Distinct inboxes, not POSTs: repeats must not end the wait early.
        return stats.inboxes >= expected;
        // On a loaded machine a large roster's first delivery came after more than the default minute of no change.
      }, () => `${stats.inboxes}/${expected} inboxes (${stats.delivered} POSTs), ${stats.refused} refused`, { pollMs: 100, stallMs: 300_000 });
      const ms = performance.now() - t0;
      after = cpuOfAll(procs);
      await new Promise((r) => setTimeout(r, 1000));
      stats = await receiver.stats();
      if (stats.repeats > 0) progress(`repeats (first 20): ${JSON.stringify(stats.repeatGaps)}`);
      row(`fan-out (${shared ? "shared" : "personal"} inboxes)`, stats.inboxes, ms, after.map((c, i) => c - before[i]!), await connections.stop(), {
        detail: `${followers} followers on ${servers} servers (seeded in ${(seedMs / 1000).toFixed(1)} s); the CLI post took ${(posted / 1000).toFixed(1)} s of it, first delivery at ${(((stats.firstAt ?? Number.NaN) - wallStart) / 1000).toFixed(1)} s; ${stats.delivered} POSTs, ${stats.repeats} repeats (${retriesLogged(procs, logged)}), ${stats.refused} refused; receiver ${(stats.cpuMs / stats.delivered).toFixed(2)} CPU ms/delivery`,
      });
      return rows;
    } finally {
      peers?.kill();
      await receiver?.stop();
      await Promise.all(procs.map(ensureStopped));
      await database.close();
      await tdb.destroy();
      rmSync(dataDir, { recursive: true, force: true });
      if (countDir) rmSync(countDir, { recursive: true, force: true });
    }
  },
};

interface Receiver {
  readonly port: number;
  readonly hosts: readonly string[];
  stats(): Promise<ReceiverStats>;
  stop(): Promise<void>;
}

/** bench/fanout-receiver.ts in its own process (the same one the fanout bench uses). */
async function startReceiver(hosts: number, senderOrigin: string): Promise<Receiver> {
  const child: ChildProcess = fork(fileURLToPath(new URL("./fanout-receiver.ts", import.meta.url)), [], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const listening = await new Promise<Extract<ReceiverMessage, { kind: "listening" }>>((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`the fan-out receiver exited with ${code} before listening`)));
    child.on("message", (msg: ReceiverMessage) => {
      if (msg.kind === "listening") resolve(msg);
    });
    child.send({ hosts, senderOrigin });
  });
  return {
    port: listening.port,
    hosts: listening.hosts,
    stats: () => new Promise((resolve, reject) => {
      const gone = () => reject(new Error(`the fan-out receiver exited (${child.exitCode ?? child.signalCode})`));
      const on = (msg: ReceiverMessage) => {
        if (msg.kind !== "stats") return;
        child.off("message", on);
        child.off("exit", gone);
        resolve(msg.stats);
      };
      child.on("message", on);
      child.once("exit", gone);
      child.send({ kind: "stats" });
    }),
    async stop() {
      if (child.exitCode === null) child.send({ kind: "stop" });
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
      child.kill("SIGKILL");
    },
  };
}

/**
 * Active members on the receiver's servers (follower i on server i mod n),
 * under the leader, made by PostgreSQL itself from generate_series in chunks
 * of SEED_CHUNK: 10^6 rows sent as 1,000-row inserts took 446 s under load.
 */
async function seedFollowers(db: Kysely<DB>, unionId: string, receiver: Receiver, followers: number, shared: boolean): Promise<void> {
  const root = await db.selectFrom("members").select("id").where("union_id", "=", unionId).where("role", "=", "leader").executeTakeFirst();
  const now = Date.now();
  const servers = receiver.hosts.map((h) => `http://${h}:${receiver.port}`);
  const SEED_CHUNK = 100_000;
  for (let from = 0; from < followers; from += SEED_CHUNK) {
    const to = Math.min(followers, from + SEED_CHUNK) - 1;
    await db.transaction().execute(async (trx) => {
      // i, its server, and its actor id, as the Kysely version spelled them.
      const people = sql`(select i, s.server, s.server || '/users/m' || i as id, 'm' || i as name,
          '@m' || i || '@' || split_part(s.server, '//', 2) as handle
        from generate_series(${from}::int, ${to}::int) as i,
          lateral (select (${servers}::text[])[i % ${servers.length} + 1] as server) as s)`;
      // As a join stores them (0046, 0049): no person's name, inboxes relative to the actor id.
      await sql`insert into remote_actors (id, type, handle, name, inbox, shared_inbox, fetched_at)
        select id, 'Person', handle, null, '', ${shared ? sql`'/inbox'` : sql`null`}, ${now}::bigint from ${people} as p`.execute(trx);
      await sql`insert into members (id, union_id, actor_id, handle, state, role, sponsor_id, subtree_size, follow_id, joined_at, created_at)
        select gen_random_uuid()::text, ${unionId}, id, handle, 'active', 'member', ${root?.id ?? null}, 0, id || '#follow', ${now}::bigint, ${now}::bigint from ${people} as p`.execute(trx);
    });
    if (followers > SEED_CHUNK) progress(`seeded ${to + 1}/${followers} followers`);
  }
  if (root) await db.updateTable("members").set({ subtree_size: followers }).where("id", "=", root.id).execute();
}
