import type { Context, Hono } from "hono";
import { html } from "hono/html";
import type { Kysely } from "kysely";
import type { DB } from "../db/schema.ts";
import { MemberError } from "../members/members.ts";
import {
  answerOffer, endRelationship, listRelationships, type Relay, RELAYS, type Relationship, RelationshipError, type RelationshipDeps,
} from "../relationships/relationships.ts";
import { decideFeatureRequest, FeaturedError, type FeatureStamp, listStamps, withdrawStamp } from "../relationships/featured.ts";
import type { By } from "../members/members.ts";
import type { Union } from "../unions/unions.ts";

/** Offers another union an alliance, found by handle or URL on any server (injected: the lookup is federation's). */
export type ProposeAlliance = (union: Union, by: By, target: string, relay: Relay, proposalId?: string) => Promise<Relationship>;
import type { Gate, Viewer } from "./members-web.ts";
import { accountBar, consoleTabs, notices } from "./pages/account.ts";
import { type Html, layout } from "./pages/layout.ts";

// The console's "Other unions" section: offers other unions sent (accept or
// reject), this union's allies, parent and chapters (end), and a form to
// propose an alliance by handle or URL. Under member_vote bylaws the
// proposal number that ratified the step goes with it.

export interface RelationshipsWebDeps {
  readonly db: Kysely<DB>;
  readonly relationships: RelationshipDeps;
  readonly gate: (c: Context, officersOnly: boolean) => Promise<Gate>;
  readonly propose?: ProposeAlliance;
}

const DONE: Record<string, string> = {
  proposed: "Proposed: the other union's officers have been sent the offer.",
  accepted: "Accepted: the other union has been told, and so have your members.",
  rejected: "Rejected: the other union has been told.",
  ended: "Ended: the other union has been sent an Undo, and your members are told.",
  "listing-accepted": "Consent given: they may list this union; the stamp has been sent.",
  "listing-rejected": "Refused: they have been told.",
  "listing-withdrawn": "Consent withdrawn: the stamp no longer verifies, and they have been told.",
};

const KIND_TEXT = { ally: "Ally", parent: "Parent union", chapter: "Chapter" } as const;
const RELAY_TEXT: Record<Relay, string> = {
  both: "both: each relays the other's calls",
  theirs: "theirs: we relay their calls",
  ours: "ours: they relay our calls",
  none: "none",
};

