import { html, raw } from "hono/html";
import { type Bylaws, describeSource } from "../../bylaws/bylaws.ts";
import { changedKeys, PARAMS } from "../../bylaws/params.ts";
import { renderMarkdown } from "../../actions/markdown.ts";
import type { Union } from "../../unions/unions.ts";
import { type Html, layout } from "./layout.ts";

/** The bylaws in force (text and enforced parameters) and every earlier version, each with what it changed. */
export function bylawsPage(union: Union, history: readonly Bylaws[]): Html {
  const current = history[0]!;
  const fmt = (b: Bylaws, key: (typeof PARAMS)[number]["key"]) => PARAMS.find((p) => p.key === key)!.format(b.params[key] as never);
  return layout({
    title: `Bylaws of ${union.name}`,
    body: html`<article class="bylaws">
<h1>Bylaws of ${union.name}</h1>
<p class="muted" data-testid="bylaws-version">Version ${current.version}, in force since ${current.createdAt.toISOString().slice(0, 16).replace("T", " ")} UTC (${describeSource(current.source)}).</p>
<section data-testid="bylaws-text">${current.text ? raw(renderMarkdown(current.text)) : html`<p class="muted">No text yet: the parameters below are the rules.</p>`}</section>
<section id="parameters">
<h2>Rules the server enforces</h2>
<p class="muted">They change only when members pass an amendment, or when the server's operator overrides them in an emergency; both are recorded below.</p>
<table data-testid="bylaws-params"><thead><tr><th>Rule</th><th>Value</th><th>Meaning</th></tr></thead>
<tbody>${PARAMS.map((p) => html`<tr data-key="${p.key}"><td>${p.label}</td><td>${fmt(current, p.key)}</td><td class="small">${p.help}</td></tr>`)}</tbody></table>
</section>
<section id="offices" data-testid="bylaws-offices">
<h2>Offices and the sponsor tree</h2>
<p>The leader is the root of the sponsor tree. An elected leader takes the root when the result is declared: they leave their sponsor with their whole branch, the previous root goes under them, and everyone else keeps their sponsor; both moves are recorded. The previous leader stays on as an officer. A recall removes the leader or an officer from office at once; a recalled leader keeps their place at the root, without its powers, until the members elect a leader.</p>
</section>
<section id="history">
<h2>History</h2>
<ol reversed data-testid="bylaws-history">${history.map((b, i) => {
      const prev = history[i + 1];
      const keys = prev ? changedKeys(prev.params, b.params) : [];
      return html`<li data-version="${b.version}"><strong>Version ${b.version}</strong> · ${b.createdAt.toISOString().slice(0, 16).replace("T", " ")} · ${describeSource(b.source)}
${prev ? html`<ul class="diff">${keys.map((k) => html`<li><code>${k}</code>: <del>${fmt(prev, k)}</del> → <ins>${fmt(b, k)}</ins></li>`)}${prev.text !== b.text ? html`<li>text changed</li>` : ""}</ul>` : ""}</li>`;
    })}</ol>
</section>
</article>`,
  });
}
