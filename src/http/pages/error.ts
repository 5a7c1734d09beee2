import { html } from "hono/html";
import { type Html, layout } from "./layout.ts";

export function errorPage(status: number, message: string): Html {
  return layout({ title: `${status}`, body: html`<h1>${status}</h1><p>${message}</p><p><a href="/">Home</a></p>` });
}
