import { html, raw } from "hono/html";
import type { Invite } from "../../members/invites.ts";
import type { Member } from "../../members/members.ts";
import type { Union } from "../../unions/unions.ts";
import { accountBar, fmtDate, inviteForm, inviteTable, inviteUrlHtml, notices, roleLabel } from "./account.ts";
import { type Html, layout } from "./layout.ts";
import { isOfficer } from "./login.ts";
import type { DelegationState } from "../../bylaws/proposing.ts";
import type { DelegationScope } from "../../bylaws/proposals.ts";
import type { DuesPayOffer } from "../dues-link.ts";

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
  /** How to pay dues (null: the union takes none, or has no treasury yet). */
  readonly dues?: DuesPayOffer | null;
  /** Whether the bylaws let the viewer open proposals. */
  readonly mayPropose: boolean;
  readonly delegation: DelegationState;
  /** What the delegation form was sent with, shown again after a refusal. */
  readonly delegationValues?: { readonly scope?: string; readonly delegate?: string };
}

const SCOPE_LABELS: Record<DelegationScope, string> = {
  all: "All proposals",
  resolution: "Resolutions",
  amendment: "Amendments",
  election: "Elections",
  recall: "Recalls",
  spend: "Spends",
};

function delegationSection(v: MePageView): Html {
  const d = v.delegation;
  const action = `/u/${v.union.slug}/me/delegation`;
  if (!d.allowed) {
    return html`<section id="delegation" data-testid="delegation"><h2>Delegating your vote</h2>
<p class="muted" data-testid="delegation-off">The <a href="/u/${v.union.slug}/bylaws#parameters">bylaws</a> do not allow delegating votes: every member votes for themselves.</p></section>`;
  }
  const scope = v.delegationValues?.scope ?? "all";
  const delegate = v.delegationValues?.delegate ?? d.suggested?.handle ?? "";
  return html`<section id="delegation" data-testid="delegation"><h2>Delegating your vote</h2>
<p class="muted">When you do not vote yourself, your delegate's ballot counts for you (and their delegate's, if they did not vote either). A delegation for one kind of proposal wins over one for all proposals. Change or withdraw it at any time: votes still open are counted again, closed ones keep their result.</p>
${d.current.length
    ? html`<ul class="delegations" data-testid="delegations">${d.current.map((x) => html`<li data-scope="${x.scope}">${SCOPE_LABELS[x.scope]}: <span class="handle" data-testid="delegate">${x.delegate.handle ?? "(unclaimed)"}</span>
<form method="post" action="${action}" class="inline"><input type="hidden" name="scope" value="${x.scope}"><input type="hidden" name="withdraw" value="1"><button type="submit" class="link" data-testid="withdraw">Withdraw</button></form></li>`)}</ul>`
    : html`<p data-testid="no-delegation">You have not delegated your vote.</p>`}
<form method="post" action="${action}" class="row" data-testid="delegate-form">
<label>For <select name="scope">${(Object.keys(SCOPE_LABELS) as DelegationScope[]).map((k) => html`<option value="${k}"${k === scope ? html` selected` : ""}>${SCOPE_LABELS[k]}</option>`)}</select></label>
<label>Delegate${d.suggested ? html` <span class="muted small">(your sponsor, unless you choose another member)</span>` : ""} <input name="delegate" placeholder="@user@host" value="${delegate}"></label>
<button type="submit">Delegate my vote</button>
</form>
</section>`;
}

export function mePage(v: MePageView): Html {
  const officer = isOfficer(v.viewer);
  // A new invite may take the welcome link's places, so they count as available.
  const remaining = Math.max(0, v.union.memberInviteLimit - v.placesHeld + v.welcomePlaces);
  const base = `/u/${v.union.slug}/me`;
  const sponsors = v.chain.slice(1);
  return layout({
    title: `Your membership: ${v.union.name}`,
    head: html`<script src="/public/wallet-standard.js" defer></script><script src="/public/wallet-link.js" defer></script><script src="/public/dues-pay.js" defer></script>`,
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
${v.dues ? html`
<section id="dues" data-testid="dues">
<h2>Dues</h2>
<p>The dues are ${v.dues.display} a period, paid from any Solana wallet.</p>
<p><a class="button" href="${v.dues.link}" data-testid="dues-pay-link">Pay ${v.dues.display} with a wallet app</a>
<button type="button" data-dues-pay="${v.dues.requestUrl}">Pay with the wallet in this browser</button></p>
<figure class="qr" data-testid="dues-qr">${raw(v.dues.qrSvg)}<figcaption class="muted small">Or scan this with your phone's wallet (Solana Pay).</figcaption></figure>
<p class="muted" data-dues-status role="status"></p>
</section>` : ""}

<section id="votes" data-testid="votes">
<h2>Votes</h2>
<p><a href="/u/${v.union.slug}/proposals" data-testid="proposals-link">The union's proposals</a>${v.mayPropose ? html` · <a href="/u/${v.union.slug}/proposals/new" data-testid="new-proposal">New proposal</a>` : ""}</p>
</section>

${delegationSection(v)}

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
