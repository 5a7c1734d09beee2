import { type ChildProcess, fork } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { generateActorKeys } from "../federation/keys.ts";
import { openDatabase } from "../src/db/database.ts";
import { createEventBus } from "../src/events.ts";
import { createUnion } from "../src/unions/unions.ts";
import type { DialectCase } from "../test/helpers/databases.ts";
import { freePort } from "../test/helpers/muster.ts";
import { type Benchmark, loadAverage, mib, progress, type Row, sleep } from "./lib.ts";
import type { PeerReport } from "./joins.ts";
import { seedMembers } from "./storage.ts";

/**
 * Memory of `muster serve` as an operator runs it (a real child process,
 * bin/muster.js), at rest and under a burst of joins, at growing rosters:
 * the target (issue 16) is a peak RSS under 512 MiB at 10^6 members that is
 * the same at 10^5.
 *
 * The child is started with bench/memory-probe.ts preloaded, which answers
 * over IPC with its own process.memoryUsage() (V8 heap, external, array
 * buffers); RSS and its anonymous/file split come from /proc/<pid>/status.
 * "native" is anonymous RSS less the V8 heap and external memory: what C++
 * (better-sqlite3's page cache, litesvm, OpenSSL, node's own) holds.
 *
 * A bare Node process that only imports the CLI's modules is measured first,
 * as the floor that loading the code costs.
 *
 * Sizes: BENCH_MEMORY_SIZES (comma-separated member counts; default
 * 0,100000,1000000; --quick 0,100000), BENCH_MEMORY_JOINS (default 400;
 * --quick 100) Follows from loopback servers (bench/joins-peer.ts).
 */

const TARGET = 512 * 1024 ** 2;
const PROBE = fileURLToPath(new URL("./memory-probe.ts", import.meta.url));
const BIN = fileURLToPath(new URL("../bin/muster.js", import.meta.url));
const ROOT = fileURLToPath(new URL("..", import.meta.url));
const CLK_TCK = 100;

interface Probe {
  usage: NodeJS.MemoryUsage;
  gcMs: number;
  gcs: number;
}

interface Sample {
  rss: number;
  hwm: number;
  anon: number;
  file: number;
  heapUsed: number;
  heapTotal: number;
  external: number;
  arrayBuffers: number;
  /** Time in GC pauses since start (PerformanceObserver "gc"), and their count. */
  gcMs: number;
  gcs: number;
}

