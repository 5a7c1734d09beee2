import type { Federation } from "@fedify/fedify";
import { logger } from "../src/logging.ts";

const log = logger("federation", "remote-follow");
const SUBSCRIBE_REL = "http://ostatus.org/schema/1.0/subscribe";

/**
 * Where to send someone so their own server shows the union ready to follow:
 * the OStatus subscribe template their server publishes in WebFinger
 * (Mastodon: /authorize_interaction?uri={uri}). Undefined when their server
 * publishes none or cannot be reached; the page then shows the handle to search.
 */
export async function remoteFollowUrl(federation: Federation<void>, origin: URL, handle: string, target: URL): Promise<string | undefined> {
  const ctx = federation.createContext(origin, undefined);
  try {
    const jrd = await ctx.lookupWebFinger(`acct:${handle.replace(/^@/, "")}`);
    const template = jrd?.links?.find((l) => l.rel === SUBSCRIBE_REL)?.template;
    if (!template || !template.includes("{uri}")) return undefined;
    const url = new URL(template.replace("{uri}", encodeURIComponent(target.href)));
    return url.protocol === "https:" || url.protocol === "http:" ? url.href : undefined;
  } catch (error) {
    log.info("No remote-follow link for {handle}: {error}", { handle, error });
    return undefined;
  }
}
