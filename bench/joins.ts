import { fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { followIdOf } from "../src/members/members.ts";
import SQLite from "better-sqlite3";
import type { DialectCase } from "../test/helpers/databases.ts";
import { makeUnion, startMuster, type TestMuster } from "../test/helpers/muster.ts";
import { allProcessCpu, type Benchmark, cpuMs, loadAverage, machineCpu, otherProcesses, percentile, progress, type Row, startProfile, threadTimes } from "./lib.ts";

const TARGET = 300;
const SERVERS = 10;
/** Follows in flight at once (BENCH_JOINS_INFLIGHT; 32 unless set). */
const CONCURRENCY = Number(process.env.BENCH_JOINS_INFLIGHT) || 32;

/**
 * SQLite statements run by this process, counted at better-sqlite3 (every
 * statement the driver runs goes through Statement#run or #all; BEGIN and
 * COMMIT included), by text.
 */
const sqlCounts = new Map<string, number>();
/** Statement text to the main thread's CPU µs spent inside better-sqlite3 running it. */
const sqlMicros = new Map<string, number>();
let sqlCounting = false;
/** Writes run outside a transaction (each its own commit). */
let autocommits = 0;
// Timing each statement costs a few % of the CPU measured: only when the statements are printed.
const sqlTiming = Boolean(process.env.BENCH_JOINS_SQL_TOP);
let sqlPatched = false;
const statementKeys = new WeakMap<object, { key: string; control: boolean }>();
function countSqlite(): void {
  if (sqlPatched) return;
  sqlPatched = true;
  const probe = new SQLite(":memory:");
  const proto = Object.getPrototypeOf(probe.prepare("select 1")) as Record<string, (...a: unknown[]) => unknown>;
  probe.close();
  for (const method of ["run", "all", "get", "iterate"]) {
    const original = proto[method]!;
    proto[method] = function (this: { source: string; reader: boolean; database: { inTransaction: boolean } }, ...args: unknown[]) {
      if (sqlCounting) {
        // Keyed once per prepared statement: normalising the text on every run cost the measured process about as much as SQLite's own work.
        let known = statementKeys.get(this);
        if (!known) statementKeys.set(this, known = { key: this.source.replace(/\s+/g, " ").trim().slice(0, 110), control: /^\s*(begin|commit|end|rollback|savepoint|release)\b/i.test(this.source) });
        const key = known.key;
        sqlCounts.set(key, (sqlCounts.get(key) ?? 0) + 1);
        // A write outside a transaction commits on its own.
        if (!this.reader && !known.control && !this.database.inTransaction) autocommits++;
        if (!sqlTiming) return original.apply(this, args);
        const t = process.threadCpuUsage();
        try {
          return original.apply(this, args);
        } finally {
          const u = process.threadCpuUsage(t);
          sqlMicros.set(key, (sqlMicros.get(key) ?? 0) + u.user + u.system);
        }
      }
      return original.apply(this, args);
    };
  }
}

/** CPU ms per join by thread kind between two threadTimes() snapshots, e.g. "main 6.1, libuv 0.9, delivery 1.2". */
function threadSplit(before: Map<string, { name: string; ms: number }>, after: Map<string, { name: string; ms: number }>, joins: number): string {
  const byKind = new Map<string, number>();
  for (const [tid, { name, ms }] of after) {
    const kind = name === "MainThread" || name === "node" ? "main" : name.startsWith("libuv") ? "libuv" : name.startsWith("V8") ? "V8/GC" : name;
    byKind.set(kind, (byKind.get(kind) ?? 0) + ms - (before.get(tid)?.ms ?? 0));
  }
  return [...byKind].filter(([, ms]) => ms > 0).sort((a, b) => b[1] - a[1]).map(([k, ms]) => `${k} ${(ms / joins).toFixed(2)}`).join(", ");
}


export interface PeerReport {
  accepted: number;
  welcomes: number;
  actorGets: number;
  refused: number;
  sentMs: number;
  ms: number;
  /** Per join, ms from sending the Follow to its Accept arriving. */
  latencies: number[];
  /** Per Follow, ms from sending it to the union's 2xx answer. */
  ackLatencies?: number[];
  /** Per Follow, wall-clock ms when sent and when its Accept arrived. */
  timeline: { follow: string; sent: number; acked?: number; accepted?: number }[];
  /** CPU ms the peers' process used from the first Follow until it reported (its waiting loop included). */
  cpuMs?: number;
  /** Deliveries the peers' synchronous verifier left to Fedify's inbox (all of them with BENCH_JOINS_PEER=fedify). */
  fedifyInbox?: number;
}

/**
 * Where a join's time goes, p50/p99 ms of each hop on the wall clock: the
 * Follow's POST to the member's row (members.joined_at, stamped in the
 * join's transaction, which commits before the 202 on the fast path), that
 * to the 202 at the peer, and to the Accept verified at the peer. Rows of
 * `joined` by follow id (members.follow_id).
 */
export function hopLatencies(report: PeerReport, joined: ReadonlyMap<string, number>): string {
  const hops: [string, number[]][] = [["Follow→joined", []], ["joined→202", []], ["joined→Accept", []], ["Follow→Accept", []]];
  for (const t of report.timeline) {
    const at = joined.get(t.follow);
    if (at !== undefined) hops[0]![1].push(at - t.sent);
    if (t.acked !== undefined && at !== undefined) hops[1]![1].push(t.acked - at);
    if (at !== undefined && t.accepted !== undefined) hops[2]![1].push(t.accepted - at);
    if (t.accepted !== undefined) hops[3]![1].push(t.accepted - t.sent);
  }
  return hops.map(([name, xs]) => `${name} ${xs.length ? `${percentile(xs, 50).toFixed(0)}/${percentile(xs, 99).toFixed(0)}` : "-"}`).join(", ");
}

/** "62% busy, 30% idle, 8% iowait; accounted 1.4 of 1.6 busy cores": the whole machine over a window, against what a bench accounts for (ms). */
export function machineLine(machine: ReturnType<ReturnType<typeof machineCpu>["stop"]>, accountedMs: number, windowMs: number): string {
  if (!machine) return "-";
  const busyPct = 100 - machine.idlePct - machine.iowaitPct;
  return `${busyPct.toFixed(0)}% busy, ${machine.idlePct.toFixed(0)}% idle (${machine.steadyIdlePct.toFixed(0)}% in the middle 80%), ${machine.iowaitPct.toFixed(0)}% iowait; measured processes ${(accountedMs / windowMs).toFixed(2)} of ${(machine.busyMs / windowMs).toFixed(2)} busy cores`;
}

export const joins: Benchmark = {
  name: "joins",
  title: "Joins: signed Follows answered with a verified Accept",
  summary: "joins/s and server CPU ms per join (Follow → Accept and welcome DM) against 300/s, with and without reusing the fetched actor",
  notes: [
    `a child process plays ${SERVERS} loopback servers; their people each send one signed Follow (${CONCURRENCY} in flight) to an open union, and their inboxes verify every Accept's signature`,
    "joins/s: Follows sent ÷ time from the first Follow to the last Accept received; CPU is the Muster process's alone (web and queue in one process, SQLite or PostgreSQL)",
    `"Follow signed": HTTP is how Mastodon sends a Follow (a draft-cavage HTTP signature only); BENCH_JOINS_FOLLOW_SIG=ld sends them through Fedify's sender, which adds a Linked Data signature the union verifies too`,
    `"refetch" is the oldest path (the follower's actor fetched again after its key), "fedify" every Follow through Fedify's inbox and the queue (reusing the fetched actor), "reuse" the shipped one (a plain Follow joined in the request, federation/follow-fast-path.ts), run back to back on fresh databases; actor GETs/join counted at the peers`,
    "peer: \"plain\" (default) serves actor documents from a template Fedify rendered once and verifies each delivery with Muster's synchronous verifier (inbox-fast-verify.ts) against the union's key, falling back to Fedify's inbox (column \"to Fedify's inbox\"), as a server not built on Fedify would; BENCH_JOINS_PEER=fedify answers everything through Fedify (its CPU per join was more than Muster's)",
    "SQL/join, commits/join (SQLite): statements this process ran at better-sqlite3 while the joins ran (queue claims and settles, KV, BEGIN and COMMIT included); commits are COMMITs plus writes run outside a transaction (each commits on its own); BENCH_JOINS_SQL_TOP=30 prints the most frequent",
    `"Follows signed" before: the peers build and RSA-sign every Follow (Fedify's signRequest, draft-cavage, each actor's real key) before the timed window, and POST them over kept-alive connections; "live" signs each as it is sent (BENCH_JOINS_PEER_SIGN_LIVE=1, and always with BENCH_JOINS_FOLLOW_SIG=ld). Everything else the peers do is inside the window: serving each actor with its key, verifying every Accept's and welcome's signature (the union's key parsed once per peer process)`,
    "warm-up joins (BENCH_JOINS_WARMUP=W, default 0): W other people join first, outside the timed window and every figure (their Accepts and welcomes are waited for), so the JIT and caches are warm as on a server that has been running; with 0, the window starts on a fresh process",
    "peers warmed (BENCH_JOINS_PEER_WARMUP=P, default 300, at most the joins; 0 as before): before the window each peer serves P actor GETs to itself and verifies P Accepts and P welcomes it signed itself, so the peers' process is not cold in the window (it was ≈0.35 ms of CPU a join over a fresh 300, on the cores Muster shares); the union sees none of it",
    "CPU ms/join is Muster's process alone; peer CPU ms/join is the peers' process over the same window; both share the 2 cores; 'machine': the cores' busy, idle and iowait share over the window from /proc/stat (idle also over its middle 80%), the two processes against the busy cores, and the other processes that ran",
    "hops p50/p99 ms: Follow sent → member row (members.joined_at) → 202 at the peer; row → Accept verified at the peer; Follow → Accept; BENCH_JOINS_INFLIGHT sets the Follows in flight (32)",
    `target: ${TARGET} joins/s on SQLite (issue 16)`,
  ],
  async run(dialect: DialectCase, { quick }): Promise<Row[]> {
    const total = Number(process.env.BENCH_JOINS ?? (quick ? 60 : 400));
    const rows: Row[] = [];
    // BENCH_JOINS_MODES=reuse skips the old path (for profiling the shipped one).
    // "fedify": every Follow through Fedify's inbox and the queue (the path before the follow's fast path), "reuse": the shipped one.
    // "fedify-request", "reuse-request": the same with no queue running, so the CPU is the Follow's request alone (202 answered; no Accept is sent).
    // "vocab": the shipped path but every follower's actor read through Fedify's vocabulary (before plain-actor.ts).
    type Mode = "refetch" | "fedify" | "reuse" | "vocab" | "fedify-request" | "reuse-request" | "vocab-request";
    const known = new Set(["refetch", "fedify", "reuse", "vocab", "fedify-request", "reuse-request", "vocab-request"]);
    const modes = (process.env.BENCH_JOINS_MODES ?? "fedify,reuse").split(",").filter((x): x is Mode => known.has(x));
    for (const mode of modes) {
      const tdb = await dialect.create();
      let m: TestMuster | undefined;
      try {
        const requestOnly = mode.endsWith("-request");
        m = await startMuster(tdb, { worker: !requestOnly, muster: { reuseFetchedActors: mode !== "refetch", fastFollow: mode.startsWith("reuse") || mode.startsWith("vocab"), plainFollowActors: !mode.startsWith("vocab") } });
        await makeUnion(m, "riders", { joinPolicy: "open", leaderHandle: "@lead@leader.invalid" });
        const child = fork(fileURLToPath(new URL("./joins-peer.ts", import.meta.url)), [new URL("/u/riders", m.origin).href, String(total), String(SERVERS), String(CONCURRENCY)], {
          stdio: ["ignore", "inherit", "inherit", "ipc"],
          // The peers run with Node's defaults, whatever V8 flags the measured process was given.
          execArgv: [],
          // The peers warm themselves up before the window (joins-peer.ts): 300 unless BENCH_JOINS_PEER_WARMUP says otherwise.
          env: { ...process.env, BENCH_JOINS_PEER_WARMUP: process.env.BENCH_JOINS_PEER_WARMUP ?? "300", ...(requestOnly ? { BENCH_JOINS_NO_ACCEPTS: "1" } : {}) },
        });
        let followSignatures = "";
        let presigned = false;
        let peerWarmup = 0;
        await new Promise<void>((resolve, reject) => {
          child.once("message", (m) => {
            ({ followSignatures, presigned, peerWarmup } = m as { followSignatures: string; presigned: boolean; peerWarmup: number });
            resolve();
          });
          child.once("exit", (code) => reject(new Error(`join peers exited with ${code} before they were ready`)));
        });
        // BENCH_JOINS_WARMUP=W: W other joins first, untimed (the JIT and caches warm, as on a server that has been running).
        const warmup = Math.max(0, Number(process.env.BENCH_JOINS_WARMUP ?? 0) || 0);
        if (warmup > 0) {
          progress(`${dialect.name}: ${warmup} warm-up joins (${mode}), not measured`);
          await new Promise<void>((resolve, reject) => {
            child.once("message", () => resolve());
            child.once("exit", (code) => reject(new Error(`join peers exited with ${code} during the warm-up`)));
            child.send("warm");
          });
        }
        progress(`${dialect.name}: ${total} joins (${mode})`);
        const counting = dialect.name === "sqlite";
        if (counting) {
          countSqlite();
          sqlCounts.clear();
          autocommits = 0;
          sqlMicros.clear();
          sqlCounting = true;
        }
        const profile = await startProfile(`joins-${mode}-${total}`);
        const threadsBefore = threadTimes() ?? new Map();
        const cpu = process.cpuUsage();
        const machine = machineCpu();
        const everyBefore = allProcessCpu();
        const report = await new Promise<PeerReport>((resolve, reject) => {
          child.once("message", (r) => resolve(r as PeerReport));
          child.once("exit", (code) => reject(new Error(`join peers exited with ${code}`)));
          child.send("go");
        });
        const cpuTotal = cpuMs(cpu);
        const machineUse = machine.stop();
        const everyAfter = allProcessCpu();
        // Wall ms of the window: from "go" to the peers' report (the peer's CPU is over the same window).
        const windowMs = report.ms + 20;
        const joinedRows = await m.muster.database.db.selectFrom("members").select(["actor_id", "follow_id", "joined_at"]).where("follow_id", "is not", null).execute();
        const joinedAt = new Map(joinedRows.map((r) => [followIdOf(r.actor_id, r.follow_id)!, Number(r.joined_at)]));
        const threads = threadSplit(threadsBefore, threadTimes() ?? new Map(), total);
        await profile?.stop();
        sqlCounting = false;
        const sqlTop = [...sqlCounts].sort((a, b) => b[1] - a[1]);
        const statements = sqlTop.reduce((n, [, c]) => n + c, 0);
        const commits = (sqlCounts.get("commit") ?? 0) + autocommits;
        if (counting && process.env.BENCH_JOINS_SQL_TOP) {
          progress(`statements per join, most frequent first (${mode})`);
          const µs = [...sqlMicros.values()].reduce((a, b) => a + b, 0);
          progress(`  ${(µs / 1000 / total).toFixed(2)} ms CPU per join inside SQLite (main thread); per join: count, CPU µs`);
          for (const [text, n] of sqlTop.slice(0, Number(process.env.BENCH_JOINS_SQL_TOP) || 30)) progress(`  ${(n / total).toFixed(2).padStart(6)} ${((sqlMicros.get(text) ?? 0) / total).toFixed(0).padStart(6)}  ${text}`);
        }
        const rate = requestOnly ? (total * 1000) / report.sentMs : (report.accepted * 1000) / report.ms;
        rows.push({
          dialect: dialect.name,
          mode,
          "Follow signed": followSignatures === "ld" ? "HTTP+LD" : "HTTP",
          joins: total,
          accepted: report.accepted,
          "welcome DMs": report.welcomes,
          "POSTs refused": report.refused,
          "Follows sent s": report.sentMs / 1000,
          "last Accept s": report.ms / 1000,
          "joins/s": rate,
          "CPU ms/join": cpuTotal / total,
          "by thread": threads || "-",
          "actor GETs/join": report.actorGets / total,
          "peer CPU ms/join": report.cpuMs === undefined ? "-" : report.cpuMs / total,
          "machine": `${machineLine(machineUse, cpuTotal + (report.cpuMs ?? 0), windowMs)}; ${otherProcesses(everyBefore, everyAfter, new Set([process.pid, child.pid!]), windowMs)}`,
          "hops p50/p99 ms": hopLatencies(report, joinedAt),
          "peer": process.env.BENCH_JOINS_PEER === "fedify" ? "Fedify" : "plain",
          "Follows signed": presigned ? "before" : "live",
          "warm-up joins": warmup,
          "peers warmed": peerWarmup,
          "to Fedify's inbox": report.fedifyInbox ?? "-",
          "SQL/join": counting ? statements / total : "-",
          "commits/join": counting ? commits / total : "-",
          load: loadAverage().replace(/^load average /, ""),
          "vs 300/s": requestOnly ? "(Follows answered 202/s; no queue)" : report.accepted < total ? "MISS (not all accepted)" : rate >= TARGET ? "PASS" : "MISS",
        });
      } finally {
        await m?.stop();
        await tdb.destroy();
      }
    }
    return rows;
  },
};
