import { html } from "hono/html";
import type { Member } from "../../members/members.ts";
import { MAX_HANDLE_QUERY, type Membership } from "../../members/roster.ts";
import { membersVisibility, VISIBILITY_TEXT } from "../../members/visibility.ts";
import type { Union } from "../../unions/unions.ts";
import type { TreeNode } from "../console-data.ts";
import { accountBar, fmtDate, treeList } from "./account.ts";
import { type Html, layout } from "./layout.ts";

export interface MembersPageView {
  readonly union: Union;
  /** Absent on a public union's page seen by someone not signed in. */
  readonly viewer: Member | undefined;
  readonly total: number;
  /** The handle searched for (`?q=`), and how many members match it. */
  readonly search?: string | undefined;
  readonly matched?: number | undefined;
  readonly items: readonly Membership[];
  /** Cursor of the next page of the list. */
  readonly next: string | undefined;
  /** Whether this is a later page of the list (a link back to the first is shown). */
  readonly paged: boolean;
  readonly trees: readonly TreeNode[];
  /** When the tree is opened at one member rather than at the top. */
  readonly subtreeOf?: Member;
}

const office = (m: Pick<Membership, "role" | "portfolio">) =>
  m.role === "member" ? "" : `${m.role === "leader" ? "Leader" : "Officer"}${m.portfolio ? `, ${m.portfolio}` : ""}`;

/** The roster and the sponsor tree, for whoever the union's setting shows them to. */
export function membersPage(v: MembersPageView): Html {
  const base = `/u/${v.union.slug}/members`;
  return layout({
    title: `Members: ${v.union.name}`,
    body: html`${v.viewer ? accountBar(v.union, v.viewer, "members") : ""}
<h1>Members of ${v.union.name}</h1>
<p class="muted" data-testid="visibility">Who can see this list: ${VISIBILITY_TEXT[membersVisibility(v.union)]}</p>
<p data-testid="member-count"><strong>${v.total}</strong> ${v.total === 1 ? "member" : "members"}.</p>

<section id="tree">
<h2>${v.subtreeOf ? html`Recruited under ${v.subtreeOf.handle ?? "(unclaimed)"}` : "Sponsor tree"}</h2>
<p class="muted">Each member sits under the member who recruited them.${v.subtreeOf ? html` <a href="${base}#tree">Back to the top of the tree</a>.` : ""}</p>
${v.trees.length === 0 ? html`<p class="muted">The tree is empty.</p>` : html`<div data-testid="tree">${treeList(v.trees, v.union, (m) => `${base}?root=${encodeURIComponent(m.id)}#tree`)}</div>`}
</section>

<section id="list">
<h2>${v.search ? html`Members matching “${v.search}”` : "All members"}</h2>
<form method="get" action="${base}#list" class="row search" role="search" data-testid="member-search">
<label>Find a member by handle <input type="search" name="q" value="${v.search ?? ""}" placeholder="alice or @alice@example.org" maxlength="${MAX_HANDLE_QUERY}"></label>
<button type="submit">Search</button>${v.search ? html` <a href="${base}#list">Show all</a>` : ""}
</form>
${v.search ? html`<p data-testid="search-count">${v.matched === 0 ? `No member's handle contains “${v.search}”.` : `${v.matched} of ${v.total} ${v.matched === 1 ? "matches" : "match"}.`}</p>` : ""}
<div class="table-wrap"><table data-testid="roster">
<thead><tr><th>Member</th><th>Office</th><th>Recruited by</th><th>Joined</th></tr></thead>
<tbody>
${v.items.map((m) => html`<tr data-member="${m.handle ?? m.memberId}"><td class="handle"><a href="${base}?root=${encodeURIComponent(m.memberId)}#tree" title="Their part of the tree">${m.handle ?? "(unknown)"}</a></td><td>${office(m)}</td><td>${m.sponsorHandle ?? html`<span class="muted">—</span>`}${m.allySponsor ? html` <span class="ally-sponsor" data-testid="ally-sponsor">sponsored by <a href="${m.allySponsor.actorId}" rel="nofollow noopener">${m.allySponsor.actorId}</a>${m.allySponsor.unionActorId ? html` of allied union <a href="${m.allySponsor.unionActorId}" rel="nofollow noopener">${m.allySponsor.unionActorId}</a>` : ""}</span>` : ""}</td><td>${fmtDate(m.joinedAt)}</td></tr>`)}
</tbody>
</table></div>
<p>${v.paged ? html`<a href="${base}${v.search ? `?q=${encodeURIComponent(v.search)}` : ""}#list">First page</a> ` : ""}${v.next ? html`<a href="${base}?${v.search ? `q=${encodeURIComponent(v.search)}&` : ""}after=${encodeURIComponent(v.next)}#list" data-testid="next-page">Next page</a>` : ""}</p>
</section>`,
  });
}
