import { html } from "hono/html";
import type { Proposal, Tally } from "../../bylaws/proposals.ts";
import type { Union } from "../../unions/unions.ts";
import { type Html, layout } from "./layout.ts";

export interface ProposalView {
  readonly union: Union;
  readonly proposal: Proposal;
  readonly tally: Tally;
  /** The signed-in member's own choices, when signed in (empty: not voted). */
  readonly ballot?: readonly string[];
  readonly canVote: boolean;
  readonly error?: string;
  readonly done?: boolean;
}

export function proposalPage(v: ProposalView): Html {
  const p = v.proposal;
  const base = `/u/${v.union.slug}/proposals/${p.number}`;
  return layout({
    title: `#${p.number} ${p.title}`,
    body: html`<article class="proposal">
<h1 data-testid="proposal-title">#${p.number} ${p.title}</h1>
<p class="muted">${p.kind} · ${p.state === "open" ? html`voting closes ${p.closesAt.toISOString().slice(0, 16).replace("T", " ")} UTC` : html`${p.state}: ${p.outcome?.reason ?? ""}`}</p>
${v.error ? html`<p class="error" role="alert">${v.error}</p>` : ""}
${v.done ? html`<p class="notice" role="status" data-testid="voted">Your vote is recorded.</p>` : ""}
<table data-testid="tally"><thead><tr><th>Option</th><th>Direct</th><th>Delegated</th></tr></thead>
<tbody>${v.tally.options.map((o) => html`<tr><td>${o.text}</td><td>${o.direct}</td><td>${o.delegated}</td></tr>`)}</tbody></table>
<p class="muted">${v.tally.voters} voted, ${v.tally.delegatedVoters} through a delegate, of ${v.tally.eligible} eligible; quorum ${v.tally.quorumPercent}%.</p>
${v.canVote ? html`<form method="post" action="${base}/vote" class="setup" data-testid="vote-form">
${p.options.map((o) => html`<label><input type="${p.multiple ? "checkbox" : "radio"}" name="option" value="${o}"${v.ballot?.includes(o) ? html` checked` : ""}> ${o}</label>`)}
<button type="submit">${v.ballot?.length ? "Change my vote" : "Vote"}</button>
</form>
<form method="post" action="/u/${v.union.slug}/delegation" class="setup" data-testid="delegate-form">
<input type="hidden" name="back" value="${base}"><input type="hidden" name="scope" value="all">
<label>Or let another member vote for me (where the bylaws allow it) <input name="delegate" placeholder="@user@host"></label>
<button type="submit" class="secondary">Delegate my vote</button>
</form>` : ""}
</article>`,
  });
}
