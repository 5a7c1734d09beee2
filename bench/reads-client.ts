// A load generator in its own process (bench/reads.ts forks it), so the
// server's thread is measured alone: keeps `concurrency` keep-alive GETs in
// flight for `seconds` and reports counts, statuses and latencies.
import { Agent, request } from "node:http";

const [url, accept, seconds, concurrency] = [process.argv[2]!, process.argv[3]!, Number(process.argv[4]), Number(process.argv[5])];
const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
const latencies: number[] = [];
const statuses: Record<string, number> = {};
let bytes = 0;

function once(): Promise<void> {
  return new Promise((resolve) => {
    const start = performance.now();
    const req = request(url, { agent, headers: { Accept: accept } }, (res) => {
      res.on("data", (chunk: Buffer) => (bytes += chunk.length));
      res.on("end", () => {
        latencies.push(performance.now() - start);
        statuses[String(res.statusCode)] = (statuses[String(res.statusCode)] ?? 0) + 1;
        resolve();
      });
    });
    req.on("error", () => {
      statuses.error = (statuses.error ?? 0) + 1;
      resolve();
    });
    req.end();
  });
}

const cpu = process.cpuUsage();
const until = performance.now() + seconds * 1000;
const started = performance.now();
await Promise.all(Array.from({ length: concurrency }, async () => {
  while (performance.now() < until) await once();
}));
const ms = performance.now() - started;
latencies.sort((a, b) => a - b);
const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.max(0, Math.ceil((p / 100) * latencies.length) - 1))] ?? Number.NaN;
const used = process.cpuUsage(cpu);
process.send!({ cpuMs: (used.user + used.system) / 1000, requests: latencies.length, ms, statuses, bytes, p50: pct(50), p99: pct(99) });
agent.destroy();
