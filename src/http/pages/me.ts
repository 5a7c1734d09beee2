import { html } from "hono/html";
import type { Invite } from "../../members/invites.ts";
import type { Member } from "../../members/members.ts";
import type { Union } from "../../unions/unions.ts";
import { accountBar, fmtDate, inviteForm, inviteTable, inviteUrlHtml, notices, roleLabel } from "./account.ts";
import { type Html, layout } from "./layout.ts";
import { isOfficer } from "./login.ts";

export interface MePageView {
  readonly union: Union;
  readonly origin: URL;
  readonly viewer: Member;
  /** [viewer, sponsor, ..., root] */
  readonly chain: readonly Member[];
  readonly recruits: readonly Member[];
  readonly invites: readonly Invite[];
  /** Open places in the viewer's invites, as the members domain counts them against the limit. */
  readonly placesHeld: number;
  /** Unused places of the member's welcome link, which a new invite may take. */
  readonly welcomePlaces: number;
  readonly created?: Invite;
  readonly notice?: string;
  readonly error?: string;
  readonly inviteValues?: { readonly uses?: string; readonly expires?: string };
  /** Whether the bylaws let the viewer open proposals. */
  readonly mayPropose: boolean;
}

export function mePage(v: MePageView): Html {
  const officer = isOfficer(v.viewer);
  // A new invite may take the welcome link's places, so they count as available.
  const remaining = Math.max(0, v.union.memberInviteLimit - v.placesHeld + v.welcomePlaces);
  const base = `/u/${v.union.slug}/me`;
  const sponsors = v.chain.slice(1);
  return layout({
    title: `Your membership: ${v.union.name}`,
    body: html`${accountBar(v.union, v.viewer, "me")}
<h1>${v.union.name}</h1>
${notices(v)}
<dl>
  <dt>You</dt><dd class="handle">${v.viewer.handle}</dd>
  <dt>Role</dt><dd>${roleLabel(v.viewer)}</dd>
  <dt>Member since</dt><dd>${fmtDate(v.viewer.joinedAt)}</dd>
  <dt>Below you</dt><dd>${v.viewer.subtreeSize} ${v.viewer.subtreeSize === 1 ? "member" : "members"}</dd>
</dl>

<section id="chain">
<h2>Your sponsor chain</h2>
${sponsors.length === 0
      ? html`<p class="muted">You are at the top of the tree.</p>`
      : html`<p class="muted">Who recruited you, up to the leader.</p>
<ol class="chain" data-testid="chain">
<li class="you">${v.viewer.handle} <span class="muted">(you)</span></li>
${sponsors.map((s) => html`<li>${s.handle ?? "(unclaimed)"}${s.role !== "member" ? html` <span class="badge">${roleLabel(s)}</span>` : ""}</li>`)}
</ol>`}
</section>

<section id="recruits">
<h2>Your recruits</h2>
${v.recruits.length === 0
      ? html`<p class="muted">No recruits yet. Share an invite link below.</p>`
      : html`<ul class="recruits" data-testid="recruits">${v.recruits.map((r) => html`<li>${r.handle} <span class="muted">joined ${fmtDate(r.joinedAt)}${r.subtreeSize > 0 ? html`, ${r.subtreeSize} below` : ""}</span></li>`)}</ul>`}
</section>

<section id="votes" data-testid="votes">
<h2>Votes</h2>
<p><a href="/u/${v.union.slug}/proposals" data-testid="proposals-link">The union's proposals</a>${v.mayPropose ? html` · <a href="/u/${v.union.slug}/proposals/new" data-testid="new-proposal">New proposal</a>` : ""}</p>
</section>

<section id="invites">
<h2>Your invites</h2>
${officer
      ? html`<p class="muted">As ${v.viewer.role === "leader" ? "the leader" : "an officer"} you may invite without limit.</p>`
      : html`<p data-testid="invite-allowance">Members may have invites open for <strong>${v.union.memberInviteLimit}</strong> people at a time. Yours are open for <strong>${v.placesHeld}</strong>${v.welcomePlaces > 0 ? html`, <strong>${v.welcomePlaces}</strong> of them on the welcome link you were sent` : ""}. You can invite <strong>${remaining}</strong> more ${remaining === 1 ? "person" : "people"}${v.welcomePlaces > 0 ? " now: a new invite takes its places from your welcome link, which keeps working for the rest" : ""}. Revoking an invite frees its unused places.</p>`}
${v.created
      ? html`<div class="card created" data-testid="created-invite"><p>New invite link, ready to share:</p><p><code class="url invite" data-testid="created-invite-url">${inviteUrlHtml(v.origin, v.union, v.created.code)}</code></p></div>`
      : ""}
${inviteForm({ action: `${base}/invites`, unlimited: officer, remaining: officer ? undefined : remaining, values: v.inviteValues })}
${inviteTable(v.invites, { origin: v.origin, union: v.union, revokeAction: (code) => `${base}/invites/${code}/revoke`, highlight: v.created?.code })}
</section>`,
  });
}
