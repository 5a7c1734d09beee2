import { html } from "hono/html";
import type { Proposal, Tally } from "../../bylaws/proposals.ts";
import { PROPOSAL_KINDS, type ProposalKind } from "../../bylaws/params.ts";
import type { SpendUnit } from "../../bylaws/proposing.ts";
import type { VotersRead } from "../../bylaws/turnout.ts";
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
  /** For a signed-in member: whether the bylaws allow delegating, and who votes for them on this kind when they do not. */
  readonly delegation?: { readonly allowed: boolean; readonly delegate?: string };
  /** Who voted (and how, when votes are public), or why this viewer is not shown. */
  readonly voters: VotersRead;
  /** A passed spend: what the treasury did with it, in one sentence. */
  readonly spend?: string;
}

function votersSection(v: ProposalView): Html {
  const r = v.voters;
  return html`<section id="voters" data-testid="voters"><h2>Who voted</h2>
${!r.ok
    ? html`<p class="muted" data-testid="voters-hidden">${r.refused === "not_member"
      ? "Members who sign in see who voted."
      : "This union shows its members to fewer people than you, so who voted is not shown to you either."}</p>`
    : html`<p class="muted" data-testid="voters-rule">${r.public ? "The bylaws make votes public: each member's ballot is shown." : "Members see who voted, not how."}${v.tally.delegatedVoters > 0 ? html` ${v.tally.delegatedVoters} more counted through a delegate.` : ""}</p>
${r.voters.length === 0
      ? html`<p data-testid="no-voters">Nobody has voted yet.</p>`
      : html`<ul class="voters" data-testid="voter-list">${r.voters.map((x) => html`<li data-member="${x.handle ?? x.memberId}"><span class="handle">${x.handle ?? "(unknown)"}</span>${x.choices ? html`: <span class="choice" data-testid="choice">${x.choices.join(", ")}</span>` : ""}</li>`)}</ul>`}`}
</section>`;
}

export function proposalPage(v: ProposalView): Html {
  const p = v.proposal;
  const base = `/u/${v.union.slug}/proposals/${p.number}`;
  return layout({
    title: `#${p.number} ${p.title}`,
    body: html`<article class="proposal">
<p class="muted small"><a href="/u/${v.union.slug}/proposals">All proposals</a></p>
<h1 data-testid="proposal-title">#${p.number} ${p.title}</h1>
<p class="muted">${p.kind} · ${p.state === "open" ? html`voting closes ${p.closesAt.toISOString().slice(0, 16).replace("T", " ")} UTC` : html`${p.state}: ${p.outcome?.reason ?? ""}`}</p>
${v.spend ? html`<p data-testid="spend-execution">${v.spend}</p>` : ""}
${v.error ? html`<p class="error" role="alert">${v.error}</p>` : ""}
${v.done ? html`<p class="notice" role="status" data-testid="voted">Your vote is recorded.</p>` : ""}
<div class="table-wrap"><table data-testid="tally" class="tally"><thead><tr><th>Option</th><th>Direct</th><th>Delegated</th></tr></thead>
<tbody>${v.tally.options.map((o) => html`<tr><td>${o.text}</td><td>${o.direct}</td><td>${o.delegated}</td></tr>`)}</tbody></table></div>
<p class="muted">${v.tally.voters} voted, ${v.tally.delegatedVoters} through a delegate, of ${v.tally.eligible} eligible; quorum ${v.tally.quorumPercent}%.</p>
${v.canVote ? html`<form method="post" action="${base}/vote" class="setup" data-testid="vote-form">
${p.options.map((o) => html`<label><input type="${p.multiple ? "checkbox" : "radio"}" name="option" value="${o}"${v.ballot?.includes(o) ? html` checked` : ""}> ${o}</label>`)}
<button type="submit">${v.ballot?.length ? "Change my vote" : "Vote"}</button>
</form>
${v.delegation?.allowed ? html`<p class="muted" data-testid="delegation-note">${v.delegation.delegate
      ? html`If you do not vote, your delegate <span class="handle">${v.delegation.delegate}</span> votes for you.`
      : html`Not voting? You can let another member vote for you.`} <a href="/u/${v.union.slug}/me#delegation">Delegation</a></p>` : ""}` : ""}
${votersSection(v)}
</article>`,
  });
}

export interface NewProposalView {
  readonly union: Union;
  /** The unit spends are typed in (the dues mint, with its decimals when known). */
  readonly unit: SpendUnit;
  readonly error?: string;
  /** What was sent, shown again after an error so nothing typed is lost. */
  readonly form?: Readonly<Record<string, string>>;
}

export const PROPOSAL_KIND_LABELS: Record<ProposalKind, string> = {
  resolution: "Resolution (yes / no / abstain)",
  amendment: "Amendment of the bylaws",
  election: "Election of the leader or an officer",
  recall: "Recall of the leader or an officer",
  spend: "Spend from the treasury",
};

/**
 * The form to open a proposal of any kind. Each kind's own fields are in a
 * fieldset the stylesheet hides unless that kind is chosen (with :has(); a
 * browser without it shows them all, each labelled, and the server ignores
 * the fields of other kinds).
 */
