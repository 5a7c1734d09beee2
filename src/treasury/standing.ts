import { type Kysely, sql } from "kysely";
import type { DB } from "../db/schema.ts";
import type { EventBus } from "../events.ts";
import { nextTurn } from "../sleep.ts";
import { refreshStatistics } from "../db/statistics.ts";
import type { DuesParamsSource } from "./dues-params.ts";
import { type MemberStanding, memberStanding, type Standing, standingFrom } from "./dues.ts";

export interface StandingDeps {
  readonly db: Kysely<DB>;
  readonly events: EventBus;
  readonly duesParams: DuesParamsSource;
}

export interface StandingChange {
  readonly unionId: string;
  readonly memberId: string;
  readonly from: Standing | null;
  readonly to: Standing;
  readonly reason: string;
  readonly at: number;
}

/**
 * Recomputes the standing of every member of the union at `now` and records
 * each change once: as a row in standing_changes (the durable record other
 * features read) and a `member.standing` event after commit. A change is
 * written with a conditional update on the standing it replaces, so two
 * workers recomputing at once record it once. `paidNow` names the members a
 * payment was just credited to: their change is "payment", the others' "time".
 * Members are read a page at a time and each page's events are emitted once
 * it is recorded; the first CHANGES_RETURNED changes are returned. `only`,
 * when given, limits the pass to those members (the dues scan's members just
 * paid, between its whole-roster passes).
 *
 * Set-based, per page: the dues rule is read once per call, a page's credited
 * payments in one query, and a page's changes written in one transaction. One
 * member at a time this was three reads and a transaction per member, the
 * server's largest load at 10^5 members (issue 16).
 */
export async function recomputeStandings(deps: StandingDeps, unionId: string, now = Date.now(), paidNow: ReadonlySet<string> = new Set(), only?: ReadonlySet<string>): Promise<StandingChange[]> {
  const changes: StandingChange[] = [];
  /** Standings this pass wrote: the second half re-reads member_standing's statistics only after writes. */
  let written = 0;
  if (only !== undefined && only.size === 0) return changes;
  const record = async (page: readonly Computed[]) => {
    const made = await recordPage(deps.db, unionId, page, now, paidNow);
    written += made.length;
    for (const c of made) deps.events.emit("member.standing", { unionId: c.unionId, memberId: c.memberId, from: c.from, to: c.to, reason: c.reason });
    changes.push(...made.slice(0, Math.max(0, CHANGES_RETURNED - changes.length)));
  };
  // memberStanding lapses a member whose dues rule cannot be read; so does the scan (once, not per member).
  const params = await deps.duesParams(deps.db, unionId).catch(() => null);
  // The roster a page at a time (index members(union_id, state, id)), never whole: a union may have millions.
  // Without dues every active member is good: only those recorded otherwise are computed. That filter is
  // applied to each page as read, not in the statement: in it, a pass over a union whose members are all
  // good was one statement walking the whole union to find none (300 ms at 10^5 members on SQLite, with
  // the event loop stopped); a page of the index is a few ms, and the loop yields between pages.
  const noDues = params !== null && params.duesAmount === 0n;
  // On PostgreSQL each page must be read in index order from the cursor: the tables' statistics are refreshed
  // when stale, and the other table's row is looked up by its key for each row of the page (a correlated
  // subquery, not a join the planner may turn into a merge that reads from the start). Planned with the
  // statistics of an empty member_standing, a page read every row past the cursor and sorted them, and a
  // merge join read members from the first: each page cost what was left or what was read of the union
  // (2·10^5 members: 51 s for a union's first pass, 44 s for each after it; 1.5 s with this). SQLite plans
  // these statements the same way whatever its statistics.
  if (only === undefined) await refreshAll(deps.db, ["members", "member_standing"]);
  for (let after = ""; ;) {
    const read = await deps.db.selectFrom("members as m")
      .select((eb) => ["m.id", "m.joined_at", eb.selectFrom("member_standing as s").select("s.standing")
        .where("s.union_id", "=", unionId).whereRef("s.member_id", "=", "m.id").as("standing")])
      .where("m.union_id", "=", unionId).where("m.state", "=", "active").where("m.id", ">", after)
      .$if(only !== undefined, (q) => q.where("m.id", "in", [...only!]))
      .orderBy("m.id").limit(STANDING_PAGE).execute();
    const rows = noDues ? read.filter((r) => r.standing !== "good") : read;
    const paid = params === null || noDues ? new Map() : await creditedPayments(deps.db, unionId, rows.map((r) => r.id));
    await record(rows.map((r) => ({
      memberId: r.id,
      before: (r.standing ?? null) as Standing | null,
      ...(params === null ? { standing: "lapsed" as const, paidThrough: null } : standingFrom(params, { state: "active", joined_at: r.joined_at }, paid.get(r.id) ?? [], now)),
    })));
    if (read.length < STANDING_PAGE) break;
    after = read.at(-1)!.id;
    await nextTurn();
  }
  // Then those with a recorded standing who are no longer active (left, removed): theirs lapses.
  // Read a page of standings at a time and filtered as read, for the same reason: nearly all are active.
  // The first pass over a union has just written every standing: refreshed again where stale (see above).
  if (only === undefined && written > 0) await refreshAll(deps.db, ["member_standing"]);
  for (let after = ""; ;) {
    const read = await deps.db.selectFrom("member_standing as s")
      .select((eb) => ["s.member_id", "s.standing", eb.selectFrom("members as m").select("m.state").whereRef("m.id", "=", "s.member_id").as("state")])
      .where("s.union_id", "=", unionId).where("s.member_id", ">", after)
      .$if(only !== undefined, (q) => q.where("s.member_id", "in", [...only!]))
      .orderBy("s.member_id").limit(STANDING_PAGE).execute();
    const rows = read.filter((r) => r.state !== "active");
    await record(rows.map((r) => ({ memberId: r.member_id, before: r.standing as Standing, standing: "lapsed", paidThrough: null })));
    if (read.length < STANDING_PAGE) break;
    after = read.at(-1)!.member_id;
    await nextTurn();
  }
  return changes;
}

