import { html } from "hono/html";
import { DEFAULT_MEMBERS_VISIBILITY, type MembersVisibility, type Union } from "../../unions/unions.ts";
import { VISIBILITY_CHOICES, VISIBILITY_TEXT } from "../../members/visibility.ts";
import { timeZones } from "../actions-data.ts";
import { type Html, layout } from "./layout.ts";

export interface HomeView {
  readonly host: string;
  readonly unions: readonly Union[];
  /** True while no union exists and a console setup token is outstanding. */
  readonly setupOpen: boolean;
  readonly setup?: { readonly token?: string; readonly error?: string; readonly values?: Record<string, string> };
}

export function homePage(v: HomeView): Html {
  const body = v.unions.length > 0
    ? html`<h1>Unions on ${v.host}</h1>
<ul class="unions">
${v.unions.map((u) => html`<li><a href="/u/${u.slug}"><strong>${u.name}</strong></a> <span class="handle">@${u.slug}@${v.host}</span><p>${u.purpose}</p></li>`)}
</ul>`
    : v.setupOpen
    ? setupForm(v)
    : html`<h1>Welcome to Muster</h1><p>No union has been created on ${v.host} yet.</p>
<p>The operator can create one with <code>muster union create</code>, or restart the server to get a new setup token.</p>`;
  // The script only offers the browser's own zone; the field works without it.
  const head = v.unions.length === 0 && v.setupOpen ? html`<script src="/public/time-zone.js" defer></script>` : undefined;
  return layout({ title: `Muster on ${v.host}`, body, head });
}

function setupForm(v: HomeView): Html {
  const val = v.setup?.values ?? {};
  return html`<h1>Set up your first union</h1>
<p>Muster is running. Create the first union on <strong>${v.host}</strong>: it becomes a Fediverse group that Mastodon users can follow.</p>
<p>Paste the one-time <em>setup token</em> the server printed on its console when it started.</p>
${v.setup?.error ? html`<p class="error" role="alert">${v.setup.error}</p>` : ""}
<form method="post" action="/setup" class="setup">
  <label>Setup token <input name="token" required autocomplete="off" value="${v.setup?.token ?? ""}"></label>
  <label>Slug (the handle: @slug@${v.host}) <input name="slug" required pattern="[A-Za-z0-9](?:[A-Za-z0-9_\\-]{0,62}[A-Za-z0-9])?" value="${val.slug ?? ""}"></label>
  <label>Name <input name="name" required maxlength="100" value="${val.name ?? ""}"></label>
  <label>Purpose <textarea name="purpose" required maxlength="2000">${val.purpose ?? ""}</textarea></label>
  <label>Leader's fediverse handle <input name="leader" placeholder="@you@mastodon.social" value="${val.leader ?? ""}"></label>
  ${timeZoneField("timeZone", val.timeZone ?? "")}
  ${visibilityChoice(val.visibility || DEFAULT_MEMBERS_VISIBILITY)}
  <button type="submit">Create union</button>
</form>`;
}

/** The roster setting, each choice with exactly what it shows to whom. */
export function visibilityChoice(current: string): Html {
  return html`<fieldset class="visibility" data-testid="visibility-choice">
<legend>Who can see the member list and the sponsor tree</legend>
${VISIBILITY_CHOICES.map((v: MembersVisibility) => html`<label><input type="radio" name="visibility" value="${v}"${v === current ? html` checked` : ""}> <strong>${v}</strong>: ${VISIBILITY_TEXT[v]}</label>`)}
</fieldset>`;
}

/**
 * A time-zone field: type to search the IANA zones (a datalist, no script needed).
 * public/time-zone.js fills an empty field with the browser's zone and lists it first.
 */
export function timeZoneField(name: string, current: string): Html {
  return html`<label>Time zone of the daily publication hour <input name="${name}" list="time-zones" value="${current}" placeholder="UTC" autocomplete="off" spellcheck="false" data-time-zone data-testid="time-zone"></label>
<datalist id="time-zones">${timeZones("UTC").map((z) => html`<option value="${z}"></option>`)}</datalist>`;
}
