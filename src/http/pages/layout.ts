import { html } from "hono/html";
import type { HtmlEscapedString } from "hono/utils/html";

export type Html = HtmlEscapedString | Promise<HtmlEscapedString>;

export interface LayoutOptions {
  readonly title: string;
  readonly head?: Html;
  readonly body: Html;
  /** A wider page, for tables (the console). */
  readonly wide?: boolean;
}

export function layout(opts: LayoutOptions): Html {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${opts.title}</title>
<link rel="icon" href="/public/favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="/public/style.css">
${opts.head ?? ""}
</head>
<body>
<header class="site"><a href="/" class="brand">Muster</a></header>
<main${opts.wide ? html` class="wide"` : ""}>
${opts.body}
</main>
<footer class="site">A network union server. <a href="/nodeinfo/2.1">NodeInfo</a></footer>
</body>
</html>`;
}
