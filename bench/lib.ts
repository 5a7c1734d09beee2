import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { generateKeyPairSync, sign } from "node:crypto";
import { availableParallelism, cpus, loadavg, release, totalmem } from "node:os";
import SQLite from "better-sqlite3";
import pg from "pg";
import type { DialectCase } from "../test/helpers/databases.ts";

/** One cell per column; numbers are formatted and right-aligned by printTable. */
export type Row = Record<string, string | number>;

export interface BenchOptions {
  /** Smaller sizes and shorter runs, for a smoke run. */
  readonly quick: boolean;
}

export interface Benchmark {
  /** What --only selects. */
  readonly name: string;
  readonly title: string;
  /** One line for --help. */
  readonly summary: string;
  /** Printed under the table: what the figures do and do not include. */
  readonly notes: readonly string[];
  /** Runs on one dialect, on databases it creates and destroys itself. */
  run(dialect: DialectCase, options: BenchOptions): Promise<Row[]>;
}

/** Progress for long phases goes to stderr, so stdout holds only the results. */
export function progress(message: string): void {
  process.stderr.write(`  .. ${message}\n`);
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Nearest-rank percentile (p in 0..100) of unsorted samples. */
export function percentile(samples: readonly number[], p: number): number {
  if (samples.length === 0) return Number.NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

/** Runs task(0) … task(count - 1), at most `concurrency` at a time. */
export async function pool(count: number, concurrency: number, task: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < count) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
}

/** Keeps `concurrency` loops calling task until `ms` have passed; resolves when the last call returns. */
export async function forDuration(ms: number, concurrency: number, task: () => Promise<unknown>): Promise<void> {
  const until = performance.now() + ms;
  const worker = async () => {
    while (performance.now() < until) await task();
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
}

/** A fetch that records each request's latency (until the body is read) and status; 0 means a network error. */
export function httpRecorder() {
  const latencies: number[] = [];
  const statuses = new Map<number, number>();
  return {
    latencies,
    async fetch(url: URL, init?: RequestInit): Promise<void> {
      const start = performance.now();
      let status = 0;
      try {
        const res = await fetch(url, init);
        await res.arrayBuffer();
        status = res.status;
      } catch {
        // Counted under status 0.
      }
      latencies.push(performance.now() - start);
      statuses.set(status, (statuses.get(status) ?? 0) + 1);
    },
    count: (status: number) => statuses.get(status) ?? 0,
    /** Responses other than `expected`, e.g. "3×401", or "0". */
    unexpected(expected: number): string {
      const other = [...statuses].filter(([s]) => s !== expected).map(([s, n]) => `${n}×${s === 0 ? "error" : s}`);
      return other.length ? other.join(" ") : "0";
    },
  };
}

/** Samples this process's RSS until stopped; returns the peak in bytes. */
export function trackPeakRss(intervalMs = 50): { stop(): number } {
  let peak = process.memoryUsage.rss();
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), intervalMs);
  return {
    stop() {
      clearInterval(timer);
      return Math.max(peak, process.memoryUsage.rss());
    },
  };
}

/** CPU time (user + system) of this process since `start`, in milliseconds. */
export function cpuMs(start: NodeJS.CpuUsage): number {
  const d = process.cpuUsage(start);
  return (d.user + d.system) / 1000;
}

/**
 * Polls `done` until it is true, printing `status()` every few seconds, and
 * gives up once the status has not changed for `stallMs` (something is stuck).
 */
export async function waitFor(what: string, done: () => boolean | Promise<boolean>, status: () => string, { pollMs = 10, stallMs = 60_000 } = {}): Promise<void> {
  let last = status();
  let changedAt = performance.now();
  let reportedAt = performance.now();
  while (!(await done())) {
    await sleep(pollMs);
    const now = performance.now();
    const s = status();
    if (s !== last) [last, changedAt] = [s, now];
    else if (now - changedAt > stallMs) throw new Error(`stalled waiting for ${what} (${s})`);
    if (now - reportedAt > 2000) {
      progress(`${what}: ${s}`);
      reportedAt = now;
    }
  }
}

