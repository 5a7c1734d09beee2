/**
 * Insert speed of members on PostgreSQL as the roster grows (issue 16: last
 * session's migration 0070 made member inserts 30-50 times slower past 10^5).
 * Seeds one union to BENCH_INSERTS_MEMBERS (default 10^6) members on 2·10^4
 * servers, 20,000 at a time (their cached actors first, then the members, as
 * test/helpers/seed-followers.ts does, one transaction a chunk), and prints the
 * seconds each chunk's actors and members took. BENCH_INSERTS_SINGLE=n also
 * times n members inserted one statement and one transaction each (a join's
 * shape) after every 10th chunk.
 *
 *   TEST_DATABASE_URL=postgres://… npx node bench/pg-member-inserts.ts
 */
import { randomUUID } from "node:crypto";
import { CompiledQuery } from "kysely";
import { dialects } from "../test/helpers/databases.ts";
import { loadAverage } from "./lib.ts";

const TOTAL = Number(process.env.BENCH_INSERTS_MEMBERS ?? 1_000_000);
const SINGLE = Number(process.env.BENCH_INSERTS_SINGLE ?? 200);
const CHUNK = 20_000;
const STATEMENT = 2000;
const SERVERS = 20_000;
const ACTOR_COLUMNS = ["id", "type", "handle", "name", "inbox", "shared_inbox", "fetched_at"];
const MEMBER_COLUMNS = ["id", "union_id", "actor_id", "handle", "state", "role", "sponsor_id", "subtree_size", "follow_id", "joined_at", "created_at"];

const pg = dialects.find((d) => d.name === "postgres")!;
if (pg.skip) throw new Error(String(pg.skip));
const tdb = await pg.create();
const { db, close } = tdb.open();
const text = (table: string, columns: string[], rows: number) => {
  let n = 0;
  return `insert into ${table} (${columns.join(", ")}) values ${Array.from({ length: rows }, () => `(${columns.map(() => `$${++n}`).join(", ")})`).join(", ")}`;
};
const actorsText = text("remote_actors", ACTOR_COLUMNS, STATEMENT);
const membersText = text("members", MEMBER_COLUMNS, STATEMENT);
const oneMember = text("members", MEMBER_COLUMNS, 1);
const oneActor = text("remote_actors", ACTOR_COLUMNS, 1);
console.log(`load: ${loadAverage()}`);
try {
  const unionId = "u-inserts";
  await db.insertInto("unions").values({ id: unionId, slug: "inserts", name: "inserts", purpose: "p", leader_handle: null, icon_url: null, manually_approves_followers: 1, created_at: 1, join_policy: "open", member_invite_limit: 5, welcome_text: null } as never).execute();
  const now = Date.now();
  const rowOf = (i: number) => {
    const origin = `https://social-${i % SERVERS}.example.net`;
    const id = `${origin}/users/m${i}`;
    const handle = `@m${i}@social-${i % SERVERS}.example.net`;
    return {
      actor: [id, "Person", handle, null, `${id}/inbox`, `${origin}/inbox`, now],
      member: [randomUUID().slice(0, 20), unionId, id, handle, "active", "member", null, 0, `/${randomUUID()}`, now + i, now + i],
    };
  };
  let single = TOTAL;
  console.log("members_before  actors_s  members_s  (per 20,000)   single_joins_ms_each");
  for (let from = 0; from < TOTAL; from += CHUNK) {
    let actorsMs = 0;
    let membersMs = 0;
    await db.transaction().execute(async (trx) => {
      for (let s = from; s < from + CHUNK; s += STATEMENT) {
        const rows = Array.from({ length: STATEMENT }, (_, k) => rowOf(s + k));
        let t = performance.now();
        await trx.executeQuery(CompiledQuery.raw(actorsText, rows.flatMap((r) => r.actor)));
        actorsMs += performance.now() - t;
        t = performance.now();
        await trx.executeQuery(CompiledQuery.raw(membersText, rows.flatMap((r) => r.member)));
        membersMs += performance.now() - t;
      }
    });
    let singles = "";
    if (SINGLE > 0 && (from / CHUNK) % 10 === 9) {
      const t = performance.now();
      for (let k = 0; k < SINGLE; k++) {
        const r = rowOf(single++ + 10_000_000);
        await db.transaction().execute(async (trx) => {
          await trx.executeQuery(CompiledQuery.raw(oneActor, r.actor));
          await trx.executeQuery(CompiledQuery.raw(oneMember, r.member));
        });
      }
      singles = ((performance.now() - t) / SINGLE).toFixed(2);
    }
    console.log(`${String(from).padStart(14)}  ${(actorsMs / 1000).toFixed(2).padStart(8)}  ${(membersMs / 1000).toFixed(2).padStart(9)}  ${singles.padStart(34)}`);
  }
  console.log(`load: ${loadAverage()}`);
} finally {
  await close();
  await tdb.destroy();
}
