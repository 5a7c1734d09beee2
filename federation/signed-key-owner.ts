import type { Context, RequestContext } from "@fedify/fedify";
import { logger } from "../src/logging.ts";

const log = logger("federation");

/**
 * The actor whose key signed this request, if it verifies and the actor
 * claims the key (Fedify's check, with its key cache and this server's
 * private-address rule). Reads that show members ask it who is looking.
 */
export async function signedKeyOwner(ctx: RequestContext<void> | Context<void>): Promise<URL | undefined> {
  if (!("getSignedKeyOwner" in ctx)) return undefined;
  try {
    return (await ctx.getSignedKeyOwner())?.id ?? undefined;
  } catch (error) {
    log.info("Signature check of a signed fetch failed: {error}", { error });
    return undefined;
  }
}
