import { html, raw } from "hono/html";
import type { Crowdfund } from "../../crowdfunds/crowdfunds.ts";
import type { Pledge } from "../../crowdfunds/pledges.ts";
import type { SettlementTx } from "../../crowdfunds/settlement.ts";
import type { Union } from "../../unions/unions.ts";
import { type Html, layout } from "./layout.ts";

export interface CrowdfundView {
  readonly union: Union;
  readonly crowdfund: Crowdfund;
  /** Amount formatter for the mint (decimals). */
  readonly fmt: (amount: bigint) => string;
  readonly pledges: readonly Pledge[];
  /** Pledgers' handles by member id, present only when the union's roster rule lets this visitor see members. */
  readonly names: ReadonlyMap<string, string> | null;
  /** Read from the chain: a balance, "closed", or null when no ledger answers here. */
  readonly vaultBalance: bigint | "closed" | null;
  readonly transactions: readonly SettlementTx[];
  readonly memo: string;
  /** The viewer is an officer: sees why a refund could not be made. */
  readonly officer?: boolean;
}

const STATE_TEXT: Record<Crowdfund["state"], string> = {
  proposed: "Proposed, waiting for the officers", approved: "Approved, its vault is being opened", open: "Open for pledges",
  succeeded: "Goal reached, paying out", settled: "Goal reached and paid out", failed: "Goal missed, refunding", refunded: "Goal missed, every pledge refunded",
  rejected: "Rejected by the officers",
};

function pledgeStatus(v: CrowdfundView, p: Pledge): Html | string {
  // A refund its source could not take: the tokens sit in the treasury for the pledger; officers see why.
  if (p.refundFailure !== null) {
    return v.officer ? html`<span data-testid="refund-failed">refund failed: ${p.refundFailure}</span>` : "held by the union for the pledger (refund failed)";
  }
  if (p.status === "matched") return p.refundSignature ? "refunded" : "counted";
  return html`refused: ${p.reason}${p.refundSignature ? " (returned)" : ""}`;
}

export function crowdfundPage(v: CrowdfundView): Html {
  const cf = v.crowdfund;
  const matched = v.pledges.filter((p) => p.status === "matched");
  const pledged = matched.reduce((s, p) => s + p.amount, 0n);
  const percent = cf.goal > 0n ? Number((pledged * 100n) / cf.goal) : 0;
  const who = (p: Pledge) => (p.memberId && v.names?.get(p.memberId)) || (p.memberId ? "a member" : "not a member");
  return layout({
    title: `${cf.title} · crowdfund #${cf.seq} · ${v.union.name}`,
    body: html`<article class="crowdfund" data-testid="crowdfund">
<p class="kicker"><a href="/u/${v.union.slug}">${v.union.name}</a> · Crowdfund #${cf.seq}</p>
<h1>${cf.title}</h1>
<p class="notice" data-testid="state">${STATE_TEXT[cf.state]}</p>
<div class="body">${raw(cf.bodyHtml)}</div>
<dl>
  <dt>Goal</dt><dd data-testid="goal">${v.fmt(cf.goal)}</dd>
  <dt>Pledged</dt><dd data-testid="pledged">${v.fmt(pledged)} (${percent} %) from ${matched.length} pledge${matched.length === 1 ? "" : "s"}</dd>
  <dt>Deadline</dt><dd><time datetime="${cf.deadline.toISOString()}">${cf.deadline.toISOString().slice(0, 16).replace("T", " ")} UTC</time></dd>
  <dt>Beneficiary</dt><dd><code class="url">${cf.beneficiary}</code></dd>
  <dt>Union's cut</dt><dd>${cf.cutBps === null ? "set when approved" : `${cf.cutBps / 100} % of the total, rounded down`}${cf.cut !== null ? html` (${v.fmt(cf.cut)})` : ""}</dd>
  <dt>Vault</dt><dd>${cf.vault ? html`<code class="url" data-testid="vault">${cf.vault}</code>` : "not yet opened"}</dd>
  <dt>Vault balance (read from the chain)</dt><dd data-testid="vault-balance">${v.vaultBalance === null ? "not available here" : v.vaultBalance === "closed" ? "closed" : v.fmt(v.vaultBalance)}</dd>
</dl>
${cf.state === "open" && cf.vault ? html`<section class="card" data-testid="how-to-pledge"><h2>Pledge</h2>
<p>From your wallet, send tokens of mint <code class="url">${cf.mint}</code> to the vault above, with this memo and the reference key
<code class="url">${cf.reference}</code> on the transfer:</p>
<p><code class="url" data-testid="memo">${v.memo}</code></p>
<p class="muted small">With a keypair file: <code class="url">muster crowdfund pledge ${v.union.slug} ${cf.seq} &lt;your handle&gt; --keypair wallet.json --amount 10</code>.
If the goal is missed, every pledge goes back to the account it came from.</p></section>` : ""}
<section data-testid="pledges"><h2>Pledges</h2>
${v.pledges.length === 0 ? html`<p class="muted">No pledges yet.</p>` : html`<div class="table-wrap"><table>
<thead><tr><th>Who</th><th>Amount</th><th>Status</th><th>Transaction</th></tr></thead>
<tbody>${v.pledges.map((p) => html`<tr><td>${who(p)}</td><td>${v.fmt(p.amount)}</td><td>${pledgeStatus(v, p)}</td><td><code class="url">${p.signature}</code></td></tr>`)}</tbody>
</table></div>`}
${v.names === null && v.pledges.length > 0 ? html`<p class="muted small">Pledgers' names follow the union's member-list setting.</p>` : ""}
</section>
${v.transactions.length ? html`<section data-testid="settlement"><h2>Settlement</h2>
<div class="table-wrap"><table><thead><tr><th>Transaction</th><th>Amount</th><th>State</th><th>Signature</th></tr></thead>
<tbody>${v.transactions.map((t) => html`<tr><td>${t.kind === "payout" ? "payout and cut, vault closed" : t.kind === "refund" ? `refunds (${t.pledges.length})` : "vault closed"}</td><td>${v.fmt(t.amount)}</td><td>${t.state}</td><td><code class="url">${t.signature}</code></td></tr>`)}</tbody>
</table></div></section>` : ""}
</article>`,
  });
}

export interface CrowdfundListItem {
  readonly seq: number;
  readonly title: string;
  readonly state: Crowdfund["state"];
  readonly goal: string;
}

/** The union page's list of its crowdfunds (those members may see: not proposals or rejections). */
export function crowdfundList(union: Union, items: readonly CrowdfundListItem[]): Html | "" {
  if (items.length === 0) return "";
  return html`<section data-testid="crowdfunds"><h2>Crowdfunds</h2>
<ul class="recent">${items.map((i) => html`<li><a href="/u/${union.slug}/crowdfunds/${i.seq}">${i.title}</a> <span class="muted small">#${i.seq} · goal ${i.goal} · ${STATE_TEXT[i.state]}</span></li>`)}</ul>
</section>`;
}
