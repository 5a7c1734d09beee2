import assert from "node:assert/strict";
import type { Page, Response } from "playwright-core";
import type { UnionWithPeer } from "./union-with-peer.ts";

/** Extra assertions a suite makes on the pages along the way; they do not change the flow. */
export interface SignInChecks {
  /** On the "Check your messages" page. */
  sent?(): Promise<void>;
  /** On the page the link opens, before it is confirmed. */
  opened?(res: Response | null): Promise<void>;
}

/**
 * Signs in as a member does, from the union's sign-in page the browser is on:
 * asks for a link for the peer's actor, opens the one the union sent it by
 * direct message, and confirms it, landing on `landsOn`.
 */
export async function signInByDm(page: Page, u: UnionWithPeer, name: string, landsOn: string, checks: SignInChecks = {}): Promise<void> {
  await page.fill("input[name=handle]", u.handleOf(name));
  await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.click("form.setup button[type=submit]")]);
  assert.equal(await page.textContent("h1"), "Check your messages");
  await checks.sent?.();
  const res = await page.goto(u.url(`/u/riders/login/${await u.newLoginCode(name)}`));
  await checks.opened?.(res);
  await Promise.all([page.waitForURL(u.url(landsOn)), page.click("form.setup button[type=submit]")]);
}
