import type { IncomingMessage } from "node:http";
import { preloadedContexts } from "@fedify/vocab-runtime";
import type { Context, MiddlewareHandler } from "hono";
import type { Kysely } from "kysely";
import type { DB } from "../db/schema.ts";
import { isActivePeer } from "../../federation/relationships.ts";
import { unionsOfActor } from "../members/membership.ts";
import { relaysCallsOf } from "../relationships/partner-counted.ts";
import { apiError } from "./api-error.ts";
import { closeAfterResponse, nodeRequestOf } from "./close-connection.ts";
import { SIGNED_BODY_MAX_AGE_MS } from "../replay-window.ts";

/**
 * Fedify expands an inbox body as JSON-LD (fetching any remote @context it
 * names) before it checks the HTTP signature, so an unsigned request could
 * cost seconds of CPU, make the server fetch a URL of the sender's choosing,
 * or overflow the stack with nesting. This runs first, before anything reads
 * the body, and refuses as early as it can tell:
 * - from the headers alone, the body unread and the connection closed after
 *   the answer: a declared Content-Length over the limit, 413; no Signature
 *   or Signature-Input header, 401;
 * - while the body streams in, at the first offending byte: more bytes than
 *   the limit, 413; nesting deeper than MAX_JSON_DEPTH, 400;
 * - once read: not UTF-8 JSON, 400; an @context (or @import) that Fedify does
 *   not ship preloaded and that is not on the signing key's own host, 400
 *   (Pleroma names its litepub context on its own host, which the receiver
 *   has to fetch from there; that is the one server this request already
 *   makes us contact: the key's);
 * - a Create whose actor belongs to no union here and is no active peer
 *   union, unless it replies to a call of a union whose allies or chapters
 *   relay it (their members' replies reach the call's author), 403: Muster ignores such posts, so they are refused before
 *   Fedify's signature check, JSON-LD expansion and queue. This check only
 *   ever refuses (what passes is still verified by Fedify), so it needs no
 *   verified signature: checking one first would cost a key fetch for an
 *   unknown key, which is dearer than the one indexed lookup it guards.
 */
export const MAX_JSON_DEPTH = 32;

const INBOX_PATH = /^\/(?:u\/[^/]+\/)?inbox\/?$/;

export interface InboxGuardDeps {
  readonly db: Kysely<DB>;
  readonly maxBodyBytes: number;
  /** This server's canonical origin: a reply to one of its calls is recognised by it. */
  readonly origin?: URL;
}

export function inboxGuard(deps: InboxGuardDeps): MiddlewareHandler {
  return async (c, next) => {
    if (c.req.method !== "POST" || !INBOX_PATH.test(c.req.path)) return next();
    const incoming = nodeRequestOf(c);
    // Checked already, on the same bytes, by the node-level inbox (inboxPosts, src/http/inbox-fast.ts), which read them.
    const before = incoming?.[CHECKED];
    // Only a body that no web stream wraps is cut off: destroying a socket
    // under Readable.toWeb can throw an uncatchable ERR_INVALID_STATE
    // (nodejs/node#64529), which would end the process.
    const unwrapped = before !== undefined || incoming?.readableFlowing === null;
    const refuse = (status: 400 | 401 | 403 | 413, problem: Problem) => {
      if (unwrapped) closeAfterResponse(c);
      else c.header("Connection", "close");
      return apiError(c, status, problem.code, problem.message);
    };
    if (before && "failed" in before) throw before.failed;
    const check = before?.check ?? await checkInbox(deps, (name) => c.req.header(name), () => readChecked(c, deps.maxBodyBytes));
    if (!check.ok) return refuse(check.status, check.problem);
    // Handlers after this one read the parsed activity instead of parsing the body again.
    c.set("inboxActivity", check.doc);
    c.set("inboxBody", check.bytes);
    // The body was consumed: Fedify gets the same bytes (its digest check needs them exactly).
    c.req.raw = new Request(c.req.raw.url, { method: "POST", headers: c.req.raw.headers, body: check.bytes });
    return next();
  };
}

/** What the guard made of an inbox POST: its parsed activity and bytes, or why it is refused. */
export type InboxCheck =
  | { readonly ok: true; readonly doc: Record<string, unknown>; readonly bytes: Uint8Array<ArrayBuffer> }
  | { readonly ok: false; readonly status: 400 | 401 | 403 | 413; readonly problem: Problem; readonly read: boolean };

/**
 * Where the node-level inbox leaves its InboxCheck on the request it hands
 * to the app, having read the body: the guard answers from it as it would
 * have (the same refusal, or the same parsed activity; a check that threw
 * throws again) instead of reading a body that is gone.
 */
export const CHECKED: unique symbol = Symbol("muster.inboxChecked");

declare module "node:http" {
  interface IncomingMessage {
    [CHECKED]?: { readonly check: InboxCheck } | { readonly failed: unknown };
  }
}

/**
 * Every check above, in order, on a POST to an inbox: `header` reads a
 * request header, `read` the body (only once the headers passed). `read` is
 * false on a refusal from the headers alone (the body is still unread).
 */
