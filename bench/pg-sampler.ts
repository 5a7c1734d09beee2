/**
 * Poor man's profiler of PostgreSQL (no pg_stat_statements on this server):
 * samples pg_stat_activity every BENCH_SAMPLE_MS (default 10) for backends of
 * databases whose name matches BENCH_SAMPLE_DB (a LIKE pattern, default
 * 'muster_%') and prints, on SIGINT/SIGTERM or after BENCH_SAMPLE_S seconds:
 * the share of active samples per database, wait event and statement (first
 * 160 characters), and each backend's CPU over the window (/proc, Linux)
 * with its application name and last statement.
 * Usage: npx node bench/pg-sampler.ts > out.txt & ... kill -INT <node pid>
 */
import { readFileSync } from "node:fs";
import pg from "pg";

const url = process.env.TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const client = new pg.Client({ connectionString: url });
await client.connect();
const counts = new Map<string, number>();
let samples = 0;
const every = Number(process.env.BENCH_SAMPLE_MS ?? 10);
const pattern = process.env.BENCH_SAMPLE_DB ?? "muster_%";
let stop = false;
const finish = () => { stop = true; };
process.on("SIGINT", finish);
process.on("SIGTERM", finish);
const tick = 100 / 1000; // ms per clock tick at USER_HZ 100
const cpuOf = (pid: number): number | undefined => {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return (Number(f[11]) + Number(f[12])) * 10;
  } catch {
    return undefined;
  }
};
void tick;
const backends = new Map<number, { db: string; app: string; first: number; last: number; query: string; active: number }>();
const until = Date.now() + Number(process.env.BENCH_SAMPLE_S ?? 3600) * 1000;
while (!stop && Date.now() < until) {
  const { rows } = await client.query<{ pid: number; d: string; app: string; state: string; q: string; w: string | null }>(
    `select pid, datname as d, application_name as app, state, regexp_replace(left(query, 400), '\\s+', ' ', 'g') as q, wait_event_type || ':' || wait_event as w from pg_stat_activity where datname like $1 and pid <> pg_backend_pid()`, [pattern]);
  samples++;
  for (const r of rows) {
    const cpu = cpuOf(r.pid);
    const b = backends.get(r.pid);
    if (b === undefined) backends.set(r.pid, { db: r.d, app: r.app, first: samples === 1 ? (cpu ?? 0) : 0, last: cpu ?? 0, query: r.q, active: 0 });
    else {
      b.last = cpu ?? b.last;
      b.query = r.q;
    }
    if (r.state !== "active") continue;
    backends.get(r.pid)!.active++;
    const key = `${r.d} | ${r.w ?? "cpu"} | ${r.q.slice(0, 160)}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  await new Promise((r) => setTimeout(r, every));
}
await client.end();
const total = [...counts.values()].reduce((a, b) => a + b, 0);
console.log(`samples ${samples}, active backend-samples ${total}`);
for (const [k, n] of [...counts].sort((a, b) => b[1] - a[1]).slice(0, 30)) console.log(`${(100 * n / total).toFixed(1).padStart(5)}% ${String(n).padStart(6)} ${k}`);
const byDb = new Map<string, number>();
for (const b of backends.values()) byDb.set(b.db, (byDb.get(b.db) ?? 0) + b.last - b.first);
console.log("backend CPU ms by database:", JSON.stringify(Object.fromEntries(byDb)));
console.log("backends by CPU ms (db, app, active samples, last statement):");
for (const [pid, b] of [...backends].sort((a, b) => (b[1].last - b[1].first) - (a[1].last - a[1].first)).slice(0, 40)) {
  console.log(`${String(b.last - b.first).padStart(7)} ms  pid ${pid} ${b.db} ${b.app || "-"} active ${b.active}  ${b.query.slice(0, 100)}`);
}
