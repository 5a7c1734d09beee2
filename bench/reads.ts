import { fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import type { DialectCase } from "../test/helpers/databases.ts";
import { makeUnion, startMuster, type TestMuster } from "../test/helpers/muster.ts";
import { type Benchmark, cpuMs, loadAverage, progress, type Row } from "./lib.ts";

const CONCURRENCY = 32;
const TARGET = 2000;

interface ClientResult {
  /** The load generator's own CPU: if it nears a core, the client, not the server, sets the rate. */
  cpuMs: number;
  requests: number;
  ms: number;
  statuses: Record<string, number>;
  p50: number;
  p99: number;
}

/** Runs the load generator in a child process, so the server's CPU is its own. */
function load(url: URL, accept: string, seconds: number): Promise<ClientResult> {
  return new Promise((resolve, reject) => {
    const child = fork(fileURLToPath(new URL("./reads-client.ts", import.meta.url)), [url.href, accept, String(seconds), String(CONCURRENCY)], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
    child.once("message", (m) => resolve(m as ClientResult));
    child.once("error", reject);
    child.once("exit", (code) => code !== 0 && reject(new Error(`load generator exited with ${code}`)));
  });
}

export const reads: Benchmark = {
  name: "reads",
  title: "Reads: the union's actor, WebFinger and NodeInfo (cached serialization vs Fedify on every GET)",
  summary: "GET/s for the actor document, WebFinger and NodeInfo, with and without the read cache, against 2,000/s",
  notes: [
    `${CONCURRENCY} keep-alive GETs in flight from a separate load-generator process (raw sockets, bench/reads-client.ts); server CPU is the bench process's alone, the client's is its own column`,
    `"cached" is the server as shipped; "uncached" is the same server with its read cache bypassed (every GET rendered by Fedify), run back to back`,
    `target: ${TARGET} GET/s each (issue 16); PASS/MISS judges the measured GET/s; the load average is read after each run, the machine is shared`,
    "GET/s per CPU-s: requests served per second of the server's CPU time, the rate one idle core would reach",
  ],
  async run(dialect: DialectCase, { quick }): Promise<Row[]> {
    const seconds = quick ? 1 : 5;
    const tdb = await dialect.create();
    let m: TestMuster | undefined;
    try {
      m = await startMuster(tdb, { worker: false });
      await makeUnion(m, "riders");
      const targets = [
        { endpoint: "actor", url: new URL("/u/riders", m.origin), accept: "application/activity+json" },
        { endpoint: "webfinger", url: new URL(`/.well-known/webfinger?resource=acct:riders@${m.origin.host}`, m.origin), accept: "application/jrd+json" },
        { endpoint: "nodeinfo", url: new URL("/nodeinfo/2.1", m.origin), accept: "application/json" },
      ];
      const rows: Row[] = [];
      for (const t of targets) {
        for (const mode of ["uncached", "cached"] as const) {
          m.muster.readCache.bypass = mode === "uncached";
          await load(t.url, t.accept, quick ? 0.2 : 1);
          progress(`${dialect.name}: ${t.endpoint} ${mode} for ${seconds} s`);
          const cpu = process.cpuUsage();
          const r = await load(t.url, t.accept, seconds);
          const cpuTotal = cpuMs(cpu);
          const rate = (r.requests * 1000) / r.ms;
          const other = Object.entries(r.statuses).filter(([s]) => s !== "200").map(([s, n]) => `${n}×${s}`).join(" ") || "0";
          rows.push({
            dialect: dialect.name,
            endpoint: t.endpoint,
            mode,
            "GET/s": rate,
            "p50 ms": r.p50,
            "p99 ms": r.p99,
            "server CPU ms/GET": cpuTotal / r.requests,
            "client CPU ms/GET": r.cpuMs / r.requests,
            // What one core would serve if the server had it to itself: the figure that the load average cannot distort much.
            "GET/s per CPU-s": (1000 * r.requests) / cpuTotal,
            "non-200": other,
            load: loadAverage().replace(/^load average /, ""),
            "vs 2,000/s": mode === "cached" ? (rate >= TARGET ? "PASS" : "MISS") : "-",
          });
        }
      }
      m.muster.readCache.bypass = false;
      return rows;
    } finally {
      await m?.stop();
      await tdb.destroy();
    }
  },
};