export function mountRelationshipsWeb(app: Hono, deps: RelationshipsWebDeps): void {
  async function render(c: Context, v: Viewer, extra: { error?: string; status?: 400 | 403 | 404 | 409; values?: ProposeValues } = {}) {
    const rels = await listRelationships(deps.db, v.union.id, { states: ["offered", "received", "active"] });
    const stamps = (await listStamps(deps.db, v.union.id)).filter((s) => s.state === "pending" || s.state === "accepted");
    return c.html(consoleUnionsPage(v, rels, stamps, { notice: DONE[c.req.query("done") ?? ""], error: extra.error }, extra.values ?? {}, !!deps.propose), extra.status ?? 200);
  }

  app.post("/u/:slug/console/unions/propose", async (c) => {
    const g = await deps.gate(c, true);
    if (!g.ok) return g.res;
    const form = await c.req.parseBody();
    const values: ProposeValues = { target: String(form.target ?? "").trim(), relay: String(form.relay ?? "both"), proposal: String(form.proposal ?? "").trim() };
    if (!deps.propose) return render(c, g.viewer, { error: "Proposing is not available on this server.", status: 409, values });
    if (!values.target) return render(c, g.viewer, { error: "Name the union: its handle (@union@host) or its URL.", status: 400, values });
    if (!(RELAYS as readonly string[]).includes(values.relay!)) return render(c, g.viewer, { error: `Relaying is one of ${RELAYS.join(", ")}.`, status: 400, values });
    try {
      await deps.propose(g.viewer.union, { kind: "member", memberId: g.viewer.member.id }, values.target, values.relay as Relay, values.proposal || undefined);
      return c.redirect(`/u/${g.viewer.union.slug}/console/unions?done=proposed`, 303);
    } catch (e) {
      if (!(e instanceof RelationshipError) && !(e instanceof MemberError)) throw e;
      const status = e.code === "forbidden" ? 403 : e.code === "not_found" ? 404 : e.code === "invalid" ? 400 : 409;
      return render(c, g.viewer, { error: e.message, status, values });
    }
  });

  app.get("/u/:slug/console/unions", async (c) => {
    const g = await deps.gate(c, true);
    return g.ok ? render(c, g.viewer) : g.res;
  });

  /**
   * A console button: an officer's step, then back to the tab with a notice,
   * or the tab again with the domain's refusal and its status.
   */
  function officerStep(step: (c: Context, v: Viewer, by: By) => Promise<void>, done: string) {
    return async (c: Context) => {
      const g = await deps.gate(c, true);
      if (!g.ok) return g.res;
      try {
        await step(c, g.viewer, { kind: "member", memberId: g.viewer.member.id });
        return c.redirect(`/u/${g.viewer.union.slug}/console/unions?done=${done}`, 303);
      } catch (e) {
        if (!(e instanceof RelationshipError) && !(e instanceof FeaturedError) && !(e instanceof MemberError)) throw e;
        const status = e.code === "forbidden" ? 403 : e.code === "not_found" ? 404 : 409;
        return render(c, g.viewer, { error: e.message, status });
      }
    };
  }

  for (const verb of ["accept", "reject", "end"] as const) {
    app.post(`/u/:slug/console/unions/:id/${verb}`, officerStep(async (c, v, by) => {
      if (verb === "end") return void await endRelationship(deps.relationships, v.union.id, c.req.param("id")!, by);
      const proposal = String((await c.req.parseBody()).proposal ?? "").trim();
      await answerOffer(deps.relationships, v.union.id, c.req.param("id")!, by, verb === "accept", proposal || undefined);
    }, verb === "end" ? "ended" : `${verb}ed`));
  }

  // Requests to list this union in someone's FEP-7aa9 collection (Mastodon 4.6 "Collections").
  for (const verb of ["accept", "reject", "withdraw"] as const) {
    app.post(`/u/:slug/console/unions/listings/:id/${verb}`, officerStep(async (c, v, by) => {
      if (verb === "withdraw") await withdrawStamp(deps.relationships, v.union.id, c.req.param("id")!, by);
      else await decideFeatureRequest(deps.relationships, v.union.id, c.req.param("id")!, by, verb === "accept");
    }, `listing-${verb === "withdraw" ? "withdrawn" : `${verb}ed`}`));
  }
}

function listingsSection(base: string, stamps: readonly FeatureStamp[]): Html {
  const link = (url: string) => html`<a href="${url}" rel="nofollow noopener" target="_blank">${url}</a>`;
  return html`<section id="listings">
<h2>Requests to list this union</h2>
<p class="muted">Mastodon 4.6 and others show lists of accounts ("collections"). Allies are listed with your consent at once; anyone else asks here.</p>
${stamps.length === 0 ? html`<p class="muted">No requests.</p>` : html`<div class="table-wrap"><table>
<thead><tr><th>From</th><th>Their list</th><th>State</th><th></th></tr></thead>
<tbody>${stamps.map((s) => html`<tr data-listing="${s.requester}">
<td>${link(s.requester)}</td><td>${link(s.collection)}</td><td>${s.state === "pending" ? "waiting for you" : "listed with your consent"}</td>
<td class="actions">${s.state === "pending"
    ? html`<form method="post" action="${base}/listings/${s.id}/accept" class="inline"><button type="submit" data-testid="accept-listing">Consent</button></form>
<form method="post" action="${base}/listings/${s.id}/reject" class="inline"><button type="submit" class="secondary" data-testid="reject-listing">Refuse</button></form>`
    : html`<form method="post" action="${base}/listings/${s.id}/withdraw" class="inline"><button type="submit" class="secondary" data-testid="withdraw-listing">Withdraw consent</button></form>`}</td>
</tr>`)}</tbody></table></div>`}
</section>`;
}

