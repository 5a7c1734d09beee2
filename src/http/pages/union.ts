import { html } from "hono/html";
import type { Action } from "../../actions/actions.ts";
import type { Progress } from "../../actions/responses.ts";
import type { Union } from "../../unions/unions.ts";
import { kindLabel, progressBar } from "./actions.ts";
import { type Html, layout } from "./layout.ts";
import { plural } from "../../english.ts";
import { crowdfundList, type CrowdfundListItem } from "./crowdfund.ts";

/**
 * The union's current call-to-action: undefined when there is none; with no
 * action when there is one the visitor may not read (members only).
 */
export type CurrentAction = { readonly action: Action; readonly progress: Progress; readonly membersShown: boolean } | { readonly action: undefined; readonly progress: undefined; readonly membersShown?: undefined };

/** The union's active relationships with other unions, as the public page lists them. */
export interface UnionLinks {
  readonly parent: readonly PeerLink[];
  readonly allies: readonly PeerLink[];
  readonly chapters: readonly PeerLink[];
}
export interface PeerLink {
  readonly actorId: string;
  readonly handle: string | null;
}

export interface UnionPageExtras {
  /** Undefined when the union's visibility hides its membership from this visitor. */
  readonly memberCount?: number;
  /** The leader's fediverse profile (their actor id), when known. */
  readonly leaderUrl?: string | null;
  /** Earlier published calls-to-action the visitor may read, newest first. */
  readonly recent?: readonly Action[];
  readonly viewer?: { readonly handle: string; readonly home: "me" | "console" };
  /** Parent, allies and chapters (active relationships with other unions). */
  readonly links?: UnionLinks;
  /** The union's crowdfunds members may see. */
  readonly crowdfunds?: readonly CrowdfundListItem[];
}

export function unionPage(union: Union, actorId: URL, current?: CurrentAction, extras: UnionPageExtras = {}): Html {
  const handle = `@${union.slug}@${actorId.host}`;
  const leader = union.leaderHandle
    ? extras.leaderUrl ? html`<a href="${extras.leaderUrl}" rel="noopener">${union.leaderHandle}</a>` : union.leaderHandle
    : "not set";
  return layout({
    title: `${union.name} (${handle})`,
    head: html`<link rel="alternate" type="application/activity+json" href="${actorId.href}">
<script src="/public/copy.js" defer></script>
<meta name="description" content="${union.purpose}">`,
    body: html`<article class="union">
${union.iconUrl ? html`<img class="icon" src="${union.iconUrl}" alt="">` : ""}
<h1>${union.name}</h1>
<p class="handle" data-testid="handle">${handle}</p>
<p class="purpose">${union.purpose}</p>
<dl>
  <dt>Leader</dt><dd data-testid="leader">${leader}</dd>
  ${extras.memberCount !== undefined ? html`<dt>Members</dt><dd data-testid="member-count">${plural(extras.memberCount, "member")}</dd>` : ""}
  <dt>Founded</dt><dd><time datetime="${union.createdAt.toISOString()}">${union.createdAt.toISOString().slice(0, 10)}</time></dd>
  <dt>Joining</dt><dd>${union.manuallyApprovesFollowers ? "Follow requests are reviewed by the union's officers." : "Follows are accepted automatically."}</dd>
</dl>
<p class="governance" data-testid="governance"><a href="/u/${union.slug}/proposals" data-testid="proposals-link">Proposals and votes</a> · <a href="/u/${union.slug}/bylaws">Bylaws</a></p>
${current ? currentActionCard(union, current) : ""}
${extras.links ? linksSection(extras.links) : ""}
${extras.crowdfunds ? crowdfundList(union, extras.crowdfunds) : ""}
${extras.recent?.length ? html`<section data-testid="recent-actions"><h2>Recent calls to action</h2>
<ul class="recent">${extras.recent.map((a) => html`<li><a href="/u/${union.slug}/actions/${a.id}">${a.title}</a> <span class="muted small">#${a.seq} · <time datetime="${a.publishedAt?.toISOString() ?? ""}">${a.publishedAt?.toISOString().slice(0, 10) ?? ""}</time></span></li>`)}</ul>
</section>` : ""}
${extras.viewer
  ? html`<p class="notice" data-testid="signed-in">You are signed in as ${extras.viewer.handle}. <a href="/u/${union.slug}/${extras.viewer.home}">${extras.viewer.home === "me" ? "Your page" : "The console"}</a></p>`
  : html`<h2>Join from Mastodon</h2>
<p class="copy-row">Search for <code class="copy-source" id="union-handle">${handle}</code> in your Mastodon (or any Fediverse) app and follow it.
<button type="button" class="secondary small" data-copy="union-handle">Copy handle</button><span class="copied muted small" role="status" aria-live="polite"></span></p>
<p class="muted">Already a member? <a href="/u/${union.slug}/login">Sign in</a> with your fediverse account.</p>`}
</article>`,
  });
}

function currentActionCard(union: Union, current: CurrentAction): Html {
  const base = `/u/${union.slug}/actions`;
  if (!current.action) {
    return html`<section class="card current-action" data-testid="current-action">
<p class="kicker">Current call to action</p>
<p>${union.name} has a call to action for its members. <a href="${base}">Sign in to see it</a>.</p>
</section>`;
  }
  const a = current.action;
  return html`<section class="card current-action" data-testid="current-action">
<p class="kicker"><span class="kind">${kindLabel(a.kind)}</span> Current call to action · #${a.seq}</p>
<h2><a href="${base}/${a.id}">${a.title}</a></h2>
${progressBar(current.progress, { compact: true, membersShown: current.membersShown })}
<p class="muted small"><a href="${base}">All calls to action</a></p>
</section>`;
}

function peerList(testid: string, peers: readonly PeerLink[]): Html {
  return html`<ul data-testid="${testid}">${peers.map((p) => html`<li><a href="${p.actorId}" rel="nofollow noopener">${p.handle ?? p.actorId}</a></li>`)}</ul>`;
}

function linksSection(links: UnionLinks): Html | "" {
  if (links.parent.length + links.allies.length + links.chapters.length === 0) return "";
  return html`<section class="card unions" data-testid="union-links">
${links.parent.length ? html`<h2>Parent union</h2>${peerList("parent", links.parent)}` : ""}
${links.allies.length ? html`<h2>Allies</h2>${peerList("allies", links.allies)}` : ""}
${links.chapters.length ? html`<h2>Chapters</h2>${peerList("chapters", links.chapters)}` : ""}
</section>`;
}
