import { type ChildProcess, fork } from "node:child_process";
import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import type { Insertable, Kysely } from "kysely";
import { composeAction } from "../src/actions/actions.ts";
import type { DB, MembersTable, RemoteActorsTable } from "../src/db/schema.ts";
import { OPERATOR } from "../src/members/members.ts";
import type { DialectCase } from "../test/helpers/databases.ts";
import { makeUnion, startMuster, type TestMuster } from "../test/helpers/muster.ts";
import type { ReceiverMessage, ReceiverStats } from "./fanout-receiver.ts";
import { type Benchmark, cpuMs, mib, perSecond, progress, type Row, trackPeakRss, waitFor } from "./lib.ts";

/**
 * One call-to-action fanned out to a union's followers spread over many
 * member servers, all played by one child process (bench/fanout-receiver.ts)
 * answering on a thousand loopback addresses. Muster runs in this process as
 * `muster serve` does (HTTP server and queue worker together), so its CPU and
 * memory are this process's.
 *
 * Two shapes of the same follower set: every server advertises a shared
 * inbox (Mastodon, Misskey, Pleroma and most others do: one delivery per
 * server), and none does (one delivery per follower, the worst case).
 *
 * Sizes: BENCH_FANOUT_FOLLOWERS and BENCH_FANOUT_SERVERS (default 100000 and
 * 1000; --quick 1000 and 100); BENCH_FANOUT_SHAPES "shared", "personal" or
 * "shared,personal" (the default).
 */

interface Shape {
  readonly label: string;
  readonly shared: boolean;
}

const SHAPES: readonly Shape[] = [
  { label: "shared inboxes", shared: true },
  { label: "personal inboxes", shared: false },
];

export const fanout: Benchmark = {
  name: "fanout",
  title: "Fan-out: one call-to-action to every follower, over many simulated member servers on loopback",
  summary: "10^5 followers over 10^3 servers (--quick: 10^3 over 10^2); deliveries/s, time to last delivery, CPU per delivery, peak RSS",
  notes: [
    "followers and their cached actors are bulk-inserted (setup, untimed); the clock starts when composeAction(publishNow) is called and stops when the receiver has verified the last expected delivery",
    "shared inboxes: each simulated server advertises /inbox, so Fedify sends one delivery per server; personal inboxes: none does, so one per follower",
    "the receiver (a child process, one HTTP server per address 127.77.x.y) verifies every HTTP signature with Fedify's verifyRequest and answers 202; each simulated server fetches the union's key (its actor document) once and caches it, as real servers do: key GETs counts those fetches",
    "Muster CPU s/delivery and peak RSS are this process's (server, queue worker, SQLite or pg client); the receiver's CPU is reported apart; both share the machine's cores",
    "repeats: an activity id POSTed twice to the same inbox (must be 0); refused: deliveries whose signature did not verify (must be 0)",
    "queue concurrency is Muster's default (MUSTER_QUEUE_CONCURRENCY, 16 handlers at a time)",
  ],
  async run(dialect, { quick }) {
    const followers = Number(process.env.BENCH_FANOUT_FOLLOWERS ?? (quick ? 1_000 : 100_000));
    const servers = Number(process.env.BENCH_FANOUT_SERVERS ?? (quick ? 100 : 1_000));
    if (!(Number.isInteger(followers) && Number.isInteger(servers) && followers >= servers && servers >= 1 && servers <= 250 * 250)) {
      throw new Error(`BENCH_FANOUT_SERVERS and BENCH_FANOUT_FOLLOWERS must be whole numbers with 1 <= servers <= followers and servers <= 62500; got ${servers} and ${followers}`);
    }
    const rows: Row[] = [];
    const only = process.env.BENCH_FANOUT_SHAPES?.split(",").map((x) => x.trim());
    if (only?.some((x) => x !== "shared" && x !== "personal")) throw new Error(`BENCH_FANOUT_SHAPES takes "shared" and/or "personal"; got ${JSON.stringify(process.env.BENCH_FANOUT_SHAPES)}`);
    for (const shape of SHAPES.filter((s) => !only || only.includes(s.shared ? "shared" : "personal"))) rows.push(await runShape(dialect, shape, followers, servers));
    return rows;
  },
};

