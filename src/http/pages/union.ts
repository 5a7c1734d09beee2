import { html } from "hono/html";
import type { Union } from "../../unions/unions.ts";
import { type Html, layout } from "./layout.ts";

export function unionPage(union: Union, actorId: URL): Html {
  const handle = `@${union.slug}@${actorId.host}`;
  return layout({
    title: `${union.name} (${handle})`,
    head: html`<link rel="alternate" type="application/activity+json" href="${actorId.href}">
<meta name="description" content="${union.purpose}">`,
    body: html`<article class="union">
${union.iconUrl ? html`<img class="icon" src="${union.iconUrl}" alt="">` : ""}
<h1>${union.name}</h1>
<p class="handle" data-testid="handle">${handle}</p>
<p class="purpose">${union.purpose}</p>
<dl>
  <dt>Leader</dt><dd>${union.leaderHandle ?? "not set"}</dd>
  <dt>Founded</dt><dd><time datetime="${union.createdAt.toISOString()}">${union.createdAt.toISOString().slice(0, 10)}</time></dd>
  <dt>Joining</dt><dd>${union.manuallyApprovesFollowers ? "Follow requests are reviewed by the union's officers." : "Follows are accepted automatically."}</dd>
</dl>
<h2>Join from Mastodon</h2>
<p>Search for <code>${handle}</code> in your Mastodon (or any Fediverse) app and follow it.</p>
</article>`,
  });
}
