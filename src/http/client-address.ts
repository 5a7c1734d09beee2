import { getConnInfo } from "@hono/node-server/conninfo";
import type { Context } from "hono";
import { clientBucket } from "../sessions/sessions.ts";

/**
 * Who a request counts against for rate limits: the socket's address, or
 * behind a reverse proxy the last X-Forwarded-For hop (the one the proxy
 * added), reduced by clientBucket to what should share a limit.
 */
export function clientOf(c: Context, trustProxy: boolean | undefined): string {
  if (trustProxy) {
    const last = c.req.header("x-forwarded-for")?.split(",").map((s) => s.trim()).filter(Boolean).at(-1);
    if (last) return clientBucket(last);
  }
  try {
    return clientBucket(getConnInfo(c).remote.address);
  } catch {
    return "unknown";
  }
}
