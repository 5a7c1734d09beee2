import { randomUUID } from "node:crypto";
import { Create, Note } from "@fedify/vocab";
import { type Kysely, sql } from "kysely";
import { castVote, closeProposal, createProposal, type Proposal, tallyOf } from "../src/bylaws/proposals.ts";
import { openDatabase } from "../src/db/database.ts";
import type { DB } from "../src/db/schema.ts";
import { getLeader, OPERATOR } from "../src/members/members.ts";
import type { Union } from "../src/unions/unions.ts";
import type { DialectCase } from "../test/helpers/databases.ts";
import { overrideBylaws } from "../test/helpers/bylaws.ts";
import { makeUnion, startMuster, type TestMuster } from "../test/helpers/muster.ts";
import { type Peer, startPeer } from "../test/helpers/peer.ts";
import { joinAsRemoteMember } from "../test/helpers/remote-member.ts";
import { type Benchmark, cpuMs, httpRecorder, loadAverage, percentile, perSecond, pool, progress, type Row, waitFor } from "./lib.ts";

// Votes at 10^5 members: poll answers signed by loopback peers and POSTed to
// the union's inbox, counted through the queue; web votes as direct domain
// calls; and the tally of 10^5 ballots with delegation chains.

const ACTORS = Array.from({ length: 16 }, (_, i) => `voter${i}`);
const CONCURRENCY = 16;

