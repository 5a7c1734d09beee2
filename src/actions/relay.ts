import type { Kysely } from "kysely";
import type { DB } from "../db/schema.ts";
import { htmlToText } from "../html-text.ts";
import { type By, requireOfficer } from "../members/members.ts";
import { getUnionById } from "../unions/unions.ts";
import { ActionError, type ActionDeps } from "./actions.ts";

export interface RelayOffer {
  readonly noteId: string;
  readonly createId: string | null;
  readonly authorActorId: string;
  /** The post's HTML; only a member's is ever read (into an excerpt). */
  readonly contentHtml: string;
  /** Public or unlisted: only those may be relayed to all members. */
  readonly isPublic: boolean;
  /** A reply to one of the union's calls-to-action is a comment, never relayed. */
  readonly isReplyToAction: boolean;
}

export type RelayOutcome = "relayed" | "pending" | "ignored";

/**
 * A member's post that mentions the union (FEP-1b12 group posting). Relayed
 * at once, held for an officer, or ignored, per the union's relay policy.
 * The same post offered twice is decided once.
 */
export async function offerRelay(deps: ActionDeps, unionId: string, offer: RelayOffer): Promise<RelayOutcome> {
  const union = await getUnionById(deps.db, unionId);
  if (!union || union.relayPolicy === "off" || !offer.isPublic || offer.isReplyToAction) return "ignored";
  const member = await deps.db.selectFrom("members").select("id").where("union_id", "=", unionId).where("actor_id", "=", offer.authorActorId)
    .where("state", "=", "active").executeTakeFirst();
  if (!member) return "ignored";
  const state = union.relayPolicy === "auto" ? "relayed" : "pending";
  return deps.db.transaction().execute(async (trx) => {
    const r = await trx.insertInto("relay_requests").values({
      union_id: unionId,
      note_id: offer.noteId,
      create_id: offer.createId,
      author_id: offer.authorActorId,
      state,
      excerpt: htmlToText(offer.contentHtml, { tagGap: " ", keepEntities: true }).trim().slice(0, 500),
      created_at: Date.now(),
      decided_at: state === "relayed" ? Date.now() : null,
    }).onConflict((oc) => oc.columns(["union_id", "note_id"]).doNothing()).executeTakeFirst();
    if (Number(r.numInsertedOrUpdatedRows ?? 0n) !== 1) return "ignored";
    if (state === "relayed") await deps.outbox.add(trx, { kind: "relay", unionId, noteId: offer.noteId, createId: offer.createId });
    return state;
  });
}

/** An officer relays or declines a held post. */
export async function decideRelay(deps: ActionDeps, unionId: string, requestId: number, by: By, relay: boolean): Promise<void> {
  await deps.db.transaction().execute(async (trx) => {
    await requireOfficer(trx, unionId, by);
    const req = await trx.selectFrom("relay_requests").selectAll().where("union_id", "=", unionId).where("id", "=", requestId).executeTakeFirst();
    if (!req) throw new ActionError("not_found", "no such relay request");
    if (req.state !== "pending") throw new ActionError("conflict", `this post was already ${req.state}`);
    const r = await trx.updateTable("relay_requests").set({ state: relay ? "relayed" : "declined", decided_at: Date.now() }).where("id", "=", req.id).where("state", "=", "pending").executeTakeFirst();
    if (Number(r.numUpdatedRows) !== 1) throw new ActionError("conflict", "this post was already decided");
    if (relay) await deps.outbox.add(trx, { kind: "relay", unionId, noteId: req.note_id, createId: req.create_id });
  });
}

export async function pendingRelays(db: Kysely<DB>, unionId: string) {
  return db.selectFrom("relay_requests").selectAll().where("union_id", "=", unionId).where("state", "=", "pending").orderBy("created_at").execute();
}
