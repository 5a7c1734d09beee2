import { html, raw } from "hono/html";
import { ACTION_KINDS, type Action } from "../../actions/actions.ts";
import type { Progress } from "../../actions/responses.ts";
import type { Member } from "../../members/members.ts";
import type { Union } from "../../unions/unions.ts";
import type { NextPublication } from "../../actions/scheduler.ts";
import { type Comment, datetimeLocalValue, localDateTime, safeHref } from "../actions-data.ts";
import { accountBar, consoleTabs, notices } from "./account.ts";
import { kindLabel, percent, progressBar, unionTime } from "./actions.ts";
import { type Html, layout } from "./layout.ts";

// The officers' side of calls-to-action: compose, queue, schedule, history,
// relays (console/actions), and one call-to-action's edit form and replies.

/** What the compose and edit forms hold, as typed. */
export interface DraftValues {
  readonly title?: string;
  readonly text?: string;
  readonly kind?: string;
  readonly link?: string;
  readonly goal?: string;
  readonly deadline?: string;
}

export interface RelayRow {
  readonly id: number;
  readonly noteId: string;
  readonly author: string;
  readonly authorHandle: string | null;
  readonly excerpt: string;
  readonly state: string;
  readonly at: Date;
}

export interface ConsoleActionsView {
  readonly union: Union;
  readonly viewer: Member;
  /** In the order the scheduler publishes them. */
  readonly queued: readonly Action[];
  readonly history: readonly { readonly action: Action; readonly progress: Progress; readonly hash: string | null }[];
  readonly next: NextPublication;
  readonly timeZones: readonly string[];
  readonly pendingRelays: readonly RelayRow[];
  readonly decidedRelays: readonly RelayRow[];
  readonly notice?: string;
  readonly error?: string;
  readonly values?: DraftValues;
}

export function draftFields(union: Union, values: DraftValues = {}): Html {
  const kind = values.kind ?? "other";
  return html`<label>Title <input name="title" required maxlength="200" value="${values.title ?? ""}" placeholder="e.g. Sign the petition for a living wage"></label>
<label><span>The ask <span class="hint">Markdown: **bold**, _italic_, [links](https://…), lists</span></span>
<textarea name="text" class="markdown" required maxlength="10000" rows="7">${values.text ?? ""}</textarea></label>
<div class="fields">
<label>Kind <select name="kind">${ACTION_KINDS.map((k) => html`<option value="${k}"${k === kind ? html` selected` : ""}>${kindLabel(k)}</option>`)}</select></label>
<label class="goal">Goal <input type="number" name="goal" min="1" step="1" inputmode="numeric" placeholder="members" title="How many members must commit (optional)" value="${values.goal ?? ""}"></label>
<label class="deadline"><span>Deadline <span class="hint">${union.timeZone}</span></span> <input type="datetime-local" name="deadline" value="${values.deadline ?? ""}"></label>
<label class="link"><span>Link <span class="hint">optional, http(s)</span></span> <input type="url" name="link" maxlength="2000" placeholder="https://…" value="${values.link ?? ""}"></label>
</div>`;
}