export async function checkInbox(deps: InboxGuardDeps, header: (name: string) => string | undefined, read: () => Promise<ReadResult>): Promise<InboxCheck> {
  const declared = declaredLength(header("Content-Length"));
  if (declared > deps.maxBodyBytes) return { ok: false, status: 413, problem: tooLarge(deps.maxBodyBytes), read: false };
  const signature = header("Signature-Input") ?? header("Signature");
  if (!signature) return { ok: false, status: 401, problem: { code: "unsigned", message: "inbox deliveries must be signed with an HTTP signature (Signature or Signature-Input header)" }, read: false };
  const body = await read();
  if ("status" in body) return { ok: false, status: body.status, problem: body.problem, read: true };
  const parsed = parseBody(body.bytes, keyHost(signature));
  if ("code" in parsed) return { ok: false, status: 400, problem: parsed, read: true };
  // A body signed on its own (Object Integrity Proof or Linked Data
  // signature) is accepted by Fedify without the HTTP signature's time
  // window, and activity ids are pruned after a while (src/replay-window.ts):
  // an old one is a replay.
  const created = oldestSignedBody(parsed.doc);
  if (created !== undefined && created < Date.now() - SIGNED_BODY_MAX_AGE_MS) {
    const when = Number.isFinite(created) ? `was created ${new Date(created).toISOString()}` : "has an unreadable creation date";
    return { ok: false, status: 401, problem: { code: "stale_signature", message: `the body's signature ${when}; signatures older than ${SIGNED_BODY_MAX_AGE_MS / 3600_000} hours are refused as replays` }, read: true };
  }
  const stranger = await strangersCreate(deps.db, parsed, deps.origin);
  if (stranger) return { ok: false, status: 403, problem: { code: "not_member", message: `${stranger.slice(0, 200)} is not a member of a union here; its posts are not accepted` }, read: true };
  return { ok: true, doc: parsed.doc, bytes: body.bytes };
}

export interface Problem {
  readonly code: string;
  readonly message: string;
}

const tooLarge = (max: number): Problem => ({ code: "payload_too_large", message: `request bodies are limited to ${max} bytes` });

function declaredLength(header: string | undefined): number {
  if (header === undefined || !/^\d{1,15}$/.test(header)) return -1;
  return Number(header);
}

export type ReadResult = { bytes: Uint8Array<ArrayBuffer> } | { status: 400 | 413; problem: Problem };

/** Reads the body, checking each chunk as it arrives; stops reading at the first problem. */
async function readChecked(c: Context, maxBytes: number): Promise<ReadResult> {
  const body = checkedBody(maxBytes);
  const incoming = nodeRequestOf(c);
  // Straight from Node's stream when nothing has read it yet: no web-stream copy per chunk.
  const problem = incoming && incoming.readableFlowing === null ? await readNode(incoming, body.take) : await readWeb(c.req.raw.body, body.take);
  return problem ?? body.whole();
}

/** readChecked on a node request that nothing has read yet (the node-level inbox, src/http/inbox-fast.ts). */
export async function readIncoming(incoming: IncomingMessage, maxBytes: number): Promise<ReadResult> {
  const body = checkedBody(maxBytes);
  return await readNode(incoming, body.take) ?? body.whole();
}

/** Takes a body's chunks as they arrive: a problem at the first chunk past the size limit or the depth limit. */
function checkedBody(maxBytes: number) {
  const scan = new DepthScan(MAX_JSON_DEPTH);
  const chunks: Uint8Array<ArrayBuffer>[] = [];
  let total = 0;
  return {
    take: (chunk: Uint8Array<ArrayBuffer>): ReadResult | undefined => {
      total += chunk.byteLength;
      if (total > maxBytes) return { status: 413, problem: tooLarge(maxBytes) };
      if (scan.exceeds(chunk)) return { status: 400, problem: { code: "too_deep", message: `JSON nested deeper than ${MAX_JSON_DEPTH} levels is refused` } };
      chunks.push(chunk);
      return undefined;
    },
    whole: (): ReadResult => ({ bytes: chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, total) }),
  };
}

function readNode(incoming: IncomingMessage, take: (chunk: Uint8Array<ArrayBuffer>) => ReadResult | undefined): Promise<ReadResult | undefined> {
  return new Promise((resolve) => {
    const done = (result: ReadResult | undefined) => {
      incoming.off("data", onData);
      incoming.off("end", onEnd);
      incoming.off("error", onError);
      incoming.off("close", onClose);
      resolve(result);
    };
    const onData = (chunk: Buffer<ArrayBuffer>) => {
      const problem = take(chunk);
      if (problem) {
        // Not destroyed here: the answer still has to go out on this socket (closeAfterResponse).
        incoming.pause();
        done(problem);
      }
    };
    const onEnd = () => done(undefined);
    const onError = () => done({ status: 400, problem: { code: "incomplete_body", message: "the request body did not arrive whole" } });
    const onClose = () => {
      if (!incoming.complete) onError();
    };
    incoming.on("data", onData);
    incoming.on("end", onEnd);
    incoming.on("error", onError);
    incoming.on("close", onClose);
  });
}

