import type { DialectCase } from "../test/helpers/databases.ts";
import { makeUnion, startMuster, type TestMuster } from "../test/helpers/muster.ts";
import { type Benchmark, cpuMs, forDuration, httpRecorder, percentile, perSecond, progress, type Row } from "./lib.ts";

const CONCURRENCY = 16;

export const actorFetch: Benchmark = {
  name: "actor-fetch",
  title: "Actor document and WebFinger GETs",
  summary: "requests/s and latency for GET /u/<slug> (activity+json) and /.well-known/webfinger at a fixed concurrency",
  notes: [
    `${CONCURRENCY} requests in flight for a fixed time after a short warm-up; the queue worker is off`,
    "CPU is of the whole process (client and server share it)",
  ],
  async run(dialect: DialectCase, { quick }): Promise<Row[]> {
    const seconds = quick ? 1 : 5;
    const tdb = await dialect.create();
    let m: TestMuster | undefined;
    try {
      m = await startMuster(tdb, { worker: false });
      await makeUnion(m, "riders");
      const targets = [
        { endpoint: "GET /u/riders (AP)", url: new URL("/u/riders", m.origin), headers: { Accept: "application/activity+json" } },
        { endpoint: "WebFinger", url: new URL(`/.well-known/webfinger?resource=acct:riders@${m.origin.host}`, m.origin), headers: { Accept: "application/jrd+json" } },
      ];
      const rows: Row[] = [];
      for (const t of targets) {
        const warm = httpRecorder();
        await forDuration(quick ? 200 : 1000, CONCURRENCY, () => warm.fetch(t.url, { headers: t.headers }));
        progress(`${dialect.name}: ${t.endpoint} for ${seconds} s`);
        const http = httpRecorder();
        const cpu = process.cpuUsage();
        const start = performance.now();
        await forDuration(seconds * 1000, CONCURRENCY, () => http.fetch(t.url, { headers: t.headers }));
        const ms = performance.now() - start;
        const cpuTotal = cpuMs(cpu);
        rows.push({
          dialect: dialect.name,
          endpoint: t.endpoint,
          C: CONCURRENCY,
          s: seconds,
          requests: http.latencies.length,
          "req/s": perSecond(http.latencies.length, ms),
          "p50 ms": percentile(http.latencies, 50),
          "p99 ms": percentile(http.latencies, 99),
          "CPU ms/req": cpuTotal / http.latencies.length,
          "non-200": http.unexpected(200),
        });
      }
      return rows;
    } finally {
      await m?.stop();
      await tdb.destroy();
    }
  },
};
