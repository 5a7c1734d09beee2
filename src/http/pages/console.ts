import { html } from "hono/html";
import { membersVisibility, VISIBILITY_TEXT } from "../../members/visibility.ts";
import type { Invite } from "../../members/invites.ts";
import type { Member, MemberListing } from "../../members/members.ts";
import type { Union } from "../../unions/unions.ts";
import type { TreeNode } from "../console-data.ts";
import { accountBar, consoleTabs, fmtDate, inviteForm, inviteTable, inviteUrlHtml, notices, roleLabel, treeList } from "./account.ts";
import { type Html, layout } from "./layout.ts";

export interface ConsoleView {
  readonly union: Union;
  readonly origin: URL;
  readonly viewer: Member;
  readonly pending: readonly MemberListing[];
  readonly members: readonly MemberListing[];
  readonly activeCount: number;
  readonly page: number;
  readonly pageSize: number;
  readonly invites: readonly Invite[];
  readonly creators: ReadonlyMap<string, string | null>;
  readonly trees: readonly TreeNode[];
  /** An invite just created, to show its link at the top. */
  readonly created?: Invite;
  readonly notice?: string;
  readonly error?: string;
  readonly inviteValues?: { readonly uses?: string; readonly expires?: string };
  /** Leaders of this union's chapters (and their chapters), as the chapters reported them: the cabinet's chapter leads. */
  readonly chapterLeads?: readonly ChapterLead[];
}

export interface ChapterLead {
  readonly handle: string;
  readonly actorId: string | null;
  readonly chapter: string;
  readonly chapterActorId: string;
}

export function consolePage(v: ConsoleView): Html {
  const base = `/u/${v.union.slug}/console`;
  const pages = Math.max(1, Math.ceil(v.activeCount / v.pageSize));
  return layout({
    title: `Console: ${v.union.name}`,
    body: html`${accountBar(v.union, v.viewer, "console")}
<h1>${v.union.name} <span class="muted">console</span></h1>
${consoleTabs(v.union, "members")}
<ul class="stats">
  <li><strong data-testid="count-members">${v.activeCount}</strong> members</li>
  <li><strong data-testid="count-pending">${v.pending.length}</strong> pending</li>
  <li><strong>${v.invites.filter((i) => !i.revokedAt && (!i.expiresAt || i.expiresAt.getTime() > Date.now()) && (i.maxUses === null || i.uses < i.maxUses)).length}</strong> open invites</li>
</ul>
${notices(v)}
${v.created
      ? html`<div class="card created" data-testid="created-invite"><p>New invite link, ready to share:</p><p><code class="url invite" data-testid="created-invite-url">${inviteUrlHtml(v.origin, v.union, v.created.code)}</code></p></div>`
      : ""}

<section id="pending">
<h2>Pending requests</h2>
${v.pending.length === 0
      ? html`<p class="muted">No one is waiting.</p>`
      : html`<div class="table-wrap"><table>
<thead><tr><th>Account</th><th>Decision</th></tr></thead>
<tbody>${v.pending.map((p) => html`<tr data-pending="${p.handle ?? p.actorId ?? p.id}">
<td><a href="${p.actorId ?? "#"}" rel="nofollow noopener" target="_blank">${p.handle ?? p.actorId}</a></td>
<td class="actions">
<form method="post" action="${base}/members/${p.id}/approve" class="inline"><button type="submit" data-testid="approve">Approve</button></form>
<form method="post" action="${base}/members/${p.id}/reject" class="inline"><button type="submit" class="secondary" data-testid="reject">Reject</button></form>
</td></tr>`)}</tbody></table></div>`}
</section>

<section id="members">
<h2>Members</h2>
<div class="table-wrap"><table class="members">
<thead><tr><th>Handle</th><th>Sponsor</th><th>Depth</th><th>Role</th><th>Below</th><th>Joined</th></tr></thead>
<tbody>${v.members.map((m) => html`<tr data-member="${m.handle ?? m.id}">
<td><a href="${base}/members/${m.id}">${m.handle ?? "(unclaimed)"}</a>${m.state === "reserved" ? html` <span class="muted">(not yet followed)</span>` : ""}</td>
<td>${m.sponsorHandle ?? html`<span class="muted">—</span>`}</td>
<td>${m.depth ?? ""}</td>
<td>${roleLabel(m)}</td>
<td>${m.subtreeSize}</td>
<td>${fmtDate(m.joinedAt)}</td>
</tr>`)}</tbody></table></div>
${pages > 1
      ? html`<p class="pager">Page ${v.page} of ${pages}
${v.page > 1 ? html` <a href="${base}?page=${v.page - 1}#members">← previous</a>` : ""}
${v.page < pages ? html` <a href="${base}?page=${v.page + 1}#members">next →</a>` : ""}</p>`
      : ""}
</section>

${v.chapterLeads?.length
      ? html`<section id="chapter-leads">
<h2>Chapter leads</h2>
<div class="table-wrap"><table>
<thead><tr><th>Lead</th><th>Chapter</th></tr></thead>
<tbody>${v.chapterLeads.map((l) => html`<tr data-chapter-lead="${l.handle}">
<td>${l.actorId ? html`<a href="${l.actorId}" rel="nofollow noopener" target="_blank">${l.handle}</a>` : l.handle} <span class="badge">Chapter lead</span></td>
<td><a href="${l.chapterActorId}" rel="nofollow noopener" target="_blank">${l.chapter}</a></td>
</tr>`)}</tbody></table></div>
</section>`
      : ""}

<section id="invites">
<h2>Invites</h2>
<p class="muted">Whoever joins with an invite becomes the recruit of whoever created it. Officers' invites may have any number of uses.</p>
${inviteForm({ action: `${base}/invites`, unlimited: true, values: v.inviteValues })}
${inviteTable(v.invites, { origin: v.origin, union: v.union, creators: v.creators, revokeAction: (code) => `${base}/invites/${code}/revoke`, highlight: v.created?.code })}
</section>

<section id="roster-visibility">
<h2>Who sees the members</h2>
<p data-testid="roster-visibility">${membersVisibility(v.union)}: ${VISIBILITY_TEXT[membersVisibility(v.union)]}</p>
<p class="muted">This is a <a href="/u/${v.union.slug}/bylaws">bylaw</a>: it changes when members pass an amendment.</p>
</section>

<section id="tree">
<h2>Tree</h2>
<p class="muted">Who recruited whom, from the leader down. Counts are everyone below a member; open a member to see deeper.</p>
${v.trees.length === 0 ? html`<p class="muted">The tree is empty.</p>` : treeList(v.trees, v.union)}
</section>`,
  });
}

