import { randomUUID } from "node:crypto";
import { sharedKeys } from "../test/helpers/domain-context.ts";
import { overrideBylaws } from "../test/helpers/bylaws.ts";
import type { DialectCase } from "../test/helpers/databases.ts";
import { createEventBus } from "../src/events.ts";
import { createUnion } from "../src/unions/unions.ts";
import { duesParamsFromBylaws } from "../src/treasury/dues-params.ts";
import { recomputeStandings } from "../src/treasury/standing.ts";
import { type Benchmark, cpuMs, loadAverage, progress, type Row } from "./lib.ts";

const DAY = 86_400_000;
const DUES = 5_000_000n;

/**
 * The scheduled dues scan's standing recomputation over a union of 10^5
 * members (--quick: 10^4): the first scan writes everyone's first standing,
 * the second changes nothing. Until issue 16 it was three reads and a
 * transaction per member.
 */
export const standings: Benchmark = {
  name: "standings",
  title: "Recomputing dues standings over a union's roster",
  summary: "s and CPU ms per 1,000 members for a standing scan of 10^5 members: first scan (all written) and a no-change scan",
  notes: [
    "members and half of them one credited payment each bulk-inserted (setup, untimed); dues 5 tokens / 30 days, grace 7; recomputeStandings as the dues scan job calls it",
    "CPU is this process's (Muster in-process; PostgreSQL's own CPU not included)",
  ],
  async run(dialect: DialectCase, { quick }): Promise<Row[]> {
    const members = quick ? 10_000 : 100_000;
    const tdb = await dialect.create();
    const database = tdb.open();
    const db = database.db;
    try {
      const events = createEventBus();
      const union = await createUnion({ db, events, generateKeys: sharedKeys }, { slug: "riders", name: "Riders", purpose: "Fair pay", joinPolicy: "open" });
      await overrideBylaws({ db, events }, "riders", { duesAmount: DUES, duesPeriodDays: 30, duesGraceDays: 7 });
      const now = Date.now();
      progress(`seeding ${members} members on ${dialect.name}`);
      for (let i = 0; i < members; i += 1000) {
        const ids = Array.from({ length: Math.min(1000, members - i) }, () => randomUUID());
        await db.insertInto("members").values(ids.map((id, k) => ({
          id, union_id: union.id, actor_id: `https://s${k % 7}.example/users/m${i + k}`, handle: null, state: "active", role: "member", portfolio: null,
          sponsor_id: null, subtree_size: 0, follow_id: `https://s.example/follows/${id}`, invite_id: null, joined_at: now - (k % 60) * DAY, left_at: null, left_reason: null, removed_by: null, created_at: now,
        }))).execute();
        await db.insertInto("dues_payments").values(ids.filter((_, k) => k % 2 === 0).map((id, k) => ({
          signature: `sig-${i}-${k}`, union_id: union.id, member_id: id, payer: "payer", mint: "mint", amount: DUES.toString(), reference: null,
          status: "credited", reason: null, paid_at: now - (k % 40) * DAY, recorded_at: now,
        }))).execute();
      }
      const deps = { db, events, duesParams: duesParamsFromBylaws };
      const rows: Row[] = [];
      for (const scan of ["first (all written)", "no change"]) {
        progress(`${scan} scan`);
        const cpu = process.cpuUsage();
        const t = performance.now();
        await recomputeStandings(deps, union.id, now);
        const ms = performance.now() - t;
        const c = cpuMs(cpu);
        rows.push({ dialect: dialect.name, members, scan, s: ms / 1000, "CPU ms": c, "CPU ms/1k members": (c * 1000) / members, load: loadAverage() });
      }
      return rows;
    } finally {
      await database.close();
      await tdb.destroy();
    }
  },
};
