import type { ChainAnchor } from "../../actions/anchors.ts";
import type { RelayTally } from "../../relationships/tallies.ts";
import { html, raw } from "hono/html";
import type { Action, ActionKind } from "../../actions/actions.ts";
import type { Progress } from "../../actions/responses.ts";
import type { Member } from "../../members/members.ts";
import type { Union } from "../../unions/unions.ts";
import { localDateTime } from "../actions-data.ts";
import { accountBar, notices } from "./account.ts";
import { type Html, layout } from "./layout.ts";

// The page of one call-to-action (the HTML face of the Note Fedify serves at
// the same URL), the union's list of them, and what a retracted one leaves.

export const KIND_LABEL: Record<ActionKind, string> = {
  sign: "Sign",
  "show-up": "Show up",
  buy: "Buy",
  boycott: "Boycott",
  donate: "Donate",
  contact: "Contact a target",
  vote: "Vote",
  build: "Build",
  other: "Other",
};

export const kindLabel = (k: string): string => KIND_LABEL[k as ActionKind] ?? k;

/** A time on the union's wall clock, with the zone named, in a <time> element. */
export function unionTime(d: Date, union: Union): Html {
  return html`<time datetime="${d.toISOString()}">${localDateTime(d, union.timeZone)}</time> <span class="tz">(${union.timeZone})</span>`;
}

export function percent(p: number): string {
  const pct = p * 100;
  return pct > 0 && pct < 1 ? "<1%" : `${Math.round(pct)}%`;
}

/**
 * Commitments against the goal as a bar (or, without a goal, against the
 * membership, when the viewer may know how many members there are: the
 * roster's rule covers its count).
 */
export function progressBar(p: Progress, opts: { compact?: boolean; membersShown?: boolean } = {}): Html {
  const max = p.goal ?? Math.max(opts.membersShown ? p.activeMembers : p.commitments, 1);
  const reached = p.goal !== null && p.commitments >= p.goal;
  return html`<div class="progress${opts.compact ? " compact" : ""}${reached ? " reached" : ""}">
<progress max="${max}" value="${Math.min(p.commitments, max)}" aria-label="Commitments${p.goal ? " against the goal" : ""}"></progress>
${opts.compact
    ? html`<span class="tally"><strong data-testid="commitments">${p.commitments}</strong>${p.goal ? html` / ${p.goal}` : ""}</span>`
    : ""}
</div>`;
}

export interface ActionPageView {
  readonly union: Union;
  readonly action: Action;
  readonly progress: Progress;
  /** Whether the viewer may know how many members there are (the roster's rule). */
  readonly membersShown: boolean;
  /** Totals that allies and chapters relaying the call reported for their own members. */
  readonly relayed?: readonly RelayTally[];
  readonly hashes?: { readonly prevHash: string; readonly hash: string };
  /** The on-chain Memo that anchors the chain up to (at least) this entry, once written. */
  readonly anchor?: ChainAnchor | null;
  /** The signed-in member, if any; only members see the buttons. */
  readonly viewer?: Member;
  readonly state?: { readonly committed: boolean; readonly done: boolean };
  readonly now: number;
  readonly notice?: string;
  readonly error?: string;
}

