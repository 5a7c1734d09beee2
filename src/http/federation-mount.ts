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
    let rendered: (() => void) | undefined;
    if (cache && route) {
      let hit = await cache.lookup(c.req.raw);
      // The same document being rendered for another request: that one's answer, once stored.
      const pending = hit.response ? undefined : cache.rendering(c.req.raw, hit.version);
      if (pending) {
        await pending;
        hit = await cache.lookup(c.req.raw);
      }
      if (hit.response) {
        c.res = hit.response;
        return hit.response;
      }
      version = hit.version;
      rendered = cache.beginRendering(c.req.raw, version);
    }
    try {
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
    } finally {
      rendered?.();
    }
  };
}
