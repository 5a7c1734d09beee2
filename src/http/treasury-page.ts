import { html } from "hono/html";
import { formatUnits } from "../../solana/amounts.ts";
import type { TreasuryFlow, TreasuryReport } from "../../solana/treasury-report.ts";
import type { Union } from "../unions/unions.ts";
import type { TreasuryMove } from "../treasury/moves.ts";
import type { SpendExecution } from "../treasury/spends.ts";
import { type Html, layout } from "./pages/layout.ts";

/** What the page and its JSON form show: the chain's report, with payers named only where the roster is visible. */
export interface TreasuryView {
  readonly union: Union;
  readonly report: TreasuryReport | null;
  readonly ledger: "embedded" | "network";
  /** Member handles by id, present only when the viewer may see the roster. */
  readonly names: ReadonlyMap<string, string> | null;
  readonly txUrl: (signature: string) => string;
  readonly addressUrl: (address: string) => string;
  readonly rpcUrl: string;
  readonly duesPayPath: string;
  /** Moves of the treasury to a new multisig (signers or threshold changed), oldest first. */
  readonly moves: readonly TreasuryMove[];
  /** Spends members voted, and what the treasury did with each (src/treasury/spends.ts), by proposal number. */
  readonly spends: readonly SpendExecution[];
}

/** The spend proposal an outflow paid, found by its transaction's signature. */
function spendOf(view: TreasuryView, f: TreasuryFlow): SpendExecution | undefined {
  return f.direction === "out" ? view.spends.find((s) => s.transfer?.signature === f.signature && s.state === "executed") : undefined;
}

const SPEND_STATE: Record<SpendExecution["state"], string> = {
  queued: "approved; the treasury is preparing it", refused: "not sent", pending: "awaiting officers' signatures", ready: "signed; being sent", executed: "sent", failed: "failed; nothing moved",
};

function payerOf(view: TreasuryView, f: TreasuryFlow): string | null {
  if (f.direction === "out") return null;
  if (f.kind !== "dues" || f.memberId === null) return null;
  return view.names ? (view.names.get(f.memberId) ?? null) : null;
}

export function treasuryJson(view: TreasuryView) {
  const r = view.report;
  if (!r) return { union: view.union.slug, treasury: null };
  const amount = (a: bigint) => ({ baseUnits: a.toString(), display: formatUnits(a, r.decimals) });
  return {
    union: view.union.slug,
    ledger: view.ledger,
    rpc: view.rpcUrl,
    treasury: {
      address: r.tokenAccount, mint: r.mint, tokenProgram: r.tokenProgram, decimals: r.decimals,
      authority: r.authority, threshold: r.threshold, signers: r.signers,
      balance: amount(r.balance), balanceSource: "read from the chain when this was served",
      badgeMint: r.badgeMint, roleBadgeMints: r.roleBadgeMints,
    },
    payersShown: view.names !== null,
    flows: r.flows.map((f) => ({
      signature: f.signature, url: view.txUrl(f.signature), direction: f.direction, amount: amount(f.amount),
      kind: f.kind, reason: f.reason, at: f.blockTime === null ? null : new Date(f.blockTime * 1000).toISOString(),
      payer: payerOf(view, f), to: f.direction === "out" ? f.counterparty : null, spendProposal: spendOf(view, f)?.number ?? null,
    })),
    spends: view.spends.map((s) => ({
      proposal: s.number, amount: amount(s.amount), recipient: s.recipient, state: s.state, reason: s.reason,
      transfer: s.transfer ? { id: s.transfer.id, signature: s.transfer.signature, signed: s.transfer.signed.length, required: s.transfer.required.length } : null,
    })),
    truncated: r.truncated,
    moves: view.moves.map((m) => ({
      state: m.state, at: m.updatedAt.toISOString(), signature: m.signature, url: m.signature ? view.txUrl(m.signature) : null,
      amount: m.amount === null ? null : amount(m.amount),
      from: { authority: m.from.authority, tokenAccount: m.from.tokenAccount, threshold: m.from.threshold, signers: m.from.signers },
      to: { authority: m.to.authority, tokenAccount: m.to.tokenAccount, threshold: m.to.threshold, signers: m.to.signers },
    })),
  };
}

const short = (s: string) => (s.length > 20 ? `${s.slice(0, 8)}…${s.slice(-8)}` : s);

