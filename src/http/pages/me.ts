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
  /** The member's linked wallet and, when proven, the signed challenge. */
  readonly wallet?: { readonly wallet: string; readonly proof: { readonly message: string; readonly signature: string } | null } | null;
}

export function mePage(v: MePageView): Html {
  const officer = isOfficer(v.viewer);
  // A new invite may take the welcome link's places, so they count as available.
  const remaining = Math.max(0, v.union.memberInviteLimit - v.placesHeld + v.welcomePlaces);
  const base = `/u/${v.union.slug}/me`;
  const sponsors = v.chain.slice(1);
  return layout({
    title: `Your membership: ${v.union.name}`,
    head: html`<script src="/public/wallet-link.js" defer></script>`,
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

<section id="wallet">
<h2>Your wallet</h2>
${v.wallet
      ? html`<p data-testid="wallet">Linked: <code class="url">${v.wallet.wallet}</code> ${v.wallet.proof ? html`<span class="badge">proven</span>` : html`<span class="muted">(linked by the operator, without proof)</span>`}</p>
${v.wallet.proof ? html`<details data-testid="wallet-proof"><summary>The signed proof (anyone can check it with the address)</summary><pre class="proof">${v.wallet.proof.message}</pre><p>Signature: <code class="url">${v.wallet.proof.signature}</code></p></details>` : ""}`
      : html`<p class="muted">No wallet linked. Your membership badge is minted to the wallet you link.</p>`}
<p><button type="button" data-wallet-link="${base}/wallet">${v.wallet ? "Link another wallet" : "Link a wallet"}</button></p>
<p class="muted" data-wallet-status role="status"></p>
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
