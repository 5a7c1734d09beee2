import { html } from "hono/html";
import type { Union } from "../../unions/unions.ts";
import { type Html, layout } from "./layout.ts";

/**
 * What to do after the first-run setup: the four steps that take a new
 * union from created to its first call-to-action with members. Nothing here
 * is secret (every step needs a sign-in by direct message), so the page is
 * public and can be bookmarked.
 */
export function startPage(union: Union, host: string): Html {
  const handle = `@${union.slug}@${host}`;
  const base = `/u/${union.slug}`;
  return layout({
    title: `${union.name} is ready: next steps`,
    head: html`<script src="/public/copy.js" defer></script>`,
    body: html`<article class="start">
<p class="notice" role="status">${union.name} is created: it is the fediverse group <strong>${handle}</strong>.</p>
<h1>Next steps</h1>
<ol class="steps">
  <li data-testid="step-sign-in"><h2>Sign in as the leader</h2>
    <p>${union.leaderHandle
      ? html`Follow <code>${handle}</code> from the leader's account, <code>${union.leaderHandle}</code>, so the union can reach you, then`
      : html`The union has no leader yet: set one with <code>muster union set ${union.slug} --leader @you@your.server</code>, follow <code>${handle}</code> from that account, then`}
    <a href="${base}/login">sign in</a>: the union sends you a one-time link by direct message. There is no password.</p></li>
  <li data-testid="step-invite"><h2>Make an invite</h2>
    <p>In the <a href="${base}/console#invites">console</a>, create an invite link and send it to the first people you trust. Whoever invites a member becomes their sponsor in the union's tree.</p></li>
  <li data-testid="step-action"><h2>Post the first call-to-action</h2>
    <p>Under <a href="${base}/console/actions">Calls to action</a>, write the ask, a goal and a deadline. One queued call goes out a day at the union's publication time (${union.publishTime} ${union.timeZone}); "publish now" sends one at once.</p></li>
  <li data-testid="step-members"><h2>Tell members how to join from Mastodon</h2>
    <p>They search for the union's handle in their Mastodon app and press <em>Follow</em>, or open an invite link you gave them.</p>
    <p class="copy-row"><code class="copy-source" id="union-handle">${handle}</code>
      <button type="button" class="secondary small" data-copy="union-handle">Copy handle</button>
      <span class="copied muted small" role="status" aria-live="polite"></span></p></li>
</ol>
<p><a href="${base}">The union's public page</a></p>
</article>`,
  });
}
