/**
 * Remote HTML as plain text, in one pass over at most MAX_HTML_EXAMINED
 * characters. A regular expression like /<[^>]*>/g rescans to the end of the
 * input from every `<` that has no `>` after it, so one post of many `<`
 * costs quadratic time and stalls the process; here every `<` and `>` is
 * found with indexOf from where the last tag ended, and an unclosed `<` ends
 * the scan. (The registry's HTML-to-text libraries either parse a full DOM
 * for a few tags or were not installable here, so this is written once and
 * shared by every caller.)
 */

/** What is read of a post; replies are stored to 20,000 characters anyway. */
export const MAX_HTML_EXAMINED = 20_000;

export interface HtmlTextOptions {
  /** What a dropped tag leaves: "" keeps words joined (display), " " keeps them apart (matching). */
  readonly tagGap?: string;
  /** Drop Mastodon's mention links (`<a class="u-url mention">@<span>name</span></a>`) with their text. */
  readonly dropMentions?: boolean;
  readonly maxChars?: number;
  /** Drop what <script> and <style> hold (matching); shown as text otherwise, where it is inert. */
  readonly skipScripts?: boolean;
  /** Leave entities as written, for text stored now and decoded when shown. */
  readonly keepEntities?: boolean;
}

const BLOCK_ENDS = new Set(["p", "div", "li", "blockquote"]);
const RAW_TEXT = new Set(["script", "style"]);
const ENTITIES: Record<string, string> = {
  amp: "&", lt: "<", gt: ">", quot: '"', apos: "'", nbsp: " ", "#39": "'", rsquo: "\u2019", lsquo: "\u2018", ldquo: "\u201c", rdquo: "\u201d",
};

export function htmlToText(html: string, opts: HtmlTextOptions = {}): string {
  const gap = opts.tagGap ?? "";
  const src = html.length > (opts.maxChars ?? MAX_HTML_EXAMINED) ? html.slice(0, opts.maxChars ?? MAX_HTML_EXAMINED) : html;
  const lower = src.toLowerCase();
  const parts: string[] = [];
  // Where the next complete `</name…>` ends (or -1: none left), so many unclosed links cost one search.
  const closes = new Map<string, number>();
  const closeAfter = (name: string, from: number): number => {
    const known = closes.get(name);
    if (known !== undefined && (known === -1 || known > from)) return known;
    const at = lower.indexOf(`</${name}`, from);
    const gtAt = at === -1 ? -1 : lower.indexOf(">", at);
    const end = gtAt === -1 ? -1 : gtAt + 1;
    closes.set(name, end);
    return end;
  };
  let i = 0;
  while (i < src.length) {
    const lt = src.indexOf("<", i);
    if (lt === -1) {
      parts.push(src.slice(i));
      break;
    }
    parts.push(src.slice(i, lt));
    const gt = src.indexOf(">", lt + 1);
    if (gt === -1) {
      // No tag can start after an unclosed `<`: the rest is text.
      parts.push(src.slice(lt));
      break;
    }
    const tag = lower.slice(lt + 1, gt);
    const closing = tag.startsWith("/");
    const name = /^[a-z][a-z0-9]*/.exec(closing ? tag.slice(1) : tag)?.[0] ?? "";
    i = gt + 1;
    if (!closing && ((opts.skipScripts && RAW_TEXT.has(name)) || (opts.dropMentions && name === "a" && isMention(tag)))) {
      const end = closeAfter(name, i);
      if (end === -1 && name === "a") continue; // an unclosed link keeps its text
      i = end === -1 ? src.length : end;
      parts.push(gap);
    } else if (name === "br" || (closing && BLOCK_ENDS.has(name))) {
      parts.push("\n");
    } else {
      parts.push(gap);
    }
  }
  return opts.keepEntities ? parts.join("") : decodeEntities(parts.join(""));
}

function isMention(tag: string): boolean {
  const m = /\bclass\s*=\s*(["'])([^"']*)\1/.exec(tag);
  return m !== null && m[2]!.split(/\s+/).includes("mention");
}

function decodeEntities(text: string): string {
  return text.replace(/&(#\d{1,7}|#x[0-9a-f]{1,6}|[a-z][a-z0-9]{0,31});/gi, (m, e: string) => {
    if (e.startsWith("#x") || e.startsWith("#X")) return safeChar(parseInt(e.slice(2), 16)) ?? m;
    if (e.startsWith("#")) return ENTITIES[e] ?? safeChar(parseInt(e.slice(1), 10)) ?? m;
    return ENTITIES[e.toLowerCase()] ?? m;
  });
}

function safeChar(n: number): string | undefined {
  return Number.isInteger(n) && n > 0 && n <= 0x10ffff ? String.fromCodePoint(n) : undefined;
}
