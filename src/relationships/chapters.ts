import { type Kysely, sql } from "kysely";
import type { DB } from "../db/schema.ts";
import type { DomainDeps } from "../domain-deps.ts";
import { countMembers } from "../members/members.ts";
import { getUnionById } from "../unions/unions.ts";
import { findRelationshipWith, listRelationships } from "./relationships.ts";

/**
 * Chapter totals. Each chapter reports up to its parent: its member count,
 * its members' commitments, its leader (public on its page anyway), and
 * the reports its own chapters sent it, so the parent sees the whole tree.
 * A report replaces the last one whole; an older one never replaces a newer.
 */

export interface ChapterNode {
  readonly actorId: string;
  readonly name: string;
  readonly members: number;
  /** Commitments by the chapter's members: to its own calls and to the calls it relayed. */
  readonly commitments: number;
  readonly leads: readonly { readonly actorId: string | null; readonly handle: string }[];
  readonly chapters: readonly ChapterNode[];
}

/** Deeper trees than this, or more nodes, are refused: a report is small, and a hostile one is not stored. */
export const MAX_DEPTH = 8;
export const MAX_NODES = 500;

/** This union's own node, with the latest reports of its active chapters as its subtree. */
export async function chapterSnapshot(db: Kysely<DB>, unionId: string, selfActorId: string): Promise<ChapterNode> {
  const union = (await getUnionById(db, unionId))!;
  const own = await db.selectFrom("action_responses").select((eb) => eb.fn.count<number>("member_id").distinct().as("n"))
    .where("union_id", "=", unionId).where("undone_at", "is", null).where("kind", "in", ["commit", "done"]).executeTakeFirstOrThrow();
  const relayed = await db.selectFrom("relayed_responses").select((eb) => eb.fn.count<number>("member_id").distinct().as("n"))
    .where("union_id", "=", unionId).where("undone_at", "is", null).where("kind", "in", ["commit", "like"]).executeTakeFirstOrThrow();
  const leader = await db.selectFrom("members").select(["actor_id", "handle"]).where("union_id", "=", unionId).where("role", "=", "leader").where("role", "<>", sql.lit("member")).where("state", "=", "active").executeTakeFirst();
  const leads = leader?.handle ? [{ actorId: leader.actor_id, handle: leader.handle }] : union.leaderHandle ? [{ actorId: null, handle: union.leaderHandle }] : [];
  return {
    actorId: selfActorId,
    name: union.name,
    members: await countMembers(db, unionId),
    commitments: Number(own.n) + Number(relayed.n),
    leads,
    chapters: await chapterTree(db, unionId),
  };
}

/** The latest report of each active chapter, in the order they became chapters. */
export async function chapterTree(db: Kysely<DB>, unionId: string): Promise<ChapterNode[]> {
  const chapters = await listRelationships(db, unionId, { states: ["active"], kinds: ["chapter"] });
  const out: ChapterNode[] = [];
  for (const ch of chapters) {
    const r = await db.selectFrom("chapter_reports").select("report").where("union_id", "=", unionId).where("chapter_actor_id", "=", ch.peerActorId).executeTakeFirst();
    out.push(r ? JSON.parse(r.report) as ChapterNode : { actorId: ch.peerActorId, name: ch.peerHandle ?? ch.peerActorId, members: 0, commitments: 0, leads: [], chapters: [] });
  }
  return out;
}

/** Sums over a tree (the node itself included). */
export function treeTotals(node: Pick<ChapterNode, "members" | "commitments" | "chapters">): { members: number; commitments: number; chapters: number } {
  let members = node.members;
  let commitments = node.commitments;
  let chapters = 0;
  for (const c of node.chapters) {
    const t = treeTotals(c);
    members += t.members;
    commitments += t.commitments;
    chapters += 1 + t.chapters;
  }
  return { members, commitments, chapters };
}

export type ReportOutcome = "applied" | "stale" | "refused";

/** Checks a received tree's shape and bounds; a report that breaks them is refused whole. */
export function validTree(node: ChapterNode, depth = 0, seen = { n: 0 }): boolean {
  if (depth > MAX_DEPTH || ++seen.n > MAX_NODES) return false;
  for (const v of [node.members, node.commitments]) if (!Number.isSafeInteger(v) || v < 0 || v > 100_000_000) return false;
  if (typeof node.name !== "string" || node.name.length > 200 || typeof node.actorId !== "string") return false;
  if (node.leads.length > 20 || node.leads.some((l) => typeof l.handle !== "string" || l.handle.length > 200)) return false;
  return node.chapters.every((c) => validTree(c, depth + 1, seen));
}

/**
 * A chapter's report. Only an active chapter reports to its parent, and
 * only about itself (the tree's root is the sender). The parent's own
 * report to its parent is queued, so totals roll up the whole tree.
 */
export async function acceptChapterReport(deps: DomainDeps, unionId: string, report: ChapterNode, reportedAt: number): Promise<ReportOutcome> {
  const rel = await findRelationshipWith(deps.db, unionId, report.actorId);
  if (!rel || rel.kind !== "chapter" || rel.state !== "active") return "refused";
  if (!validTree(report) || !Number.isSafeInteger(reportedAt) || reportedAt > Date.now() + 5 * 60_000) return "refused";
  const row = { union_id: unionId, chapter_actor_id: report.actorId, report: JSON.stringify(report), reported_at: reportedAt, received_at: Date.now() };
  return deps.db.transaction().execute(async (trx) => {
    const r = await trx.insertInto("chapter_reports").values(row)
      .onConflict((oc) => oc.columns(["union_id", "chapter_actor_id"]).doUpdateSet({ report: row.report, reported_at: row.reported_at, received_at: row.received_at })
        .where("chapter_reports.reported_at", "<", row.reported_at))
      .executeTakeFirst();
    if (Number(r.numInsertedOrUpdatedRows ?? 0n) !== 1) return "stale";
    await queueReportUp(deps, trx, unionId);
    return "applied";
  });
}

/** Queues this union's report to its parent, when it has one. */
export async function queueReportUp(deps: DomainDeps, trx: Kysely<DB>, unionId: string): Promise<void> {
  const parent = await trx.selectFrom("union_relationships").select("id").where("union_id", "=", unionId).where("kind", "=", "parent").where("state", "=", "active").executeTakeFirst();
  if (parent) await deps.outbox.add(trx, { kind: "relationship.report", unionId });
}
