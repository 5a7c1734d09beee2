import type { Federation } from "@fedify/fedify";
import type { MiddlewareHandler } from "hono";
import type { ReadCache } from "./read-cache.ts";

/**
 * Puts Fedify in front of the Hono routes (what @fedify/hono would do; that
 * package is not in this registry). Fedify answers ActivityPub requests; a
 * path it does not know, or a browser asking for HTML, falls through to Hono,
 * which is how /u/<slug> serves the Group to servers and a page to people.
 *
 * With a read cache, the actor, WebFinger and NodeInfo answers Fedify gave are
 * kept and served again until the documents' version changes (read-cache.ts).
 */
export function federationMiddleware(federation: Federation<void>, cache?: ReadCache, transform?: (request: Request, res: Response) => Promise<Response>): MiddlewareHandler {
  return async (c, next) => {
    const route = cache?.routeOf(c.req.raw);
    let version: string | undefined;
    if (cache && route) {
      const hit = await cache.lookup(c.req.raw);
      if (hit.response) {
        c.res = hit.response;
        return hit.response;
      }
      version = hit.version;
    }
    let fellThrough = false;
    let res = await federation.fetch(c.req.raw, {
      contextData: undefined,
      onNotFound: async () => {
        fellThrough = true;
        await next();
        return c.res;
      },
      onNotAcceptable: async () => {
        fellThrough = true;
        await next();
        if (c.res.status !== 404) return c.res;
        return new Response("Not Acceptable", { status: 406, headers: { "Content-Type": "text/plain", Vary: "Accept" } });
      },
    });
    // Fedify's answer completed (FEP-7aa9 fields on the Group) before the cache keeps it.
    if (!fellThrough && transform) res = await transform(c.req.raw, res);
    if (!fellThrough && cache && route && version !== undefined) res = await cache.store(c.req.raw, route, version, res);
    if (!fellThrough) c.res = res;
    return res;
  };
}
