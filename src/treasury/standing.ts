import type { Kysely } from "kysely";
import type { DB } from "../db/schema.ts";
import type { EventBus } from "../events.ts";
import type { DuesParamsSource } from "./dues-params.ts";
import { memberStanding, type Standing } from "./dues.ts";

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
 * it is recorded; the first CHANGES_RETURNED changes are returned.
 */
export async function recomputeStandings(deps: StandingDeps, unionId: string, now = Date.now(), paidNow: ReadonlySet<string> = new Set()): Promise<StandingChange[]> {
  const changes: StandingChange[] = [];
  const recompute = async (page: readonly { memberId: string; before: Standing | null }[]) => {
    const made: StandingChange[] = [];
    for (const { memberId, before } of page) {
      const change = await recomputeOne(deps, unionId, memberId, before, now, paidNow);
      if (change) made.push(change);
    }
    for (const c of made) deps.events.emit("member.standing", { unionId: c.unionId, memberId: c.memberId, from: c.from, to: c.to, reason: c.reason });
    changes.push(...made.slice(0, Math.max(0, CHANGES_RETURNED - changes.length)));
  };
  // The roster a page at a time (index members(union_id, state, id)), never whole: a union may have millions.
  for (let after = ""; ;) {
    const rows = await deps.db.selectFrom("members as m")
      .leftJoin("member_standing as s", (j) => j.onRef("s.member_id", "=", "m.id").on("s.union_id", "=", unionId))
      .select(["m.id", "s.standing"])
      .where("m.union_id", "=", unionId).where("m.state", "=", "active").where("m.id", ">", after)
      .orderBy("m.id").limit(STANDING_PAGE).execute();
    await recompute(rows.map((r) => ({ memberId: r.id, before: (r.standing ?? null) as Standing | null })));
    if (rows.length < STANDING_PAGE) break;
    after = rows.at(-1)!.id;
  }
  // Then those with a recorded standing who are no longer active (left, removed): theirs lapses.
  for (let after = ""; ;) {
    const rows = await deps.db.selectFrom("member_standing as s")
      .leftJoin("members as m", "m.id", "s.member_id")
      .select(["s.member_id", "s.standing"])
      .where("s.union_id", "=", unionId).where("s.member_id", ">", after)
      .where((eb) => eb.or([eb("m.state", "is", null), eb("m.state", "!=", "active")]))
      .orderBy("s.member_id").limit(STANDING_PAGE).execute();
    await recompute(rows.map((r) => ({ memberId: r.member_id, before: r.standing as Standing })));
    if (rows.length < STANDING_PAGE) break;
    after = rows.at(-1)!.member_id;
  }
  return changes;
}

const STANDING_PAGE = 1000;
/**
 * At most this many changes are returned (every change is still recorded and
 * emitted): the first computation changes every member of the union.
 */
export const CHANGES_RETURNED = 1000;

async function recomputeOne(deps: StandingDeps, unionId: string, memberId: string, before: Standing | null, now: number, paidNow: ReadonlySet<string>): Promise<StandingChange | undefined> {
  const { standing, paidThrough } = await memberStanding({ db: deps.db, duesParams: deps.duesParams }, unionId, memberId, now).catch(() => ({ standing: "lapsed" as const, paidThrough: null }));
  if (before === standing) return undefined;
  const reason = paidNow.has(memberId) ? "payment" : before === null ? "first" : "time";
  const done = await deps.db.transaction().execute(async (trx) => {
    if (before === null) {
      const r = await trx.insertInto("member_standing").values({ union_id: unionId, member_id: memberId, standing, paid_through: paidThrough, changed_at: now })
        .onConflict((oc) => oc.columns(["union_id", "member_id"]).doNothing()).executeTakeFirst();
      if (Number(r.numInsertedOrUpdatedRows ?? 0n) !== 1) return false;
    } else {
      const r = await trx.updateTable("member_standing").set({ standing, paid_through: paidThrough, changed_at: now })
        .where("union_id", "=", unionId).where("member_id", "=", memberId).where("standing", "=", before).executeTakeFirst();
      if (Number(r.numUpdatedRows) !== 1) return false;
    }
    await trx.insertInto("standing_changes").values({ union_id: unionId, member_id: memberId, from_standing: before, to_standing: standing, reason, at: now }).execute();
    return true;
  });
  return done ? { unionId, memberId, from: before, to: standing, reason, at: now } : undefined;
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
