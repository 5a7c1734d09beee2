import { AsyncLocalStorage } from "node:async_hooks";
import { fork } from "node:child_process";
import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { castVote, createProposal } from "../src/bylaws/proposals.ts";
import { getLeader, OPERATOR } from "../src/members/members.ts";
import type { DialectCase } from "../test/helpers/databases.ts";
import { makeUnion, startMuster, type TestMuster } from "../test/helpers/muster.ts";
import type { PeerReport } from "./joins.ts";
import { type Benchmark, cpuMs, loadAverage, perSecond, progress, type Row } from "./lib.ts";

/**
 * PostgreSQL round trips per operation, counted at the driver: every
 * statement any pooled client of this process sends (pg.Client#query), while
 * one kind of operation runs in a Muster that also runs its queue, as
 * `muster serve` does. So a join counts its inbox handling, the Accept and
 * welcome intents and their deliveries, and the queue's claims and settles;
 * a web vote counts castVote and the tally intent it queues.
 *
 * Sizes: BENCH_RT_JOINS (default 200; --quick 60), BENCH_RT_VOTES (default
 * 1000; --quick 300). BENCH_RT_TOP prints the most frequent statements.
 */

const JOIN_SERVERS = 10;
const JOIN_CONCURRENCY = 32;

/** Statement text (whitespace folded, first 120 characters) to how often it was sent. */
const counts = new Map<string, number>();
let counting = false;
/** Set while the operation itself runs (castVote), so its own statements are told from the queue's. */
const own = new AsyncLocalStorage<true>();
let ownCount = 0;
let patched = false;

function countStatements(): void {
  if (patched) return;
  patched = true;
  const query = pg.Client.prototype.query as (...args: unknown[]) => unknown;
  pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
    if (counting) {
      const first = args[0];
      const text = typeof first === "string" ? first : (first as { text?: string } | null)?.text ?? "?";
      const key = text.replace(/\s+/g, " ").trim().slice(0, 120);
      counts.set(key, (counts.get(key) ?? 0) + 1);
      if (own.getStore()) ownCount++;
      // BENCH_RT_KV: which of Fedify's keys (its first two parts) the KV statements name.
      if (process.env.BENCH_RT_KV && key.includes('"fedify_kv"')) {
        const params = (args[1] as unknown[] | undefined) ?? [];
        const k = params.find((v) => typeof v === "string" && v.startsWith("["));
        let part = "?";
        try {
          part = (JSON.parse(String(k)) as unknown[]).slice(0, 2).join(" ");
        } catch {
          // not a key
        }
        const label = `kv ${key.split(" ")[0]} ${part}`;
        counts.set(label, (counts.get(label) ?? 0) + 1);
      }
      if (process.env.BENCH_RT_CLAIMS && key.startsWith('update "fedify_mq" set "lease_owner"')) {
        const lane = ((args[1] as unknown[] | undefined) ?? []).find((v) => typeof v === "string" && /^(inbox|outbox|fanout|delivery|domain|ledger)$/.test(v));
        const result = query.apply(this, args) as Promise<{ rowCount: number }>;
        void result.then((r) => {
          const k = `claim ${String(lane)} ${r.rowCount === 0 ? "empty" : "rows"}`;
          counts.set(k, (counts.get(k) ?? 0) + 1);
        }, () => {});
        return result;
      }
    }
    return query.apply(this, args);
  } as typeof pg.Client.prototype.query;
}

function measure(): { stop(): { total: number; top: [string, number][] } } {
  counts.clear();
  ownCount = 0;
  counting = true;
  return {
    stop() {
      counting = false;
      const top = [...counts].sort((a, b) => b[1] - a[1]);
      // "claim <lane> rows|empty" (BENCH_RT_CLAIMS) and "kv …" (BENCH_RT_KV) describe statements counted already.
      return { total: top.filter(([k]) => !k.startsWith("claim ") && !k.startsWith("kv ")).reduce((n, [, c]) => n + c, 0), top };
    },
  };
}

function printTop(what: string, ops: number, top: [string, number][]): void {
  if (!process.env.BENCH_RT_TOP) return;
  progress(`${what}: statements per op, most frequent first`);
  for (const [text, n] of top.slice(0, Number(process.env.BENCH_RT_TOP) || 25)) progress(`  ${(n / ops).toFixed(2).padStart(6)}  ${text}`);
}

