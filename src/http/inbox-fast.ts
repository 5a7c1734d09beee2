import type { MiddlewareHandler } from "hono";
import type { FastInbox } from "../../federation/inbox-fast-path.ts";
import { logger } from "../logging.ts";

const log = logger("http", "inbox-fast");
const INBOX_PATH = /^\/(?:u\/([^/]+)\/)?inbox$/;

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
    if (!m || !doc) return next();
    let recipient: string | null = null;
    try {
      recipient = m[1] === undefined ? null : decodeURIComponent(m[1]);
    } catch {
      return next();
    }
    let outcome;
    try {
      outcome = await fast(c.req.raw, doc, recipient);
    } catch (error) {
      // Nothing was committed (the transaction rolled back): Fedify takes it as it would have.
      log.warn("The inbox's fast path failed on {path}; handing it to Fedify: {error}", { path: c.req.path, error });
      return next();
    }
    if (outcome === undefined) return next();
    return c.body(null, 202);
  };
}