export function newProposalPage(v: NewProposalView): Html {
  const f = v.form ?? {};
  const kind: ProposalKind = (PROPOSAL_KINDS as readonly string[]).includes(f.kind ?? "") ? f.kind as ProposalKind : "resolution";
  const office = f.office === "leader" ? "leader" : "officer";
  const unitText = v.unit.known
    ? html`in whole units of the dues mint <code class="url">${v.unit.mint}</code> (up to ${v.unit.decimals} decimal places)`
    : v.unit.mint
    ? html`in base units of the dues mint <code class="url">${v.unit.mint}</code> (a whole number: the union's treasury does not hold this mint, so its decimals are unknown)`
    : html`in base units (a whole number: the bylaws name no dues mint)`;
  return layout({
    title: `New proposal · ${v.union.name}`,
    body: html`<article class="proposal">
<h1>Open a proposal</h1>
<p class="muted"><a href="/u/${v.union.slug}/proposals">All proposals</a> · <a href="/u/${v.union.slug}/bylaws">The bylaws</a></p>
${v.error ? html`<p class="error" role="alert" data-testid="proposal-error">${v.error}</p>` : ""}
<form method="post" action="/u/${v.union.slug}/proposals/new" class="setup proposal-form" data-testid="new-proposal-form">
<label>Kind <select name="kind">${PROPOSAL_KINDS.map((k) => html`<option value="${k}"${k === kind ? html` selected` : ""}>${PROPOSAL_KIND_LABELS[k]}</option>`)}</select></label>
<label>Title <input name="title" required maxlength="200" value="${f.title ?? ""}"></label>
<label>Text (Markdown) <textarea name="text" rows="5">${f.text ?? ""}</textarea></label>
<fieldset data-kind="amendment"><legend>Amendment</legend>
<label>Rules to change, one <code>key=value</code> a line (see <a href="/u/${v.union.slug}/bylaws#parameters">the bylaws</a>) <textarea name="params" rows="3">${f.params ?? ""}</textarea></label>
</fieldset>
<fieldset data-kind="election"><legend>Election</legend>
<label>Office <select name="office"><option value="officer"${office === "officer" ? html` selected` : ""}>An officer</option><option value="leader"${office === "leader" ? html` selected` : ""}>The leader</option></select></label>
<label>Portfolio (for an officer, e.g. Treasurer) <input name="portfolio" maxlength="120" value="${f.portfolio ?? ""}"></label>
<label>Candidates: members' handles, one a line (1 to 20; members approve any number of them) <textarea name="candidates" rows="3" placeholder="@ana@example.social">${f.candidates ?? ""}</textarea></label>
</fieldset>
<fieldset data-kind="recall"><legend>Recall</legend>
<label>Handle of the leader or officer to recall <input name="member" placeholder="@user@host" value="${f.member ?? ""}"></label>
</fieldset>
<fieldset data-kind="spend"><legend>Spend</legend>
<label>Amount, ${unitText} <input name="amount" inputmode="decimal" autocomplete="off" value="${f.amount ?? ""}"></label>
<label>Recipient (an address or a name) <input name="recipient" maxlength="200" value="${f.recipient ?? ""}"></label>
<label>Purpose <input name="purpose" maxlength="500" value="${f.purpose ?? ""}"></label>
</fieldset>
<button type="submit">Open the vote</button>
</form>
</article>`,
  });
}

export interface ProposalsListView {
  readonly union: Union;
  readonly proposals: readonly Proposal[];
  /** Whether the viewer may open one (the bylaws' proposers). */
  readonly mayPropose: boolean;
}

const when = (d: Date) => d.toISOString().slice(0, 16).replace("T", " ");

/** Every proposal of the union, open ones first, each with its state and outcome. */
export function proposalsListPage(v: ProposalsListView): Html {
  const open = v.proposals.filter((p) => p.state === "open");
  const closed = v.proposals.filter((p) => p.state !== "open");
  const row = (p: Proposal) => html`<li data-number="${p.number}" data-state="${p.state}"><a href="/u/${v.union.slug}/proposals/${p.number}">#${p.number} ${p.title}</a>
<span class="muted small">${p.kind} · ${p.state === "open" ? html`closes ${when(p.closesAt)} UTC` : html`<strong class="state">${p.state}</strong> ${when(p.closedAt ?? p.closesAt)} UTC${p.outcome ? html`: <span class="outcome">${p.outcome.reason}</span>` : ""}`}</span></li>`;
  return layout({
    title: `Proposals · ${v.union.name}`,
    body: html`<article class="proposals">
<h1>Proposals of <a href="/u/${v.union.slug}">${v.union.name}</a></h1>
<p class="muted">Members vote on each from their fediverse app (a poll) or here. The rules for passing are in <a href="/u/${v.union.slug}/bylaws">the bylaws</a>.</p>
${v.mayPropose ? html`<p><a href="/u/${v.union.slug}/proposals/new" class="button" data-testid="new-proposal">New proposal</a></p>` : ""}
<section id="open"><h2>Open</h2>
${open.length ? html`<ul class="proposal-list" data-testid="open-proposals">${open.map(row)}</ul>` : html`<p class="muted" data-testid="no-open">No vote is open.</p>`}
</section>
<section id="closed"><h2>Closed</h2>
${closed.length ? html`<ul class="proposal-list" data-testid="closed-proposals">${closed.map(row)}</ul>` : html`<p class="muted">None yet.</p>`}
</section>
</article>`,
  });
}