export function actionPage(v: ActionPageView): Html {
  const { union, action: a, progress: p } = v;
  const base = `/u/${union.slug}/actions`;
  const deadlinePassed = a.deadline !== null && a.deadline.getTime() <= v.now;
  return layout({
    title: `${a.title}: ${union.name}`,
    head: html`<link rel="alternate" type="application/activity+json" href="${base}/${a.id}">
<meta name="description" content="${a.title}">
<script src="/public/verify-chain.js" defer></script>`,
    body: html`${v.viewer ? accountBar(union, v.viewer, "action") : ""}
<nav class="crumbs" aria-label="Breadcrumbs"><a href="/u/${union.slug}">${union.name}</a> <span aria-hidden="true">›</span> <a href="${base}">Calls to action</a> <span aria-hidden="true">›</span> #${a.seq}</nav>
<article class="action" data-action="${a.id}">
<p class="kicker"><span class="kind" data-testid="kind">${kindLabel(a.kind)}</span> Call to action #${a.seq}${a.publishedAt ? html` · published ${unionTime(a.publishedAt, union)}` : ""}${a.updatedAt ? html` · <span data-testid="edited">edited ${unionTime(a.updatedAt, union)}</span>` : ""}</p>
<h1 data-testid="title">${a.title}</h1>
${notices(v)}
<div class="ask" data-testid="ask">${raw(a.bodyHtml)}</div>
${a.link
      ? html`<p class="take"><a class="button" href="${a.link}" rel="nofollow noopener noreferrer" target="_blank" data-testid="link">Open the link</a> <code class="url">${a.link}</code></p>`
      : ""}
<dl class="facts">
  <dt>Kind</dt><dd>${kindLabel(a.kind)}</dd>
  <dt>Deadline</dt><dd data-testid="deadline">${a.deadline ? html`${unionTime(a.deadline, union)}${deadlinePassed ? html` <span class="status">passed</span>` : ""}` : html`<span class="muted">none</span>`}</dd>
  <dt>Goal</dt><dd data-testid="goal">${a.goal ? `${a.goal} ${a.goal === 1 ? "member" : "members"}` : html`<span class="muted">none set</span>`}</dd>
</dl>

<section class="progress-card card" aria-labelledby="progress-h">
<h2 id="progress-h">Progress</h2>
<p class="big"><strong data-testid="commitments">${p.commitments}</strong> ${p.commitments === 1 ? "member" : "members"} in${p.goal ? html` <span class="muted">of a goal of <strong data-testid="goal-count">${p.goal}</strong></span>` : ""}${a.goalReachedAt ? html` <span class="status status-valid">goal reached</span>` : ""}</p>
${progressBar(p, { membersShown: v.membersShown })}
<ul class="figures">
  ${v.membersShown ? html`<li><strong data-testid="participation">${percent(p.participation)}</strong> of ${p.activeMembers} ${p.activeMembers === 1 ? "member" : "members"} took part</li>` : ""}
  <li><strong data-testid="done-count">${p.done}</strong> done</li>
  <li><strong>${p.boosts}</strong> ${p.boosts === 1 ? "boost" : "boosts"}</li>
</ul>
${relayedBox(v.relayed ?? [])}
${responseBox(v)}
</section>

<details class="integrity" data-testid="integrity">
<summary>Tamper-evident record: check it yourself</summary>
${v.hashes
      ? html`<dl class="hashes">
  <dt>This entry</dt><dd><code data-testid="hash">${v.hashes.hash}</code></dd>
  <dt>Previous entry</dt><dd><code data-testid="prev-hash">${v.hashes.prevHash}</code>${/^0+$/.test(v.hashes.prevHash) ? html`<span class="muted">This is the first entry: it links to the start of the chain.</span>` : ""}</dd>
</dl>
<p class="muted">Every call-to-action ${union.name} publishes, and every edit or retraction, is an entry in a hash chain: each entry's SHA-256 covers what was asked and the hash of the entry before it, so yesterday's ask cannot be quietly rewritten.${a.updatedAt ? " This one was edited after publication; the first hash above is of its latest version, and the earlier versions stay in the chain." : ""}</p>
${v.anchor
        ? html`<p data-testid="anchor">Anchored on Solana: the chain's head at entry ${v.anchor.n} was written in a Memo by the union's treasury on ${v.anchor.anchoredAt.toISOString().slice(0, 16).replace("T", " ")} UTC, in transaction ${v.anchor.url ? html`<a href="${v.anchor.url}"><code class="url" data-testid="anchor-signature">${v.anchor.signature}</code></a>` : html`<code class="url" data-testid="anchor-signature">${v.anchor.signature}</code>`}. Read the memo from the chain and compare it with the downloaded chain to check the feed without this server.</p>`
        : html`<p class="muted small" data-testid="anchor">Not yet anchored on-chain: the chain's head is written on Solana once a day.</p>`}
<p><button type="button" class="secondary small" data-verify-chain="/u/${union.slug}/actions/chain.json" data-expect-hash="${v.hashes.hash}">Check the chain in this browser</button>
<a class="small" href="/u/${union.slug}/actions/chain.json" download>Download the chain (JSON)</a></p>
<p class="chain-result" data-testid="chain-result" role="status" aria-live="polite"></p>`
      : html`<p class="muted">No chain entry was found for this call-to-action.</p>`}
</details>
</article>`,
  });
}

function relayedBox(tallies: readonly RelayTally[]): Html {
  if (tallies.length === 0) return html``;
  const total = tallies.reduce((n, t) => n + t.commitments, 0);
  return html`<div class="relayed" data-testid="relayed">
<p><strong data-testid="relayed-total">${total}</strong> more from unions that relayed this call:</p>
<ul>${tallies.map((t) => html`<li data-testid="relayed-tally" data-union="${t.reporterActorId}"><strong>${t.commitments}</strong> from <a href="${t.reporterActorId}" rel="nofollow noopener">${t.reporterName ?? t.reporterActorId}</a> <span class="muted">(${t.replies} ${t.replies === 1 ? "reply" : "replies"}, ${t.likes} ${t.likes === 1 ? "like" : "likes"})</span></li>`)}</ul>
</div>`;
}

function responseBox(v: ActionPageView): Html {
  const { union, action: a } = v;
  const word = union.commitmentWords[0] ?? "in";
  if (!v.viewer) {
    return html`<p class="respond muted" data-testid="respond-signed-out">Members: like the post or reply “${word}” from your fediverse account, or <a href="/u/${union.slug}/login">sign in</a> to answer here.</p>`;
  }
  const s = v.state ?? { committed: false, done: false };
  const action = `/u/${union.slug}/actions/${a.id}`;
  return html`<div class="respond" data-testid="respond">
<form method="post" action="${action}/commit" class="inline"><button type="submit" data-testid="commit" class="${s.committed ? "pressed" : ""}" aria-pressed="${s.committed ? "true" : "false"}">${s.committed ? "✓ I'm in" : "I'm in"}</button></form>
<form method="post" action="${action}/done" class="inline"><button type="submit" data-testid="done" class="${s.done ? "pressed" : "secondary"}" aria-pressed="${s.done ? "true" : "false"}">${s.done ? "✓ Done" : "Done"}</button></form>
<span class="muted" data-testid="my-state">${s.done ? "You have done it. Thank you." : s.committed ? "You're in. Press Done once you have done it." : "Commit to it, then mark it done."}</span>
</div>`;
}