export const votes: Benchmark = {
  name: "votes",
  title: "Votes at 10^5 members: poll answers ingested and counted, and the tally with 10^5 ballots and delegation chains",
  summary: "signed Create(Note) poll answers POSTed by loopback peers; web votes as domain calls; tally and close of 10^5 ballots + delegation chains",
  notes: [
    "union of 10^5 bulk-loaded members (10^4 with --quick) plus 16 peer actors who joined as remote members; a further 5x10^4 members (5x10^3) are added for the tally phase",
    `http: Mastodon-shaped poll answers (Create(Note) with name, inReplyTo the Question) signed by the peer's ${ACTORS.length} actors, one per actor per proposal over many open proposals, POSTed ${CONCURRENCY} at a time to /u/riders/inbox; votes/s runs from the first POST until every ballot is stored (verified, claimed, eligibility checked, ballot, hash-chain entry, running-tally intent)`,
    "domain: castVote for distinct members on one proposal, sequential web votes (the same transaction without HTTP and signatures); 2x10^4 (2x10^3) or one minute (20 s), whichever comes first",
    "tally: tallyOf and closeProposal (tally, decision, outcome entry with a digest of every ballot) of one proposal with 10^5 ballots (10^4) and 5x10^4 delegators (5x10^3) in chains: 1 long chain of a tenth of them, the rest in chains of 10 ending at a voter, plus 2-cycles; ms and µs per ballot",
    "plans: the tally's reads (eligible count, eligible ballots, delegations, eligible delegators) through EXPLAIN: the index each uses, or SCAN",
    "members bulk-loaded here have no actor (actor_id null), so they get no deliveries: the proposal fan-out is benchmarked by `fanout`",
  ],
  async run(dialect: DialectCase, { quick }): Promise<Row[]> {
    const size = quick ? 10_000 : 100_000;
    const proposalsForHttp = quick ? 8 : 40;
    const domainVotes = quick ? 2_000 : 20_000;
    const tdb = await dialect.create();
    let m: TestMuster | undefined;
    let peer: Peer | undefined;
    const rows: Row[] = [];
    try {
      m = await startMuster(tdb);
      peer = await startPeer(ACTORS);
      const union = await makeUnion(m, "riders", { joinPolicy: "open" });
      await overrideBylaws(m.muster.unions, "riders", { delegation: "opt_in", quorumPercent: 1 });
      for (const name of ACTORS) await joinAsRemoteMember(m.muster.membership, union.id, peer.origin, name, new URL("/inbox", peer.origin));
      const loadStart = performance.now();
      const bulk = await bulkMembers(tdb.url, dialect.name, union, size);
      progress(`${dialect.name}: ${size} members loaded in ${((performance.now() - loadStart) / 1000).toFixed(1)} s`);
      await new Promise((r) => setTimeout(r, 5));

      // (1) Poll answers over HTTP.
      const db = m.muster.database.db;
      const open: Proposal[] = [];
      for (let i = 0; i < proposalsForHttp; i++) open.push(await createProposal(m.muster.membership, union.id, OPERATOR, { kind: "resolution", title: `Motion ${i}`, closesAt: new Date(Date.now() + 3600_000) }));
      const posts = await presign(m, peer, open);
      const ballotsOf = async (ids: string[]) => Number((await db.selectFrom("ballots").select((e) => e.fn.countAll().as("n")).where("proposal_id", "in", ids).executeTakeFirstOrThrow()).n);
      const ids = open.map((p) => p.id);
      const http = httpRecorder();
      const cpu = process.cpuUsage();
      const start = performance.now();
      await pool(posts.length, CONCURRENCY, (i) => http.fetch(posts[i]!.url, { method: "POST", headers: posts[i]!.headers, body: posts[i]!.body }));
      const httpMs = performance.now() - start;
      let counted = 0;
      const accepted = http.count(202);
      // Done when every accepted answer is a ballot, or when the inbox lane has nothing left (an answer whose
      // handling failed waits in the queue for its retry; one that is dead-lettered never counts).
      let left = 0;
      const inboxLeft = async () => (left = Number((await db.selectFrom("fedify_mq").select((e) => e.fn.countAll().as("n")).where("queue", "=", "inbox").executeTakeFirstOrThrow()).n));
      await waitFor(`${dialect.name}: votes counted`, async () => (counted = await ballotsOf(ids)) >= accepted || (await inboxLeft()) === 0, () => `${counted}/${accepted} (inbox queue ${left})`, { pollMs: 50, stallMs: 300_000 })
        .catch(async (e: unknown) => {
          // Say where the missing votes are before giving up: waiting in the queue for a retry, and why.
          progress(`${String(e)}; ${await inboxState(db)}`);
          throw e;
        });
      const totalMs = performance.now() - start;
      const cpuHttp = cpuMs(cpu);
      const dead = Number((await db.selectFrom("fedify_mq_dead").select((e) => e.fn.countAll().as("n")).executeTakeFirstOrThrow()).n);
      const retried = Number((await db.selectFrom("inbox_activities").select((e) => e.fn.countAll().as("n")).executeTakeFirstOrThrow()).n);
      rows.push({ dialect: dialect.name, phase: "http: signed poll answers", members: size + ACTORS.length + 1, N: posts.length, "202 req/s": perSecond(accepted, httpMs), "p99 ms": percentile(http.latencies, 99), "votes/s": perSecond(counted, totalMs), "ms/vote (CPU)": cpuHttp / posts.length, detail: `counted ${counted}; processed ${retried}; non-202 ${http.unexpected(202)}; dead letters ${dead}; ${await inboxState(db)}` });
      if (counted < posts.length) process.exitCode = 1;

      // (2) Web votes as domain calls.
      const target = await createProposal(m.muster.membership, union.id, OPERATOR, { kind: "resolution", title: "Domain votes", closesAt: new Date(Date.now() + 3600_000) });
      const options = ["Yes", "No", "Abstain"];
      const dStart = performance.now();
      const dCpu = process.cpuUsage();
      let ok = 0;
      let done = 0;
      // At most domainVotes, and for at most a minute: on PostgreSQL under load 25-30, 2x10^4 sequential votes
      // (about 7 a second) would take most of an hour and tell nothing more than the first minute does.
      const until = performance.now() + (quick ? 20_000 : 60_000);
      for (let i = 0; i < domainVotes && performance.now() < until; i++, done++) {
        const r = await castVote(m.muster.membership, union.id, target.id, { memberId: bulk[i]! }, [options[i % 3]!], { kind: "web" });
        if (r.counted) ok++;
        if (i % 5000 === 4999) progress(`${dialect.name}: ${i + 1}/${domainVotes} domain votes`);
      }
      const dMs = performance.now() - dStart;
      rows.push({ dialect: dialect.name, phase: "domain: castVote (web)", members: size + ACTORS.length + 1, N: done, "votes/s": perSecond(ok, dMs), "ms/vote (CPU)": cpuMs(dCpu) / done, detail: `counted ${ok}${done < domainVotes ? ` (stopped at the time limit; ${domainVotes} planned)` : ""}` });

      // (3) The tally of 10^5 ballots with delegation chains.
      const delegators = size / 2;
      const extra = await bulkMembers(tdb.url, dialect.name, union, delegators);
      await new Promise((r) => setTimeout(r, 5));
      const big = await createProposal(m.muster.membership, union.id, OPERATOR, { kind: "resolution", title: "Tally at scale", closesAt: new Date(Date.now() + 3600_000) });
      await bulkBallotsAndChains(tdb.url, dialect.name, union.id, big.id, bulk, extra);
      const tStart = performance.now();
      const tCpu = process.cpuUsage();
      const t = await tallyOf(db, big);
      const tallyMs = performance.now() - tStart;
      const tallyCpu = cpuMs(tCpu);
      const expectDelegated = extra.length - 2 * Math.floor(extra.length / 100); // the 2-cycles count for no one
      rows.push({ dialect: dialect.name, phase: "tallyOf", members: t.eligible, N: t.voters, "ms": tallyMs, "CPU ms": tallyCpu, "µs/ballot": (tallyMs * 1000) / t.voters, detail: `direct ${t.voters}, delegated ${t.delegatedVoters}${t.delegatedVoters === expectDelegated ? "" : ` (EXPECTED ${expectDelegated})`}` });
      if (t.delegatedVoters !== expectDelegated) process.exitCode = 1;
      const cStart = performance.now();
      const cCpu = process.cpuUsage();
      const closed = await closeProposal(m.muster.membership, union.id, big.id, { force: true });
      const closeMs = performance.now() - cStart;
      rows.push({ dialect: dialect.name, phase: "closeProposal", members: t.eligible, N: t.voters, "ms": closeMs, "CPU ms": cpuMs(cCpu), "µs/ballot": (closeMs * 1000) / t.voters, detail: `${closed?.state}: ${closed?.outcome?.reason}` });
      rows.push({ dialect: dialect.name, phase: "plans", detail: await plans(db, dialect.name, union.id, big.id) });
      rows.push({ dialect: dialect.name, phase: "load", detail: loadAverage() });
      return rows;
    } finally {
      await m?.stop();
      await peer?.close();
      await tdb.destroy();
    }
  },
};