async function runShape(dialect: DialectCase, shape: Shape, followers: number, servers: number): Promise<Row> {
  const label = `${dialect.name} ${shape.label}`;
  const tdb = await dialect.create();
  let m: TestMuster | undefined;
  let receiver: Receiver | undefined;
  try {
    m = await startMuster(tdb);
    receiver = await startReceiver(servers, m.origin.href);
    const union = await makeUnion(m, "fanout");
    const seedStart = performance.now();
    await seedFollowers(m.muster.database.db, union.id, receiver, followers, shape.shared, label);
    progress(`${label}: ${followers} followers on ${servers} servers seeded in ${((performance.now() - seedStart) / 1000).toFixed(1)} s`);
    const expected = shape.shared ? servers : followers;

    const rss = trackPeakRss();
    const cpu = process.cpuUsage();
    const start = Date.now();
    const t0 = performance.now();
    await composeAction(m.muster.membership, union.id, OPERATOR, { title: "Benchmark call", text: "Sign the **petition** today.", kind: "sign" }, { publishNow: true });
    let stats = await receiver.stats();
    await waitFor(`${label}: deliveries`, async () => {
      stats = await receiver!.stats();
      return stats.delivered >= expected;
    }, () => `${stats.delivered}/${expected} delivered, ${stats.refused} refused`, { pollMs: 100 });
    const ms = performance.now() - t0;
    const cpuTotal = cpuMs(cpu);
    const peak = rss.stop();
    // Late repeats would show up after the last first-time delivery: give them a moment.
    await new Promise((r) => setTimeout(r, 1000));
    stats = await receiver.stats();
    const row: Row = {
      dialect: dialect.name,
      inboxes: shape.label,
      followers,
      servers,
      deliveries: stats.delivered,
      "first s": (stats.firstAt! - start) / 1000,
      "last s": ms / 1000,
      "deliveries/s": perSecond(stats.delivered, ms),
      "CPU ms/delivery": cpuTotal / stats.delivered,
      "peak RSS MiB": mib(peak),
      "receiver CPU ms/delivery": stats.cpuMs / stats.delivered,
      "key GETs": stats.key_fetches,
      repeats: stats.repeats,
      refused: stats.refused,
    };
    progress(`${label}: ${stats.delivered} deliveries in ${(ms / 1000).toFixed(1)} s`);
    return row;
  } finally {
    await m?.stop();
    await receiver?.stop();
    await tdb.destroy();
  }
}

interface Receiver {
  readonly port: number;
  readonly hosts: readonly string[];
  stats(): Promise<ReceiverStats>;
  stop(): Promise<void>;
}

async function startReceiver(hosts: number, senderOrigin: string): Promise<Receiver> {
  const child: ChildProcess = fork(fileURLToPath(new URL("./fanout-receiver.ts", import.meta.url)), [], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const listening = await new Promise<Extract<ReceiverMessage, { kind: "listening" }>>((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`the fan-out receiver exited with ${code} before listening`)));
    child.on("message", (msg: ReceiverMessage) => {
      if (msg.kind === "listening") resolve(msg);
    });
    child.send({ hosts, senderOrigin });
  });
  return {
    port: listening.port,
    hosts: listening.hosts,
    stats: () =>
      new Promise((resolve, reject) => {
        if (child.exitCode !== null || child.signalCode !== null) {
          reject(new Error(`the fan-out receiver has exited (${child.exitCode ?? child.signalCode})`));
          return;
        }
        const gone = () => reject(new Error(`the fan-out receiver exited (${child.exitCode ?? child.signalCode})`));
        const on = (msg: ReceiverMessage) => {
          if (msg.kind !== "stats") return;
          child.off("message", on);
          child.off("exit", gone);
          resolve(msg.stats);
        };
        child.on("message", on);
        child.once("exit", gone);
        child.send({ kind: "stats" });
      }),
    async stop() {
      if (child.exitCode === null) child.send({ kind: "stop" });
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
      child.kill("SIGKILL");
    },
  };
}

/**
 * Active members whose cached actors live on the receiver's servers,
 * follower i on server i mod servers, sponsored by the leader's place (the
 * tree's shape does not matter to a fan-out). Bulk-inserted in batches: the
 * setup is not what is measured.
 */
async function seedFollowers(db: Kysely<DB>, unionId: string, receiver: Receiver, followers: number, shared: boolean, label: string): Promise<void> {
  const root = await db.selectFrom("members").select("id").where("union_id", "=", unionId).where("role", "=", "leader").executeTakeFirstOrThrow();
  const now = Date.now();
  const BATCH = 1000;
  for (let from = 0; from < followers; from += BATCH) {
    const actors: Insertable<RemoteActorsTable>[] = [];
    const members: Insertable<MembersTable>[] = [];
    for (let i = from; i < Math.min(followers, from + BATCH); i++) {
      const origin = `http://${receiver.hosts[i % receiver.hosts.length]}:${receiver.port}`;
      const name = `m${i}`;
      const id = `${origin}/users/${name}`;
      actors.push({
        id,
        type: "Person",
        handle: `@${name}@${new URL(origin).host}`,
        preferred_username: name,
        name,
        summary: null,
        url: null,
        avatar_url: null,
        inbox: `${id}/inbox`,
        shared_inbox: shared ? `${origin}/inbox` : null,
        fetched_at: now,
      });
      members.push({
        id: randomUUID(),
        union_id: unionId,
        actor_id: id,
        handle: `@${name}@${new URL(origin).host}`,
        state: "active",
        role: "member",
        portfolio: null,
        sponsor_id: root.id,
        subtree_size: 0,
        follow_id: `${id}#follow`,
        invite_id: null,
        joined_at: now,
        left_at: null,
        left_reason: null,
        removed_by: null,
        created_at: now,
      });
    }
    await db.transaction().execute(async (trx) => {
      await trx.insertInto("remote_actors").values(actors).execute();
      await trx.insertInto("members").values(members).execute();
    });
    if ((from / BATCH) % 20 === 19) progress(`${label}: seeded ${from + BATCH}/${followers}`);
  }
  await db.updateTable("members").set({ subtree_size: followers }).where("id", "=", root.id).execute();
}
