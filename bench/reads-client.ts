// A load generator in its own process (bench/reads.ts forks it), so the
// server's thread is measured alone: keeps `concurrency` keep-alive GETs in
// flight for `seconds` and reports counts, statuses, latencies and its own CPU.
//
// It writes the request bytes and reads responses on plain sockets instead of
// node:http's client, which cost more CPU per GET (0.16-0.27 ms) than the
// cached server did (0.07-0.14 ms): on two shared cores the client, not the
// server, set the rate. Responses are framed by Content-Length (or a chunked
// body's last chunk); one request at a time per connection, no pipelining.
import { connect, type Socket } from "node:net";

const [url, accept, seconds, concurrency] = [new URL(process.argv[2]!), process.argv[3]!, Number(process.argv[4]), Number(process.argv[5])];
const request = Buffer.from(`GET ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\nAccept: ${accept}\r\nConnection: keep-alive\r\n\r\n`);
const latencies: number[] = [];
const statuses: Record<string, number> = {};
let bytes = 0;
const HEADER_END = Buffer.from("\r\n\r\n");
const LAST_CHUNK = Buffer.from("0\r\n\r\n");

/** One connection's loop: send, read one whole response, repeat until `until`. */
function connection(until: number): Promise<void> {
  return new Promise((resolve) => {
    const socket: Socket = connect(Number(url.port), url.hostname);
    socket.setNoDelay(true);
    let buffer: Buffer = Buffer.alloc(0);
    let start = 0;
    let need: number | "chunked" | undefined;
    let headerLength = 0;
    let status = "";
    const send = () => {
      if (performance.now() >= until) {
        socket.end();
        return resolve();
      }
      start = performance.now();
      need = undefined;
      socket.write(request);
    };
    socket.on("connect", send);
    socket.on("error", () => {
      statuses.error = (statuses.error ?? 0) + 1;
      resolve();
    });
    socket.on("data", (chunk: Buffer) => {
      bytes += chunk.length;
      buffer = buffer.length ? Buffer.concat([buffer, chunk]) : chunk;
      if (need === undefined) {
        const end = buffer.indexOf(HEADER_END);
        if (end < 0) return;
        const head = buffer.subarray(0, end).toString("latin1");
        status = head.slice(9, 12);
        headerLength = end + 4;
        const length = /\r\ncontent-length:\s*(\d+)/i.exec(head);
        need = length ? Number(length[1]) : /\r\ntransfer-encoding:\s*chunked/i.test(head) ? "chunked" : 0;
      }
      const body = buffer.length - headerLength;
      const complete = need === "chunked" ? buffer.subarray(buffer.length - LAST_CHUNK.length).equals(LAST_CHUNK) : body >= need;
      if (!complete) return;
      latencies.push(performance.now() - start);
      statuses[status] = (statuses[status] ?? 0) + 1;
      buffer = Buffer.alloc(0);
      send();
    });
  });
}

const cpu = process.cpuUsage();
const started = performance.now();
const until = started + seconds * 1000;
await Promise.all(Array.from({ length: concurrency }, () => connection(until)));
const ms = performance.now() - started;
latencies.sort((a, b) => a - b);
const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.max(0, Math.ceil((p / 100) * latencies.length) - 1))] ?? Number.NaN;
const used = process.cpuUsage(cpu);
process.send!({ cpuMs: (used.user + used.system) / 1000, requests: latencies.length, ms, statuses, bytes, p50: pct(50), p99: pct(99) });