export const roundtrips: Benchmark = {
  name: "roundtrips",
  title: "PostgreSQL round trips per join and per web vote (statements counted at the driver, queue included)",
  summary: "statements sent to PostgreSQL per join (Follow → Accept, welcome) and per web vote, with CPU ms per op; PostgreSQL only",
  notes: [
    "one Muster process running its web and queue (as `muster serve`), default poll interval; every statement any of its pooled connections sends is counted while the operations run",
    `joins: ${JOIN_SERVERS} loopback servers' people each send one signed Follow (${JOIN_CONCURRENCY} in flight), to the last verified Accept; round trips include the queue's claims, settles and Fedify's KV`,
    "web votes: castVote for distinct members on one open proposal, one after another, then until the tally intent it queued has been handled",
    "BENCH_RT_TOP=25 prints the most frequent statements per operation",
  ],
  async run(dialect: DialectCase, { quick }): Promise<Row[]> {
    if (dialect.name !== "postgres") return [{ dialect: dialect.name, op: "-", detail: "PostgreSQL only (round trips are counted at the pg driver)" }];
    countStatements();
    const joins = Number(process.env.BENCH_RT_JOINS ?? (quick ? 60 : 200));
    const votes = Number(process.env.BENCH_RT_VOTES ?? (quick ? 300 : 1000));
    const rows: Row[] = [];
    const tdb = await dialect.create();
    let m: TestMuster | undefined;
    try {
      m = await startMuster(tdb, { muster: { queue: { pollIntervalMs: 1000 } } });
      await makeUnion(m, "riders", { joinPolicy: "open", leaderHandle: "@lead@leader.invalid" });
      const peers = fork(fileURLToPath(new URL("./joins-peer.ts", import.meta.url)), [new URL("/u/riders", m.origin).href, String(joins), String(JOIN_SERVERS), String(JOIN_CONCURRENCY)], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
      try {
        await new Promise<void>((resolve, reject) => {
          peers.once("message", () => resolve());
          peers.once("exit", (code) => reject(new Error(`join peers exited with ${code} before they were ready`)));
        });
        progress(`${dialect.name}: ${joins} joins, statements counted`);
        const counted = measure();
        const cpu = process.cpuUsage();
        const report = await new Promise<PeerReport>((resolve, reject) => {
          peers.once("message", (r) => resolve(r as PeerReport));
          peers.once("exit", (code) => reject(new Error(`join peers exited with ${code}`)));
          peers.send("go");
        });
        const used = cpuMs(cpu);
        const { total, top } = counted.stop();
        rows.push({ dialect: dialect.name, op: "join (Follow → Accept + welcome)", n: joins, "per s": perSecond(report.accepted, report.ms), "round trips/op": total / joins, "CPU ms/op": used / joins, detail: `${report.accepted} accepted, ${report.welcomes} welcomes; ${top.length} distinct statements`, load: loadAverage().replace(/^load average /, "") });
        printTop("join", joins, top);
      } finally {
        peers.kill();
      }

      // Web votes: members with no actor (they get no deliveries), active since before the vote opened.
      const union = (await m.muster.database.db.selectFrom("unions").select("id").where("slug", "=", "riders").executeTakeFirstOrThrow());
      const leader = (await getLeader(m.muster.database.db, union.id))!;
      const ids = Array.from({ length: votes }, () => randomUUID());
      const now = Date.now() - 1000;
      for (let i = 0; i < ids.length; i += 1000) {
        await m.muster.database.db.insertInto("members").values(ids.slice(i, i + 1000).map((id) => ({
          id, union_id: union.id, actor_id: null, handle: null, state: "active", role: "member", sponsor_id: leader.id, subtree_size: 0, follow_id: null, joined_at: now, created_at: now,
        }))).execute();
      }
      const proposal = await createProposal(m.muster.membership, union.id, OPERATOR, { kind: "resolution", title: "Counted", closesAt: new Date(Date.now() + 3600_000) });
      // Its publication fan-out (to the joined peers) is not a vote's cost.
      await new Promise((r) => setTimeout(r, 3000));
      const options = ["Yes", "No", "Abstain"];
      const counted = measure();
      const cpu = process.cpuUsage();
      const t0 = performance.now();
      let ok = 0;
      for (let i = 0; i < votes; i++) {
        const r = await own.run(true, () => castVote(m!.muster.membership, union.id, proposal.id, { memberId: ids[i]! }, [options[i % 3]!], { kind: "web" }));
        if (r.counted) ok++;
      }
      const ms = performance.now() - t0;
      const used = cpuMs(cpu);
      const mine = ownCount;
      const { total, top } = counted.stop();
      rows.push({ dialect: dialect.name, op: "web vote (castVote)", n: votes, "per s": perSecond(ok, ms), "round trips/op": total / votes, "CPU ms/op": used / votes, detail: `${ok} counted; castVote's own round trips ${(mine / votes).toFixed(1)} a vote, the rest the queue's and schedulers' work meanwhile; ${top.length} distinct statements`, load: loadAverage().replace(/^load average /, "") });
      printTop("web vote", votes, top);
      return rows;
    } finally {
      await m?.stop();
      await tdb.destroy();
    }
  },
};