/** Poll answers still in the inbox lane: how many, and the errors that sent them back for a retry. */
async function inboxState(db: Kysely<DB>): Promise<string> {
  const rows = await db.selectFrom("fedify_mq").select(["last_error", "attempts"]).where("queue", "=", "inbox").execute();
  if (rows.length === 0) return "inbox queue empty";
  const errors = new Map<string, number>();
  for (const r of rows) {
    const key = (r.last_error ?? "(not tried yet)").slice(0, 120);
    errors.set(key, (errors.get(key) ?? 0) + 1);
  }
  return `inbox queue ${rows.length} (max attempts ${Math.max(...rows.map((r) => Number(r.attempts)))}): ${[...errors].map(([e, n]) => `${n}× ${e}`).join("; ")}`;
}

interface SignedPost { readonly url: URL; readonly headers: Headers; readonly body: string }

async function presign(m: TestMuster, peer: Peer, open: readonly Proposal[]): Promise<SignedPost[]> {
  const union = new URL("/u/riders", m.origin);
  const inbox = new URL("/u/riders/inbox", m.origin);
  const n = open.length * ACTORS.length;
  const posts: SignedPost[] = new Array(n);
  await pool(n, 8, async (i) => {
    const as = ACTORS[i % ACTORS.length]!;
    const p = open[Math.floor(i / ACTORS.length)]!;
    const actor = peer.actorId(as);
    const vote = new URL(`${actor.href}#votes/${p.number}`);
    const create = new Create({
      id: new URL(`${vote.href}/activity`),
      actor,
      to: union,
      object: new Note({ id: vote, attribution: actor, to: union, name: i % 3 === 0 ? "No" : "Yes", replyTarget: new URL(`/u/riders/proposals/${p.id}`, m.origin) }),
    });
    const body = JSON.stringify(await create.toJsonLd({ format: "compact" }));
    const req = await peer.signedPost(inbox, body, { as });
    posts[i] = { url: inbox, headers: req.headers, body };
  });
  return posts;
}

/** `count` active members with no actor, under the leader, joined a second ago; their ids. */
async function bulkMembers(url: string, dialect: string, union: Union, count: number): Promise<string[]> {
  const loader = openDatabase(url, { poolSize: 1 });
  try {
    const leader = (await getLeader(loader.db, union.id))!;
    const ids = Array.from({ length: count }, () => randomUUID());
    const now = Date.now() - 1000;
    const started = performance.now();
    const batch = dialect === "sqlite" ? 1500 : 3500;
    await bigCache(loader.db, dialect);
    await loader.db.transaction().execute(async (trx) => {
      for (let i = 0; i < ids.length; i += batch) {
        await trx.insertInto("members").values(ids.slice(i, i + batch).map((id) => ({
          id, union_id: union.id, actor_id: null, handle: null, state: "active", role: "member", portfolio: null, sponsor_id: leader.id,
          subtree_size: 0, follow_id: null, invite_id: null, joined_at: now, left_at: null, left_reason: null, removed_by: null, created_at: now,
        }))).execute();
      }
    });
    const inserted = performance.now();
    await analyze(loader.db, dialect);
    progress(`${dialect}: ${count} members inserted in ${((inserted - started) / 1000).toFixed(1)} s (one transaction, ${batch} a statement), statistics in ${((performance.now() - inserted) / 1000).toFixed(1)} s`);
    return ids;
  } finally {
    await loader.close();
  }
}

/**
 * Every member in `voters` gets a ballot; the delegators delegate: the first
 * tenth in one long chain ending at a voter, 2% in 2-cycles (which count
 * for no one), the rest in chains of 10 ending at a voter.
 */