async function readWeb(body: ReadableStream<Uint8Array<ArrayBuffer>> | null, take: (chunk: Uint8Array<ArrayBuffer>) => ReadResult | undefined): Promise<ReadResult | undefined> {
  if (!body) return undefined;
  const reader = body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return undefined;
      const problem = take(value);
      if (problem) {
        await reader.cancel().catch(() => {});
        return problem;
      }
    }
  } catch {
    return { status: 400, problem: { code: "incomplete_body", message: "the request body did not arrive whole" } };
  }
}

function parseBody(bytes: Uint8Array, signerHost: string | undefined): { doc: Record<string, unknown> } | Problem {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: false }).decode(bytes);
  } catch {
    return { code: "invalid_json", message: "the body is not UTF-8" };
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (error) {
    return { code: "invalid_json", message: `the body is not JSON: ${(error as Error).message.slice(0, 200)}` };
  }
  if (typeof doc !== "object" || doc === null || Array.isArray(doc)) {
    return { code: "invalid_json", message: "the body must be a JSON object (an activity)" };
  }
  const remote = firstRemoteContext(doc, signerHost);
  if (remote !== undefined) {
    return { code: "unsupported_context", message: `the @context ${JSON.stringify(remote.slice(0, 200))} is neither a well-known context nor on the signer's server` };
  }
  return { doc: doc as Record<string, unknown> };
}

/** The actor of a Create from someone with no relation to any union here, if it is one. */
async function strangersCreate(db: Kysely<DB>, { doc }: { doc: Record<string, unknown> }, origin: URL | undefined): Promise<string | undefined> {
  if (doc.type !== "Create") return undefined;
  const actor = typeof doc.actor === "string" ? doc.actor : undefined;
  // Anything unusual (an embedded actor, several) is left to Fedify and the inbox listener.
  if (!actor) return undefined;
  if ((await unionsOfActor(db, actor)).length > 0 || await isActivePeer(db, actor)) return undefined;
  // A reply to a call that allies or chapters relay may be from one of their
  // members (stock Mastodon replies to the author): the inbox asks them.
  const slug = replyToCallOf(doc, origin);
  if (slug !== undefined && await relaysCallsOf(db, slug)) return undefined;
  return actor;
}

/** The union whose call-to-action an embedded note replies to, if it is one of ours. */
function replyToCallOf(doc: Record<string, unknown>, origin: URL | undefined): string | undefined {
  const object = doc.object;
  if (!object || typeof object !== "object" || Array.isArray(object)) return undefined;
  const target = (object as Record<string, unknown>).inReplyTo;
  const href = typeof target === "string" ? target : target && typeof target === "object" && typeof (target as { id?: unknown }).id === "string" ? (target as { id: string }).id : undefined;
  if (!href || !URL.canParse(href)) return undefined;
  const url = new URL(href);
  if (origin && url.origin !== origin.origin) return undefined;
  const m = /^\/u\/([^/]+)\/actions\/[^/]+$/.exec(url.pathname);
  return m ? decodeURIComponent(m[1]!) : undefined;
}

/**
 * Counts nesting across chunks of UTF-8 bytes, skipping strings. The bytes it
 * looks for are ASCII, which never occur inside a multi-byte UTF-8 sequence,
 * so no decoding is needed. JSON.parse and JSON-LD recurse per level; this
 * does not.
 */
export class DepthScan {
  #depth = 0;
  #inString = false;
  #escaped = false;
  readonly max: number;
  constructor(max: number) {
    this.max = max;
  }

  /** True at the first byte that opens level max + 1; the rest is not looked at. */
  exceeds(chunk: Uint8Array): boolean {
    // A Buffer view, for its native indexOf: hostile bodies are mostly long strings.
    const bytes = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    const end = bytes.length;
    let depth = this.#depth;
    let inString = this.#inString;
    let escaped = this.#escaped;
    const max = this.max;
    let backslash = -2; // the next backslash at or after i, once looked up (-1: none left)
    let i = 0;
    while (i < end) {
      if (inString) {
        if (escaped) {
          escaped = false;
          i++;
          continue;
        }
        const quote = bytes.indexOf(0x22, i);
        if (backslash !== -1 && backslash < i) backslash = bytes.indexOf(0x5c, i);
        if (backslash !== -1 && (quote === -1 || backslash < quote)) {
          escaped = true;
          i = backslash + 1;
        } else if (quote === -1) {
          i = end;
        } else {
          inString = false;
          i = quote + 1;
        }
        continue;
      }
      const b = bytes[i++]!;
      if (b === 0x22) inString = true;
      else if (b === 0x5b || b === 0x7b) {
        if (++depth > max) return true;
      } else if (b === 0x5d || b === 0x7d) depth--;
    }
    this.#depth = depth;
    this.#inString = inString;
    this.#escaped = escaped;
    return false;
  }
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

declare module "hono" {
  interface ContextVariableMap {
    /** An inbox POST's body as the guard parsed it, for later handlers (never for Fedify, which reads the bytes). */
    inboxActivity?: Record<string, unknown>;
    /** Its bytes, exactly as Fedify will read them (the fast path checks their digest). */
    inboxBody?: Uint8Array;
  }
}
