import { createHash } from "node:crypto";
import type { Context } from "@fedify/fedify";
import { type Activity, Announce, Create, Delete, Tombstone, Update } from "@fedify/vocab";
import { getAction, hashesOf } from "../src/actions/actions.ts";
import { progressOf } from "../src/actions/responses.ts";
import { logger } from "../src/logging.ts";
import type { OutboxIntent } from "../src/outbox.ts";
import type { Union } from "../src/unions/unions.ts";
import { actionNote, actionNoteId, addressing, progressNote } from "./action-note.ts";
import type { OutboundDeps } from "./outbound.ts";
import { fanOut } from "./fanout-pages.ts";
import { relayingPeers, sendToPeers } from "./relationships.ts";

const log = logger("federation", "actions");

type ActionIntent = Extract<OutboxIntent, { kind: "action.publish" | "action.update" | "action.retract" | "action.progress" | "relay" }>;

/**
 * Calls-to-action go to the union's followers (its members), one delivery per
 * shared inbox, a page of the roster at a time (fanout-pages.ts). Activity ids are derived from the
 * action (and the chain entry, for edits), so a retried intent sends the same
 * activity again, not a new one.
 */
export async function handleActionIntent(deps: OutboundDeps, ctx: Context<void>, union: Union, intent: ActionIntent, intentId: string): Promise<void> {
  const groupId = ctx.getActorUri(union.slug);
  const toFollowers = (activity: Activity, orderingKey: string) => fanOut(deps, ctx, union.id, activity, orderingKey);
  if (intent.kind === "relay") {
    const { to, cc } = addressing(ctx, union);
    const key = createHash("sha256").update(intent.noteId).digest("hex").slice(0, 32);
    const base = new URL(`/u/${union.slug}/relays/${key}`, deps.origin);
    // FEP-1b12: Mastodon shows an Announce of the Note; group-aware software
    // (Lemmy, ...) expects the Group to announce the Create itself.
    const announce = new Announce({ id: base, actor: groupId, object: new URL(intent.noteId), to, cc });
    await toFollowers(announce, intent.noteId);
    // A parent's call-to-action cascades down the tree: each chapter relays it to its own chapters.
    if (intent.cascade) await sendToPeers(deps, ctx, union, await relayingPeers(deps, union, { chaptersOnly: true }), announce);
    if (intent.createId) {
      await toFollowers(new Announce({ id: new URL(`${base.href}/create`), actor: groupId, object: new URL(intent.createId), to, cc }), intent.noteId);
    }
    return;
  }
  const action = await getAction(deps.db, union.id, intent.actionId);
  if (!action) {
    log.warn("Dropped {kind}: call-to-action {id} is gone", { kind: intent.kind, id: intent.actionId });
    return;
  }
  const noteId = actionNoteId(deps.origin, union, action.id);
  const hashes = await hashesOf(deps.db, action.id);
  const orderingKey = noteId.href;
  switch (intent.kind) {
    case "action.publish": {
      const note = actionNote(ctx, union, action, hashes?.prevHash ?? "");
      const create = new Create({ id: new URL(`${noteId.href}/activity`), actor: groupId, object: note, to: note.toId, cc: note.ccId, published: note.published });
      await toFollowers(create, orderingKey);
      // Chapters and allies that relay this union's calls get them too; only public ones can be re-shared.
      if (union.actionsVisibility === "public") await sendToPeers(deps, ctx, union, await relayingPeers(deps, union, { chaptersOnly: false }), create);
      return;
    }
    case "action.update": {
      // An edit shows how far the call has got, in the post members already have.
      const note = actionNote(ctx, union, action, hashes?.prevHash ?? "", await progressOf(deps.db, action));
      await toFollowers(new Update({ id: new URL(`${noteId.href}/update/${intentId}`), actor: groupId, object: note, to: note.toId, cc: note.ccId, updated: note.updated }), orderingKey);
      return;
    }
    case "action.retract": {
      const { to, cc } = addressing(ctx, union);
      await toFollowers(new Delete({ id: new URL(`${noteId.href}/delete`), actor: groupId, object: new Tombstone({ id: noteId }), to, cc }), orderingKey);
      return;
    }
    case "action.progress": {
      // Quiet by design: every member's copy of the call is edited in place
      // (no new post in their timelines), and the reply that says so goes
      // only to the members who committed.
      const progress = await progressOf(deps.db, action);
      const edited = actionNote(ctx, union, action, hashes?.prevHash ?? "", progress);
      await toFollowers(new Update({ id: new URL(`${noteId.href}/update/progress-${intent.reason}`), actor: groupId, object: edited, to: edited.toId, cc: edited.ccId, updated: edited.updated }), orderingKey);
      if (progress.commitments === 0) return;
      const note = progressNote(ctx, union, action, intent.reason, progress);
      const create = new Create({ id: new URL(`${note.id!.href}/activity`), actor: groupId, object: note, published: note.published });
      await fanOut(deps, ctx, union.id, create, orderingKey, { kind: "committed", actionId: action.id });
      return;
    }
  }
}
