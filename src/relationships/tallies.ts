import { randomUUID } from "node:crypto";
import type { Kysely } from "kysely";
import type { DB } from "../db/schema.ts";
import type { DomainDeps } from "../domain-deps.ts";
import { isCommitment } from "../actions/responses.ts";
import { getUnionById } from "../unions/unions.ts";
import { queueReportUp } from "./chapters.ts";
import { findRelationshipWith, relaysOurs, relaysTheirs } from "./relationships.ts";
import { partnerCountedTotals } from "./partner-counted.ts";

/**
 * Commitments counted back. When this union relays an ally's (or parent's)
 * call-to-action, its own members' responses to it (replies, likes) reach
 * this union, not the ally's roster: they are kept here and reported to the
 * originating union as totals, which it shows on the call's page, attributed
 * to this union. Totals, never increments: a repeated or replayed report
 * changes nothing, and the roster behind them never leaves this union.
 */

export type RelayedKind = "commit" | "comment" | "like";

export interface RelayTotals {
  /** Members who committed: a like, or a reply that says they are in. */
  readonly commitments: number;
  readonly replies: number;
  readonly likes: number;
}

/** The unions here that relayed this note from a peer, with the responder's membership in each. */
async function relayedHere(db: Kysely<DB>, noteId: string, actorId: string): Promise<{ unionId: string; memberId: string; authorId: string }[]> {
  return db.selectFrom("relay_requests as r").innerJoin("members as m", (j) => j.onRef("m.union_id", "=", "r.union_id"))
    .select(["r.union_id as unionId", "m.id as memberId", "r.author_id as authorId"])
    .where("r.note_id", "=", noteId).where("r.state", "=", "relayed").where("m.actor_id", "=", actorId).where("m.state", "=", "active")
    .execute();
}

/**
 * A member's like of, or reply to, a call this union relayed from a peer it
 * relays: recorded once per source activity, and a report to the
 * originating union is queued. Returns how many unions here counted it.
 */
export async function recordRelayedResponse(deps: DomainDeps, noteId: string, actorId: string, source: { id: string; like: true } | { id: string; replyHtml: string }): Promise<number> {
  let counted = 0;
  for (const r of await relayedHere(deps.db, noteId, actorId)) {
    const rel = await findRelationshipWith(deps.db, r.unionId, r.authorId);
    if (!rel || !relaysTheirs(rel)) continue;
    const kinds: RelayedKind[] = "like" in source ? ["like"] : ["comment"];
    if ("replyHtml" in source) {
      const union = await getUnionById(deps.db, r.unionId);
      if (union && isCommitment(source.replyHtml, union.commitmentWords)) kinds.push("commit");
    }
    await deps.db.transaction().execute(async (trx) => {
      let inserted = false;
      for (const kind of kinds) {
        const ins = await trx.insertInto("relayed_responses").values({
          id: randomUUID(), union_id: r.unionId, note_id: noteId, member_id: r.memberId, kind, source_id: source.id, created_at: Date.now(), undone_at: null,
        }).onConflict((oc) => oc.columns(["union_id", "source_id", "kind"]).doNothing()).executeTakeFirst();
        inserted ||= Number(ins.numInsertedOrUpdatedRows ?? 0n) === 1;
      }
      if (!inserted) return;
      await deps.outbox.add(trx, { kind: "relationship.tally", unionId: r.unionId, noteId });
      await queueReportUp(deps, trx, r.unionId);
    });
    counted++;
  }
  return counted;
}

/** Undo of a like or Delete of a reply by the member who made it: withdrawn, and the new totals reported. */
export async function withdrawRelayedResponse(deps: DomainDeps, sourceId: string, actorId: string): Promise<number> {
  const rows = await deps.db.selectFrom("relayed_responses as r").innerJoin("members as m", "m.id", "r.member_id")
    .select(["r.id", "r.union_id", "r.note_id"]).where("r.source_id", "=", sourceId).where("m.actor_id", "=", actorId).where("r.undone_at", "is", null).execute();
  if (rows.length === 0) return 0;
  await deps.db.transaction().execute(async (trx) => {
    await trx.updateTable("relayed_responses").set({ undone_at: Date.now() }).where("id", "in", rows.map((r) => r.id)).execute();
    for (const key of new Set(rows.map((r) => `${r.union_id}\n${r.note_id}`))) {
      const [unionId, noteId] = key.split("\n") as [string, string];
      await deps.outbox.add(trx, { kind: "relationship.tally", unionId, noteId });
    }
  });
  return rows.length;
}

/** This union's totals for a call it relayed, as reported to the originating union: its members', and its chapters' reports. */
export async function relayedTotals(db: Kysely<DB>, unionId: string, noteId: string): Promise<RelayTotals> {
  const own = await ownRelayedTotals(db, unionId, noteId);
  const sub = await db.selectFrom("relay_tallies").select([(eb) => eb.fn.sum<number>("commitments").as("c"), (eb) => eb.fn.sum<number>("replies").as("r"), (eb) => eb.fn.sum<number>("likes").as("l")])
    .where("union_id", "=", unionId).where("action_id", "=", noteId).executeTakeFirst();
  return { commitments: own.commitments + Number(sub?.c ?? 0), replies: own.replies + Number(sub?.r ?? 0), likes: own.likes + Number(sub?.l ?? 0) };
}

