import type { MiddlewareHandler } from "hono";
import type { Kysely } from "kysely";
import type { DB } from "../db/schema.ts";
import { logger } from "../logging.ts";
import { blockedAmongShared } from "../servers/blocklist.ts";

const log = logger("http", "blocked-servers");
const INBOX_PATH = /^\/(?:u\/[^/]+\/)?inbox\/?$/;

/**
 * Drops inbox deliveries from a blocked server before Fedify does any work
 * on them (no key fetch, no JSON-LD): the signing key's server or the
 * activity's actor's server is on the block list. The sender is told 202,
 * as for any delivery, so it does not retry; the drop is logged.
 * Runs after inboxGuard, which has already read and checked the body.
 */
export function blockedServerGuard(db: Kysely<DB>): MiddlewareHandler {
  return async (c, next) => {
    if (c.req.method !== "POST" || !INBOX_PATH.test(c.req.path)) return next();
    // The inbox guard has parsed the body (it refuses what does not parse).
    const { blocked, actor } = await blockedSender(db, c.req.header("Signature-Input") ?? c.req.header("Signature"), c.get("inboxActivity"));
    if (blocked) {
      log.warn("Dropped an inbox delivery to {path} from blocked server {host} (actor {actor})", { path: c.req.path, host: new URL(blocked).host, actor: actor ?? "(none)" });
      return c.body(null, 202);
    }
    return next();
  };
}

/** The blocked server among the signing key's and the activity's actor's, if either is (also the node-level inbox's check, src/http/inbox-fast.ts). */
export async function blockedSender(db: Kysely<DB>, signatureHeader: string | undefined, activity: Record<string, unknown> | undefined): Promise<{ blocked: string | undefined; actor: string | undefined }> {
  const keyId = /\bkeyid="([^"]{1,2048})"/i.exec(signatureHeader ?? "")?.[1];
  const doc = activity as { actor?: unknown } | undefined;
  const actor = typeof doc?.actor === "string" ? doc.actor : typeof (doc?.actor as { id?: unknown } | undefined)?.id === "string" ? (doc!.actor as { id: string }).id : undefined;
  return { blocked: await blockedAmongShared(db, [keyId, actor].filter((u): u is string => u !== undefined)), actor };
}