export function treasuryPage(view: TreasuryView): Html {
  const r = view.report;
  const u = view.union;
  if (!r) {
    return layout({ title: `Treasury of ${u.name}`, body: html`<article class="treasury"><h1>Treasury of ${u.name}</h1><p data-testid="no-treasury">This union has no treasury yet.</p></article>` });
  }
  const fmt = (a: bigint) => formatUnits(a, r.decimals);
  const inflow = r.flows.filter((f) => f.direction === "in").reduce((s, f) => s + f.amount, 0n);
  const outflow = r.flows.filter((f) => f.direction === "out").reduce((s, f) => s + f.amount, 0n);
  const label = (f: TreasuryFlow) => f.direction === "out" ? "Paid out" : f.kind === "dues" ? "Dues" : f.kind === "unmatched" ? "Unmatched payment" : "Received";
  return layout({
    title: `Treasury of ${u.name}`,
    body: html`<article class="treasury">
<h1>Treasury of ${u.name}</h1>
<p class="muted">Every figure here is read from the ${view.ledger === "embedded" ? "server's embedded Solana ledger" : "Solana network"}; each transaction links to where anyone can check it. A member pays dues with the Solana Pay link <code class="url">${view.duesPayPath}?member=@you@your.server</code> (also a Solana Action), or with <code>muster dues pay</code>.</p>
<dl class="treasury-facts">
<dt>Balance</dt><dd data-testid="balance" data-base-units="${r.balance.toString()}">${fmt(r.balance)} tokens</dd>
<dt>Treasury account</dt><dd><a data-testid="address" href="${view.addressUrl(r.tokenAccount)}"><code class="url">${r.tokenAccount}</code></a></dd>
<dt>Token</dt><dd><code class="url" data-testid="mint">${r.mint}</code></dd>
<dt>Authority</dt><dd><code class="url" data-testid="authority">${r.authority}</code></dd>
<dt>Signers</dt><dd data-testid="signers">${r.threshold} of ${r.signers.length}: ${r.signers.map((s, i) => html`${i ? ", " : ""}<code class="url">${s}</code>`)}</dd>
<dt>Member badge</dt><dd data-testid="badge-mint">${r.badgeMint ? html`<code class="url">${r.badgeMint}</code>` : "none minted yet"}</dd>
<dt>Role badges</dt><dd data-testid="role-badge-mints">${r.roleBadgeMints.leader || r.roleBadgeMints.officer
      ? (["leader", "officer"] as const).filter((k) => r.roleBadgeMints[k]).map((k, i) => html`${i ? html`<br>` : ""}${k}: <code class="url">${r.roleBadgeMints[k]}</code>`)
      : "none minted yet"}</dd>
<dt>Shown below</dt><dd data-testid="totals" data-in="${inflow.toString()}" data-out="${outflow.toString()}">${fmt(inflow)} in, ${fmt(outflow)} out${r.truncated ? " (newest transactions only)" : ""}</dd>
</dl>
<h2>Inflows and outflows</h2>
${r.flows.length === 0 ? html`<p class="muted" data-testid="no-flows">Nothing has moved yet.</p>` : ""}
<ol class="flows" data-testid="flows">${r.flows.map((f) => {
      const payer = payerOf(view, f);
      return html`<li data-signature="${f.signature}" data-direction="${f.direction}" data-amount="${f.amount.toString()}" data-kind="${f.kind}">
<strong>${f.direction === "in" ? "+" : "−"}${fmt(f.amount)}</strong> · ${label(f)}${spendOf(view, f) ? html` (<a data-testid="flow-spend" href="/u/${u.slug}/proposals/${spendOf(view, f)!.number}">spend #${spendOf(view, f)!.number}</a>)` : ""}${f.direction === "in" ? html` from <span data-testid="payer">${payer ?? (f.kind === "dues" ? "a member (the roster is not public)" : "an unidentified wallet")}</span>` : html` to <code class="url">${short(f.counterparty)}</code>`}${f.reason ? html` <span class="small muted">(${f.reason})</span>` : ""}
<br><span class="small">${f.blockTime === null ? "" : new Date(f.blockTime * 1000).toISOString().slice(0, 16).replace("T", " ") + " UTC · "}<a href="${view.txUrl(f.signature)}" title="${f.signature}"><code class="hash">${short(f.signature)}</code></a></span></li>`;
    })}</ol>
${view.moves.length === 0 ? "" : html`<h2>Moves to a new multisig</h2>
<p class="muted small">An SPL multisig's signers and threshold are fixed when it is made: when officers or the bylaws change them, the whole balance moves to a new multisig, signed as the old one required.</p>
<ol class="flows" data-testid="moves">${view.moves.map((m) => html`<li data-state="${m.state}"${m.signature ? html` data-signature="${m.signature}"` : ""}>
<strong>${m.from.threshold} of ${m.from.signers.length} → ${m.to.threshold} of ${m.to.signers.length}</strong> · ${m.state === "executed" ? html`${m.amount === null ? "" : fmt(m.amount)} tokens moved` : m.state === "failed" ? "failed; nothing moved" : "awaiting signatures"}
<br><span class="small">from <code class="url">${short(m.from.authority)}</code> to <code class="url" title="${m.to.authority}">${short(m.to.authority)}</code>${m.signature ? html` · <a href="${view.txUrl(m.signature)}" title="${m.signature}"><code class="hash">${short(m.signature)}</code></a>` : ""}</span></li>`)}</ol>`}
${view.spends.length === 0 ? "" : html`<h2>Spends voted by members</h2>
<ol class="flows" data-testid="spends">${view.spends.map((s) => html`<li data-proposal="${s.number}" data-state="${s.state}">
<strong>${fmt(s.amount)}</strong> to <code class="url">${short(s.recipient)}</code> · <a href="/u/${u.slug}/proposals/${s.number}">proposal #${s.number}</a> · ${SPEND_STATE[s.state]}${s.state === "pending" && s.transfer ? html` (${s.transfer.signed.length} of ${s.transfer.required.length} signed)` : ""}${s.reason ? html` <span class="small muted">(${s.reason})</span>` : ""}</li>`)}</ol>`}
<p class="small muted">The same, as JSON: <a href="/u/${u.slug}/treasury.json">treasury.json</a>. RPC endpoint: <code class="url">${view.rpcUrl}</code></p>
</article>`,
  });
}