async function ownRelayedTotals(db: Kysely<DB>, unionId: string, noteId: string): Promise<RelayTotals> {
  const rows = await db.selectFrom("relayed_responses").select(["kind", (eb) => eb.fn.count<number>("member_id").distinct().as("members"), (eb) => eb.fn.countAll<number>().as("n")])
    .where("union_id", "=", unionId).where("note_id", "=", noteId).where("undone_at", "is", null).groupBy("kind").execute();
  const committed = await db.selectFrom("relayed_responses").select((eb) => eb.fn.count<number>("member_id").distinct().as("n"))
    .where("union_id", "=", unionId).where("note_id", "=", noteId).where("undone_at", "is", null).where("kind", "in", ["commit", "like"]).executeTakeFirstOrThrow();
  const n = (k: string, f: "members" | "n") => Number(rows.find((r) => r.kind === k)?.[f] ?? 0);
  return { commitments: Number(committed.n), replies: n("comment", "n"), likes: n("like", "members") };
}

/** Who the totals for a relayed note go to: the peer whose call it is, while we still relay it. */
export async function tallyRecipient(db: Kysely<DB>, unionId: string, noteId: string): Promise<string | undefined> {
  const req = await db.selectFrom("relay_requests").select("author_id").where("union_id", "=", unionId).where("note_id", "=", noteId).where("state", "=", "relayed").executeTakeFirst();
  if (!req) return undefined;
  const rel = await findRelationshipWith(db, unionId, req.author_id);
  return rel && relaysTheirs(rel) ? rel.peerActorId : undefined;
}

export type TallyOutcome = "applied" | "stale" | "refused";

export interface TallyReport extends RelayTotals {
  readonly reporterActorId: string;
  readonly reporterName: string | null;
  /** When the reporter computed the totals: an older report never replaces a newer one. */
  readonly reportedAt: number;
}

const MAX_COUNT = 100_000_000;

/**
 * A relaying union's totals for a call: one of ours (by action id), or one
 * we relayed ourselves (by note id; a chapter reports the parent's call up
 * through us, and our own report then includes it). Accepted only from a
 * union that relays our calls now (an active ally relaying ours, or a
 * chapter); anyone else's report is refused. The newest report replaces
 * the last; an older or repeated one changes nothing.
 */
export async function acceptTally(deps: DomainDeps, unionId: string, call: { actionId: string } | { noteId: string }, report: TallyReport): Promise<TallyOutcome> {
  const { db } = deps;
  const rel = await findRelationshipWith(db, unionId, report.reporterActorId);
  if (!rel || !relaysOurs(rel)) return "refused";
  for (const v of [report.commitments, report.replies, report.likes]) {
    if (!Number.isSafeInteger(v) || v < 0 || v > MAX_COUNT) return "refused";
  }
  if (!Number.isSafeInteger(report.reportedAt) || report.reportedAt > Date.now() + 5 * 60_000) return "refused";
  let key: string;
  if ("actionId" in call) {
    const action = await db.selectFrom("actions").select("id").where("union_id", "=", unionId).where("id", "=", call.actionId).executeTakeFirst();
    if (!action) return "refused";
    key = action.id;
  } else {
    if (!(await tallyRecipient(db, unionId, call.noteId))) return "refused";
    key = call.noteId;
  }
  const row = {
    union_id: unionId, action_id: key, reporter_actor_id: report.reporterActorId, reporter_name: report.reporterName?.slice(0, 200) ?? null,
    commitments: report.commitments, replies: report.replies, likes: report.likes, reported_at: report.reportedAt, received_at: Date.now(),
  };
  return db.transaction().execute(async (trx) => {
    const r = await trx.insertInto("relay_tallies").values(row)
      .onConflict((oc) => oc.columns(["union_id", "action_id", "reporter_actor_id"]).doUpdateSet({
        reporter_name: row.reporter_name, commitments: row.commitments, replies: row.replies, likes: row.likes, reported_at: row.reported_at, received_at: row.received_at,
      }).where("relay_tallies.reported_at", "<", row.reported_at))
      .executeTakeFirst();
    if (Number(r.numInsertedOrUpdatedRows ?? 0n) !== 1) return "stale";
    if ("noteId" in call) await deps.outbox.add(trx, { kind: "relationship.tally", unionId, noteId: call.noteId });
    return "applied";
  });
}

export interface RelayTally extends RelayTotals {
  readonly reporterActorId: string;
  readonly reporterName: string | null;
  readonly reportedAt: Date;
}

/**
 * The totals for a call by each relaying union, largest first: what it
 * reported (responses that reached it), plus what this union counted itself
 * for it (its members' responses that reached us, partner-counted.ts).
 */
export async function talliesOf(db: Kysely<DB>, unionId: string, actionId: string): Promise<RelayTally[]> {
  const rows = await db.selectFrom("relay_tallies").selectAll().where("union_id", "=", unionId).where("action_id", "=", actionId).execute();
  const byUs = await partnerCountedTotals(db, unionId, actionId);
  const out: RelayTally[] = rows.map((r) => {
    const own = byUs.get(r.reporter_actor_id);
    byUs.delete(r.reporter_actor_id);
    return {
      reporterActorId: r.reporter_actor_id, reporterName: r.reporter_name, reportedAt: new Date(Number(r.reported_at)),
      commitments: Number(r.commitments) + (own?.commitments ?? 0), replies: Number(r.replies) + (own?.replies ?? 0), likes: Number(r.likes) + (own?.likes ?? 0),
    };
  });
  for (const [via, t] of byUs) {
    const name = await db.selectFrom("remote_actors").select("name").where("id", "=", via).executeTakeFirst();
    out.push({ reporterActorId: via, reporterName: name?.name ?? null, reportedAt: new Date(0), ...t });
  }
  return out.sort((x, y) => y.commitments - x.commitments || (x.reporterActorId < y.reporterActorId ? -1 : 1));
}
