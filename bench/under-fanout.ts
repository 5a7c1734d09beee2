import { fork } from "node:child_process";
import { randomUUID } from "node:crypto";
import { createServer, type Server } from "node:http";
import { fileURLToPath } from "node:url";
import { Create, Note } from "@fedify/vocab";
import type { Insertable, Kysely } from "kysely";
import { actionNoteId } from "../federation/action-note.ts";
import { composeAction } from "../src/actions/actions.ts";
import type { DB, MembersTable, RemoteActorsTable } from "../src/db/schema.ts";
import { OPERATOR } from "../src/members/members.ts";
import type { DialectCase } from "../test/helpers/databases.ts";
import { makeUnion, startMuster, type TestMuster } from "../test/helpers/muster.ts";
import { type Peer, startPeer } from "../test/helpers/peer.ts";
import { joinAsRemoteMember } from "../test/helpers/remote-member.ts";
import type { PeerReport } from "./joins.ts";
import { type Benchmark, cpuMs, loadAverage, percentile, pool, progress, type Row, sleep } from "./lib.ts";

/**
 * Issue 16's "never waiting behind a fan-out": a call-to-action is published
 * to a large roster (the fan-out), and while its deliveries drain, people
 * join (signed Follows, answered with an Accept) and members reply to the
 * call (signed Create(Note), counted as responses). What is measured is how
 * long each of those waits: Follow sent → Accept received at the joiner's
 * server, and reply POSTed → its action_responses row exists.
 *
 * Two swarms take the fan-out: "fast" servers answer every POST at once
 * (the fan-out keeps the CPU busy signing), "slow" servers hold every POST
 * for SLOW_MS (the fan-out keeps every delivery handler waiting).
 */

const SWARM_HOSTS = 100;
const SLOW_MS = 2_000;
// One Follow and one reply every TRICKLE_MS: well under what the machine can join per second
// (bench joins), so what is measured is waiting behind the fan-out, not a join backlog of its own.
const TRICKLE_MS = Number(process.env.BENCH_UNDER_FANOUT_EVERY_MS ?? 500);
const REPLIERS = ["alice", "bob", "carol", "dave"];
const TARGET_MS = 2_000;

export const underFanout: Benchmark = {
  name: "under-fanout",
  title: "Never behind a fan-out: Accept and counted-reply latency while a call-to-action drains",
  summary: "p50/p99 ms from Follow to Accept and from reply POST to counted response while 10^5 deliveries drain (--quick 10^4); target 2 s",
  notes: [
    `the roster (BENCH_UNDER_FANOUT_FOLLOWERS, default 100000, --quick 10000) is bulk-inserted, one personal inbox each, spread over ${SWARM_HOSTS} loopback hosts (127.78.0.x); publishing the call starts the fan-out`,
    `swarm "fast" answers every delivery 202 at once (the fan-out is CPU-bound); "slow" holds each for ${SLOW_MS / 1000} s (every delivery handler is busy waiting)`,
    `one second after publishing, a child process (bench/joins-peer.ts) sends one signed Follow every ${TRICKLE_MS} ms and members send one signed reply every ${TRICKLE_MS} ms (BENCH_UNDER_FANOUT_EVERY_MS), for BENCH_UNDER_FANOUT_SECONDS (default 20, --quick 10)`,
    "Accept ms: Follow sent until its Accept arrived at the joiner's server (signature verified there); reply ms: POST sent until the response row exists (polled every 20 ms)",
    "queued before/after: delivery-lane messages waiting when the trickle started and when it ended (the fan-out must still be draining for the figures to mean anything)",
    `target: p99 of both under ${TARGET_MS / 1000} s (issue 16)`,
  ],
  async run(dialect: DialectCase, { quick }): Promise<Row[]> {
    const followers = Number(process.env.BENCH_UNDER_FANOUT_FOLLOWERS ?? (quick ? 10_000 : 100_000));
    const seconds = Number(process.env.BENCH_UNDER_FANOUT_SECONDS ?? (quick ? 10 : 20));
    const swarms = (process.env.BENCH_UNDER_FANOUT_SWARMS ?? "fast,slow").split(",").map((s) => s.trim());
    const rows: Row[] = [];
    for (const swarm of swarms) {
      if (swarm !== "fast" && swarm !== "slow") throw new Error(`BENCH_UNDER_FANOUT_SWARMS takes fast and/or slow; got ${swarm}`);
      rows.push(await runOnce(dialect, swarm, followers, seconds));
    }
    return rows;
  },
};

