import { html } from "hono/html";
import type { Member } from "../../members/members.ts";
import type { TreasuryTransfer } from "../../treasury/treasury.ts";
import type { Union } from "../../unions/unions.ts";
import { accountBar, consoleTabs, notices } from "./account.ts";
import { type Html, layout } from "./layout.ts";

export interface ConsoleTreasuryView {
  readonly union: Union;
  readonly viewer: Member;
  /** The officer's proven wallet; null when they have none (they cannot co-sign). */
  readonly wallet: string | null;
  readonly transfers: readonly TreasuryTransfer[];
  readonly hasTreasury: boolean;
  readonly threshold: number | null;
  readonly signerCount: number | null;
  readonly amount: (a: bigint) => string;
  readonly txUrl: (signature: string) => string;
  readonly notice?: string;
  readonly error?: string;
}

const STATE: Record<TreasuryTransfer["state"], string> = {
  pending: "collecting signatures",
  ready: "signed by all; being sent",
  executed: "executed",
  failed: "failed",
};

const short = (s: string) => (s.length > 20 ? `${s.slice(0, 8)}…${s.slice(-8)}` : s);

/**
 * Treasury transactions officers co-sign from their own wallets
 * (public/treasury-cosign.js): the page lists what awaits signatures; the
 * button has the browser's wallet sign the transaction's message.
 */
export function consoleTreasuryPage(v: ConsoleTreasuryView): Html {
  const base = `/u/${v.union.slug}/console/treasury`;
  return layout({
    title: `Treasury · ${v.union.name} console`,
    head: html`<script src="/public/treasury-cosign.js" defer></script>`,
    body: html`${accountBar(v.union, v.viewer, "console")}
<h1>${v.union.name} <span class="muted">console</span></h1>
${consoleTabs(v.union, "treasury")}
${notices(v)}
<section class="treasury-cosign">
<h2>Treasury transactions</h2>
${v.hasTreasury
      ? html`<p class="muted">Moving the treasury takes <strong data-testid="threshold">${v.threshold} of ${v.signerCount}</strong> signatures: the server's key and officers' proven wallets. A transaction waits here until everyone it names has signed; then it is sent once. The public figures are on the <a href="/u/${v.union.slug}/treasury">transparency page</a>.</p>`
      : html`<p class="muted" data-testid="no-treasury">This union has no treasury yet.</p>`}
<p data-testid="your-wallet">${v.wallet
      ? html`You sign with your proven wallet <code class="url">${v.wallet}</code>.`
      : html`You have no proven wallet: <a href="/u/${v.union.slug}/me#wallet">link one on your page</a> to co-sign.`}</p>
<p class="small" data-cosign-status role="status" aria-live="polite"></p>
${v.transfers.length === 0 ? html`<p class="muted" data-testid="no-transfers">No treasury transactions yet.</p>` : ""}
<ol class="cosign-list" data-testid="transfers">${v.transfers.map((t) => {
      const mine = v.wallet !== null && t.required.includes(v.wallet);
      const signedByMe = v.wallet !== null && t.signed.includes(v.wallet);
      return html`<li data-transfer="${t.id}" data-state="${t.state}">
<strong>#${t.id}</strong> ${t.memo ? html`${t.memo} · ` : ""}${v.amount(t.amount)} tokens to <code class="url" title="${t.destination}">${short(t.destination)}</code>
<br><span class="small">${STATE[t.state]} · signed ${t.signed.length} of ${t.required.length}${t.signature ? html` · <a href="${v.txUrl(t.signature)}" title="${t.signature}"><code class="hash">${short(t.signature)}</code></a>` : ""}${t.reason ? html` · <span class="muted">${t.reason}</span>` : ""}</span>
${t.state === "pending" && mine && !signedByMe
        ? html`<br><button type="button" data-cosign="${base}/${t.id}" data-testid="cosign-${t.id}">Sign with my wallet</button>`
        : t.state === "pending" && signedByMe ? html`<br><span class="small" data-testid="signed-${t.id}">You have signed.</span>` : ""}
</li>`;
    })}</ol>
</section>`,
  });
}
