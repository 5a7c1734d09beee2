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
 */
export async function recomputeStandings(deps: StandingDeps, unionId: string, now = Date.now(), paidNow: ReadonlySet<string> = new Set()): Promise<StandingChange[]> {
  const stored = new Map((await deps.db.selectFrom("member_standing").select(["member_id", "standing"]).where("union_id", "=", unionId).execute())
    .map((r) => [r.member_id, r.standing as Standing]));
  const active = await deps.db.selectFrom("members").select("id").where("union_id", "=", unionId).where("state", "=", "active").execute();
  const ids = new Set([...active.map((r) => r.id), ...stored.keys()]);
  const changes: StandingChange[] = [];
  for (const memberId of ids) {
    const { standing, paidThrough } = await memberStanding({ db: deps.db, duesParams: deps.duesParams }, unionId, memberId, now).catch(() => ({ standing: "lapsed" as const, paidThrough: null }));
    const before = stored.get(memberId) ?? null;
    if (before === standing) continue;
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
    if (done) changes.push({ unionId, memberId, from: before, to: standing, reason, at: now });
  }
  for (const c of changes) deps.events.emit("member.standing", { unionId: c.unionId, memberId: c.memberId, from: c.from, to: c.to, reason: c.reason });
  return changes;
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