async function runOnce(dialect: DialectCase, swarm: "fast" | "slow", followers: number, seconds: number): Promise<Row> {
  const label = `${dialect.name} ${swarm}`;
  const tdb = await dialect.create();
  let m: TestMuster | undefined;
  let peer: Peer | undefined;
  const swarmServers: Server[] = [];
  let child: ReturnType<typeof fork> | undefined;
  try {
    m = await startMuster(tdb);
    const union = await makeUnion(m, "riders", { joinPolicy: "open", leaderHandle: "@lead@leader.invalid" });
    const port = await startSwarm(swarmServers, swarm === "slow" ? SLOW_MS : 0);
    await seedRoster(m.muster.database.db, union.id, port, followers, label);
    peer = await startPeer(REPLIERS);
    for (const name of REPLIERS) await joinAsRemoteMember(m.muster.membership, union.id, peer.origin, name, new URL("/inbox", peer.origin));

    const joins = Math.ceil((seconds * 1000) / TRICKLE_MS);
    child = fork(fileURLToPath(new URL("./joins-peer.ts", import.meta.url)), [new URL("/u/riders", m.origin).href, String(joins), "4", "8", String(TRICKLE_MS)], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
    await new Promise<void>((resolve, reject) => {
      child!.once("message", () => resolve());
      child!.once("exit", (code) => reject(new Error(`join peers exited with ${code} before they were ready`)));
    });

    const action = await composeAction(m.muster.membership, union.id, OPERATOR, { title: "Sign the petition", text: "Reply *I'm in*.", kind: "sign" }, { publishNow: true });
    const target = actionNoteId(m.origin, union, action.id);
    const replies = await presignReplies(m, peer, target, joins);
    const cpu = process.cpuUsage();
    await sleep(1000);
    const queuedBefore = await queuedDeliveries(m);
    progress(`${label}: ${queuedBefore} deliveries queued; ${joins} joins and ${joins} replies over ${seconds} s`);

    const joined = new Promise<PeerReport>((resolve, reject) => {
      child!.once("message", (r) => resolve(r as PeerReport));
      child!.once("exit", (code) => reject(new Error(`join peers exited with ${code}`)));
      child!.send("go");
    });
    // Awaited after the replies; a failure in between must not leave it unhandled.
    joined.catch(() => {});
    const replyLatencies = await trickleReplies(m, replies);
    const report = await joined;
    const queuedAfter = await queuedDeliveries(m);
    const cpuTotal = cpuMs(cpu);
    const rows = await m.muster.database.db.selectFrom("members").select(["follow_id", "joined_at"]).where("follow_id", "in", report.timeline.map((t) => t.follow)).execute();
    const joinedAt = new Map(rows.map((r) => [r.follow_id, Number(r.joined_at)]));
    const toMember = report.timeline.flatMap((t) => joinedAt.has(t.follow) ? [joinedAt.get(t.follow)! - t.sent] : []);
    const toAccept = report.timeline.flatMap((t) => joinedAt.has(t.follow) && t.accepted ? [t.accepted - joinedAt.get(t.follow)!] : []);
    const worst = Math.max(percentile(report.latencies, 99), percentile(replyLatencies, 99));
    return {
      dialect: dialect.name,
      swarm,
      followers,
      "queued before": queuedBefore,
      "queued after": queuedAfter,
      joins,
      accepted: report.accepted,
      "Accept p50 ms": percentile(report.latencies, 50),
      "Accept p99 ms": percentile(report.latencies, 99),
      "Follow→member p50": percentile(toMember, 50),
      "member→Accept p50": percentile(toAccept, 50),
      "Follow→member p99": percentile(toMember, 99),
      "member→Accept p99": percentile(toAccept, 99),
      replies: replies.length,
      counted: replyLatencies.length,
      "reply p50 ms": percentile(replyLatencies, 50),
      "reply p99 ms": percentile(replyLatencies, 99),
      "CPU s": cpuTotal / 1000,
      load: loadAverage().replace(/^load average /, ""),
      "vs 2 s": report.accepted < joins || replyLatencies.length < replies.length ? "MISS (not all answered)" : queuedAfter === 0 ? "n/a (fan-out finished first)" : worst <= TARGET_MS ? "PASS" : "MISS",
    };
  } finally {
    child?.kill();
    await m?.stop();
    await peer?.close();
    await Promise.all(swarmServers.map((s) => new Promise((r) => s.close(r))));
    await tdb.destroy();
  }
}

/** One port on SWARM_HOSTS loopback addresses; every POST is answered 202 after delayMs. */
async function startSwarm(servers: Server[], delayMs: number): Promise<number> {
  let port = 0;
  for (let i = 1; i <= SWARM_HOSTS; i++) {
    const server = createServer((req, res) => {
      req.resume();
      req.once("end", () => setTimeout(() => res.writeHead(202).end(), delayMs));
    });
    server.keepAliveTimeout = 60_000;
    servers.push(server);
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, `127.78.0.${i}`, () => resolve());
    });
    port = (server.address() as { port: number }).port;
  }
  return port;
}