async function bulkBallotsAndChains(url: string, dialect: string, unionId: string, proposalId: string, voters: readonly string[], delegators: readonly string[]): Promise<void> {
  const loader = openDatabase(url, { poolSize: 1 });
  try {
    const now = Date.now();
    const batch = dialect === "sqlite" ? 3000 : 6000;
    await bigCache(loader.db, dialect);
    const edges: [string, string][] = [];
    const long = Math.floor(delegators.length / 10);
    for (let i = 0; i < long; i++) edges.push([delegators[i]!, i + 1 < long ? delegators[i + 1]! : voters[0]!]);
    const cycles = 2 * Math.floor(delegators.length / 100);
    for (let i = long; i < long + cycles; i += 2) edges.push([delegators[i]!, delegators[i + 1]!], [delegators[i + 1]!, delegators[i]!]);
    for (let i = long + cycles; i < delegators.length; i++) {
      const inChain = (i - long - cycles) % 10;
      edges.push([delegators[i]!, inChain === 9 || i + 1 === delegators.length ? voters[(i * 7) % voters.length]! : delegators[i + 1]!]);
    }
    await loader.db.transaction().execute(async (trx) => {
      await trx.deleteFrom("ballots").where("proposal_id", "=", proposalId).execute();
      for (let i = 0; i < voters.length; i += batch) {
        await trx.insertInto("ballots").values(voters.slice(i, i + batch).map((member_id, k) => ({ proposal_id: proposalId, member_id, option: (i + k) % 3, source: "web", source_id: `web:${member_id}:${now}`, cast_at: now }))).execute();
      }
      await trx.deleteFrom("delegations").where("union_id", "=", unionId).execute();
      for (let i = 0; i < edges.length; i += batch) {
        await trx.insertInto("delegations").values(edges.slice(i, i + batch).map(([a, b]) => ({ union_id: unionId, delegator_id: a, scope: "all", delegate_id: b, created_at: now }))).execute();
      }
    });
    await analyze(loader.db, dialect);
  } finally {
    await loader.close();
  }
}

/**
 * The loader's own connection keeps the indexes it fills in memory: at 10^5
 * members the members table's indexes (random UUID keys) outgrow SQLite's
 * default 2 MB page cache, and each insert then reads pages back (10^4
 * members loaded in 1.1 s, 10^5 in 46 s, under load 31).
 */
async function bigCache(db: Kysely<DB>, dialect: string): Promise<void> {
  if (dialect === "sqlite") await sql`pragma cache_size = -262144`.execute(db);
}

async function analyze(db: Kysely<DB>, dialect: string): Promise<void> {
  await sql`analyze`.execute(db);
  if (dialect === "sqlite") await sql`pragma wal_checkpoint(truncate)`.execute(db);
}

/** How the database runs the tally's reads: the index each uses, or a full scan. */
async function plans(db: Kysely<DB>, dialect: string, unionId: string, proposalId: string): Promise<string> {
  const queries = {
    eligible: db.selectFrom("members").select((eb) => eb.fn.countAll().as("n")).where("union_id", "=", unionId).where("state", "=", "active").where("joined_at", "<=", Date.now()),
    ballots: db.selectFrom("ballots as b").innerJoin("members as m", "m.id", "b.member_id").select(["b.member_id", "b.option"])
      .where("b.proposal_id", "=", proposalId).where("m.union_id", "=", unionId).where("m.state", "=", "active").where("m.joined_at", "<=", Date.now()),
    delegations: db.selectFrom("delegations").select(["delegator_id", "delegate_id", "scope"]).where("union_id", "=", unionId).where("scope", "in", ["all", "resolution"]),
    delegators: db.selectFrom("delegations as d").innerJoin("members as m", "m.id", "d.delegator_id").select("d.delegator_id")
      .where("d.union_id", "=", unionId).where("d.scope", "in", ["all", "resolution"]).where("m.state", "=", "active").where("m.joined_at", "<=", Date.now()),
  };
  const out: string[] = [];
  for (const [name, q] of Object.entries(queries)) {
    const c = q.compile();
    const explain = dialect === "sqlite" ? "explain query plan " : "explain ";
    const r = await db.executeQuery<Record<string, unknown>>({ ...c, sql: explain + c.sql });
    const text = r.rows.map((row) => String(row.detail ?? row["QUERY PLAN"] ?? Object.values(row).join(" "))).join(" / ");
    const index = /USING (COVERING )?INDEX (\w+)|Index (Only )?Scan using (\w+)|Bitmap Index Scan on (\w+)/i.exec(text);
    out.push(`${name}: ${index ? `index ${index[2] ?? index[4] ?? index[5]}` : `SCAN (${text.slice(0, 80)})`}`);
  }
  return out.join("; ");
}