interface ProposeValues {
  readonly target?: string;
  readonly relay?: string;
  readonly proposal?: string;
}

function consoleUnionsPage(v: Viewer, rels: readonly Relationship[], stamps: readonly FeatureStamp[], msg: { notice?: string; error?: string }, values: ProposeValues, canPropose: boolean): Html {
  const base = `/u/${v.union.slug}/console/unions`;
  const name = (r: Relationship) => html`<a href="${r.peerActorId}" rel="nofollow noopener" target="_blank">${r.peerHandle ?? r.peerActorId}</a>`;
  const offers = rels.filter((r) => r.state === "received");
  const current = rels.filter((r) => r.state !== "received");
  return layout({
    title: `Other unions: ${v.union.name}`,
    body: html`${accountBar(v.union, v.member, "console")}
<h1>${v.union.name} <span class="muted">console</span></h1>
${consoleTabs(v.union, "unions")}
${notices(msg)}
<section id="offers">
<h2>Offers from other unions</h2>
${offers.length === 0 ? html`<p class="muted">No offers waiting.</p>` : html`<div class="table-wrap"><table>
<thead><tr><th>Union</th><th>Offers to be</th><th>Relaying</th><th>Decision</th></tr></thead>
<tbody>${offers.map((r) => html`<tr data-offer="${r.peerHandle ?? r.peerActorId}">
<td>${name(r)}</td><td>${r.kind === "chapter" ? "your chapter" : r.kind === "parent" ? "your parent union" : "your ally"}</td><td>${r.relay}</td>
<td class="actions">
<form method="post" action="${base}/${r.id}/accept" class="inline"><label class="small">Proposal no. <input name="proposal" inputmode="numeric" size="4" placeholder="if voted" data-testid="accept-proposal"></label> <button type="submit" data-testid="accept-offer">Accept</button></form>
<form method="post" action="${base}/${r.id}/reject" class="inline"><button type="submit" class="secondary" data-testid="reject-offer">Reject</button></form>
</td></tr>`)}</tbody></table></div>`}
</section>
<section id="relationships">
<h2>Allies, parent and chapters</h2>
${current.length === 0 ? html`<p class="muted">None yet.</p>` : html`<div class="table-wrap"><table>
<thead><tr><th>Union</th><th>Is</th><th>State</th><th>Relaying</th><th></th></tr></thead>
<tbody>${current.map((r) => html`<tr data-relationship="${r.peerHandle ?? r.peerActorId}">
<td>${name(r)}</td><td>${KIND_TEXT[r.kind]}</td><td>${r.state === "offered" ? "waiting for their answer" : "active"}</td><td>${r.relay}</td>
<td class="actions"><form method="post" action="${base}/${r.id}/end" class="inline"><button type="submit" class="secondary" data-testid="end">${r.state === "offered" ? "Withdraw" : "End"}</button></form></td>
</tr>`)}</tbody></table></div>`}
</section>
${canPropose ? html`<section id="propose">
<h2>Propose an alliance</h2>
<form method="post" action="${base}/propose" class="stack" data-testid="propose-form">
<label>Union (handle or URL) <input name="target" required value="${values.target ?? ""}" placeholder="@union@other.example" data-testid="propose-target"></label>
<label>Relaying <select name="relay" data-testid="propose-relay">${RELAYS.map((r) => html`<option value="${r}"${(values.relay ?? "both") === r ? " selected" : ""}>${RELAY_TEXT[r]}</option>`)}</select></label>
<label>Proposal number <input name="proposal" inputmode="numeric" value="${values.proposal ?? ""}" placeholder="if your bylaws ask for a vote" data-testid="propose-proposal"></label>
<p class="muted small">If your bylaws say alliances are ratified by member vote, give the number of the passed resolution that names this union.</p>
<button type="submit" data-testid="propose">Propose</button>
</form>
</section>` : ""}
${listingsSection(base, stamps)}`,
  });
}
