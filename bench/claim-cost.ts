/**
 * PostgreSQL's CPU for the outbox lane's claim and settle of a join's
 * message (its Accept and welcome in one, direct-send.ts), alone: N such
 * messages enqueued as a join enqueues them, then drained by one listener
 * (concurrency 8, as the workers benchmark) with a no-op handler; the
 * backends' CPU (/proc) and the wall time over the drain, per message.
 * Usage: TEST_DATABASE_URL=... npx node bench/claim-cost.ts [N]
 */
import "../src/temporal.ts";
import { readFileSync } from "node:fs";
import { randomUUID } from "node:crypto";
import pg from "pg";
import { sql } from "kysely";
import { openDatabase } from "../src/db/database.ts";
import { migrateToLatest } from "../src/db/migrate.ts";
import { KyselyMessageQueue } from "../federation/kysely-message-queue.ts";
import { directDelivery, directNote, followAnswer, joinedDelivery } from "../federation/direct-send.ts";

const N = Number(process.argv[2] ?? 2000);
if (process.env.BENCH_CLAIM_LOG) await (await import("../src/logging.ts")).setupLogging(process.env.BENCH_CLAIM_LOG as never);
const base = process.env.TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";
const name = `muster_pgclaim_micro_${process.pid}`;
const admin = new pg.Client({ connectionString: base });
await admin.connect();
await admin.query(`create database ${name}`);
if (process.env.BENCH_CLAIM_PLAN) await admin.query(`alter database ${name} set plan_cache_mode = ${process.env.BENCH_CLAIM_PLAN}`);
const url = new URL(base);
url.pathname = `/${name}`;
const database = openDatabase(url.href);
try {
  await migrateToLatest(database.db);
  const origin = new URL("https://muster.example");
  const unionId = randomUUID();
  const make = (i: number) => {
    const actor = `https://peer${i % 10}.example/users/p${i}`;
    const memberId = randomUUID();
    const groupId = `${origin.origin}/u/riders`;
    const accept = followAnswer("Accept", { id: `${groupId}/activities/${randomUUID()}`, actor: groupId, follow: { id: `${actor}#follow`, actor, object: groupId } });
    const welcome = directNote({ id: `${groupId}/activities/${randomUUID()}/w`, noteId: `${groupId}/notes/${randomUUID()}`, actor: groupId, to: actor, mention: `@p${i}@peer${i % 10}.example`,
      content: `<p><span class="h-card"><a href="${actor}" class="u-url mention">@p${i}</a></span> Welcome to Riders United! Our purpose: fair pay for every rider. Read the bylaws at ${groupId}/bylaws and introduce yourself.</p>`, published: new Date() });
    const gate = { unionId, memberId };
    const ds = [accept, welcome].map((activity) => directDelivery({ origin, keyId: `${groupId}#main-key`, activity, inbox: `${actor}/inbox`, actorId: actor, orderingKey: `member:${memberId}`, gate }));
    return joinedDelivery(ds)!;
  };
  const queue = new KyselyMessageQueue(database, { name: "outbox", concurrency: 8, payloadsWithClaim: true, gatesWithClaim: true, resolveKey: async () => ({ kty: "RSA" }), pollIntervalMs: 50 });
  for (let i = 0; i < N; i += 100) {
    await database.db.transaction().execute(async (trx) => {
      for (let j = i; j < Math.min(N, i + 100); j++) {
        const m = make(j);
        await queue.enqueueWith(trx, m, { orderingKey: m.orderingKey, inlineActivity: true });
      }
    });
  }
  await sql`analyze fedify_mq`.execute(database.db);
  const cpuOf = (pid: number) => {
    const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
    return (Number(f[11]) + Number(f[12])) * 10;
  };
  const backends = async () => (await admin.query<{ pid: number }>(`select pid from pg_stat_activity where datname = $1`, [name])).rows.map((r) => r.pid);
  // BENCH_CLAIM_EXPLAIN=1: the first claim's text and values, explained on a refilled queue after the drain.
  let captured: { text: string; values: unknown[] } | undefined;
  const query = pg.Client.prototype.query as (...args: unknown[]) => unknown;
  if (process.env.BENCH_CLAIM_EXPLAIN === "1") {
    pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
      const q = args[0] as { text?: string } | string;
      const text = typeof q === "string" ? q : q?.text ?? "";
      if (captured === undefined && /^update "fedify_mq"/.test(text)) captured = { text, values: args[1] as unknown[] };
      return query.apply(this, args);
    } as typeof pg.Client.prototype.query;
  }
  const texts = new Map<string, number>();
  if (process.env.BENCH_CLAIM_TEXTS === "1") {
    const q0 = pg.Client.prototype.query as (...args: unknown[]) => unknown;
    pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
      const q = args[0] as { text?: string; name?: string } | string;
      const t = `${typeof q === "object" && q?.name ? "named " : "unnamed "}${(typeof q === "string" ? q : q?.text ?? "").replace(/\s+/g, " ").slice(0, 100)}`;
      texts.set(t, (texts.get(t) ?? 0) + 1);
      return q0.apply(this, args);
    } as typeof pg.Client.prototype.query;
  }
  let handled = 0;
  const done = new Promise<void>((resolve) => {
    const ac = new AbortController();
    const t0 = performance.now();
    void t0;
    void queue.listen(() => {
      if (++handled === N) {
        setTimeout(() => { ac.abort(); resolve(); }, 200);
      }
    }, { signal: ac.signal });
  });
  // Warm: pool connections exist once listening starts; measure from now.
  await new Promise((r) => setTimeout(r, 5));
  const pids = await backends();
  if (process.env.BENCH_CLAIM_PIDS) setTimeout(async () => (await import("node:fs")).writeFileSync(process.env.BENCH_CLAIM_PIDS!, (await backends()).join(",")), 300);
  const before = new Map(pids.map((p) => [p, cpuOf(p)]));
  const t0 = performance.now();
  await done;
  const wall = performance.now() - t0;
  let cpu = 0;
  for (const p of await backends()) cpu += cpuOf(p) - (before.get(p) ?? 0);
  for (const [t, n] of texts) console.log(`${n} ${t}`);
  const left = await database.db.selectFrom("fedify_mq").select((eb) => eb.fn.countAll().as("n")).executeTakeFirstOrThrow();
  console.log(`claim-cost: ${N} join messages, PG backends CPU ${(cpu / N).toFixed(3)} ms/message, wall ${(wall / N).toFixed(3)} ms/message, left ${left.n}; load ${readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")}`);
  if (process.env.BENCH_CLAIM_PREPARED === "1") {
    const seen = new Map<string, string>();
    for (let i = 0; i < 20; i++) {
      const { rows } = await sql<{ name: string; statement: string; generic_plans: number; custom_plans: number }>`select pg_backend_pid() as pid, name, left(regexp_replace(statement, '\s+', ' ', 'g'), 100) as statement, generic_plans, custom_plans from pg_prepared_statements`.execute(database.db);
      for (const r of rows) seen.set(`${(r as unknown as { pid: number }).pid} ${r.name}`, `generic ${r.generic_plans} custom ${r.custom_plans} ${r.statement}`);
    }
    for (const [k, v] of seen) console.log(`${k} ${v}`);
  }
  await queue.close();
  if (captured) {
    pg.Client.prototype.query = query as typeof pg.Client.prototype.query;
    await database.db.transaction().execute(async (trx) => {
      for (let j = 0; j < 500; j++) {
        const m = make(j);
        await queue.enqueueWith(trx, m, { orderingKey: m.orderingKey, inlineActivity: true });
      }
    });
    await sql`analyze fedify_mq`.execute(database.db);
    const client = new pg.Client({ connectionString: url.href });
    await client.connect();
    const values = [...captured.values];
    // now: the values' second is the claim's time
    await client.query("begin");
    const now = Date.now();
    // The claim's time and lease, moved to now (each is a parameter per use).
    const then = Math.min(...values.filter((v): v is number => typeof v === "number" && v > 1e12));
    const vals = values.map((v) => (typeof v === "number" && v > 1e12 ? now + (v - then) : v));
    if (process.env.BENCH_CLAIM_REPEAT === "1") {
      // The claim as a named statement, run 12 times (each rolled back to a savepoint): the last runs' planning.
      for (let i = 0; i < 12; i++) {
        await client.query("savepoint a");
        const t = performance.now();
        const r = await client.query({ name: "claim", text: captured.text, values: vals });
        const p = await client.query(`select generic_plans, custom_plans from pg_prepared_statements where name = 'claim'`);
        console.log(`run ${i}: ${(performance.now() - t).toFixed(2)} ms; ${r.rows.length} rows; ${JSON.stringify(p.rows)}`);
        await client.query("rollback to savepoint a");
      }
    } else {
      const r = await client.query(`explain (analyze, buffers, verbose) ${captured.text}`, vals);
      console.log(r.rows.map((x) => x["QUERY PLAN"]).join("\n"));
    }
    await client.query("rollback");
    if (process.env.BENCH_CLAIM_REGEX === "1") {
      for (const q of [`select count(*) from fedify_mq`, `select count(regexp_match(message, '"musterGate":\\{"unionId":"([^"\\\\]*)","memberId":"([^"\\\\]*)"\\}')) from fedify_mq`, `select count(regexp_match(message, '"inbox":"(https?)://([^/"\\?#]*)')) from fedify_mq`, `select sum(length(message)), sum(pg_column_size(message)) from fedify_mq`]) {
        const t = performance.now();
        const r2 = await client.query(q);
        console.log(`${(performance.now() - t).toFixed(1)} ms ${JSON.stringify(r2.rows)} ${q}`);
      }
    }
    await client.end();
  }
} finally {
  await database.close();
  await admin.query(`drop database if exists ${name} with (force)`);
  await admin.end();
}
