// The inbox benchmark's sender, in its own process (bench/inbox-ingest.ts
// forks it), so the server's CPU is measured alone: POSTs pre-signed
// requests read from a JSON file, `concurrency` keep-alive connections at a
// time, and reports statuses, latencies and its own CPU. Like
// bench/reads-client.ts it writes request bytes and frames responses on
// plain sockets: node's fetch cost about as much CPU per POST as the server's
// fast path does.
import { readFileSync } from "node:fs";
import { connect, type Socket } from "node:net";

interface Post {
  readonly url: string;
  readonly headers: [string, string][];
  readonly body: string;
}

const [file, concurrency] = [process.argv[2]!, Number(process.argv[3])];
const posts = JSON.parse(readFileSync(file, "utf8")) as Post[];
const requests = posts.map((p) => {
  const url = new URL(p.url);
  const body = Buffer.from(p.body);
  const head = [`POST ${url.pathname} HTTP/1.1`, `Host: ${url.host}`, "Connection: keep-alive", `Content-Length: ${body.length}`,
    ...p.headers.filter(([k]) => !/^(host|content-length|connection)$/i.test(k)).map(([k, v]) => `${k}: ${v}`)].join("\r\n");
  return { port: Number(url.port), host: url.hostname, bytes: Buffer.concat([Buffer.from(`${head}\r\n\r\n`), body]) };
});
const latencies: number[] = [];
const statuses: Record<string, number> = {};
const HEADER_END = Buffer.from("\r\n\r\n");
let next = 0;

function connection(): Promise<void> {
  return new Promise((resolve) => {
    if (next >= requests.length) return resolve();
    const first = requests[next]!;
    const socket: Socket = connect(first.port, first.host);
    socket.setNoDelay(true);
    let buffer: Buffer = Buffer.alloc(0);
    let start = 0;
    let need: number | undefined;
    let headerLength = 0;
    let status = "";
    let closeAfter = false;
    const send = () => {
      if (next >= requests.length || closeAfter) {
        socket.end();
        if (closeAfter && next < requests.length) void connection().then(resolve);
        else resolve();
        return;
      }
      const r = requests[next++]!;
      start = performance.now();
      need = undefined;
      socket.write(r.bytes);
    };
    socket.on("connect", send);
    socket.on("error", () => {
      statuses.error = (statuses.error ?? 0) + 1;
      resolve();
    });
    socket.on("data", (chunk: Buffer) => {
      buffer = buffer.length ? Buffer.concat([buffer, chunk]) : chunk;
      if (need === undefined) {
        const end = buffer.indexOf(HEADER_END);
        if (end < 0) return;
        const head = buffer.subarray(0, end).toString("latin1");
        status = head.slice(9, 12);
        headerLength = end + 4;
        const length = /\r\ncontent-length:\s*(\d+)/i.exec(head);
        need = length ? Number(length[1]) : 0;
        closeAfter = /\r\nconnection:\s*close/i.test(head);
      }
      if (buffer.length - headerLength < need) return;
      latencies.push(performance.now() - start);
      statuses[status] = (statuses[status] ?? 0) + 1;
      buffer = Buffer.alloc(0);
      send();
    });
  });
}

process.on("message", async () => {
  const cpu = process.cpuUsage();
  const started = performance.now();
  await Promise.all(Array.from({ length: Math.min(concurrency, requests.length) }, () => connection()));
  const ms = performance.now() - started;
  const used = process.cpuUsage(cpu);
  process.send!({ cpuMs: (used.user + used.system) / 1000, ms, statuses, latencies });
});
process.send!({ ready: true });