export interface MemberDetailView {
  readonly union: Union;
  readonly viewer: Member;
  readonly member: Member;
  /** [member, sponsor, ..., root] */
  readonly chain: readonly Member[];
  readonly tree: TreeNode;
  readonly after?: string;
  readonly notice?: string;
  readonly error?: string;
}

export function memberDetailPage(v: MemberDetailView): Html {
  const base = `/u/${v.union.slug}/console`;
  const m = v.member;
  const current = m.state === "active" || m.state === "pending";
  const canRemove = current && m.role !== "leader" && !(m.role === "officer" && v.viewer.role !== "leader") && m.id !== v.viewer.id;
  const canAppoint = v.viewer.role === "leader" && m.state === "active";
  return layout({
    title: `${m.handle ?? "Member"}: ${v.union.name}`,
    body: html`${accountBar(v.union, v.viewer, "console")}
<p><a href="${base}">← Console</a></p>
<h1 data-testid="member-handle">${m.handle ?? "(unclaimed)"}</h1>
${notices(v)}
<dl>
  <dt>State</dt><dd>${m.state}${m.leftReason ? html` (${m.leftReason})` : ""}</dd>
  <dt>Role</dt><dd>${roleLabel(m)}</dd>
  <dt>Joined</dt><dd>${fmtDate(m.joinedAt) || "—"}</dd>
  <dt>Below</dt><dd>${m.subtreeSize} members</dd>
  ${m.actorId ? html`<dt>Account</dt><dd><a href="${m.actorId}" rel="nofollow noopener" target="_blank">${m.actorId}</a></dd>` : ""}
</dl>
${v.chain.length > 1
      ? html`<h2>${m.state === "active" || m.state === "reserved" ? "Sponsor chain" : "Sponsor chain when they left"}</h2><ol class="chain">${v.chain.map((c) => html`<li><a href="${base}/members/${c.id}">${c.handle ?? "(unclaimed)"}</a>${c.role !== "member" ? html` <span class="badge">${roleLabel(c)}</span>` : ""}</li>`)}</ol>`
      : ""}
<h2>Subtree</h2>
${v.after ? html`<p class="muted">Recruits after the first page. <a href="${base}/members/${m.id}">Back to the start</a></p>` : ""}
${m.subtreeSize === 0 ? html`<p class="muted">No recruits.</p>` : treeList([v.tree], v.union)}
${canAppoint && m.role !== "leader"
      ? html`<h2>Office</h2>
<form method="post" action="${base}/members/${m.id}/officer" class="row">
<label>Portfolio <input name="portfolio" maxlength="120" placeholder="e.g. Treasurer" value="${m.portfolio ?? ""}"></label>
<button type="submit">${m.role === "officer" ? "Change portfolio" : "Make officer"}</button>
</form>
${m.role === "officer" ? html`<form method="post" action="${base}/members/${m.id}/officer" class="row"><input type="hidden" name="dismiss" value="1"><button type="submit" class="secondary">Dismiss as officer</button></form>` : ""}`
      : ""}
${canRemove
      ? html`<h2>Remove from the union</h2>
<p class="muted">Their recruits move up to their sponsor. Their server is told, and they are signed out. An expelled member cannot rejoin by following again.</p>
<form method="post" action="${base}/members/${m.id}/remove" class="setup danger-zone" data-testid="remove-form">
<label>Reason (recorded) <textarea name="reason" required maxlength="1000"></textarea></label>
<label class="check"><input type="checkbox" name="expel" value="1"> Expel: refuse their future follow requests</label>
<button type="submit" class="danger">Remove member</button>
</form>`
      : ""}`,
  });
}