/** Statistics refreshed where stale (db/statistics.ts); a failure only costs the plan, so the pass goes on. */
async function refreshAll(db: Kysely<DB>, tables: readonly ("members" | "member_standing")[]): Promise<void> {
  await refreshStatistics(db, tables).catch(() => []);
}

const STANDING_PAGE = 1000;
/**
 * At most this many changes are returned (every change is still recorded and
 * emitted): the first computation changes every member of the union.
 */
export const CHANGES_RETURNED = 1000;

interface Computed extends MemberStanding {
  readonly memberId: string;
  readonly before: Standing | null;
}

/** The page's members' credited payments in one query, each member's in memberStanding's order. */
async function creditedPayments(db: Kysely<DB>, unionId: string, memberIds: readonly string[]): Promise<Map<string, { amount: string; paid_at: number }[]>> {
  const out = new Map<string, { amount: string; paid_at: number }[]>();
  if (memberIds.length === 0) return out;
  const rows = await db.selectFrom("dues_payments").select(["member_id", "amount", "paid_at"])
    .where("union_id", "=", unionId).where("member_id", "in", memberIds).where("status", "=", "credited")
    .orderBy("member_id").orderBy("paid_at").orderBy("signature").execute();
  for (const r of rows) {
    const list = out.get(r.member_id!) ?? [];
    if (list.length === 0) out.set(r.member_id!, list);
    list.push({ amount: r.amount, paid_at: r.paid_at });
  }
  return out;
}

/**
 * Writes a page's changes in one transaction: first standings inserted unless
 * one was recorded meanwhile, the others updated only where the standing is
 * still the one read (grouped by it: at most three updates), and a
 * standing_changes row for exactly those written. Returns them, in page order.
 */
