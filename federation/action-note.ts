import type { Context } from "@fedify/fedify";
import { Link, Mention, Note, PUBLIC_COLLECTION } from "@fedify/vocab";
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

/** "Tuesday 1 December at 18:00 (Europe/Berlin)": a deadline as a member reads it, in the union's zone. */
export function plainDeadline(d: Date, timeZone: string): string {
  const day = new Intl.DateTimeFormat("en-GB", { timeZone, weekday: "long", day: "numeric", month: "long" }).format(d);
  const time = new Intl.DateTimeFormat("en-GB", { timeZone, hour: "2-digit", minute: "2-digit", hourCycle: "h23" }).format(d);
  return `${day} at ${time} (${timeZone})`;
}

/**
 * A call-to-action as a Note by the Group, written the way a good organizer
 * posts: the ask, the deadline in plain words, the goal and how far it has
 * got, the link, and how to respond. Only tags Mastodon keeps are used (p,
 * strong, a, br, and the Markdown's own). The Group mentions itself so that
 * Mastodon addresses replies back to it. The chain link (the previous
 * entry's hash) is data, not prose: a Link tag Mastodon ignores and tools can
 * read, beside the page that shows and checks the whole chain.
 */
export function actionNote(ctx: Context<void>, union: Union, action: Action, prevHash: string, progress?: Pick<Progress, "commitments" | "done">): Note {
  const groupId = ctx.getActorUri(union.slug);
  const page = actionNoteId(new URL(ctx.canonicalOrigin), union, action.id);
  const { to, cc } = addressing(ctx, union);
  const handle = `@${union.slug}@${new URL(ctx.canonicalOrigin).host}`;
  const word = union.commitmentWords[0] ?? "in";
  const committed = progress?.commitments ?? 0;
  const facts = [
    action.deadline ? `<strong>By ${esc(plainDeadline(action.deadline, union.timeZone))}</strong>` : null,
    action.goal && action.goalReachedAt
      ? `<strong>Goal reached:</strong> ${committed} of ${action.goal} ${action.goal === 1 ? "member" : "members"} in`
      : action.goal
        ? `Goal: ${action.goal} ${action.goal === 1 ? "member" : "members"}${committed > 0 ? `, ${committed} in so far` : ""}`
        : committed > 0 && !action.closedAt ? `${committed} in so far` : null,
    action.closedAt ? `<strong>Closed:</strong> ${committed} committed, ${progress?.done ?? 0} done` : null,
  ].filter(Boolean);
  // Progress edits the post members already have (Mastodon updates it in
  // place and adds nothing to timelines); `updated` must move forward for
  // Mastodon to take an edit, and is derived from the action so a resent
  // Update carries the same time.
  const changedAt = [action.updatedAt, action.goalReachedAt, action.closedAt].filter((d): d is Date => d !== null)
    .reduce<Date | null>((a, d) => (a === null || d > a ? d : a), null);
  const content = [
    `<p><strong>${esc(action.title)}</strong></p>`,
    action.bodyHtml,
    action.link ? `<p><a href="${esc(action.link)}">${esc(action.link)}</a></p>` : "",
    facts.length ? `<p>${facts.join("<br>")}</p>` : "",
    `<p>Reply “${esc(word)}” to <span class="h-card"><a href="${esc(groupId.href)}" class="u-url mention">${esc(handle)}</a></span> or like this post to commit; boost it to spread the word. <a href="${esc(page.href)}">Progress and details</a></p>`,
  ].join("");
  return new Note({
    id: page,
    attribution: groupId,
    to,
    cc,
    url: page,
    content,
    tags: [
      new Mention({ href: groupId, name: handle }),
      // Machine-readable place in the union's hash chain; not shown by Mastodon.
      new Link({ href: new URL(`/u/${union.slug}/actions/chain.json`, ctx.canonicalOrigin), rel: "prev", mediaType: "application/json", name: `sha256:${prevHash}` }),
    ],
    published: action.publishedAt ? instant(action.publishedAt) : null,
    updated: changedAt ? instant(changedAt) : null,
  });
}

export function progressNote(ctx: Context<void>, union: Union, action: Action, reason: "goal" | "deadline", p: Progress): Note {
  const groupId = ctx.getActorUri(union.slug);
  const parent = actionNoteId(new URL(ctx.canonicalOrigin), union, action.id);
  // The share of members gives away how many there are: it is stated only
  // where everyone who can read the note may also see the roster.
  const share = membersVisibility(union) === "public" || (union.actionsVisibility === "members" && membersVisibility(union) === "members")
    ? ` (${Math.round(p.participation * 100)}% of members)`
    : "";
  const text = reason === "goal"
    ? `Goal reached: ${p.commitments} of ${p.goal} members committed to “${action.title}”${share}. Thank you for being one of them.`
    : `Deadline passed for “${action.title}”: ${p.commitments}${p.goal ? ` of ${p.goal}` : ""} members committed, ${p.done} done${share}. Thank you for taking part.`;
  return new Note({
    id: progressNoteId(new URL(ctx.canonicalOrigin), union, action.id, reason),
    attribution: groupId,
    // Addressed to nobody in particular: it is delivered to the personal
    // inbox of each member who committed, and Mastodon shows such a post to
    // the inbox's owner alone. Naming the followers here would put it in
    // every member's timeline; naming the recipients would tell each of them
    // who else committed.
    replyTarget: parent,
    content: `<p>${esc(text)}</p>`,
    published: Temporal.Now.instant(),
  });
}
