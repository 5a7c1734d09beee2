import { html } from "hono/html";
import type { Member } from "../../members/members.ts";
import type { Union } from "../../unions/unions.ts";
import { type Html, layout } from "./layout.ts";

export interface LoginView {
  readonly union: Union;
  readonly host: string;
  readonly lifetimeMinutes: number;
  readonly handle?: string;
  readonly error?: string;
  readonly notice?: string;
  /** Already signed in to this union as this member. */
  readonly signedInAs?: Member;
}

export function loginPage(v: LoginView): Html {
  return layout({
    title: `Sign in to ${v.union.name}`,
    body: html`<article class="login">
<h1>Sign in to ${v.union.name}</h1>
${v.signedInAs
      ? html`<p class="notice" role="status">You are signed in as <strong>${v.signedInAs.handle}</strong>. Go to <a href="${homeOf(v.union, v.signedInAs)}">${isOfficer(v.signedInAs) ? "the console" : "your page"}</a>.</p>`
      : ""}
<p>No password: enter the fediverse account you are a member with. The union sends that account a <strong>direct message</strong> with a sign-in link. The link works once, for ${v.lifetimeMinutes} minutes.</p>
${v.notice ? html`<p class="notice" role="status">${v.notice}</p>` : ""}
${v.error ? html`<p class="error" role="alert">${v.error}</p>` : ""}
<form method="post" action="/u/${v.union.slug}/login" class="setup">
  <label>Your handle <input name="handle" required placeholder="@you@mastodon.social" value="${v.handle ?? ""}" autocomplete="username" autocapitalize="none" spellcheck="false"></label>
  <button type="submit">Send me a sign-in link</button>
</form>
<p class="muted">Not a member yet? Follow <code>@${v.union.slug}@${v.host}</code> from your fediverse account, or ask a member for an invite.</p>
</article>`,
  });
}

export function loginSentPage(union: Union, handle: string, lifetimeMinutes: number): Html {
  return layout({
    title: `Check your messages`,
    body: html`<article class="login">
<h1>Check your messages</h1>
<p data-testid="sent">If <strong>${handle}</strong> is a member of ${union.name}, a direct message from <code>@${union.slug}</code> with a sign-in link is on its way to that account.</p>
<p>Open the link within ${lifetimeMinutes} minutes; it works once. If nothing arrives in a few minutes, check the handle and <a href="/u/${union.slug}/login">ask again</a>.</p>
</article>`,
  });
}

export function confirmLoginPage(union: Union, code: string, member: Member): Html {
  return layout({
    title: `Sign in to ${union.name}`,
    head: html`<meta name="referrer" content="no-referrer">`,
    body: html`<article class="login">
<h1>Sign in to ${union.name}</h1>
<p>Signing in as <strong data-testid="signing-in-as">${member.handle}</strong>.</p>
<form method="post" action="/u/${union.slug}/login/${code}" class="setup">
  <button type="submit">Sign in</button>
</form>
<p class="muted">If you did not ask to sign in, close this page: nothing happens until the button is pressed.</p>
</article>`,
  });
}

export function loginProblemPage(union: Union, message: string): Html {
  return layout({
    title: `Sign-in link not valid`,
    head: html`<meta name="referrer" content="no-referrer">`,
    body: html`<article class="login">
<h1>This sign-in link cannot be used</h1>
<p class="error" role="alert">${message}</p>
<p><a href="/u/${union.slug}/login">Ask for a new sign-in link</a></p>
</article>`,
  });
}

export function isOfficer(m: Member): boolean {
  return m.role === "leader" || m.role === "officer";
}

export function homeOf(union: Union, m: Member): string {
  return isOfficer(m) ? `/u/${union.slug}/console` : `/u/${union.slug}/me`;
}
