import type { Context, Hono } from "hono";
import { html } from "hono/html";
import type { Kysely } from "kysely";
import type { DB } from "../db/schema.ts";
import { MemberError } from "../members/members.ts";
import {
  answerOffer, endRelationship, listRelationships, type Relationship, RelationshipError, type RelationshipDeps,
} from "../relationships/relationships.ts";
import { decideFeatureRequest, FeaturedError, type FeatureStamp, listStamps, withdrawStamp } from "../relationships/featured.ts";
import type { Gate, Viewer } from "./members-web.ts";
import { accountBar, consoleTabs, notices } from "./pages/account.ts";
import { type Html, layout } from "./pages/layout.ts";

// The console's "Other unions" section: offers other unions sent (accept or
// reject), and this union's allies, parent and chapters (end). Proposing
// needs a lookup across the network and is done with `muster ally propose`.

export interface RelationshipsWebDeps {
  readonly db: Kysely<DB>;
  readonly relationships: RelationshipDeps;
  readonly gate: (c: Context, officersOnly: boolean) => Promise<Gate>;
}

const DONE: Record<string, string> = {
  accepted: "Accepted: the other union has been told, and so have your members.",
  rejected: "Rejected: the other union has been told.",
  ended: "Ended: the other union has been sent an Undo, and your members are told.",
  "listing-accepted": "Consent given: they may list this union; the stamp has been sent.",
  "listing-rejected": "Refused: they have been told.",
  "listing-withdrawn": "Consent withdrawn: the stamp no longer verifies, and they have been told.",
};

const KIND_TEXT = { ally: "Ally", parent: "Parent union", chapter: "Chapter" } as const;

export function mountRelationshipsWeb(app: Hono, deps: RelationshipsWebDeps): void {
  async function render(c: Context, v: Viewer, extra: { error?: string; status?: 403 | 404 | 409 } = {}) {
    const rels = await listRelationships(deps.db, v.union.id, { states: ["offered", "received", "active"] });
    const stamps = (await listStamps(deps.db, v.union.id)).filter((s) => s.state === "pending" || s.state === "accepted");
    return c.html(consoleUnionsPage(v, rels, stamps, { notice: DONE[c.req.query("done") ?? ""], error: extra.error }), extra.status ?? 200);
  }

  app.get("/u/:slug/console/unions", async (c) => {
    const g = await deps.gate(c, true);
    return g.ok ? render(c, g.viewer) : g.res;
  });

  for (const verb of ["accept", "reject", "end"] as const) {
    app.post(`/u/:slug/console/unions/:id/${verb}`, async (c) => {
      const g = await deps.gate(c, true);
      if (!g.ok) return g.res;
      const by = { kind: "member", memberId: g.viewer.member.id } as const;
      try {
        if (verb === "end") await endRelationship(deps.relationships, g.viewer.union.id, c.req.param("id"), by);
        else await answerOffer(deps.relationships, g.viewer.union.id, c.req.param("id"), by, verb === "accept");
        return c.redirect(`/u/${g.viewer.union.slug}/console/unions?done=${verb === "end" ? "ended" : `${verb}ed`}`, 303);
      } catch (e) {
        if (!(e instanceof RelationshipError) && !(e instanceof MemberError)) throw e;
        const status = e.code === "forbidden" ? 403 : e.code === "not_found" ? 404 : 409;
        return render(c, g.viewer, { error: e.message, status });
      }
    });
  }

  // Requests to list this union in someone's FEP-7aa9 collection (Mastodon 4.6 "Collections").
  for (const verb of ["accept", "reject", "withdraw"] as const) {
    app.post(`/u/:slug/console/unions/listings/:id/${verb}`, async (c) => {
      const g = await deps.gate(c, true);
      if (!g.ok) return g.res;
      const by = { kind: "member", memberId: g.viewer.member.id } as const;
      try {
        if (verb === "withdraw") await withdrawStamp(deps.relationships, g.viewer.union.id, c.req.param("id"), by);
        else await decideFeatureRequest(deps.relationships, g.viewer.union.id, c.req.param("id"), by, verb === "accept");
        return c.redirect(`/u/${g.viewer.union.slug}/console/unions?done=listing-${verb === "withdraw" ? "withdrawn" : `${verb}ed`}`, 303);
      } catch (e) {
        if (!(e instanceof FeaturedError) && !(e instanceof MemberError)) throw e;
        const status = e.code === "forbidden" ? 403 : e.code === "not_found" ? 404 : 409;
        return render(c, g.viewer, { error: e.message, status });
      }
    });
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

function consoleUnionsPage(v: Viewer, rels: readonly Relationship[], stamps: readonly FeatureStamp[], msg: { notice?: string; error?: string }): Html {
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
<form method="post" action="${base}/${r.id}/accept" class="inline"><button type="submit" data-testid="accept-offer">Accept</button></form>
<form method="post" action="${base}/${r.id}/reject" class="inline"><button type="submit" class="secondary" data-testid="reject-offer">Reject</button></form>
</td></tr>`)}</tbody></table></div>`}
</section>
<section id="relationships">
<h2>Allies, parent and chapters</h2>
${current.length === 0 ? html`<p class="muted">None yet. Propose an alliance with <code>muster ally propose ${v.union.slug} @union@host</code>.</p>` : html`<div class="table-wrap"><table>
<thead><tr><th>Union</th><th>Is</th><th>State</th><th>Relaying</th><th></th></tr></thead>
<tbody>${current.map((r) => html`<tr data-relationship="${r.peerHandle ?? r.peerActorId}">
<td>${name(r)}</td><td>${KIND_TEXT[r.kind]}</td><td>${r.state === "offered" ? "waiting for their answer" : "active"}</td><td>${r.relay}</td>
<td class="actions"><form method="post" action="${base}/${r.id}/end" class="inline"><button type="submit" class="secondary" data-testid="end">${r.state === "offered" ? "Withdraw" : "End"}</button></form></td>
</tr>`)}</tbody></table></div>`}
</section>
${listingsSection(base, stamps)}`,
  });
}