async function seedRoster(db: Kysely<DB>, unionId: string, port: number, followers: number, label: string): Promise<void> {
  const root = await db.selectFrom("members").select("id").where("union_id", "=", unionId).where("role", "=", "leader").executeTakeFirstOrThrow();
  const now = Date.now();
  const BATCH = 1000;
  for (let from = 0; from < followers; from += BATCH) {
    const actors: Insertable<RemoteActorsTable>[] = [];
    const members: Insertable<MembersTable>[] = [];
    for (let i = from; i < Math.min(followers, from + BATCH); i++) {
      const host = `127.78.0.${1 + (i % SWARM_HOSTS)}:${port}`;
      const id = `http://${host}/users/m${i}`;
      actors.push({ id, type: "Person", handle: `@m${i}@${host}`, name: `m${i}`, inbox: `${id}/inbox`, shared_inbox: null, fetched_at: now });
      members.push({
        id: randomUUID(), union_id: unionId, actor_id: id, handle: `@m${i}@${host}`, state: "active", role: "member", portfolio: null, sponsor_id: root.id,
        subtree_size: 0, follow_id: `${id}#follow`, invite_id: null, joined_at: now, left_at: null, left_reason: null, removed_by: null, created_at: now,
      });
    }
    await db.transaction().execute(async (trx) => {
      await trx.insertInto("remote_actors").values(actors).execute();
      await trx.insertInto("members").values(members).execute();
    });
  }
  await db.updateTable("members").set({ subtree_size: followers }).where("id", "=", root.id).execute();
  progress(`${label}: ${followers} members seeded`);
}

interface SignedReply {
  readonly noteId: string;
  readonly url: URL;
  readonly headers: Headers;
  readonly body: string;
}

async function presignReplies(m: TestMuster, peer: Peer, target: URL, n: number): Promise<SignedReply[]> {
  const union = new URL("/u/riders", m.origin);
  const inbox = new URL("/u/riders/inbox", m.origin);
  const out: SignedReply[] = new Array(n);
  await pool(n, 8, async (i) => {
    const as = REPLIERS[i % REPLIERS.length]!;
    const actor = peer.actorId(as);
    const noteId = new URL(`/notes/under-fanout/${i}`, peer.origin);
    const create = new Create({ id: new URL(`/activities/under-fanout/${i}`, peer.origin), actor, to: union, object: new Note({ id: noteId, attribution: actor, to: union, replyTarget: target, content: `<p>I'm in (${i})</p>` }) });
    const body = JSON.stringify(await create.toJsonLd({ format: "compact" }));
    const req = await peer.signedPost(inbox, body, { as });
    out[i] = { noteId: noteId.href, url: inbox, headers: req.headers, body };
  });
  return out;
}

/** POSTs one reply every TRICKLE_MS; resolves with each counted reply's latency (POST sent → response row). */
async function trickleReplies(m: TestMuster, replies: readonly SignedReply[]): Promise<number[]> {
  const db = m.muster.database.db;
  const pending = new Map<string, number>();
  const latencies: number[] = [];
  let sending = true;
  const watcher = (async () => {
    const until = () => !sending && pending.size === 0;
    const deadline = () => performance.now() + 60_000;
    let giveUp = Number.POSITIVE_INFINITY;
    while (!until() && performance.now() < giveUp) {
      if (!sending && giveUp === Number.POSITIVE_INFINITY) giveUp = deadline();
      const ids = [...pending.keys()];
      if (ids.length) {
        const rows = await db.selectFrom("action_responses").select("source_id").where("source_id", "in", ids).where("kind", "=", "comment").execute();
        const now = performance.now();
        for (const r of rows) {
          const sent = pending.get(r.source_id);
          if (sent === undefined) continue;
          latencies.push(now - sent);
          pending.delete(r.source_id);
        }
      }
      await sleep(20);
    }
  })();
  const start = performance.now();
  await Promise.all(replies.map(async (r, i) => {
    const due = start + i * TRICKLE_MS;
    if (due > performance.now()) await sleep(due - performance.now());
    pending.set(r.noteId, performance.now());
    try {
      const res = await fetch(r.url, { method: "POST", headers: r.headers, body: r.body });
      await res.arrayBuffer();
      if (res.status !== 202) progress(`reply ${i}: HTTP ${res.status}`);
    } catch (error) {
      pending.delete(r.noteId);
      progress(`reply ${i}: ${(error as Error).message} (${String((error as Error).cause)})`);
    }
  })).finally(() => sending = false);
  await watcher;
  return latencies;
}

async function queuedDeliveries(m: TestMuster): Promise<number> {
  const r = await m.muster.database.db.selectFrom("fedify_mq").select((e) => e.fn.countAll().as("n")).where("queue", "=", "delivery").executeTakeFirstOrThrow();
  return Number(r.n);
}
