import MarkdownIt from "markdown-it";

// html: false escapes any raw HTML in the source, and markdown-it refuses
// javascript:, vbscript: and data: links, so the output is safe to embed
// without a separate sanitiser. linkify turns bare URLs into links.
const md = new MarkdownIt({ html: false, linkify: true, typographer: false, breaks: false });

export function renderMarkdown(source: string): string {
  return md.render(source).trim();
}
