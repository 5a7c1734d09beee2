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
    return jrd ? followLinkFrom(jrd, handle, target) : undefined;
  } catch (error) {
    log.info("No remote-follow link for {handle}: {error}", { handle, error });
    return undefined;
  }
}

export interface WebFingerLinks {
  readonly links?: readonly { readonly rel: string; readonly href?: string; readonly template?: string }[];
}

/**
 * The subscribe template of a WebFinger answer filled in for `target`, if it
 * points at the account's own server (the handle's host, or the host its
 * WebFinger names as the account's): anything else would make the join form
 * an open redirect to wherever a WebFinger answer says.
 */
export function followLinkFrom(jrd: WebFingerLinks, handle: string, target: URL): string | undefined {
  const template = jrd.links?.find((l) => l.rel === SUBSCRIBE_REL)?.template;
  if (!template || !template.includes("{uri}")) return undefined;
  let url: URL;
  try {
    url = new URL(template.replace("{uri}", encodeURIComponent(target.href)));
  } catch {
    return undefined;
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") return undefined;
  const own = new Set([accountHost(handle), ...(jrd.links ?? []).filter((l) => l.rel === "self" && l.href).map((l) => hostOf(l.href!))]);
  if (!own.has(url.host.toLowerCase())) {
    log.info("Ignoring the remote-follow link for {handle}: {host} is not the account's server", { handle, host: url.host });
    return undefined;
  }
  return url.href;
}

function accountHost(handle: string): string {
  return handle.replace(/^@/, "").split("@").at(-1)!.toLowerCase();
}

function hostOf(href: string): string | undefined {
  try {
    return new URL(href).host.toLowerCase();
  } catch {
    return undefined;
  }
}
