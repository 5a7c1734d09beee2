import type { Federation } from "@fedify/fedify";
import type { MiddlewareHandler } from "hono";

/**
 * Puts Fedify in front of the Hono routes (what @fedify/hono would do; that
 * package is not in this registry). Fedify answers ActivityPub requests; a
 * path it does not know, or a browser asking for HTML, falls through to Hono,
 * which is how /u/<slug> serves the Group to servers and a page to people.
 */
export function federationMiddleware(federation: Federation<void>): MiddlewareHandler {
  return async (c, next) => {
    let fellThrough = false;
    const res = await federation.fetch(c.req.raw, {
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
    if (!fellThrough) c.res = res;
    return res;
  };
}
