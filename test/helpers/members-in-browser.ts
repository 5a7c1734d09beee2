import type { Browser } from "playwright-core";
import { launchBrowser } from "./browser.ts";
import { eventually } from "./muster.ts";
import type { StartedUnion, UnionWithPeer } from "./union-with-peer.ts";

export interface MembersInBrowser extends StartedUnion {
  readonly browser: Browser;
}

/**
 * The browser suites' before hook: the union and its peer come up, each of
 * `actors` follows the union and is waited for as an active member, `setUp`
 * adds what the suite needs before any page opens, then Chromium starts.
 */
export async function startMembersInBrowser(
  fx: UnionWithPeer, actors: readonly string[], setUp?: (started: StartedUnion) => Promise<void>,
): Promise<MembersInBrowser> {
  const started = await fx.start();
  for (const name of actors) {
    await fx.follow(name);
    await eventually(async () => (await fx.member(name))?.state === "active", `${name} joined`, 30_000);
  }
  await setUp?.(started);
  return { ...started, browser: await launchBrowser() };
}

/** The matching after hook: the browser goes down before the servers. */
export async function stopMembersInBrowser(fx: UnionWithPeer, browser: Browser | undefined): Promise<void> {
  await browser?.close();
  await fx.stop();
}