export const perSecond = (count: number, ms: number) => (count * 1000) / ms;
export const mib = (bytes: number) => bytes / (1024 * 1024);

/** Three significant figures without exponents: 12345, 123, 12.3, 1.23, 0.123. */
export function fmt(n: number): string {
  if (!Number.isFinite(n)) return "-";
  if (Number.isInteger(n)) return n.toString();
  const a = Math.abs(n);
  return a >= 100 ? Math.round(n).toString() : a >= 10 ? n.toFixed(1) : a >= 1 ? n.toFixed(2) : n.toFixed(3);
}

export function printTable(title: string, rows: readonly Row[], notes: readonly string[] = []): void {
  const out: string[] = [`\n## ${title}`];
  if (rows.length === 0) {
    out.push("(no results)");
  } else {
    const columns = [...new Set(rows.flatMap((r) => Object.keys(r)))];
    const cells = rows.map((r) => columns.map((c) => (typeof r[c] === "number" ? fmt(r[c]) : (r[c] ?? ""))));
    const numeric = columns.map((c) => rows.every((r) => typeof r[c] !== "string"));
    const widths = columns.map((c, i) => Math.max(c.length, ...cells.map((row) => row[i]!.length)));
    const line = (values: readonly string[]) =>
      values.map((v, i) => (numeric[i] ? v.padStart(widths[i]!) : v.padEnd(widths[i]!))).join("  ").trimEnd();
    out.push(line(columns), widths.map((w) => "-".repeat(w)).join("  "), ...cells.map(line));
  }
  out.push(...notes.map((n) => `  * ${n}`));
  process.stdout.write(`${out.join("\n")}\n`);
}

/** The 1-, 5- and 15-minute load averages, e.g. "load average 0.12 0.30 0.25 on 2 cores". */
export function loadAverage(): string {
  return `load average ${loadavg().map((l) => l.toFixed(2)).join(" ")} on ${availableParallelism()} cores`;
}

/** The machine and software the figures were measured on. */
export async function machineFacts(pgUrl: string | undefined): Promise<string[]> {
  const cpu = cpus()[0]?.model.trim() ?? "unknown CPU";
  const memory = new SQLite(":memory:");
  const sqliteVersion = (memory.prepare("select sqlite_version() as v").get() as { v: string }).v;
  memory.close();
  let postgres = "skipped (set BENCH_DATABASE_URL or TEST_DATABASE_URL to a PostgreSQL server to include it)";
  if (pgUrl) {
    const client = new pg.Client({ connectionString: pgUrl });
    try {
      await client.connect();
      postgres = `PostgreSQL ${(await client.query<{ server_version: string }>("show server_version")).rows[0]?.server_version} at ${new URL(pgUrl).host}`;
    } catch (error) {
      postgres = `unreachable: ${error instanceof Error ? error.message : String(error)}`;
    } finally {
      await client.end().catch(() => {});
    }
  }
  return [
    `machine:  ${cpu}, ${availableParallelism()} cores, ${fmt(totalmem() / 1024 ** 3)} GiB RAM, ${process.platform} ${release()}`,
    `node:     ${process.version}`,
    `sqlite:   SQLite ${sqliteVersion} (better-sqlite3, WAL, synchronous=NORMAL)`,
    `postgres: ${postgres}`,
    `load:     ${loadAverage()} at start (anything else running on the machine skews the figures)`,
    `speed:    ${fmt(rsaSignsPerSecond())} RSA-2048 signs/s on one core (machines of one kind differ: compare figures from two runs by this line)`,
  ];
}

/**
 * The machine's RSA-2048 signing rate on this thread for about half a second:
 * signing is the fan-out's floor, and machines of the same size have differed
 * by a third between sessions, so a figure without this line cannot be compared.
 */