function status(pid: number): { rss: number; hwm: number; anon: number; file: number } {
  const s = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+)`, "m").exec(s)?.[1] ?? 0) * 1024;
  return { rss: kb("VmRSS"), hwm: kb("VmHWM"), anon: kb("RssAnon"), file: kb("RssFile") };
}

function cpuOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
}

function probe(child: ChildProcess, gc = false): Promise<Sample> {
  return new Promise((resolve, reject) => {
    const tag = String(Math.random());
    const onMessage = (m: Probe & { probe?: string }) => {
      if (m?.probe !== tag) return;
      child.off("message", onMessage);
      clearTimeout(timer);
      const { usage } = m;
      resolve({ ...status(child.pid!), heapUsed: usage.heapUsed, heapTotal: usage.heapTotal, external: usage.external, arrayBuffers: usage.arrayBuffers, gcMs: m.gcMs, gcs: m.gcs });
    };
    const timer = setTimeout(() => reject(new Error("the memory probe did not answer in 60 s")), 60_000);
    child.on("message", onMessage);
    child.send({ probe: tag, gc });
  });
}

/** Peak RSS of a child, sampled every 50 ms until stopped. */
function trackPeak(pid: number): { stop(): number } {
  let peak = 0;
  const sample = () => {
    try {
      peak = Math.max(peak, status(pid).rss);
    } catch { /* exited */ }
  };
  sample();
  const timer = setInterval(sample, 50);
  return {
    stop() {
      clearInterval(timer);
      sample();
      return peak;
    },
  };
}

function spawnWithProbe(module: string, args: string[], env: Record<string, string>): { child: ChildProcess; output: () => string } {
  const child = fork(module, args, { cwd: ROOT, execArgv: ["--expose-gc", "--import", PROBE], env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe", "ipc"] });
  let out = "";
  child.stdout!.on("data", (b: Buffer) => (out += b));
  child.stderr!.on("data", (b: Buffer) => (out += b));
  return { child, output: () => out };
}

async function waitForOutput(p: { child: ChildProcess; output: () => string }, pattern: RegExp, what: string): Promise<void> {
  const until = Date.now() + 120_000;
  while (!pattern.test(p.output())) {
    if (p.child.exitCode !== null) throw new Error(`${what}: exited ${p.child.exitCode}:\n${p.output()}`);
    if (Date.now() > until) throw new Error(`${what}: not within 120 s:\n${p.output()}`);
    await sleep(100);
  }
}

async function stop(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once("exit", r));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
  await exited;
  clearTimeout(timer);
}

const m = (b: number) => mib(b).toFixed(0);

function split(s: Sample): string {
  const native = s.anon - s.heapTotal - s.external;
  return `heap ${m(s.heapUsed)}/${m(s.heapTotal)}, external ${m(s.external)} (array buffers ${m(s.arrayBuffers)}), native ${m(native)}, file-backed ${m(s.file)}`;
}

async function joinBurst(unionUrl: string, joins: number): Promise<PeerReport> {
  const peers = fork(fileURLToPath(new URL("./joins-peer.ts", import.meta.url)), [unionUrl, String(joins), "10", "32"], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
  try {
    await new Promise<void>((resolve, reject) => {
      peers.once("message", () => resolve());
      peers.once("exit", (code) => reject(new Error(`join peers exited with ${code} before they were ready`)));
    });
    return await new Promise<PeerReport>((resolve, reject) => {
      peers.once("message", (r) => resolve(r as PeerReport));
      peers.once("exit", (code) => reject(new Error(`join peers exited with ${code}`)));
      peers.send("go");
    });
  } finally {
    peers.kill();
  }
}

export const memory: Benchmark = {
  name: "memory",
  title: "Memory: muster serve's RSS at rest and under joins, empty and with 10^5 / 10^6 members",
  summary: "RSS and V8 heap of a real `muster serve` at rest (empty, 10^5, 10^6 members) and its peak during a burst of joins (target: under 512 MiB, flat)",
  notes: [
    "a real `bin/muster.js serve` child per size on a fresh database seeded as bench/storage.ts does (members with Mastodon-shaped cached actors, Follow ids, cached keys on 2·10^4 servers); embedded ledger on",
    "at rest: 10 s after listening; after GC: the same once V8 collected (what the process keeps); heap/external/array buffers from the child's process.memoryUsage(), RSS from /proc",
    "native = anonymous RSS − V8 heap − external (C++ allocations: SQLite's page cache, litesvm, OpenSSL, node itself); file-backed is mapped code and libraries",
    "joins: Follows from 10 loopback servers (bench/joins-peer.ts, 32 in flight), each answered with a verified Accept and a welcome DM; peak RSS sampled every 50 ms; CPU ms/join is the server's alone (user+system, /proc), GC pause ms/join the main thread's time in GC pauses (PerformanceObserver)",
    "RSS at the end of the burst, 15 s later (V8 gives pages back only after a while), and after a forced GC; NODE_OPTIONS, if set, is passed to the child and shown in the first row",
    "fan-out deliveries are measured by the fanout benchmark (its peak RSS column), not here",
  ],
  async run(dialect: DialectCase, { quick }): Promise<Row[]> {
    const sizes = (process.env.BENCH_MEMORY_SIZES ?? (quick ? "0,100000" : "0,100000,1000000")).split(",").map(Number);
    const joins = Number(process.env.BENCH_MEMORY_JOINS ?? (quick ? 100 : 400));
    const rows: Row[] = [];
    const load = () => loadAverage().replace(/^load average /, "");

    // The floor: a process that only imports what the CLI imports.
    {
      const bare = spawnWithProbe(fileURLToPath(new URL("./memory-imports.ts", import.meta.url)), [], {});
      try {
        await waitForOutput(bare, /imported/, "bare import process");
        await sleep(2000);
        const s = await probe(bare.child);
        const g = await probe(bare.child, true);
        rows.push({ dialect: dialect.name, members: "-", phase: "bare node: imports only", "RSS MiB": mib(s.rss), "15 s later MiB": "-", "after GC MiB": mib(g.rss), "peak MiB": mib(g.hwm), "CPU ms/join": "-", "GC pause ms/join": "-", "vs 512 MiB": "-", split: `${split(g)}; NODE_OPTIONS=${process.env.NODE_OPTIONS ?? "(unset)"}`, load: load() });
      } finally {
        await stop(bare.child);
      }
    }

    for (const n of sizes) {
      const tdb = await dialect.create();
      const dataDir = mkdtempSync(join(tmpdir(), "muster-bench-memory-"));
      let serve: { child: ChildProcess; output: () => string } | undefined;
      try {
        const database = openDatabase(tdb.url, { poolSize: 2 });
        try {
          const union = await createUnion({ db: database.db, events: createEventBus(), generateKeys: generateActorKeys }, { slug: "riders", name: "Riders United", purpose: "Fair pay", joinPolicy: "open", leaderHandle: "@lead@leader.invalid" });
          const t0 = performance.now();
          if (n > 0) await seedMembers(database.db, union.id, n, `${dialect.name} memory`);
          if (n > 0) progress(`${dialect.name}: ${n} members seeded in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
        } finally {
          await database.close();
        }
        const port = await freePort();
        const origin = `http://127.0.0.1:${port}`;
        serve = spawnWithProbe(BIN, ["serve"], { PORT: String(port), ORIGIN: origin, DATABASE_URL: tdb.url, DATA_DIR: dataDir, MUSTER_ALLOW_PRIVATE_ADDRESS: "1", LOG_LEVEL: "warning" });
        await waitForOutput(serve, /Muster is listening/, "muster serve");
        await sleep(10_000);
        const rest = await probe(serve.child);
        const restGc = await probe(serve.child, true);
        rows.push({ dialect: dialect.name, members: n, phase: "at rest", "RSS MiB": mib(rest.rss), "15 s later MiB": "-", "after GC MiB": mib(restGc.rss), "peak MiB": mib(restGc.hwm), "CPU ms/join": "-", "GC pause ms/join": "-", "vs 512 MiB": restGc.hwm < TARGET ? "PASS" : "MISS", split: split(rest), load: load() });

        progress(`${dialect.name}: ${joins} joins at ${n} members`);
        const pid = serve.child.pid!;
        const peak = trackPeak(pid);
        const cpu0 = cpuOf(pid);
        const gc0 = await probe(serve.child);
        const report = await joinBurst(new URL("/u/riders", origin).href, joins);
        const cpu = cpuOf(pid) - cpu0;
        const during = await probe(serve.child);
        const top = peak.stop();
        await sleep(15_000);
        const later = await probe(serve.child);
        const after = await probe(serve.child, true);
        rows.push({
          dialect: dialect.name, members: n, phase: `${joins} joins (${report.accepted} accepted in ${(report.ms / 1000).toFixed(1)} s)`,
          "RSS MiB": mib(during.rss), "15 s later MiB": mib(later.rss), "after GC MiB": mib(after.rss), "peak MiB": mib(Math.max(top, after.hwm)), "CPU ms/join": cpu / joins, "GC pause ms/join": (during.gcMs - gc0.gcMs) / joins,
          "vs 512 MiB": Math.max(top, after.hwm) < TARGET ? "PASS" : "MISS", split: `end of burst: ${split(during)}; ${during.gcs - gc0.gcs} GC pauses`, load: load(),
        });
      } finally {
        await stop(serve?.child);
        rmSync(dataDir, { recursive: true, force: true });
        await tdb.destroy();
      }
    }
    return rows;
  },
};
