import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { createInterface } from "node:readline";
import { openDatabase } from "../src/db/database.ts";
import type { DialectCase } from "../test/helpers/databases.ts";
import { type Peer, startPeer } from "../test/helpers/peer.ts";
import { type Benchmark, percentile, type Row, sleep } from "./lib.ts";

const AS = "https://www.w3.org/ns/activitystreams";
const PUBLIC = `${AS}#Public`;

interface Load {
  readonly label: string;
  /** What a well-behaved server answers. */
  readonly expect: number;
  readonly requests: readonly Request[];
}

/**
 * Hostile inbox traffic (issue 12): what each request costs the server, and
 * whether /healthz keeps answering while it arrives.
 */
export const hostile: Benchmark = {
  name: "hostile",
  title: "Hostile inbox load: unsigned 1 MB bodies, deep nesting, a stranger's Note of many '<'",
  summary: "CPU per refused inbox request and /healthz latency under hostile bodies",
  notes: [
    "unsigned 1 MB: an unsigned Create with 12,000 tags (about 1 MB), refused 401 before its body is read",
    "deep nesting: 10^5 nested arrays, signed by a peer actor (a valid signature), refused 400 by the depth scan",
    "remote context: a signed Create naming an @context on another host, refused 400 without fetching it",
    "many '<': a signed Create of a Note of 150,000 '<' from a non-member, mentioning the union: accepted (202) and recorded without reading its HTML",
    "server CPU/req: the Muster process's CPU (user+system, from /proc, 10 ms ticks) over the phase divided by requests; Muster runs in its own process (bench/hostile-server.ts, server and worker), the client and the signing peer in this one; signing happens before the clock starts",
    "CPU and wall time include the worker handling accepted activities until the queue is empty",
    "/healthz: GET every 10 ms during the phase, one at a time; p50 and max latency",
    "requests are sent 8 at a time; MUSTER_MAX_BODY_BYTES is raised to 2 MB so the 1 MB bodies reach the inbox guard",
  ],
  async run(dialect: DialectCase, { quick }): Promise<Row[]> {
    const n = quick ? 40 : 200;
    const tdb = await dialect.create();
    let peer: Peer | undefined;
    const child = spawn(process.execPath, [new URL("./hostile-server.ts", import.meta.url).pathname], {
      env: { ...process.env, HOSTILE_DATABASE_URL: tdb.url },
      stdio: ["pipe", "pipe", "inherit"],
    });
    const database = openDatabase(tdb.url);
    try {
      const ready = await new Promise<string>((resolve, reject) => {
        createInterface({ input: child.stdout! }).once("line", resolve);
        child.once("exit", (code) => reject(new Error(`the server process exited (${code}) before it was ready`)));
      });
      const origin = new URL((JSON.parse(ready) as { origin: string }).origin);
      const serverCpuMs = () => {
        // utime and stime, in clock ticks (100 per second on Linux).
        const fields = readFileSync(`/proc/${child.pid}/stat`, "utf8").split(") ")[1]!.split(" ");
        return (Number(fields[11]) + Number(fields[12])) * 10;
      };
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
      const deep = "[".repeat(100_000) + "]".repeat(100_000);
      const loads: Load[] = [
        {
          label: "unsigned 1 MB", expect: 401,
          requests: Array.from({ length: n }, () => new Request(inbox, { method: "POST", headers: { "Content-Type": "application/activity+json" }, body: bigCreate() })),
        },
        { label: "deep nesting", expect: 400, requests: await Promise.all(Array.from({ length: n }, () => peer!.signedPost(inbox, deep, { as: "stranger" }))) },
        {
          label: "remote context", expect: 400,
          requests: await Promise.all(Array.from({ length: n }, () => peer!.signedPost(inbox, JSON.stringify({
            "@context": [AS, "http://localhost:9/ctx.jsonld"], id: id(), type: "Create", actor, to: [PUBLIC], object: { id: id(), type: "Note", attributedTo: actor, content: "x" },
          }), { as: "stranger" }))),
        },
        {
          label: "many '<' (non-member)", expect: 202,
          requests: await Promise.all(Array.from({ length: n }, () => peer!.signedPost(inbox, JSON.stringify({
            "@context": AS, id: id(), type: "Create", actor, to: [PUBLIC], cc: [union],
            object: { id: id(), type: "Note", attributedTo: actor, content: "<".repeat(150_000), to: [PUBLIC], tag: [{ type: "Mention", href: union }] },
          }), { as: "stranger" }))),
        },
      ];
      // Warm-up: the peer's key is fetched and cached, code is loaded.
      await fetch(await peer.signedPost(inbox, deep, { as: "stranger" })).then((r) => r.arrayBuffer());

      const rows: Row[] = [];
      for (const load of loads) {
        const health: number[] = [];
        let loading = true;
        const prober = (async () => {
          while (loading) {
            const t = performance.now();
            await fetch(new URL("/healthz", origin)).then((r) => r.arrayBuffer());
            health.push(performance.now() - t);
            await sleep(10);
          }
        })();
        const statuses = new Map<number, number>();
        const cpu = serverCpuMs();
        const start = performance.now();
        let next = 0;
        await Promise.all(Array.from({ length: 8 }, async () => {
          while (next < load.requests.length) {
            const res = await fetch(load.requests[next++]!);
            await res.arrayBuffer();
            statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
          }
        }));
        // An accepted activity is handled by the worker after the 202: that is part of its cost.
        const db = database.db;
        while (Number((await db.selectFrom("fedify_mq").select((e) => e.fn.countAll<number>().as("n")).executeTakeFirstOrThrow()).n) > 0) await sleep(5);
        const used = serverCpuMs() - cpu;
        const wall = performance.now() - start;
        loading = false;
        await prober;
        rows.push({
          dialect: dialect.name,
          load: load.label,
          requests: load.requests.length,
          statuses: [...statuses].map(([s, c]) => `${s}x${c}`).join(" "),
          expected: statuses.get(load.expect) === load.requests.length ? "yes" : "NO",
          "server CPU ms/req": Number((used / load.requests.length).toFixed(2)),
          "wall ms/req": Number((wall / load.requests.length).toFixed(2)),
          "healthz p50 ms": Number(percentile(health, 50).toFixed(1)),
          "healthz max ms": Number(Math.max(...health).toFixed(1)),
        });
      }
      return rows;
    } finally {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once("exit", r));
        child.stdin!.end();
        await exited;
      }
      await database.close();
      await peer?.close();
      await tdb.destroy();
    }
  },
};
