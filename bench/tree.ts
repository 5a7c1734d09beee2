// Points test/helpers/databases.ts at BENCH_DATABASE_URL when run on its own.
import "./pg-env.ts";
import { fork } from "node:child_process";
import { randomUUID } from "node:crypto";
import { availableParallelism, loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { type Kysely, sql } from "kysely";
import { generateActorKeys } from "../federation/keys.ts";
import { openDatabase } from "../src/db/database.ts";
import type { DB } from "../src/db/schema.ts";
import { createEventBus } from "../src/events.ts";
import { claimInvite, createInvite } from "../src/members/invites.ts";
import { countMembers, getMember, listMembers, type MembershipDeps } from "../src/members/members.ts";
import { leaveUnion, requestToJoin } from "../src/members/membership.ts";
import { recruitsOf, sponsorChain } from "../src/members/tree.ts";
import type { Outbox } from "../src/outbox.ts";
import { createUnion } from "../src/unions/unions.ts";
import { type DialectCase, dialects } from "../test/helpers/databases.ts";
import { seededRandom } from "../test/helpers/random.ts";
import { type Benchmark, type BenchOptions, fmt, machineFacts, percentile, perSecond, printTable, progress, type Row } from "./lib.ts";
import { changeBylaws } from "../src/bylaws/bylaws.ts";

/**
 * The member tree at scale: bulk-loads one union with N members (setup, timed
 * but not the measured operation), then times the real domain operations on
 * it (requestToJoin, leaveUnion, sponsorChain, recruitsOf, listMembers) and
 * checks the maintained subtree counts afterwards.
 *
 * Sizes and shapes: BENCH_TREE_SIZES (e.g. "100000,1000000") and
 * BENCH_TREE_SHAPES ("random", "deep" or "random,deep"); on its own,
 * `node bench/tree.ts --help` lists the same as flags.
 */

type Shape = "random" | "deep";

interface TreeOptions {
  readonly sizes: readonly number[];
  readonly shapes: readonly Shape[];
  /** Upper bound on the time one operation is repeated for; the count is cut short, never the operation. */
  readonly budgetMs: number;
  readonly quick: boolean;
}

/** Repetitions per operation (full, quick); each stops early once the time budget is spent. */
const COUNTS = {
  joinOpen: [2000, 200],
  joinInvite: [1000, 100],
  leave: [500, 100],
  chain: [5000, 500],
  subtree: [5000, 500],
  recruits: [5000, 500],
  list: [20, 5],
} as const;

/** In "deep", each newcomer's sponsor is one of the DEEP_WINDOW most recent members: depth grows about 2N/(W+1). */
const DEEP_WINDOW = 64;
const UNION_SLUG = "tree-bench";
const LEADER_HANDLE = "@lead@bench.example";
const LEADER_ACTOR = "https://bench.example/users/lead";

const NOTES = [
  "one union; the leader (created by createUnion, activated by its own requestToJoin) is the root; members bulk-loaded with multi-row INSERTs in transactions (setup: its rate is rows/s)",
  "random: each member's sponsor is a uniformly random earlier member (depth ~ ln N); deep: a random one of the 64 most recent members (depth ~ N/32)",
  "every operation runs sequentially (one at a time) through the domain functions, with an outbox that inserts into fedify_mq in the same transaction; repeated up to its count or until its time budget is spent (n says how many ran)",
  "join (open): requestToJoin of a new actor, union in `open` policy (sponsor: the leader); join (invite): a random member's invite claimed by handle (untimed), then requestToJoin (sponsor: that member, ancestors updated)",
  "leave: leaveUnion of random members with recruits, who move up to the leaver's sponsor; chain: sponsorChain of random members from the deepest 10%; subtree: getMember().subtreeSize; recruits: recruitsOf (first page of 100)",
  "list: listMembers(limit 100, first page), whose depths are walked up from the listed members only; SQLite is not ANALYZEd (Muster never does), PostgreSQL is ANALYZEd after the load (autovacuum would soon)",
  "checks: root's subtree_size = active members - 1; full: every in-tree member's subtree_size recomputed from sponsor_id in memory",
];

export const tree: Benchmark = {
  name: "tree",
  title: "Member tree at scale: bulk load, then join, leave with reparenting, chain, subtree and listing",
  summary: "the sponsor tree at 10^5 and 10^6 members (--quick: 10^4): domain-operation rates and latencies",
  notes: NOTES,
  run: (dialect, options) => runTree(dialect, treeOptions(options)),
};

function treeOptions({ quick }: BenchOptions): TreeOptions {
  const sizes = process.env.BENCH_TREE_SIZES ? parseSizes(process.env.BENCH_TREE_SIZES) : quick ? [10_000] : [100_000, 1_000_000];
  const shapes = process.env.BENCH_TREE_SHAPES ? parseShapes(process.env.BENCH_TREE_SHAPES) : ["random" as const];
  const budget = Number(process.env.BENCH_TREE_BUDGET_S ?? (quick ? 15 : 60));
  if (!(budget > 0)) throw new Error(`BENCH_TREE_BUDGET_S must be a positive number of seconds; got ${process.env.BENCH_TREE_BUDGET_S}`);
  return { sizes, shapes, budgetMs: budget * 1000, quick };
}

function parseSizes(s: string): number[] {
  return s.split(",").map((x) => x.trim()).filter(Boolean).map((x) => {
    const n = Number(x);
    if (!Number.isInteger(n) || n < 100) throw new Error(`tree sizes are whole numbers of at least 100 (1e5 works too); got ${JSON.stringify(x)}`);
    return n;
  });
}

function parseShapes(s: string): Shape[] {
  return s.split(",").map((x) => x.trim()).filter(Boolean).map((x) => {
    if (x !== "random" && x !== "deep") throw new Error(`tree shapes are "random" and "deep"; got ${JSON.stringify(x)}`);
    return x;
  });
}

async function runTree(dialect: DialectCase, options: TreeOptions): Promise<Row[]> {
  const rows: Row[] = [];
  for (const size of options.sizes) {
    for (const shape of options.shapes) rows.push(...await runOne(dialect, size, shape, options));
  }
  return rows;
}

// ---------------------------------------------------------------------------
// The tree, in memory

interface Tree {
  /** Index 0 is the leader. */
  readonly size: number;
  readonly sponsor: Int32Array;
  readonly subtree: Int32Array;
  readonly depth: Int32Array;
  readonly recruits: Int32Array;
  readonly ids: string[];
}

function generateTree(size: number, shape: Shape, leaderId: string, random: () => number): Tree {
  const sponsor = new Int32Array(size).fill(-1);
  const depth = new Int32Array(size);
  const subtree = new Int32Array(size);
  const recruits = new Int32Array(size);
  for (let i = 1; i < size; i++) {
    const s = shape === "random" ? Math.floor(random() * i) : Math.max(0, i - 1 - Math.floor(random() * DEEP_WINDOW));
    sponsor[i] = s;
    depth[i] = depth[s]! + 1;
    recruits[s]!++;
  }
  // Sponsors come before their recruits, so one backward pass sums every subtree.
  for (let i = size - 1; i > 0; i--) subtree[sponsor[i]!]! += subtree[i]! + 1;
  const ids = new Array<string>(size);
  ids[0] = leaderId;
  for (let i = 1; i < size; i++) ids[i] = randomUUID();
  return { size, sponsor, subtree, depth, recruits, ids };
}

const actorOf = (i: number) => `https://peer${i % 997}.example/users/u${i}`;
const handleOf = (i: number) => `@u${i}@peer${i % 997}.example`;

/** The members table rows, oldest first, in batches. */
function* memberRows(t: Tree, unionId: string, start: number, batch: number) {
  for (let from = 1; from < t.size; from += batch) {
    const rows = [];
    for (let i = from; i < Math.min(t.size, from + batch); i++) {
      const at = start + i * 1000;
      rows.push({
        id: t.ids[i]!,
        union_id: unionId,
        actor_id: actorOf(i),
        handle: handleOf(i),
        state: "active",
        role: "member",
        portfolio: null,
        sponsor_id: t.ids[t.sponsor[i]!]!,
        subtree_size: t.subtree[i]!,
        follow_id: `https://peer${i % 997}.example/follows/${i}`,
        invite_id: null,
        joined_at: at,
        left_at: null,
        left_reason: null,
        removed_by: null,
        created_at: at,
      });
    }
    yield rows;
  }
}

// ---------------------------------------------------------------------------
// One dialect, one size

/** Production's outbox records intents in fedify_mq inside the caller's transaction; so does this one. */
const queueOutbox: Outbox = {
  async add(trx, intent) {
    const now = Date.now();
    await trx.insertInto("fedify_mq").values({ queue: "outbox", message: JSON.stringify(intent), available_at: now, attempts: 0, created_at: now }).execute();
  },
};

async function runOne(dialect: DialectCase, size: number, shape: Shape, options: TreeOptions): Promise<Row[]> {
  const label = `${dialect.name} ${fmtSize(size)} ${shape}`;
  const tdb = await dialect.create();
  const database = openDatabase(tdb.url);
  const { db } = database;
  const deps: MembershipDeps = { db, events: createEventBus(), outbox: queueOutbox };
  const random = seededRandom(0x5eed ^ size);
  const rows: Row[] = [];
  const base = { dialect: dialect.name, members: size, shape };
  // Every row has every column, in this order; fmt() prints NaN as "-".
  const row = (operation: string, m: Measured | { n: number; perSecond: number } | undefined, detail: string) => {
    const cut = m && "count" in m && m.n < m.count ? `stopped by the time budget after ${m.n} of ${m.count}; ` : "";
    rows.push({
      ...base,
      operation,
      n: m?.n ?? Number.NaN,
      "ops/s": m ? ("samples" in m ? perSecond(m.n, m.ms) : m.perSecond) : Number.NaN,
      "p50 ms": m && "samples" in m ? percentile(m.samples, 50) : Number.NaN,
      "p99 ms": m && "samples" in m ? percentile(m.samples, 99) : Number.NaN,
      "max ms": m && "samples" in m && m.n > 0 ? Math.max(...m.samples) : Number.NaN,
      detail: cut + detail,
    });
  };
  try {
    // The union and its leader, through the domain.
    const union = await createUnion({ ...deps, generateKeys: generateActorKeys }, {
      slug: UNION_SLUG, name: "Tree Benchmark Union", purpose: "Measuring the member tree", leaderHandle: LEADER_HANDLE,
    });
    const leader = await requestToJoin(deps, union.id, { actorId: LEADER_ACTOR, handle: LEADER_HANDLE }, `${LEADER_ACTOR}#follow`);
    if (leader.outcome !== "accepted") throw new Error(`the leader's follow was ${leader.outcome}`);

    // Bulk load (setup).
    const genStart = performance.now();
    const t = generateTree(size, shape, leader.member.id, random);
    const genMs = performance.now() - genStart;
    const loadStart = performance.now();
    await bulkLoad(tdb.url, dialect.name, t, union.id, label);
    const loadMs = performance.now() - loadStart;
    const depths = depthStats(t);
    progress(`${label}: loaded ${size - 1} members in ${(loadMs / 1000).toFixed(1)} s (tree generated in ${(genMs / 1000).toFixed(1)} s); depth mean ${fmt(depths.mean)}, max ${depths.max}`);
    row("bulk load (setup)", { n: size - 1, perSecond: perSecond(size - 1, loadMs) },
      `${(loadMs / 1000).toFixed(1)} s; depth mean ${fmt(depths.mean)}, max ${depths.max}; leader's recruits ${t.recruits[0]}`);

    const load = loadavg()[0]!.toFixed(1);
    const pick = picker(t, random);
    const budget = options.budgetMs;
    const q = options.quick ? 1 : 0;

    // (1a) Joins under the open policy: sponsor is the leader.
    await changeBylaws(deps, union.id, { kind: "operator", reason: "benchmark: joins under the open policy" }, { params: { joinPolicy: "open" } });
    let joined = 0;
    const open = await measure(`${label}: join (open)`, COUNTS.joinOpen[q], budget, async (k) => {
      const actorId = `https://joiners.example/users/open${k}`;
      const r = await requestToJoin(deps, union.id, { actorId, handle: `@open${k}@joiners.example` }, `${actorId}#follow`);
      if (r.outcome !== "accepted" || r.member.sponsorId !== t.ids[0]) throw new Error(`open join ${k}: ${r.outcome}, sponsor ${r.member.sponsorId}`);
      joined++;
    });
    row("join (open, requestToJoin)", open, `sponsor: leader; load average ${load} on ${availableParallelism()} cores before joins`);

    // (1b) Joins by a member's invite: sponsor is that member, somewhere down the tree.
    const inviters = pick.distinct(COUNTS.joinInvite[q], (i) => i > 0);
    const inviteSetup = performance.now();
    const claims: { inviter: number; handle: string }[] = [];
    for (const inviter of inviters) {
      const invite = await createInvite(deps, union.id, { by: { kind: "member", memberId: t.ids[inviter]! } });
      const handle = `@inv${claims.length}@joiners.example`;
      await claimInvite(deps, union.id, invite.code, handle);
      claims.push({ inviter, handle });
    }
    progress(`${label}: ${claims.length} invites created and claimed in ${((performance.now() - inviteSetup) / 1000).toFixed(1)} s (untimed)`);
    const inviteDepths: number[] = [];
    const invited = await measure(`${label}: join (invite)`, claims.length, budget, async (k) => {
      const { inviter, handle } = claims[k]!;
      const actorId = `https://joiners.example/users/inv${k}`;
      const r = await requestToJoin(deps, union.id, { actorId, handle }, `${actorId}#follow`);
      if (r.outcome !== "accepted" || r.member.sponsorId !== t.ids[inviter]) throw new Error(`invite join ${k}: ${r.outcome}, sponsor ${r.member.sponsorId}`);
      inviteDepths.push(t.depth[inviter]! + 1);
      joined++;
    });
    row("join (invite, requestToJoin)", invited, `newcomer depth mean ${fmt(mean(inviteDepths))}`);

    // (2) Leaves of members with recruits, who are reparented.
    const inviting = new Set(inviters);
    const leavers = pick.distinct(COUNTS.leave[q], (i) => i > 0 && t.recruits[i]! > 0 && !inviting.has(i));
    let left = 0;
    let moved = 0;
    const onLeft = (e: { recruitsMoved: number }) => (moved += e.recruitsMoved);
    deps.events.on("member.left", onLeft);
    const leave = await measure(`${label}: leave`, leavers.length, budget, async (k) => {
      const m = await leaveUnion(deps, union.id, actorOf(leavers[k]!), "left");
      if (m?.state !== "left") throw new Error(`leave ${k}: ${m?.state}`);
      left++;
    });
    deps.events.off("member.left", onLeft);
    row("leave + reparent (leaveUnion)", leave, `recruits moved per leave ${fmt(moved / Math.max(1, left))}`);

    // (3) Sponsor chains of deep members.
    const deepCut = depthQuantile(t, 0.9);
    const deep = pick.many(COUNTS.chain[q], (i) => t.depth[i]! >= deepCut);
    const chainLengths: number[] = [];
    const chain = await measure(`${label}: sponsorChain`, deep.length, budget, async (k) => {
      chainLengths.push((await sponsorChain(db, t.ids[deep[k]!]!)).length);
    });
    row("sponsorChain (deepest 10%)", chain, `chain length mean ${fmt(mean(chainLengths))}, max ${Math.max(...chainLengths)}`);

    // (4) Subtree size and first page of recruits.
    const anyone = pick.many(COUNTS.subtree[q], (i) => i > 0);
    let sizes = 0;
    const subtree = await measure(`${label}: subtree size`, anyone.length, budget, async (k) => {
      sizes += (await getMember(db, union.id, t.ids[anyone[k]!]!))?.subtreeSize ?? 0;
    });
    row("subtree size (getMember)", subtree, `mean ${fmt(sizes / Math.max(1, subtree.n))}`);
    const sponsors = pick.many(COUNTS.recruits[q], (i) => t.recruits[i]! > 0);
    let pages = 0;
    const recruits = await measure(`${label}: recruitsOf`, sponsors.length, budget, async (k) => {
      pages += (await recruitsOf(db, union.id, t.ids[sponsors[k]!]!, { limit: 100 })).length;
    });
    row("recruitsOf (first 100)", recruits, `recruits per page mean ${fmt(pages / Math.max(1, recruits.n))}`);

    // (5) One page of the member listing, with depths, in a child process
    // that is killed if one call outlives twice the budget (better-sqlite3
    // blocks its thread for the whole query, so it cannot be cut short here).
    const list = await listInChild(tdb.url, union.id, COUNTS.list[q], budget, label);
    row("listMembers (limit 100)", list.measured, list.detail);

    // Checks.
    const active = await countMembers(db, union.id, ["active"]);
    const expected = size + joined - left;
    const root = (await getMember(db, union.id, t.ids[0]!))!;
    const rootOk = root.subtreeSize === active - 1 && active === expected;
    row("check: root subtree_size", undefined,
      `${rootOk ? "OK" : "MISMATCH"} (root ${root.subtreeSize}, active ${active} - 1${active === expected ? "" : `; expected ${expected} active`})`);
    const full = await fullCheck(db, union.id);
    row("check: every subtree_size", undefined, full);
    if (!rootOk || !full.startsWith("OK")) process.exitCode = 1;
    return rows;
  } finally {
    await database.close();
    await tdb.destroy();
  }
}

/**
 * Loads the tree through a connection of its own, closed afterwards: on
 * SQLite that frees the big INSERT statements at once (better-sqlite3
 * finalizes a statement only when the GC collects it, which otherwise stalls
 * a later, measured operation for seconds) and lets the load use a large page
 * cache without the measured connection inheriting it.
 */
async function bulkLoad(url: string, dialect: DialectCase["name"], t: Tree, unionId: string, label: string): Promise<void> {
  const loader = openDatabase(url, { poolSize: 1 });
  const db = loader.db;
  try {
    if (dialect === "sqlite") await sql`pragma cache_size = -1048576`.execute(db);
    // A multi-row INSERT binds 16 values a row: SQLite allows 32766 bound
    // values a statement, PostgreSQL 65535.
    const batch = dialect === "sqlite" ? 2000 : 4000;
    const perTransaction = 100_000;
    const start = Date.now() - t.size * 1000;
    const batches = memberRows(t, unionId, start, batch);
    let done = 0;
    let reported = performance.now();
    for (;;) {
      let more = true;
      await db.transaction().execute(async (trx) => {
        for (let inTrx = 0; inTrx < perTransaction;) {
          const next = batches.next();
          if (next.done) {
            more = false;
            return;
          }
          await trx.insertInto("members").values(next.value).execute();
          inTrx += next.value.length;
          done += next.value.length;
        }
      });
      if (performance.now() - reported > 5000 || !more) {
        progress(`${label}: bulk load ${done}/${t.size - 1} members`);
        reported = performance.now();
      }
      if (!more) break;
    }
    await db.updateTable("members").set({ subtree_size: t.subtree[0]! }).where("id", "=", t.ids[0]!).execute();
    // A server that has been running has its WAL checkpointed and, on
    // PostgreSQL, autovacuum has analyzed a table that grew this much.
    if (dialect === "sqlite") await sql`pragma wal_checkpoint(truncate)`.execute(db);
    else await sql`analyze`.execute(db);
  } finally {
    await loader.close();
  }
}

/** Recomputes every in-tree member's subtree size from sponsor_id and compares it with the stored one. */
async function fullCheck(db: Kysely<DB>, unionId: string): Promise<string> {
  const rows = await db.selectFrom("members").select(["id", "sponsor_id", "subtree_size"])
    .where("union_id", "=", unionId).where("state", "in", ["reserved", "active"]).execute();
  const index = new Map(rows.map((r, i) => [r.id, i]));
  const parent = rows.map((r) => (r.sponsor_id === null ? -1 : (index.get(r.sponsor_id) ?? -2)));
  const orphans = parent.filter((p) => p === -2).length;
  const roots = parent.filter((p) => p === -1).length;
  // Children lists, then a breadth-first order from the roots; sum in reverse.
  const children = new Map<number, number[]>();
  parent.forEach((p, i) => {
    if (p >= 0) (children.get(p) ?? children.set(p, []).get(p)!).push(i);
  });
  const order: number[] = [];
  parent.forEach((p, i) => p === -1 && order.push(i));
  for (let k = 0; k < order.length; k++) for (const c of children.get(order[k]!) ?? []) order.push(c);
  const size = new Int32Array(rows.length);
  for (let k = order.length - 1; k >= 0; k--) {
    const i = order[k]!;
    if (parent[i]! >= 0) size[parent[i]!]! += size[i]! + 1;
  }
  let wrong = 0;
  for (const i of order) if (Number(rows[i]!.subtree_size) !== size[i]) wrong++;
  const unreachable = rows.length - order.length;
  const ok = wrong === 0 && orphans === 0 && roots === 1 && unreachable === 0;
  return `${ok ? "OK" : "MISMATCH"} (${rows.length} in tree, ${wrong} wrong, ${roots} root${roots === 1 ? "" : "s"}, ${orphans} orphans, ${unreachable} unreachable)`;
}

// ---------------------------------------------------------------------------
// Helpers

interface Measured {
  /** How many ran. */
  readonly n: number;
  /** How many were asked for. */
  readonly count: number;
  readonly ms: number;
  readonly samples: readonly number[];
}

/** Runs op(0), op(1)… one at a time until `count` have run or `budgetMs` has passed. */
async function measure(label: string, count: number, budgetMs: number, op: (k: number) => Promise<void>): Promise<Measured> {
  const samples: number[] = [];
  const start = performance.now();
  let reported = start;
  for (let k = 0; k < count; k++) {
    const s = performance.now();
    await op(k);
    const now = performance.now();
    samples.push(now - s);
    if (now - start > budgetMs) break;
    if (now - reported > 5000) {
      progress(`${label}: ${k + 1}/${count}`);
      reported = now;
    }
  }
  const ms = performance.now() - start;
  progress(`${label}: ${samples.length} in ${(ms / 1000).toFixed(1)} s${samples.length < count ? ` (time budget: ${samples.length}/${count})` : ""}`);
  return { n: samples.length, count, ms, samples };
}

interface ListSpec {
  readonly url: string;
  readonly unionId: string;
  readonly count: number;
  readonly budgetMs: number;
}

type ListMessage = { ready: true } | { ms: number; rows: number } | { done: true } | { error: string };

/** Times listMembers in a child process (this file with --list-child), killing it if one call runs past 2 × budget. */
async function listInChild(url: string, unionId: string, count: number, budgetMs: number, label: string): Promise<{ measured: Measured; detail: string }> {
  const hardMs = 2 * budgetMs;
  const spec: ListSpec = { url, unionId, count, budgetMs };
  const child = fork(fileURLToPath(import.meta.url), ["--list-child", JSON.stringify(spec)], { stdio: ["ignore", "ignore", "inherit", "ipc"] });
  const samples: number[] = [];
  let rowsPerPage = 0;
  let error: string | undefined;
  let readyAt: number | undefined;
  let lastAt = performance.now();
  let killed = false;
  const started = performance.now();
  const exited = new Promise<void>((resolve) => child.on("exit", () => resolve()));
  child.on("message", (m: ListMessage) => {
    const now = performance.now();
    if ("ready" in m) {
      readyAt = lastAt = now;
    } else if ("ms" in m) {
      samples.push(m.ms);
      rowsPerPage = m.rows;
      lastAt = now;
    } else if ("error" in m) {
      error = m.error;
    }
    if ("done" in m || "error" in m) child.disconnect();
  });
  // The hard limit is on one call: a child still in its first call when the
  // budget is spent, or in any call for longer than 2 × budget, is killed.
  const watchdog = setInterval(() => {
    const now = performance.now();
    if (readyAt === undefined ? now - started > hardMs : now - lastAt > hardMs) {
      killed = true;
      child.kill("SIGKILL");
    } else {
      progress(`${label}: listMembers: ${samples.length} call${samples.length === 1 ? "" : "s"} done, ${((now - (readyAt ?? started)) / 1000).toFixed(0)} s`);
    }
  }, Math.min(10_000, hardMs / 4));
  try {
    await exited;
  } finally {
    clearInterval(watchdog);
  }
  if (error) throw new Error(`listMembers: ${error}`);
  if (!killed && child.exitCode !== 0) throw new Error(`listMembers child exited with ${child.exitCode ?? child.signalCode}`);
  const ms = killed ? performance.now() - (readyAt ?? started) : samples.reduce((a, b) => a + b, 0);
  progress(`${label}: listMembers: ${samples.length} in ${(ms / 1000).toFixed(1)} s${killed ? " (killed)" : ""}`);
  if (killed) {
    const detail = `killed: a call was still running after ${(hardMs / 1000).toFixed(0)} s; ${samples.length} of ${count} finished`;
    return { measured: { n: samples.length, count: samples.length, ms, samples }, detail };
  }
  return { measured: { n: samples.length, count, ms, samples }, detail: `${rowsPerPage} rows per page` };
}

/** The child's side of listInChild. */
async function listChild(spec: ListSpec): Promise<void> {
  const send = (m: ListMessage) => process.send!(m);
  const database = openDatabase(spec.url, { poolSize: 1 });
  try {
    send({ ready: true });
    const start = performance.now();
    for (let k = 0; k < spec.count && performance.now() - start < spec.budgetMs; k++) {
      const s = performance.now();
      const page = await listMembers(database.db, spec.unionId, { limit: 100 });
      const ms = performance.now() - s;
      if (page.some((m) => m.depth === null)) throw new Error("a listed member has no depth");
      send({ ms, rows: page.length });
    }
    send({ done: true });
  } catch (error) {
    send({ error: error instanceof Error ? error.message : String(error) });
  } finally {
    await database.close();
  }
}

function picker(t: Tree, random: () => number) {
  const candidates = (accept: (i: number) => boolean) => {
    const out: number[] = [];
    for (let i = 0; i < t.size; i++) if (accept(i)) out.push(i);
    if (out.length === 0) throw new Error("no member fits");
    return out;
  };
  return {
    /** `count` different members (fewer if fewer fit). */
    distinct(count: number, accept: (i: number) => boolean): number[] {
      const c = candidates(accept);
      for (let k = 0; k < Math.min(count, c.length); k++) {
        const j = k + Math.floor(random() * (c.length - k));
        [c[k], c[j]] = [c[j]!, c[k]!];
      }
      return c.slice(0, count);
    },
    /** `count` members drawn with replacement. */
    many(count: number, accept: (i: number) => boolean): number[] {
      const c = candidates(accept);
      return Array.from({ length: count }, () => c[Math.floor(random() * c.length)]!);
    },
  };
}

function depthStats(t: Tree): { mean: number; max: number } {
  let sum = 0;
  let max = 0;
  for (let i = 0; i < t.size; i++) {
    sum += t.depth[i]!;
    if (t.depth[i]! > max) max = t.depth[i]!;
  }
  return { mean: sum / t.size, max };
}

function depthQuantile(t: Tree, q: number): number {
  const sorted = Int32Array.from(t.depth).sort();
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

const mean = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
const fmtSize = (n: number) => (Number.isInteger(Math.log10(n)) ? `1e${Math.log10(n)}` : String(n));

// ---------------------------------------------------------------------------
// On its own: `node bench/tree.ts [--quick] [--sizes 1e5,1e6] [--shapes random,deep] [--dialect sqlite|postgres]`

const USAGE = `Usage: node bench/tree.ts [--quick] [--sizes N[,N…]] [--shapes random|deep[,…]] [--dialect sqlite|postgres] [--budget S]

The member-tree benchmark on its own (npm run bench -- --only tree runs it with the others).
PostgreSQL runs when BENCH_DATABASE_URL or TEST_DATABASE_URL is set.

  --quick           10^4 members and fewer repetitions (default sizes: 1e5,1e6)
  --sizes           members per tree, e.g. 1e5,1e6 (env BENCH_TREE_SIZES)
  --shapes          random (default) and/or deep (env BENCH_TREE_SHAPES)
  --dialect         only this dialect
  --budget          seconds one operation may be repeated for (env BENCH_TREE_BUDGET_S; default 60, quick 15)
`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      help: { type: "boolean", short: "h", default: false },
      quick: { type: "boolean", default: false },
      sizes: { type: "string" },
      shapes: { type: "string" },
      dialect: { type: "string" },
      budget: { type: "string" },
      "list-child": { type: "string" },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values["list-child"]) {
    await listChild(JSON.parse(values["list-child"]) as ListSpec);
    return;
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  if (values.sizes) process.env.BENCH_TREE_SIZES = values.sizes;
  if (values.shapes) process.env.BENCH_TREE_SHAPES = values.shapes;
  if (values.budget) process.env.BENCH_TREE_BUDGET_S = values.budget;
  const options = treeOptions({ quick: values.quick });
  const started = performance.now();
  process.stdout.write(`# Muster tree benchmark (${values.quick ? "--quick" : "full"}), ${new Date().toISOString()}\n`);
  for (const line of await machineFacts(process.env.TEST_DATABASE_URL)) process.stdout.write(`${line}\n`);
  for (const dialect of dialects) {
    if (values.dialect && values.dialect !== dialect.name) continue;
    if (dialect.skip) {
      process.stdout.write(`\n## ${dialect.name}: skipped (${dialect.skip})\n`);
      continue;
    }
    for (const size of options.sizes) {
      for (const shape of options.shapes) {
        const title = `${tree.title.split(":")[0]}: ${dialect.name}, ${size} members, ${shape}`;
        try {
          printTable(title, await runOne(dialect, size, shape, options));
        } catch (error) {
          process.stderr.write(`tree on ${dialect.name} failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
          printTable(title, [{ dialect: dialect.name, members: size, shape, error: error instanceof Error ? error.message : String(error) }]);
          process.exitCode = 1;
        }
      }
    }
  }
  process.stdout.write(`${NOTES.map((n) => `  * ${n}`).join("\n")}\n`);
  process.stdout.write(`\nTotal runtime: ${((performance.now() - started) / 1000).toFixed(1)} s; load average ${loadavg().map((l) => l.toFixed(2)).join(" ")} at the end\n`);
}

if (import.meta.main) await main();
