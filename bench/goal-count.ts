import { randomUUID } from "node:crypto";
import type { Insertable } from "kysely";
import { composeAction } from "../src/actions/actions.ts";
import { recordLike } from "../src/actions/responses.ts";
import type { ActionResponsesTable, MembersTable } from "../src/db/schema.ts";
import { OPERATOR } from "../src/members/members.ts";
import type { DialectCase } from "../test/helpers/databases.ts";
import { makeUnion, startMuster, type TestMuster } from "../test/helpers/muster.ts";
import { type Benchmark, cpuMs, loadAverage, progress, type Row } from "./lib.ts";

/**
 * The cost of counting one more commitment to a call with a goal, as the call
 * already has 0, 10^4 or 10^5 (--quick: 0 and 10^4) standing commitments.
 * Until issue 16 every commitment recounted the call's responses inside its
 * transaction; a flat line here is the incremental counter working.
 */
const MEASURED = 300;

export const goalCount: Benchmark = {
  name: "goal-count",
  title: "Counting a commitment to a call with a goal, as the call grows",
  summary: "ms and CPU ms per recorded Like on a call with a goal, after 0 / 10^4 / 10^5 earlier commitments (flat = incremental)",
  notes: [
    "earlier commitments: members and their Like rows bulk-inserted (setup, untimed); then MEASURED more members each have their Like recorded one after another (recordLike, the inbox listener's domain call), goal 10^8 so it is never reached",
    "CPU is this process's (Muster in-process, no HTTP)",
  ],
  async run(dialect: DialectCase, { quick }): Promise<Row[]> {
    const sizes = quick ? [0, 10_000] : [0, 10_000, 100_000];
    const rows: Row[] = [];
    for (const earlier of sizes) {
      const tdb = await dialect.create();
      let m: TestMuster | undefined;
      try {
        m = await startMuster(tdb);
        const union = await makeUnion(m, "riders", { joinPolicy: "open" });
        const db = m.muster.database.db;
        const action = await composeAction(m.muster.membership, union.id, OPERATOR, { title: "Sign", text: "Like this.", kind: "sign", goal: 100_000_000 }, { publishNow: true });
        const root = await db.selectFrom("members").select("id").where("union_id", "=", union.id).where("role", "=", "leader").executeTakeFirstOrThrow();
        const now = Date.now();
        const actor = (i: number) => `https://remote.example/users/g${i}`;
        for (let from = 0; from < earlier + MEASURED; from += 1000) {
          const members: Insertable<MembersTable>[] = [];
          const likes: Insertable<ActionResponsesTable>[] = [];
          for (let i = from; i < Math.min(earlier + MEASURED, from + 1000); i++) {
            const id = randomUUID();
            members.push({ id, union_id: union.id, actor_id: actor(i), handle: `@g${i}@remote.example`, state: "active", role: "member", portfolio: null, sponsor_id: root.id, subtree_size: 0, follow_id: `${actor(i)}#follow`, invite_id: null, joined_at: now, left_at: null, left_reason: null, removed_by: null, created_at: now });
            if (i < earlier) likes.push({ id: randomUUID(), action_id: action.id, union_id: union.id, member_id: id, kind: "commit", source: "like", source_id: `${actor(i)}/likes/1`, content: null, created_at: now, undone_at: null });
          }
          await db.transaction().execute(async (trx) => {
            await trx.insertInto("members").values(members).execute();
            if (likes.length) await trx.insertInto("action_responses").values(likes).execute();
          });
        }
        progress(`${dialect.name}: ${earlier} earlier commitments seeded`);
        const cpu = process.cpuUsage();
        const t0 = performance.now();
        for (let i = earlier; i < earlier + MEASURED; i++) await recordLike(m.muster.membership, union.id, action.id, actor(i), `${actor(i)}/likes/1`);
        const ms = performance.now() - t0;
        const cpuTotal = cpuMs(cpu);
        rows.push({ dialect: dialect.name, "earlier commitments": earlier, recorded: MEASURED, "ms/Like": ms / MEASURED, "CPU ms/Like": cpuTotal / MEASURED, load: loadAverage().replace(/^load average /, "") });
      } finally {
        await m?.stop();
        await tdb.destroy();
      }
    }
    return rows;
  },
};
