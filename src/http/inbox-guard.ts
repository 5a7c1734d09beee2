import { preloadedContexts } from "@fedify/vocab-runtime";
import type { MiddlewareHandler } from "hono";
import { apiError } from "./api-error.ts";
import { SIGNED_BODY_MAX_AGE_MS } from "../replay-window.ts";

/**
 * Fedify expands an inbox body as JSON-LD (fetching any remote @context it
 * names) before it checks the HTTP signature, so an unsigned request could
 * cost seconds of CPU, make the server fetch a URL of the sender's choosing,
 * or overflow the stack with nesting. This runs first and refuses, cheaply:
 * - no Signature or Signature-Input header: 401 (nothing is read);
 * - a body that is not UTF-8 JSON, or nests deeper than MAX_JSON_DEPTH: 400;
 * - an @context (or @import) that Fedify does not ship preloaded and that is
 *   not on the signing key's own host: 400. Pleroma names its litepub
 *   context on its own host, which the receiver has to fetch from there;
 *   that is the one server this request already makes us contact (the key).
 * - a body signed on its own (Object Integrity Proof or Linked Data signature)
 *   created more than SIGNED_BODY_MAX_AGE_MS ago: 401. Fedify accepts such a
 *   body without the HTTP signature's time window, and activity ids are
 *   pruned after a while (src/replay-window.ts), so an old one is a replay.
 */
export const MAX_JSON_DEPTH = 32;

const INBOX_PATH = /^\/(?:u\/[^/]+\/)?inbox\/?$/;

export function inboxGuard(): MiddlewareHandler {
  return async (c, next) => {
    if (c.req.method !== "POST" || !INBOX_PATH.test(c.req.path)) return next();
    const signature = c.req.header("Signature-Input") ?? c.req.header("Signature");
    if (!signature) {
      c.header("Connection", "close"); // the body is never read
      return apiError(c, 401, "unsigned", "inbox deliveries must be signed with an HTTP signature (Signature or Signature-Input header)");
    }
    const bytes = new Uint8Array(await c.req.raw.arrayBuffer());
    const problem = checkBody(bytes, keyHost(signature), Date.now());
    if (problem) return apiError(c, problem.code === "stale_signature" ? 401 : 400, problem.code, problem.message);
    // The body was consumed: Fedify gets the same bytes (its digest check needs them exactly).
    c.req.raw = new Request(c.req.raw.url, { method: "POST", headers: c.req.raw.headers, body: bytes });
    return next();
  };
}

interface Problem {
  readonly code: string;
  readonly message: string;
}

function checkBody(bytes: Uint8Array, signerHost: string | undefined, now: number): Problem | undefined {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    return { code: "invalid_json", message: "the body is not UTF-8" };
  }
  if (depthExceeds(text, MAX_JSON_DEPTH)) {
    return { code: "too_deep", message: `JSON nested deeper than ${MAX_JSON_DEPTH} levels is refused` };
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (error) {
    return { code: "invalid_json", message: `the body is not JSON: ${(error as Error).message}` };
  }
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) {
    return { code: "invalid_json", message: "the body must be a JSON object (an activity)" };
  }
  const remote = firstRemoteContext(doc, signerHost);
  if (remote !== undefined) {
    return { code: "unsupported_context", message: `the @context ${JSON.stringify(remote.slice(0, 200))} is neither a well-known context nor on the signer's server` };
  }
  const created = oldestSignedBody(doc as Record<string, unknown>);
  if (created !== undefined && created < now - SIGNED_BODY_MAX_AGE_MS) {
    const when = Number.isFinite(created) ? `was created ${new Date(created).toISOString()}` : "has an unreadable creation date";
    return { code: "stale_signature", message: `the body's signature ${when}; signatures older than ${SIGNED_BODY_MAX_AGE_MS / 3600_000} hours are refused as replays` };
  }
  return undefined;
}

/** The earliest `created` of the activity's own proofs and Linked Data signature; -Infinity (refused) when one is unreadable. */
function oldestSignedBody(doc: Record<string, unknown>): number | undefined {
  const signatures = [doc.signature, ...(Array.isArray(doc.proof) ? doc.proof : [doc.proof])].filter((s) => typeof s === "object" && s !== null) as Record<string, unknown>[];
  let oldest: number | undefined;
  for (const s of signatures) {
    if (s.created === undefined) continue; // Fedify does not accept a signature without one
    const at = typeof s.created === "string" ? Date.parse(s.created) : Number.NaN;
    // An unreadable date cannot be shown to be recent.
    const when = Number.isNaN(at) ? Number.NEGATIVE_INFINITY : at;
    oldest = oldest === undefined ? when : Math.min(oldest, when);
  }
  return oldest;
}

/** One pass over the text, skipping strings: JSON.parse and JSON-LD recurse per level, this does not. */
export function depthExceeds(text: string, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    if (inString) {
      if (ch === 0x5c) i++; // backslash: skip the escaped character
      else if (ch === 0x22) inString = false;
    } else if (ch === 0x22) {
      inString = true;
    } else if (ch === 0x5b || ch === 0x7b) {
      if (++depth > max) return true;
    } else if (ch === 0x5d || ch === 0x7d) {
      depth--;
    }
  }
  return false;
}

/** The host of the key a Signature (keyId="…") or Signature-Input (keyid="…") header names. */
function keyHost(header: string): string | undefined {
  const m = /\bkeyid="([^"]{1,2048})"/i.exec(header);
  if (!m) return undefined;
  try {
    return new URL(m[1]!).hostname;
  } catch {
    return undefined;
  }
}

/** The first @context or @import anywhere in the document that would be fetched from elsewhere. */
function firstRemoteContext(doc: unknown, signerHost: string | undefined): string | undefined {
  const allowed = (url: string) => {
    if (Object.hasOwn(preloadedContexts, url)) return true;
    try {
      return signerHost !== undefined && new URL(url).hostname === signerHost;
    } catch {
      return false;
    }
  };
  const stack: Array<{ value: unknown; isContext: boolean }> = [{ value: doc, isContext: false }];
  while (stack.length) {
    const { value, isContext } = stack.pop()!;
    if (typeof value === "string") {
      if (isContext && !allowed(value)) return value;
    } else if (Array.isArray(value)) {
      for (const v of value) stack.push({ value: v, isContext });
    } else if (typeof value === "object" && value !== null) {
      for (const [k, v] of Object.entries(value)) {
        if (k === "@context" || k === "@import") stack.push({ value: v, isContext: true });
        else if (typeof v === "object" && v !== null) stack.push({ value: v, isContext: false });
      }
    }
  }
  return undefined;
}