export function consoleActionsPage(v: ConsoleActionsView): Html {
  const { union } = v;
  const base = `/u/${union.slug}/console/actions`;
  const next = v.next;
  return layout({
    title: `Calls to action: ${union.name}`,
    body: html`${accountBar(union, v.viewer, "console")}
<h1>${union.name} <span class="muted">console</span></h1>
${consoleTabs(union, "actions")}
<ul class="stats">
  <li><strong data-testid="count-queued">${v.queued.length}</strong> queued</li>
  <li><strong data-testid="count-published">${v.history.filter((h) => h.action.state === "published").length}</strong> published</li>
  <li><strong data-testid="count-relays">${v.pendingRelays.length}</strong> posts to relay</li>
</ul>
${notices(v)}

<div class="split">
<section id="compose">
<h2>Compose</h2>
<form method="post" action="${base}" class="setup compose" data-testid="compose-form">
${draftFields(union, v.values)}
<div class="buttons">
<button type="submit" name="when" value="queue" data-testid="queue">Queue</button>
<button type="submit" name="when" value="now" class="secondary" data-testid="publish-now">Publish now</button>
</div>
<p class="muted small">Queued calls-to-action go out one a day at ${union.publishTime} (${union.timeZone}), oldest first. Publishing sends a post from @${union.slug} to ${union.actionsVisibility === "public" ? "everyone (public)" : "members only (followers-only)"}.</p>
</form>
</section>

<section id="schedule">
<h2>Schedule</h2>
<p class="next card" data-testid="next-publication">${v.queued.length === 0 ? html`<span class="muted">Nothing queued.</span> ` : ""}Next publication: <strong>${next.overdue ? "now" : `${next.date} ${next.time}`}</strong> <span class="tz">(${next.timeZone})</span>${next.overdue
      ? html`<br><span class="muted small">Today's ${next.time} has passed and nothing went out on schedule yet: ${v.queued.length === 0 ? "a draft queued now" : "the first in the queue"} is published within a minute.</span>`
      : ""}</p>
<form method="post" action="/u/${union.slug}/console/schedule" class="setup settings" data-testid="settings-form">
<p class="muted" data-testid="schedule-bylaws">Published daily at ${union.publishTime} (${union.timeZone}), seen by ${union.actionsVisibility === "public" ? "everyone" : "members only"}; replies pledging “${union.commitmentWords.join("”, “")}” count as commitments. These are <a href="/u/${union.slug}/bylaws">bylaws</a>: they change when members pass an amendment.</p>
<div class="fields">
<label>Relay members' posts <select name="relayPolicy">
<option value="off"${union.relayPolicy === "off" ? html` selected` : ""}>Off</option>
<option value="approval"${union.relayPolicy === "approval" ? html` selected` : ""}>After an officer approves</option>
<option value="auto"${union.relayPolicy === "auto" ? html` selected` : ""}>Automatically</option>
</select></label>
</div>
<button type="submit" class="secondary">Save relay setting</button>
</form>
</section>
</div>

<section id="queue">
<h2>Queue</h2>
${v.queued.length === 0
      ? html`<p class="muted">No drafts queued.</p>`
      : html`<div class="table-wrap"><table class="queue" data-testid="queue-table">
<thead><tr><th>#</th><th>Title</th><th>Kind</th><th>Goal</th><th>Deadline</th><th>Queued</th><th></th></tr></thead>
<tbody>${v.queued.map((a, i) => html`<tr data-action="${a.id}">
<td>${i + 1}</td>
<td><a href="${base}/${a.id}">${a.title}</a></td>
<td><span class="kind">${kindLabel(a.kind)}</span></td>
<td>${a.goal ?? html`<span class="muted">—</span>`}</td>
<td>${a.deadline ? localDateTime(a.deadline, union.timeZone) : html`<span class="muted">—</span>`}</td>
<td class="when">${localDateTime(a.createdAt, union.timeZone)}</td>
<td class="actions">
<a href="${base}/${a.id}" class="button secondary small" data-testid="edit">Edit</a>
<form method="post" action="${base}/${a.id}/publish" class="inline"><button type="submit" class="secondary small" data-testid="publish">Publish now</button></form>
<form method="post" action="${base}/${a.id}/retract" class="inline"><button type="submit" class="secondary small" data-testid="delete">Delete</button></form>
</td></tr>`)}</tbody></table></div>`}
</section>

<section id="history">
<h2>History</h2>
${v.history.length === 0
      ? html`<p class="muted">Nothing published yet.</p>`
      : html`<div class="table-wrap"><table class="history" data-testid="history-table">
<thead><tr><th>#</th><th>Title</th><th>Committed</th><th>Participation</th><th>Published</th><th>Hash</th><th></th></tr></thead>
<tbody>${v.history.map(({ action: a, progress: p, hash }) => html`<tr data-action="${a.id}" class="${a.state === "retracted" ? "retracted" : ""}">
<td>${a.seq}</td>
<td><a href="${base}/${a.id}">${a.title}</a>${a.state === "retracted" ? html` <span class="status" data-testid="state">retracted</span>` : a.updatedAt ? html` <span class="status">edited</span>` : ""}</td>
<td class="committed">${a.state === "retracted" ? html`<span class="muted">—</span>` : progressBar(p, { compact: true, membersShown: true })}</td>
<td data-testid="participation">${percent(p.participation)}</td>
<td class="when">${a.publishedAt ? localDateTime(a.publishedAt, union.timeZone) : ""}</td>
<td>${hash ? html`<code class="hash" title="${hash}">${hash.slice(0, 12)}</code>` : ""}</td>
<td class="actions">${a.state === "published"
        ? html`<a href="/u/${union.slug}/actions/${a.id}" class="button secondary small">Page</a>
<a href="${base}/${a.id}" class="button secondary small" data-testid="edit">Edit</a>`
        : ""}</td>
</tr>`)}</tbody></table></div>`}
</section>

<section id="relays">
<h2>Members' posts to relay</h2>
<p class="muted">Public posts by members that mention @${union.slug}. Relaying boosts the post to every member. Replies to calls-to-action are comments and are never relayed. ${union.relayPolicy === "off"
      ? "Relaying is off in the schedule settings."
      : union.relayPolicy === "auto"
      ? "Relaying is automatic: nothing waits here."
      : "Relaying needs an officer's approval."}</p>
${v.pendingRelays.length === 0
      ? html`<p class="muted">No posts are waiting.</p>`
      : html`<div class="table-wrap"><table class="relays" data-testid="relay-table">
<thead><tr><th>From</th><th>Post</th><th>Received</th><th>Decision</th></tr></thead>
<tbody>${v.pendingRelays.map((r) => html`<tr data-relay="${r.id}">
<td>${r.authorHandle ?? r.author}</td>
<td class="excerpt"><a href="${safeHref(r.noteId)}" rel="nofollow noopener noreferrer" target="_blank">${r.excerpt || "(no text)"}</a></td>
<td>${localDateTime(r.at, union.timeZone)}</td>
<td class="actions">
<form method="post" action="/u/${union.slug}/console/relays/${r.id}/relay" class="inline"><button type="submit" class="small" data-testid="relay">Relay</button></form>
<form method="post" action="/u/${union.slug}/console/relays/${r.id}/decline" class="inline"><button type="submit" class="secondary small" data-testid="decline">Decline</button></form>
</td></tr>`)}</tbody></table></div>`}
${v.decidedRelays.length > 0
      ? html`<details class="decided"><summary>Recently decided (${v.decidedRelays.length})</summary>
<ul>${v.decidedRelays.map((r) => html`<li data-relay="${r.id}"><span class="status${r.state === "relayed" ? " status-valid" : ""}">${r.state}</span> ${r.authorHandle ?? r.author}: <span class="muted">${r.excerpt.slice(0, 140)}</span></li>`)}</ul>
</details>`
      : ""}
</section>`,
  });
}

export interface ConsoleActionView {
  readonly union: Union;
  readonly viewer: Member;
  readonly action: Action;
  readonly progress?: Progress;
  readonly hashes?: { readonly prevHash: string; readonly hash: string };
  readonly comments: readonly Comment[];
  readonly position?: number;
  readonly values?: DraftValues;
  readonly notice?: string;
  readonly error?: string;
}

/** The edit form's values for an action as stored. */
export function valuesOf(a: Action, union: Union): DraftValues {
  return {
    title: a.title,
    text: a.bodyMd,
    kind: a.kind,
    link: a.link ?? "",
    goal: a.goal === null ? "" : String(a.goal),
    deadline: a.deadline ? datetimeLocalValue(a.deadline, union.timeZone) : "",
  };
}

export function consoleActionPage(v: ConsoleActionView): Html {
  const { union, action: a } = v;
  const base = `/u/${union.slug}/console/actions`;
  const p = v.progress;
  return layout({
    title: `${a.title}: console`,
    body: html`${accountBar(union, v.viewer, "console")}
<p><a href="${base}">← Calls to action</a></p>
<p class="kicker"><span class="kind">${kindLabel(a.kind)}</span> ${a.state === "queued"
      ? html`<span class="status" data-testid="state">queued</span>${v.position ? html` · number ${v.position} in the queue` : ""}`
      : html`#${a.seq} · <span class="status${a.state === "published" ? " status-valid" : ""}" data-testid="state">${a.state}</span>${a.publishedAt ? html` ${unionTime(a.publishedAt, union)}` : ""}`}</p>
<h1 data-testid="title">${a.title}</h1>
${notices(v)}
${a.state === "published" ? html`<p><a href="/u/${union.slug}/actions/${a.id}" data-testid="public-page">Open the members' page →</a></p>` : ""}

<div class="split">
<section id="preview">
<h2>${a.state === "queued" ? "Preview" : "As published"}</h2>
<div class="ask card">${raw(a.bodyHtml)}</div>
${a.link ? html`<p>Link: <code class="url">${a.link}</code></p>` : ""}
<dl>
  <dt>Goal</dt><dd>${a.goal ?? "none"}</dd>
  <dt>Deadline</dt><dd>${a.deadline ? unionTime(a.deadline, union) : "none"}</dd>
</dl>
${p
      ? html`<h2>Progress</h2>
<p><strong data-testid="commitments">${p.commitments}</strong> in${p.goal ? ` of ${p.goal}` : ""} · ${p.done} done · ${p.comments} ${p.comments === 1 ? "reply" : "replies"} · ${p.boosts} ${p.boosts === 1 ? "boost" : "boosts"} · <strong>${percent(p.participation)}</strong> of ${p.activeMembers} members</p>
${progressBar(p, { membersShown: true })}`
      : ""}
${v.hashes
      ? html`<dl class="hashes"><dt>Hash</dt><dd><code data-testid="hash">${v.hashes.hash}</code></dd><dt>Previous</dt><dd><code>${v.hashes.prevHash}</code></dd></dl>`
      : ""}
</section>

<section id="edit">
${a.state === "retracted"
      ? html`<h2>Retracted</h2><p class="muted">Retracted ${a.retractedAt ? unionTime(a.retractedAt, union) : ""}. Members' servers were asked to delete it; it can no longer be edited.</p>`
      : html`<h2>Edit</h2>
${a.state === "published" ? html`<p class="muted small">Saving sends the change to members' servers as an edit (Update) and records it in the hash chain.</p>` : ""}
<form method="post" action="${base}/${a.id}/edit" class="setup" data-testid="edit-form">
${draftFields(union, v.values ?? valuesOf(a, union))}
<button type="submit">Save changes</button>
</form>
${a.state === "queued"
        ? html`<div class="buttons">
<form method="post" action="${base}/${a.id}/publish" class="inline"><button type="submit" class="secondary" data-testid="publish">Publish now</button></form>
<form method="post" action="${base}/${a.id}/retract" class="inline"><button type="submit" class="secondary" data-testid="delete">Delete draft</button></form>
</div>`
        : html`<form method="post" action="${base}/${a.id}/retract" class="setup danger-zone" data-testid="retract-form">
<p>Retracting asks every member's server to delete the post (Delete), closes its page with “retracted”, and is recorded in the hash chain. It cannot be undone.</p>
<button type="submit" class="danger" data-testid="retract">Retract this call-to-action</button>
</form>`}`}
</section>
</div>

${a.state !== "queued"
      ? html`<section id="comments">
<h2>Replies <span class="muted">(${v.comments.length})</span></h2>
<p class="muted">Members' replies from the fediverse, as text. Only officers see them here.</p>
${v.comments.length === 0
        ? html`<p class="muted">No replies yet.</p>`
        : html`<ol class="comments" data-testid="comments">${v.comments.map((c) => html`<li>
<p class="who">${c.actorId ? html`<a href="${safeHref(c.actorId)}" rel="nofollow noopener noreferrer" target="_blank">${c.handle ?? c.actorId}</a>` : c.handle ?? "(former member)"} <span class="muted">${localDateTime(c.at, union.timeZone)}</span>${c.committed ? html` <span class="status status-valid">counted as in</span>` : ""}</p>
<p class="text">${c.text}</p>
</li>`)}</ol>`}
</section>`
      : ""}`,
  });
}
