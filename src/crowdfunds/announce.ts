import { composeAction } from "../actions/actions.ts";
import { OPERATOR } from "../members/members.ts";
import type { DomainDeps } from "../domain-deps.ts";
import { type Crowdfund, setAnnouncement } from "./crowdfunds.ts";

/**
 * Tells the members: an open crowdfund becomes a call-to-action ("donate")
 * published at once, whose link is the crowdfund's pledge page, through the
 * same streamed fan-out and hash chain as every call-to-action. Done once the
 * vault exists; a crowdfund already announced is left alone.
 */
export async function announceCrowdfund(deps: DomainDeps, cf: Crowdfund, how: { pledgeUrl: URL; goalText: string }): Promise<void> {
  if (cf.actionId) return;
  const title = `Crowdfund: ${cf.title}`.slice(0, 200);
  const text = `${cf.bodyMd}\n\nGoal: ${how.goalText}, by ${cf.deadline.toISOString().slice(0, 16).replace("T", " ")} UTC. Pledge from your wallet: ${how.pledgeUrl.href}`.slice(0, 10_000);
  const action = await composeAction(deps, cf.unionId, OPERATOR, {
    title, text, kind: "donate", link: how.pledgeUrl.href, deadline: cf.deadline.getTime() > Date.now() ? cf.deadline : null,
  }, { publishNow: true });
  await setAnnouncement(deps.db, cf.id, action.id);
}