function rsaSignsPerSecond(): number {
  const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const data = Buffer.alloc(256, 1);
  sign("sha256", data, privateKey);
  let n = 0;
  const start = performance.now();
  while (performance.now() - start < 500) {
    sign("sha256", data, privateKey);
    n++;
  }
  return n / ((performance.now() - start) / 1000);
}

/**
 * With BENCH_CPU_PROFILE=dir, a CPU profile of this process's main thread from
 * now until stop() (a bench's timed window, Muster's side), written to
 * dir/<label>-<pid>-<time>.cpuprofile.
 */
export async function startProfile(label: string): Promise<{ stop(): Promise<void> } | undefined> {
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
      writeFileSync(join(dir, `${label}-${process.pid}-${Date.now()}.cpuprofile`), JSON.stringify(profile));
      session.disconnect();
    },
  };
}

/**
 * CPU ms of each of this process's threads by thread id, with its name as
 * Linux has it ("main" for the main thread); undefined where there is no
 * /proc (not Linux). Two snapshots give where a timed window's CPU went.
 */
export function threadTimes(): Map<string, { name: string; ms: number }> | undefined {
  let tids: string[];
  try {
    tids = readdirSync("/proc/self/task");
  } catch {
    return undefined;
  }
  const tick = 10; // USER_HZ is 100 on Linux
  const out = new Map<string, { name: string; ms: number }>();
  for (const tid of tids) {
    try {
      const stat = readFileSync(`/proc/self/task/${tid}/stat`, "utf8");
      const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      out.set(tid, { name: Number(tid) === process.pid ? "main" : name, ms: (Number(f[11]) + Number(f[12])) * tick });
    } catch {
      // the thread ended meanwhile
    }
  }
  return out;
}

/** The machine's CPU time so far by state (all cores), ms, from /proc/stat's first line; undefined off Linux. */
function machineTimes(): { busy: number; idle: number; iowait: number } | undefined {
  let line: string;
  try {
    line = readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!;
  } catch {
    return undefined;
  }
  // cpu user nice system idle iowait irq softirq steal (guest time is already in user)
  const [user, nice, system, idle, iowait, irq, softirq, steal] = line.trim().split(/\s+/).slice(1).map((v) => Number(v) * 10);
  return { busy: user! + nice! + system! + irq! + softirq! + steal!, idle: idle!, iowait: iowait! };
}

/**
 * The whole machine's CPU over a timed window (/proc/stat deltas): how much
 * of the cores were busy, idle, or idle waiting on I/O (iowait: a core with
 * nothing to run while a disk write such as a commit's fsync is pending), so
 * a run can say whether it saturated the machine. Busy ms also covers every
 * other process on it (other benchmarks on a shared machine): compare with
 * the processes a bench accounts for.
 */
export function machineCpu(): { stop(): { busyMs: number; idleMs: number; iowaitMs: number; idlePct: number; iowaitPct: number; steadyIdlePct: number } | undefined } {
  const before = machineTimes();
  // Sampled every 50 ms, so the window's middle (its 10th to 90th percent of time, past the ramp-up and before
  // the last joins drain) can be told apart from its ends, where fewer than all the joins are in flight.
  const samples: { at: number; t: NonNullable<ReturnType<typeof machineTimes>> }[] = [];
  const start = performance.now();
  if (before) samples.push({ at: start, t: before });
  const timer = setInterval(() => {
    const t = machineTimes();
    if (t) samples.push({ at: performance.now(), t });
  }, 50);
  return {
    stop() {
      clearInterval(timer);
      const after = machineTimes();
      if (!before || !after) return undefined;
      const end = performance.now();
      samples.push({ at: end, t: after });
      const busyMs = after.busy - before.busy;
      const idleMs = after.idle - before.idle;
      const iowaitMs = after.iowait - before.iowait;
      const total = busyMs + idleMs + iowaitMs;
      const from = samples.find((x) => x.at >= start + 0.1 * (end - start)) ?? samples[0]!;
      const to = [...samples].reverse().find((x) => x.at <= start + 0.9 * (end - start)) ?? samples.at(-1)!;
      const mid = { busy: to.t.busy - from.t.busy, idle: to.t.idle - from.t.idle + to.t.iowait - from.t.iowait };
      return { busyMs, idleMs, iowaitMs, idlePct: (100 * idleMs) / total, iowaitPct: (100 * iowaitMs) / total, steadyIdlePct: mid.busy + mid.idle > 0 ? (100 * mid.idle) / (mid.busy + mid.idle) : Number.NaN };
    },
  };
}

