import type { DialectCase } from "../test/helpers/databases.ts";
import { makeUnion, startMuster, type TestMuster } from "../test/helpers/muster.ts";
import { type Peer, startPeer } from "../test/helpers/peer.ts";
import { type Benchmark, cpuMs, percentile, type Row, sleep } from "./lib.ts";

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
    "CPU/req: process CPU (user+system) over the phase divided by requests; the HTTP client, the peer and the server share this process, so it is an upper bound on the server's share; signing happens before the clock starts",
    "CPU and wall time include the worker handling accepted activities until the queue is empty",
    "/healthz: GET every 10 ms during the phase, one at a time; p50 and max latency",
    "requests are sent 8 at a time; MUSTER_MAX_BODY_BYTES is raised to 2 MB so the 1 MB bodies reach the inbox guard",
  ],
  async run(dialect: DialectCase, { quick }): Promise<Row[]> {
    const n = quick ? 40 : 200;
    const tdb = await dialect.create();
    let m: TestMuster | undefined;
    let peer: Peer | undefined;
    try {
      m = await startMuster(tdb, { env: { MUSTER_MAX_BODY_BYTES: String(2 * 1024 * 1024) } });
      peer = await startPeer(["stranger"]);
      await makeUnion(m, "riders", { joinPolicy: "open" });
      const inbox = new URL("/u/riders/inbox", m.origin);
      const union = new URL("/u/riders", m.origin).href;
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
            await fetch(new URL("/healthz", m!.origin)).then((r) => r.arrayBuffer());
            health.push(performance.now() - t);
            await sleep(10);
          }
        })();
        const statuses = new Map<number, number>();
        const cpu = process.cpuUsage();
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
        const db = m.muster.database.db;
        while (Number((await db.selectFrom("fedify_mq").select((e) => e.fn.countAll<number>().as("n")).executeTakeFirstOrThrow()).n) > 0) await sleep(5);
        const used = cpuMs(cpu);
        const wall = performance.now() - start;
        loading = false;
        await prober;
        rows.push({
          dialect: dialect.name,
          load: load.label,
          requests: load.requests.length,
          statuses: [...statuses].map(([s, c]) => `${s}x${c}`).join(" "),
          expected: statuses.get(load.expect) === load.requests.length ? "yes" : "NO",
          "CPU ms/req": Number((used / load.requests.length).toFixed(2)),
          "wall ms/req": Number((wall / load.requests.length).toFixed(2)),
          "healthz p50 ms": Number(percentile(health, 50).toFixed(1)),
          "healthz max ms": Number(Math.max(...health).toFixed(1)),
        });
      }
      return rows;
    } finally {
      await m?.stop();
      await peer?.close();
      await tdb.destroy();
    }
  },
};