export interface RelayedCallsView {
  readonly union: Union;
  readonly viewer: Member;
  readonly calls: readonly { readonly noteId: string; readonly authorId: string; readonly authorHandle: string | null; readonly excerpt: string; readonly committed: boolean }[];
  readonly notice?: string;
}

/** Calls this union relays from its allies or parent, each with this member's "I'm in". */
export function relayedCallsPage(v: RelayedCallsView): Html {
  const base = `/u/${v.union.slug}/actions`;
  return layout({
    title: `Relayed calls to action: ${v.union.name}`,
    body: html`${accountBar(v.union, v.viewer, "action")}
<nav class="crumbs" aria-label="Breadcrumbs"><a href="/u/${v.union.slug}">${v.union.name}</a> <span aria-hidden="true">›</span> <a href="${base}">Calls to action</a> <span aria-hidden="true">›</span> Relayed</nav>
<h1>Calls relayed from allies</h1>
${notices(v)}
<p class="muted">${v.union.name} relays these calls from allied unions. Say you're in here: you are counted for the union that made the call, as one of ${v.union.name}'s members.</p>
${v.calls.length === 0
      ? html`<p class="muted" data-testid="no-relayed">No relayed calls yet.</p>`
      : html`<ul class="action-list" data-testid="relayed-calls">${v.calls.map((r) => html`<li data-testid="relayed-call" data-note="${r.noteId}">
<p>${r.authorHandle ? html`${r.authorHandle}: ` : ""}${r.excerpt}. <a href="${r.noteId}" rel="nofollow noopener" data-testid="relayed-open">Read the call</a></p>
<form method="post" action="${base}/relayed/${r.committed ? "withdraw" : "commit"}" class="inline"><input type="hidden" name="note" value="${r.noteId}">${r.committed
        ? html`<button type="submit" data-testid="relayed-withdraw" class="secondary" aria-pressed="true">✓ I'm in (withdraw)</button>`
        : html`<button type="submit" data-testid="relayed-commit" aria-pressed="false">I'm in</button>`}</form>
</li>`)}</ul>`}`,
  });
}

export interface ActionIndexView {
  readonly union: Union;
  readonly viewer?: Member;
  readonly items: readonly { readonly action: Action; readonly progress: Progress }[];
  readonly membersShown: boolean;
}

export function actionIndexPage(v: ActionIndexView): Html {
  const base = `/u/${v.union.slug}/actions`;
  const [current, ...earlier] = v.items;
  return layout({
    title: `Calls to action: ${v.union.name}`,
    body: html`${v.viewer ? accountBar(v.union, v.viewer, "action") : ""}
<nav class="crumbs" aria-label="Breadcrumbs"><a href="/u/${v.union.slug}">${v.union.name}</a> <span aria-hidden="true">›</span> Calls to action</nav>
<h1>Calls to action</h1>
${v.viewer ? html`<p><a href="${base}/relayed" data-testid="relayed-link">Calls relayed from allies</a></p>` : ""}
${!current
      ? html`<p class="muted">${v.union.name} has not published a call-to-action yet.</p>`
      : html`<article class="card current-action" data-testid="current-action">
<p class="kicker"><span class="kind">${kindLabel(current.action.kind)}</span> Current · #${current.action.seq}</p>
<h2><a href="${base}/${current.action.id}">${current.action.title}</a></h2>
${progressBar(current.progress, { compact: true, membersShown: v.membersShown })}
</article>
${earlier.length > 0
        ? html`<h2>Earlier</h2>
<ul class="action-list" data-testid="action-list">${earlier.map(({ action: a, progress: p }) => html`<li>
<span class="seq">#${a.seq}</span> <a href="${base}/${a.id}">${a.title}</a> <span class="kind">${kindLabel(a.kind)}</span>
<span class="muted">${a.publishedAt ? localDateTime(a.publishedAt, v.union.timeZone).slice(0, 10) : ""}</span>
${progressBar(p, { compact: true, membersShown: v.membersShown })}
</li>`)}</ul>`
        : ""}`}`,
  });
}

export function retractedPage(union: Union, action: Action): Html {
  return layout({
    title: `Retracted: ${union.name}`,
    body: html`<nav class="crumbs" aria-label="Breadcrumbs"><a href="/u/${union.slug}">${union.name}</a> <span aria-hidden="true">›</span> <a href="/u/${union.slug}/actions">Calls to action</a></nav>
<h1>410</h1>
<p data-testid="retracted">Call to action #${action.seq} was retracted by ${union.name}${action.retractedAt ? html` on ${unionTime(action.retractedAt, union)}` : ""}. Its retraction is recorded in the union's hash chain.</p>
<p><a href="/u/${union.slug}/actions">Current calls to action</a></p>`,
  });
}
