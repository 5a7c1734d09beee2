import { html } from "hono/html";
import type { Invite } from "../../members/invites.ts";
import type { Union } from "../../unions/unions.ts";
import { membersVisibility, VISIBILITY_TEXT } from "../../members/visibility.ts";
import { type Html, layout } from "./layout.ts";

export interface JoinView {
  readonly union: Union;
  readonly host: string;
  readonly leader: string | null;
  readonly sponsor: string | null;
  readonly invite: Invite | undefined;
  /** Why the invite cannot be used, if it cannot. */
  readonly problem?: string;
  readonly error?: string;
  readonly handle?: string;
}

const POLICY: Record<Union["joinPolicy"], string> = {
  invite: "Members join by invitation only; every member is recruited by a sponsor.",
  approval: "Members join by invitation, or by a follow request that the officers approve.",
  open: "Anyone who follows joins; invited members join under the member who invited them.",
};

export function bylawsSummary(union: Union): Html {
  return html`<ul class="bylaws">
<li>${POLICY[union.joinPolicy]}</li>
<li>Each member may invite up to ${union.memberInviteLimit} people; officers invite without limit.</li>
<li data-testid="roster-visibility">Who can see the member list and the sponsor tree, and so that you are a member: ${VISIBILITY_TEXT[membersVisibility(union)]}</li>
<li>These rules change only by a member vote. <a href="/u/${union.slug}/bylaws" data-testid="bylaws-link">Read the bylaws</a>.</li>
</ul>`;
}

export function joinPage(v: JoinView): Html {
  const handle = `@${v.union.slug}@${v.host}`;
  return layout({
    title: `Join ${v.union.name}`,
    body: html`<article class="join">
<h1>Join ${v.union.name}</h1>
<p class="purpose">${v.union.purpose}</p>
<dl>
  <dt>Union</dt><dd class="handle">${handle}</dd>
  <dt>Leader</dt><dd>${v.leader ?? "not yet named"}</dd>
  ${v.sponsor ? html`<dt>Invited by</dt><dd data-testid="sponsor">${v.sponsor}</dd>` : ""}
</dl>
<h2>Bylaws</h2>
${bylawsSummary(v.union)}
${v.problem
      ? html`<p class="error" role="alert">This invite cannot be used: ${v.problem}.</p>`
      : html`<h2>Your fediverse account</h2>
<p>Enter the account you will follow the union from, e.g. <code>@you@mastodon.social</code>. You will be sent to your own server to confirm the follow.</p>
${v.error ? html`<p class="error" role="alert">${v.error}</p>` : ""}
<form method="post" class="setup">
  <label>Your handle <input name="handle" required placeholder="@you@mastodon.social" value="${v.handle ?? ""}" autocomplete="username"></label>
  <button type="submit">Continue to my server</button>
</form>`}
</article>`,
  });
}

export function followNextPage(union: Union, host: string, handle: string, actorId: URL): Html {
  const unionHandle = `@${union.slug}@${host}`;
  return layout({
    title: `Follow ${union.name}`,
    body: html`<article class="join">
<h1>One more step</h1>
<p>Your invite to <strong>${union.name}</strong> is reserved for <strong data-testid="claimed">${handle}</strong> for 24 hours.</p>
<p>Now follow the union from that account: search for <code data-testid="union-handle">${unionHandle}</code> in your app (or paste <code>${actorId.href}</code>) and press <em>Follow</em>.</p>
<p>When your follow arrives, the union accepts it and sends you a welcome message with your own invite link.</p>
</article>`,
  });
}

export function joinedPage(union: Union, handle: string): Html {
  return layout({
    title: `Welcome to ${union.name}`,
    body: html`<article class="join"><h1>Welcome to ${union.name}</h1>
<p data-testid="joined">${handle} is now a member. Your follow request has been accepted; a welcome message is on its way to you.</p></article>`,
  });
}
