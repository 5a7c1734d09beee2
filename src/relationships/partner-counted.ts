import { randomUUID } from "node:crypto";
import type { Kysely } from "kysely";
import type { DB } from "../db/schema.ts";
import type { DomainDeps } from "../domain-deps.ts";
import { isCommitment } from "../actions/responses.ts";
import { getUnionById } from "../unions/unions.ts";
import { findRelationshipWith, listRelationships, relaysOurs } from "./relationships.ts";
import type { RelayTotals } from "./tallies.ts";

/**
 * Counting back with stock Mastodon. When ally (or chapter) B relays union
 * A's call, a Mastodon member of B who likes or replies sends it to the
 * post's author, A, never to B. A cannot know who that actor is, so it asks
 * the partners that relay its calls (federation/partner-membership.ts); the
 * one that vouches for the actor gets the response counted here, at A,
 * attributed to it. B's own reports (tallies.ts) hold only what reached B,
 * so the two add up without counting one activity twice.
 */

export type PartnerCountedKind = "commit" | "comment" | "like";

/** The partners whose members may respond to this union's calls through a relay: active, and relaying our calls. */
export async function partnersRelayingOurs(db: Kysely<DB>, unionId: string): Promise<string[]> {
  return (await listRelationships(db, unionId, { states: ["active"] })).filter(relaysOurs).map((r) => r.peerActorId);
}

/** Whether any union here has an active partner that relays its calls (the inbox guard's cheap pre-check). */
export async function relaysCallsOf(db: Kysely<DB>, slug: string): Promise<boolean> {
  const rows = await db.selectFrom("union_relationships as r").innerJoin("unions as u", "u.id", "r.union_id").select(["r.kind", "r.relay"])
    .where("u.slug", "=", slug).where("r.state", "=", "active").execute();
  return rows.some((r) => r.kind === "chapter" || (r.kind === "ally" && (r.relay === "both" || r.relay === "ours")));
}

/**
 * A like of, or reply to, one of this union's published calls by a member
 * of partner `viaActorId`, as that partner said. Counted once per source
 * activity and kind; refused (false) unless the partner relays our calls now.
 */
export async function recordPartnerResponse(
  deps: DomainDeps, unionId: string, actionId: string, viaActorId: string, actorId: string,
  source: { id: string; like: true } | { id: string; replyHtml: string },
): Promise<boolean> {
  const rel = await findRelationshipWith(deps.db, unionId, viaActorId);
  if (!rel || !relaysOurs(rel)) return false;
  const action = await deps.db.selectFrom("actions").select("state").where("union_id", "=", unionId).where("id", "=", actionId).executeTakeFirst();
  if (action?.state !== "published") return false;
  const kinds: PartnerCountedKind[] = "like" in source ? ["like"] : ["comment"];
  if ("replyHtml" in source) {
    const union = await getUnionById(deps.db, unionId);
    if (union && isCommitment(source.replyHtml, union.commitmentWords)) kinds.push("commit");
  }
  let inserted = false;
  for (const kind of kinds) {
    const ins = await deps.db.insertInto("partner_counted_responses").values({
      id: randomUUID(), union_id: unionId, action_id: actionId, via_actor_id: viaActorId, actor_id: actorId, kind, source_id: source.id, created_at: Date.now(), undone_at: null,
    }).onConflict((oc) => oc.columns(["union_id", "source_id", "kind"]).doNothing()).executeTakeFirst();
    inserted ||= Number(ins.numInsertedOrUpdatedRows ?? 0n) === 1;
  }
  return inserted;
}

/** Undo of such a like, or Delete of such a reply, by the actor who made it. */
export async function withdrawPartnerResponse(deps: DomainDeps, sourceId: string, actorId: string): Promise<number> {
  const r = await deps.db.updateTable("partner_counted_responses").set({ undone_at: Date.now() })
    .where("source_id", "=", sourceId).where("actor_id", "=", actorId).where("undone_at", "is", null).executeTakeFirst();
  return Number(r.numUpdatedRows);
}

/** What this union counted itself for each partner on one call, by partner actor id. */
export async function partnerCountedTotals(db: Kysely<DB>, unionId: string, actionId: string): Promise<Map<string, RelayTotals>> {
  const rows = await db.selectFrom("partner_counted_responses")
    .select(["via_actor_id", "kind", (eb) => eb.fn.count<number>("actor_id").distinct().as("actors"), (eb) => eb.fn.countAll<number>().as("n")])
    .where("union_id", "=", unionId).where("action_id", "=", actionId).where("undone_at", "is", null).groupBy(["via_actor_id", "kind"]).execute();
  const committed = await db.selectFrom("partner_counted_responses")
    .select(["via_actor_id", (eb) => eb.fn.count<number>("actor_id").distinct().as("n")])
    .where("union_id", "=", unionId).where("action_id", "=", actionId).where("undone_at", "is", null).where("kind", "in", ["commit", "like"])
    .groupBy("via_actor_id").execute();
  const out = new Map<string, RelayTotals>();
  for (const via of new Set(rows.map((r) => r.via_actor_id))) {
    const n = (k: string, f: "actors" | "n") => Number(rows.find((r) => r.via_actor_id === via && r.kind === k)?.[f] ?? 0);
    out.set(via, { commitments: Number(committed.find((c) => c.via_actor_id === via)?.n ?? 0), replies: n("comment", "n"), likes: n("like", "actors") });
  }
  return out;
}
