import { spawn } from "node:child_process";
import { loadavg } from "node:os";
import { createInterface } from "node:readline";
import { openDatabase } from "../src/db/database.ts";
import type { DialectCase } from "../test/helpers/databases.ts";
import { type Peer, startPeer } from "../test/helpers/peer.ts";
import { type Benchmark, percentile, type Row, sleep } from "./lib.ts";

const AS = "https://www.w3.org/ns/activitystreams";
const PUBLIC = `${AS}#Public`;
/** Issue 12's targets. */
const CPU_TARGET_MS = 5;
const HEALTHZ_TARGET_MS = 50;
/**
 * A request refused before its body was read ends with the socket closed
 * under the sender, who may see the reset before the answer (more often on
 * a loaded machine): both are the refusal.
 */
const REFUSED_UNREAD = (status: string) => [status, "ECONNRESET", "EPIPE", "UND_ERR_SOCKET"];

interface Load {
  readonly label: string;
  /** What a well-behaved server answers: a status, or a network error code (a reset after a refusal sent before the body was read). */
  readonly accept: readonly string[];
  requests: readonly Request[];
}

export const hostile: Benchmark = {
  name: "hostile",
  title: "Hostile inbox load: unsigned 1 MB bodies, oversized bodies, deep nesting, remote contexts, a stranger's Note of many '<'",
  summary: "CPU per refused inbox request and /healthz latency under hostile bodies (targets: 5 ms, 50 ms)",
  notes: [
    "baseline: no hostile requests, only the /healthz prober: the machine's own /healthz latency. Before it, a window with no requests at all gives Muster's idle CPU per ms (queue polling, timers); the baseline then gives the CPU of one /healthz probe",
    "unsigned 1 MB: an unsigned Create with 12,000 tags (about 1 MB), refused 401 from its headers; the body is not read",
    "3 MB declared: a signed POST whose Content-Length is over MUSTER_MAX_BODY_BYTES (2 MB here), refused 413 from its headers",
    "deep nesting: 10^5 nested arrays, signed by a peer actor (a valid signature), refused 400 at the 33rd '[' while streaming",
    "remote context: a signed Create naming an @context on another host, refused 400 without fetching it",
    "many '<': a signed Create of a Note of 150,000 '<' from a non-member mentioning the union: the signature is verified, then it is refused 403 (no relation to the union) before JSON-LD processing",
    "answer: statuses, and network errors by code; for the refusals made before the body is read (unsigned, 3 MB, deep nesting) the server closes the socket after answering, so a sender still sending may get ECONNRESET/EPIPE instead of the status: both count as the refusal",
    "CPU ms/req: Muster's process CPU (process.cpuUsage in the server process: every thread, user+system) over the phase, minus idle CPU per ms times the phase's wall time and minus the CPU of the /healthz probes answered during it, divided by requests; 'raw' is without those subtractions (an upper bound). Muster runs in its own process (bench/hostile-server.ts, server and queue worker); the client and the signing peer run in this one; signing happens before the clock starts. Accepted activities count until the queue is empty",
    "/healthz: one GET every 10 ms during the phase, one at a time; p50/p99/max wall latency as this client sees it (includes this machine's scheduling delay: compare with the baseline row); loop max: the server's event-loop delay max during the phase (monitorEventLoopDelay)",
    `verdict: PASS when CPU ms/req < ${CPU_TARGET_MS} and /healthz p99 < ${HEALTHZ_TARGET_MS} ms (and every answer is the expected one); MISS otherwise. load: the 1-minute load average at the end of the phase (2 cores: above ~2 other processes compete with Muster and the client)`,
    "requests are sent 8 at a time; MUSTER_MAX_BODY_BYTES is 2 MB so the 1 MB bodies reach the inbox guard. HOSTILE_CPU_PROF=<dir> writes one CPU profile of the server per phase",
  ],
  async run(dialect: DialectCase, { quick }): Promise<Row[]> {
    const n = quick ? 40 : 200;
    const tdb = await dialect.create();
    let peer: Peer | undefined;
    const child = spawn(process.execPath, [new URL("./hostile-server.ts", import.meta.url).pathname], {
      env: { ...process.env, HOSTILE_DATABASE_URL: tdb.url },
      stdio: ["pipe", "pipe", "inherit"],
    });
    let exited: string | undefined;
    const exit = new Promise<never>((_, reject) => child.once("exit", (code, signal) => {
      exited = `the server process exited (code ${code}, signal ${signal})`;
      reject(new Error(exited));
    }));
    exit.catch(() => {});
    const replies = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
    const ask = async (command?: string): Promise<Record<string, unknown>> => {
      if (command !== undefined) child.stdin!.write(`${command}\n`);
      const line = await Promise.race([replies.next(), exit]);
      if (line.done) throw new Error(exited ?? "the server process closed its output");
      return JSON.parse(line.value) as Record<string, unknown>;
    };
    const database = openDatabase(tdb.url);
    try {
      const origin = new URL((await ask()).origin as string);
      peer = await startPeer(["stranger"]);
      const inbox = new URL("/u/riders/inbox", origin);
      const union = new URL("/u/riders", origin).href;
      const actor = peer.actorId("stranger").href;
      let seq = 0;
      const id = () => new URL(`/activities/h-${++seq}`, peer!.origin).href;

      const bigCreate = () => JSON.stringify({
        "@context": AS, id: id(), type: "Create", actor, to: [PUBLIC],
        object: {
          id: id(), type: "Note", attributedTo: actor, content: "x", to: [PUBLIC],
          tag: Array.from({ length: 12_000 }, (_, i) => ({ type: "Hashtag", name: `#tag${i}`, href: `https://example.com/tags/tag${i}/and/some/padding` })),
        },
      });
      const signed = (body: string) => peer!.signedPost(inbox, body, { as: "stranger" });
      const deep = "[".repeat(100_000) + "]".repeat(100_000);
      const big = bigCreate();
      const oversized = big.repeat(3);
      const loads: Load[] = [
        {
          label: "unsigned 1 MB", accept: REFUSED_UNREAD("401"),
          requests: Array.from({ length: n }, () => new Request(inbox, { method: "POST", headers: { "Content-Type": "application/activity+json" }, body: bigCreate() })),
        },
        { label: "3 MB declared", accept: REFUSED_UNREAD("413"), requests: await Promise.all(Array.from({ length: n }, () => signed(oversized))) },
        { label: "deep nesting", accept: REFUSED_UNREAD("400"), requests: await Promise.all(Array.from({ length: n }, () => signed(deep))) },
        {
          label: "remote context", accept: ["400"],
          requests: await Promise.all(Array.from({ length: n }, () => signed(JSON.stringify({
            "@context": [AS, "http://localhost:9/ctx.jsonld"], id: id(), type: "Create", actor, to: [PUBLIC], object: { id: id(), type: "Note", attributedTo: actor, content: "x" },
          })))),
        },
        {
          label: "many '<' (non-member)", accept: ["403"],
          requests: await Promise.all(Array.from({ length: n }, () => signed(JSON.stringify({
            "@context": AS, id: id(), type: "Create", actor, to: [PUBLIC], cc: [union],
            object: { id: id(), type: "Note", attributedTo: actor, content: "<".repeat(150_000), to: [PUBLIC], tag: [{ type: "Mention", href: union }] },
          })))),
        },
      ];
      // Warm-up: the peer's key is fetched and cached, code is loaded and optimised.
      for (const load of loads) await send(load.requests.slice(0, 1).map((r) => r.clone()), 1);
      for (const load of loads) load.requests = load.requests.slice(1);

      const rows: Row[] = [];
      /** One measured window: the server's CPU and loop delay, and /healthz as a client sees it (when probing). */
      const phase = async (label: string, probe: boolean, work: () => Promise<Map<string, number>>) => {
        const health: number[] = [];
        let loading = probe;
        const prober = (async () => {
          while (loading) {
            const t = performance.now();
            await fetch(new URL("/healthz", origin)).then((r) => r.arrayBuffer());
            health.push(performance.now() - t);
            await sleep(10);
          }
        })();
        await ask(`start ${label}`);
        const start = performance.now();
        const statuses = await work();
        // An accepted activity is handled by the worker after the 202: that is part of its cost.
        while (Number((await database.db.selectFrom("fedify_mq").select((e) => e.fn.countAll<number>().as("n")).executeTakeFirstOrThrow()).n) > 0) await sleep(5);
        const wall = performance.now() - start;
        const stats = await ask("stop");
        loading = false;
        await prober;
        return { statuses, wall, cpuMs: stats.cpuMs as number, loopMaxMs: stats.loopMaxMs as number, health };
      };
      const healthCells = (health: number[]) => ({
        "healthz p50": round(percentile(health, 50)),
        "healthz p99": round(percentile(health, 99)),
        "healthz max": round(Math.max(...health)),
      });

      // Two quiet windows tell apart what the server spends with nothing to do
      // (queue polling, timers: per ms) and what each /healthz probe costs;
      // both are taken off the hostile phases' CPU.
      const window = quick ? 2000 : 5000;
      const idle = await phase("idle", false, () => sleep(window).then(() => new Map()));
      const idlePerMs = idle.cpuMs / idle.wall;
      const base = await phase("baseline", true, () => sleep(window).then(() => new Map()));
      const perProbe = Math.max(0, base.cpuMs - idlePerMs * base.wall) / Math.max(1, base.health.length);
      rows.push({
        dialect: dialect.name, load: "baseline: /healthz only", requests: 0, answer: "-",
        "CPU ms/req": "-", "raw CPU ms/req": "-",
        ...healthCells(base.health), "loop max": round(base.loopMaxMs),
        "load avg": loadavg()[0]!.toFixed(2), verdict: `idle ${round(idlePerMs * 1000)} ms CPU/s, ${round(perProbe)} ms per /healthz`,
      });

      for (const load of loads) {
        const r = await phase(load.label, true, () => send(load.requests, 8));
        const net = Math.max(0, r.cpuMs - idlePerMs * r.wall - perProbe * r.health.length) / load.requests.length;
        const answered = load.accept.reduce((sum, s) => sum + (r.statuses.get(s) ?? 0), 0);
        const p99 = percentile(r.health, 99);
        const misses = [
          answered === load.requests.length ? "" : `answers not all ${load.accept.join(" or ")}`,
          net < CPU_TARGET_MS ? "" : `CPU >= ${CPU_TARGET_MS} ms`,
          p99 < HEALTHZ_TARGET_MS ? "" : `healthz p99 >= ${HEALTHZ_TARGET_MS} ms${percentile(base.health, 99) >= HEALTHZ_TARGET_MS ? " (baseline too: machine load)" : ""}`,
        ].filter(Boolean);
        rows.push({
          dialect: dialect.name,
          load: load.label,
          requests: load.requests.length,
          answer: [...r.statuses].map(([s, c]) => `${s}x${c}`).join(" "),
          "CPU ms/req": round(net),
          "raw CPU ms/req": round(r.cpuMs / load.requests.length),
          ...healthCells(r.health),
          "loop max": round(r.loopMaxMs),
          "load avg": loadavg()[0]!.toFixed(2),
          verdict: misses.length ? `MISS: ${misses.join(", ")}` : "PASS",
        });
      }
      return rows;
    } finally {
      if (child.exitCode === null && child.signalCode === null) {
        const done = new Promise((r) => child.once("exit", r));
        child.stdin!.end();
        await done;
      }
      await database.close();
      await peer?.close();
      await tdb.destroy();
    }
  },
};

const round = (n: number) => Number(n.toFixed(n < 10 ? 2 : 1));

/** Sends the requests `concurrency` at a time; counts answers by status, and network errors by their code. */
async function send(requests: readonly Request[], concurrency: number): Promise<Map<string, number>> {
  const statuses = new Map<string, number>();
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < requests.length) {
      const request = requests[next++]!;
      let key: string;
      try {
        const res = await fetch(request);
        await res.arrayBuffer();
        key = String(res.status);
      } catch (error) {
        const cause = (error as { cause?: { code?: string } }).cause;
        key = cause?.code ?? (error as Error).name;
      }
      statuses.set(key, (statuses.get(key) ?? 0) + 1);
    }
  }));
  return statuses;
}
