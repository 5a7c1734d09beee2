import { html } from "hono/html";
import { type Invite, inviteStatus } from "../../members/invites.ts";
import type { Member } from "../../members/members.ts";
import { signedInMaySee } from "../../members/visibility.ts";
import type { Union } from "../../unions/unions.ts";
import type { TreeNode } from "../console-data.ts";
import type { Html } from "./layout.ts";
import { isOfficer } from "./login.ts";

// Pieces shared by the console and the member page.

export function accountBar(union: Union, viewer: Member, here: "console" | "me" | "action" | "members"): Html {
  return html`<nav class="account" aria-label="Account">
<span>Signed in to <a href="/u/${union.slug}">${union.name}</a> as <strong data-testid="viewer">${viewer.handle}</strong> <span class="badge">${roleLabel(viewer)}</span></span>
<span class="links">
${here === "me" ? html`<a href="/u/${union.slug}/actions">Calls to action</a>` : ""}
${here !== "me" && (here === "action" || isOfficer(viewer)) ? html`<a href="/u/${union.slug}/me">My membership</a>` : ""}
${here !== "members" && signedInMaySee(union, viewer) ? html`<a href="/u/${union.slug}/members" data-testid="members-link">Members</a>` : ""}
${here !== "console" && isOfficer(viewer) ? html`<a href="/u/${union.slug}/console">Console</a>` : ""}
<form method="post" action="/u/${union.slug}/logout" class="inline"><button type="submit" class="link" data-testid="sign-out">Sign out</button></form>
</span>
</nav>`;
}

/** The console's sections. */
export function consoleTabs(union: Union, here: "members" | "actions" | "unions" | "treasury"): Html {
  const tab = (id: typeof here, href: string, label: string) =>
    html`<a href="${href}"${id === here ? html` aria-current="page"` : ""}>${label}</a>`;
  return html`<nav class="tabs" aria-label="Console sections">
${tab("members", `/u/${union.slug}/console`, "Members")}
${tab("actions", `/u/${union.slug}/console/actions`, "Calls to action")}
${tab("unions", `/u/${union.slug}/console/unions`, "Other unions")}
${tab("treasury", `/u/${union.slug}/console/treasury`, "Treasury")}
<a href="/u/${union.slug}/proposals" data-testid="console-proposals">Proposals</a>
</nav>`;
}

export function roleLabel(m: Member): string {
  if (m.role === "leader") return m.portfolio ? `Leader, ${m.portfolio}` : "Leader";
  if (m.role === "officer") return m.portfolio ? `Officer, ${m.portfolio}` : "Officer";
  return "Member";
}

export function notices(v: { notice?: string; error?: string }): Html {
  return html`${v.notice ? html`<p class="notice" role="status">${v.notice}</p>` : ""}${v.error ? html`<p class="error" role="alert">${v.error}</p>` : ""}`;
}

export function fmtDate(d: Date | null): string {
  return d ? d.toISOString().slice(0, 10) : "";
}

export function fmtDateTime(d: Date | null): string {
  return d ? `${d.toISOString().slice(0, 16).replace("T", " ")} UTC` : "";
}

export function inviteUrl(origin: URL, union: Union, code: string): string {
  return new URL(`/u/${union.slug}/join/${code}`, origin).href;
}

/**
 * An invite URL that may wrap after a slash but never inside the code, which
 * readers copy and compare. Its text content is still the plain URL.
 */
export function inviteUrlHtml(origin: URL, union: Union, code: string): Html {
  const url = inviteUrl(origin, union, code);
  const cut = url.length - code.length;
  const parts = url.slice(0, cut).split("/");
  return html`${parts.map((p, i) => (i < parts.length - 1 ? html`${p}/<wbr>` : p))}<span class="code">${url.slice(cut)}</span>`;
}

const STATUS_LABEL = { valid: "valid", expired: "expired", revoked: "revoked", used_up: "used up" } as const;

export interface InviteTableOptions {
  readonly origin: URL;
  readonly union: Union;
  /** Where a revoke form posts, per invite code. */
  readonly revokeAction: (code: string) => string;
  /** Creator handles by member id; when given, a "From" column is shown. */
  readonly creators?: ReadonlyMap<string, string | null>;
  readonly highlight?: string;
}