async function recordPage(db: Kysely<DB>, unionId: string, page: readonly Computed[], now: number, paidNow: ReadonlySet<string>): Promise<StandingChange[]> {
  const changed = page.filter((c) => c.before !== c.standing);
  if (changed.length === 0) return [];
  return db.transaction().execute(async (trx) => {
    const written = new Set<string>();
    const fresh = changed.filter((c) => c.before === null);
    if (fresh.length > 0) {
      const rows = await trx.insertInto("member_standing")
        .values(fresh.map((c) => ({ union_id: unionId, member_id: c.memberId, standing: c.standing, paid_through: c.paidThrough, changed_at: now })))
        .onConflict((oc) => oc.columns(["union_id", "member_id"]).doNothing()).returning("member_id").execute();
      for (const r of rows) written.add(r.member_id);
    }
    for (const before of ["good", "grace", "lapsed"] as const) {
      const group = changed.filter((c) => c.before === before);
      if (group.length === 0) continue;
      // paid_through is cast so PostgreSQL types the CASE as the column's bigint, not text.
      const rows = await trx.updateTable("member_standing").set({
        standing: sql<string>`case member_id ${sql.join(group.map((c) => sql`when ${c.memberId} then ${c.standing}`), sql` `)} end`,
        paid_through: sql<number | null>`case member_id ${sql.join(group.map((c) => sql`when ${c.memberId} then cast(${c.paidThrough} as bigint)`), sql` `)} end`,
        changed_at: now,
      }).where("union_id", "=", unionId).where("member_id", "in", group.map((c) => c.memberId)).where("standing", "=", before)
        .returning("member_id").execute();
      for (const r of rows) written.add(r.member_id);
    }
    const made = changed.filter((c) => written.has(c.memberId)).map((c): StandingChange => ({
      unionId, memberId: c.memberId, from: c.before, to: c.standing, reason: paidNow.has(c.memberId) ? "payment" : c.before === null ? "first" : "time", at: now,
    }));
    if (made.length > 0) {
      await trx.insertInto("standing_changes").values(made.map((c) => ({ union_id: unionId, member_id: c.memberId, from_standing: c.from, to_standing: c.to, reason: c.reason, at: now }))).execute();
    }
    return made;
  });
}

/**
 * A member's standing as last recorded, for features that gate on it
 * (voting, proposing a crowdfund). Null until the schedule first computed it.
 */
export async function recordedStanding(db: Kysely<DB>, unionId: string, memberId: string): Promise<{ standing: Standing; paidThrough: number | null; since: number } | null> {
  const r = await db.selectFrom("member_standing").selectAll().where("union_id", "=", unionId).where("member_id", "=", memberId).executeTakeFirst();
  return r ? { standing: r.standing as Standing, paidThrough: r.paid_through === null ? null : Number(r.paid_through), since: Number(r.changed_at) } : null;
}

/** Whether a member is in good standing now: the recorded standing, else computed (a member the schedule has not seen yet). */
export async function inGoodStanding(deps: { db: Kysely<DB>; duesParams: DuesParamsSource }, unionId: string, memberId: string): Promise<boolean> {
  const recorded = await recordedStanding(deps.db, unionId, memberId);
  return (recorded?.standing ?? (await memberStanding(deps, unionId, memberId)).standing) === "good";
}

/** The history of standing changes, newest first (a member's, or the union's). */
export async function standingHistory(db: Kysely<DB>, unionId: string, memberId?: string, limit = 100): Promise<StandingChange[]> {
  let q = db.selectFrom("standing_changes").selectAll().where("union_id", "=", unionId);
  if (memberId) q = q.where("member_id", "=", memberId);
  const rows = await q.orderBy("id", "desc").limit(limit).execute();
  return rows.map((r) => ({ unionId: r.union_id, memberId: r.member_id, from: r.from_standing as Standing | null, to: r.to_standing as Standing, reason: r.reason, at: Number(r.at) }));
}
