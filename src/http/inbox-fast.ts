import type { IncomingMessage, RequestListener, ServerResponse } from "node:http";
import { Hono, type MiddlewareHandler } from "hono";
import type { Kysely } from "kysely";
import type { FastInbox } from "../../federation/inbox-fast-path.ts";
import { type FastRequest, LazyInboxRequest } from "../../federation/inbox-request.ts";
import type { DB } from "../db/schema.ts";
import { logger } from "../logging.ts";
import { securityHeaders } from "./app.ts";
import { blockedSender } from "./blocked-servers.ts";
import { nodeRequestOf } from "./close-connection.ts";
import { CHECKED, checkInbox, readIncoming } from "./inbox-guard.ts";

const log = logger("http", "inbox-fast");
const INBOX_PATH = /^\/(?:u\/([^/]+)\/)?inbox$/;

/** Set on a request the node-level inbox already offered the fast path: the app's route does not offer it again. */
const OFFERED: unique symbol = Symbol("muster.inboxFastOffered");

declare module "node:http" {
  interface IncomingMessage {
    [OFFERED]?: true;
    /** @hono/node-server builds the request's body from this when it is set (the node-level inbox has read the stream). */
    rawBody?: Buffer;
  }
}

/**
 * Hands inbox POSTs that passed the inbox guard (and the blocked-server
 * check) to the fast path (federation/inbox-fast-path.ts) before Fedify; what
 * it does not take, or fails on, goes on to Fedify untouched.
 */
export function fastInboxRoute(fast: FastInbox): MiddlewareHandler {
  return async (c, next) => {
    if (c.req.method !== "POST") return next();
    const m = INBOX_PATH.exec(c.req.path);
    const doc = c.get("inboxActivity");
    const body = c.get("inboxBody");
    if (!m || !doc || !body || nodeRequestOf(c)?.[OFFERED]) return next();
    let recipient: string | null = null;
    try {
      recipient = m[1] === undefined ? null : decodeURIComponent(m[1]);
    } catch {
      return next();
    }
    const outcome = await offer(fast, c.req.raw, body, doc, recipient, c.req.path);
    if (outcome === undefined) return next();
    return c.body(null, 202);
  };
}

/** The fast path's outcome; undefined, also when it failed (nothing was committed), hands the activity to Fedify. */
async function offer(fast: FastInbox, request: FastRequest, body: Uint8Array, doc: Record<string, unknown>, recipient: string | null, path: string) {
  try {
    return await fast(request, body, doc, recipient);
  } catch (error) {
    // Nothing was committed (the transaction rolled back): Fedify takes it as it would have.
    log.warn("The inbox's fast path failed on {path}; handing it to Fedify: {error}", { path, error });
    return undefined;
  }
}

export interface InboxPostsDeps {
  readonly db: Kysely<DB>;
  readonly maxBodyBytes: number;
  readonly origin: URL;
  readonly fast: FastInbox;
}

/**
 * The fast path's inbox POSTs answered in the node request handler, before
 * Hono and @hono/node-server's Request/Response conversion (as fast-reads.ts
 * answers cached GETs), through the very checks the app runs first: the
 * inbox guard's (checkInbox: size limit, signature header, depth, JSON,
 * contexts, stale body signature, strangers' Creates; inbox POSTs have no
 * rate limit) and the blocked-server check. Only a 202 for what the fast
 * path counted is written here, with the headers the app puts on its own
 * 202. Everything else goes to the app: a refusal from the headers alone
 * with the body unread; once the body is read, with the guard's result left
 * on the request (CHECKED) so the app refuses it, drops it (a blocked
 * server) or hands it to Fedify exactly as it would have.
 */
export function inboxPosts(deps: InboxPostsDeps): (next: RequestListener) => RequestListener {
  let accepted: Promise<[string, string][]> | undefined;
  // The app's own security headers, as its middleware writes them on a 202.
  const acceptedHeaders = () => accepted ??= (async () => {
    const probe = new Hono();
    probe.use("*", securityHeaders(deps.origin));
    probe.post("*", (c) => c.body(null, 202));
    return [...(await probe.request("/inbox", { method: "POST" })).headers];
  })();
  return (next) => (req, res) => {
    const m = req.method === "POST" && req.readableFlowing === null ? INBOX_PATH.exec(req.url ?? "") : null;
    if (!m) return next(req, res);
    handle(deps, req, res, m[1], acceptedHeaders).then((answered) => {
      if (!answered) next(req, res);
    }, (error: unknown) => {
      // Before anything was read the app can still take it whole. A check that failed once the body was
      // read fails in the app's guard with the same error, which the app answers as it always has (503, 500).
      log.warn("The node-level inbox failed on {path}; handing it to the app: {error}", { path: req.url, error });
      if (req[CHECKED] === undefined && req.readableFlowing !== null) req[CHECKED] = { failed: error };
      req[OFFERED] = true;
      next(req, res);
    });
  };
}

/** True once the 202 is written; false hands the request to the app. */
async function handle(deps: InboxPostsDeps, req: IncomingMessage, res: ServerResponse, slug: string | undefined, acceptedHeaders: () => Promise<[string, string][]>): Promise<boolean> {
  const header = (name: string) => {
    const v = req.headers[name.toLowerCase()];
    return Array.isArray(v) ? v.join(", ") : v;
  };
  const check = await checkInbox(deps, header, () => readIncoming(req, deps.maxBodyBytes));
  // Refused from the headers alone: the app refuses it the same way, the body still unread.
  if (!check.ok && !check.read) return false;
  req[CHECKED] = { check };
  if (!check.ok) return false;
  req.rawBody = Buffer.from(check.bytes.buffer, check.bytes.byteOffset, check.bytes.byteLength);
  req[OFFERED] = true;
  // A blocked server's delivery: the app's blocked-server guard drops and logs it.
  if ((await blockedSender(deps.db, header("Signature-Input") ?? header("Signature"), check.doc)).blocked) return false;
  let recipient: string | null = null;
  try {
    recipient = slug === undefined ? null : decodeURIComponent(slug);
  } catch {
    return false;
  }
  // The URL @hono/node-server would give the app (the signature covers the target): only when it reads the same.
  const url = `${(req.socket as { encrypted?: boolean }).encrypted ? "https" : "http"}://${req.headers.host ?? ""}${req.url}`;
  if (!req.headers.host || !URL.canParse(url) || new URL(url).href !== url) return false;
  // Headers read off the raw list; the WHATWG Request only if Fedify's verifier is asked (inbox-request.ts).
  const request = new LazyInboxRequest(url, req.rawHeaders, check.bytes);
  if (await offer(deps.fast, request, check.bytes, check.doc, recipient, req.url ?? "") === undefined) return false;
  res.writeHead(202, (await acceptedHeaders()).flat());
  res.end();
  return true;
}