export function inviteTable(invites: readonly Invite[], o: InviteTableOptions): Html {
  if (invites.length === 0) return html`<p class="muted">No invites yet.</p>`;
  const now = Date.now();
  return html`<div class="table-wrap"><table class="invites">
<thead><tr><th>Link</th>${o.creators ? html`<th>From</th>` : ""}<th>Used</th><th>Expires</th><th>Status</th><th></th></tr></thead>
<tbody>
${invites.map((i) => {
    const status = inviteStatus(i, now);
    return html`<tr data-code="${i.code}" class="${i.code === o.highlight ? "highlight" : ""}">
<td><code class="url invite" data-testid="invite-url">${inviteUrlHtml(o.origin, o.union, i.code)}</code></td>
${o.creators ? html`<td>${i.createdBy ? o.creators.get(i.createdBy) ?? "(former member)" : "the union"}</td>` : ""}
<td>${i.uses} / ${i.maxUses ?? "∞"}</td>
<td>${i.expiresAt ? fmtDateTime(i.expiresAt) : "never"}</td>
<td><span class="status status-${status}" data-testid="invite-status">${STATUS_LABEL[status]}</span></td>
<td>${status === "valid"
      ? html`<form method="post" action="${o.revokeAction(i.code)}" class="inline"><button type="submit" class="secondary small">Revoke</button></form>`
      : ""}</td>
</tr>`;
  })}
</tbody></table></div>`;
}

export interface InviteFormOptions {
  readonly action: string;
  /** Officers invite without limit: uses may be left empty. */
  readonly unlimited: boolean;
  /** Places still free for a member; undefined for officers. */
  readonly remaining?: number;
  readonly values?: { readonly uses?: string; readonly expires?: string };
}

export const EXPIRY_CHOICES: readonly { readonly value: string; readonly label: string }[] = [
  { value: "1", label: "in 1 day" },
  { value: "7", label: "in 7 days" },
  { value: "30", label: "in 30 days" },
  { value: "never", label: "never" },
];

export function inviteForm(o: InviteFormOptions): Html {
  const expires = o.values?.expires ?? "7";
  return html`<form method="post" action="${o.action}" class="row" data-testid="invite-form">
<label>Uses <input type="number" name="uses" min="1" step="1" inputmode="numeric" ${o.unlimited ? html`placeholder="unlimited"` : html`required`} value="${o.values?.uses ?? (o.unlimited ? "" : "1")}"></label>
<label>Expires <select name="expires">${EXPIRY_CHOICES.map((c) => html`<option value="${c.value}"${c.value === expires ? html` selected` : ""}>${c.label}</option>`)}</select></label>
<button type="submit">Create invite</button>
</form>`;
}

/** Nested list of the tree; members past the depth shown link to their own subtree. */
export function treeList(nodes: readonly TreeNode[], union: Union, linkOf: (m: Member) => string = (m) => `/u/${union.slug}/console/members/${m.id}`): Html {
  return html`<ul class="tree">${nodes.map((n) => treeItem(n, union, linkOf))}</ul>`;
}

function treeItem(n: TreeNode, union: Union, linkOf: (m: Member) => string): Html {
  const m = n.member;
  const link = linkOf(m);
  const q = link.includes("?") ? "&" : "?";
  const below = m.subtreeSize;
  return html`<li data-member="${m.handle ?? m.id}">
<a href="${link}">${m.handle ?? "(unclaimed)"}</a>${m.role !== "member" ? html` <span class="badge">${roleLabel(m)}</span>` : ""}${m.state === "reserved" ? html` <span class="muted">(not yet followed)</span>` : ""}
${below > 0 ? html` <span class="count" title="members below">${below} below</span>` : ""}
${n.children.length > 0 ? treeList(n.children, union, linkOf) : ""}
${n.hidden > 0 ? html`<ul class="tree"><li class="more"><a href="${link}${q}after=${n.children.at(-1)?.member.id ?? ""}">and ${n.hidden} more recruits…</a></li></ul>` : ""}
${!n.expanded && below > 0 ? html` <a class="drill" href="${link}">open subtree →</a>` : ""}
</li>`;
}