/** A process's name and its user + system CPU so far, ms (/proc/<pid>/stat, 100 ticks a second); undefined when gone or unreadable. */
export function procCpu(pid: number): { name: string; ms: number } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return { name: stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")")), ms: (Number(f[11]) + Number(f[12])) * 10 };
  } catch {
    return undefined;
  }
}

/** CPU ms so far of PostgreSQL's own processes (walwriter, checkpointer, background writer, …; no client backends), by backend_type. */
export async function pgBackgroundCpu(query: (text: string) => Promise<{ pid: number; backend_type: string }[]>): Promise<Map<number, { kind: string; ms: number }>> {
  const out = new Map<number, { kind: string; ms: number }>();
  const rows = await query("select pid, backend_type from pg_stat_activity where backend_type <> 'client backend'").catch(() => []);
  for (const { pid, backend_type } of rows) {
    const stat = procCpu(pid);
    if (stat) out.set(pid, { kind: backend_type, ms: stat.ms });
  }
  return out;
}

/** "walwriter 0.02, checkpointer 0.01": ms per op by backend_type between two pgBackgroundCpu snapshots. */
export function pgBackgroundSplit(before: Map<number, { kind: string; ms: number }>, after: Map<number, { kind: string; ms: number }>, n: number): { total: number; text: string } {
  const by = new Map<string, number>();
  for (const [pid, { kind, ms }] of after) by.set(kind, (by.get(kind) ?? 0) + ms - (before.get(pid)?.ms ?? ms));
  const total = [...by.values()].reduce((a, b) => a + b, 0);
  return { total, text: [...by].filter(([, ms]) => ms > 0).sort((a, b) => b[1] - a[1]).map(([k, ms]) => `${k} ${(ms / n).toFixed(3)}`).join(", ") || "-" };
}

/** CPU ms so far of every process on the machine, by pid, with its name (/proc/<pid>/stat). */
export function allProcessCpu(): Map<number, { name: string; ms: number }> {
  const out = new Map<number, { name: string; ms: number }>();
  let pids: string[] = [];
  try {
    pids = readdirSync("/proc").filter((d) => /^\d+$/.test(d));
  } catch {
    return out;
  }
  for (const pid of pids) {
    const stat = procCpu(Number(pid));
    if (stat) out.set(Number(pid), stat);
  }
  return out;
}

/**
 * The busiest processes over a window other than `measured` (pids), e.g.
 * "others 0.45 cores: node 0.30, postgres 0.10": what else ran on the
 * machine (on a shared one, other work skews a run's rate, not its CPU per op).
 */
export function otherProcesses(before: Map<number, { name: string; ms: number }>, after: Map<number, { name: string; ms: number }>, measured: ReadonlySet<number>, windowMs: number): string {
  const by = new Map<string, number>();
  let total = 0;
  for (const [pid, { name, ms }] of after) {
    if (measured.has(pid)) continue;
    // A process started in the window: all of its CPU is in it.
    const d = ms - (before.get(pid)?.ms ?? 0);
    if (d <= 0) continue;
    total += d;
    by.set(name, (by.get(name) ?? 0) + d);
  }
  const top = [...by].sort((a, b) => b[1] - a[1]).slice(0, 3).map(([n, ms]) => `${n} ${(ms / windowMs).toFixed(2)}`).join(", ");
  return `others ${(total / windowMs).toFixed(2)} cores${top ? `: ${top}` : ""}`;
}
