import type { Context } from "@fedify/fedify";
import { Mention, Note, PUBLIC_COLLECTION } from "@fedify/vocab";
import type { Action } from "../src/actions/actions.ts";
import type { Progress } from "../src/actions/responses.ts";
import { membersVisibility } from "../src/members/visibility.ts";
import type { Union } from "../src/unions/unions.ts";

export function actionNoteId(origin: URL, union: Union, actionId: string): URL {
  return new URL(`/u/${union.slug}/actions/${actionId}`, origin);
}

export function progressNoteId(origin: URL, union: Union, actionId: string, reason: string): URL {
  return new URL(`/u/${union.slug}/actions/${actionId}/progress/${reason}`, origin);
}

/** members: to the followers only (Mastodon's "followers-only"); public: to everyone, followers in cc. */
export function addressing(ctx: Context<void>, union: Union): { to: URL; cc: URL | null } {
  const followers = ctx.getFollowersUri(union.slug);
  return union.actionsVisibility === "public" ? { to: PUBLIC_COLLECTION, cc: followers } : { to: followers, cc: null };
}

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);
}

function instant(d: Date): Temporal.Instant {
  return Temporal.Instant.fromEpochMilliseconds(d.getTime());
}

/**
 * A call-to-action as a Note by the Group. The Group mentions itself so that
 * Mastodon addresses replies back to it; the footer carries the hash of the
 * previous entry in the union's chain, so members can see the feed's links.
 */
export function actionNote(ctx: Context<void>, union: Union, action: Action, prevHash: string): Note {
  const groupId = ctx.getActorUri(union.slug);
  const page = actionNoteId(new URL(ctx.canonicalOrigin), union, action.id);
  const { to, cc } = addressing(ctx, union);
  const handle = `@${union.slug}@${new URL(ctx.canonicalOrigin).host}`;
  const facts = [
    action.goal ? `Goal: ${action.goal} members` : null,
    action.deadline ? `Deadline: ${action.deadline.toISOString().replace(".000Z", "Z")}` : null,
    `Kind: ${action.kind}`,
  ].filter(Boolean).join(" · ");
  const content = [
    `<p><strong>${esc(action.title)}</strong></p>`,
    action.bodyHtml,
    action.link ? `<p><a href="${esc(action.link)}">${esc(action.link)}</a></p>` : "",
    `<p>${esc(facts)}</p>`,
    `<p>Like this post or reply “${esc(union.commitmentWords[0] ?? "in")}” to commit. <a href="${esc(page.href)}">Progress</a> · call-to-action #${action.seq} · previous ${prevHash.slice(0, 16)} · <span class="h-card"><a href="${esc(groupId.href)}" class="u-url mention">${esc(handle)}</a></span></p>`,
  ].join("");
  return new Note({
    id: page,
    attribution: groupId,
    to,
    cc,
    url: page,
    content,
    tags: [new Mention({ href: groupId, name: handle })],
    published: action.publishedAt ? instant(action.publishedAt) : null,
    updated: action.updatedAt ? instant(action.updatedAt) : null,
  });
}

export function progressNote(ctx: Context<void>, union: Union, action: Action, reason: "goal" | "deadline", p: Progress): Note {
  const groupId = ctx.getActorUri(union.slug);
  const parent = actionNoteId(new URL(ctx.canonicalOrigin), union, action.id);
  const { to, cc } = addressing(ctx, union);
  // The share of members gives away how many there are: it is stated only
  // where everyone who can read the note may also see the roster.
  const share = membersVisibility(union) === "public" || (union.actionsVisibility === "members" && membersVisibility(union) === "members")
    ? ` (${Math.round(p.participation * 100)}% of members)`
    : "";
  const text = reason === "goal"
    ? `Goal reached: ${p.commitments} of ${p.goal} members committed to “${action.title}”${share}.`
    : `Deadline passed for “${action.title}”: ${p.commitments}${p.goal ? ` of ${p.goal}` : ""} members committed, ${p.done} done${share}.`;
  return new Note({
    id: progressNoteId(new URL(ctx.canonicalOrigin), union, action.id, reason),
    attribution: groupId,
    to,
    cc,
    replyTarget: parent,
    content: `<p>${esc(text)}</p>`,
    published: Temporal.Now.instant(),
  });
}
