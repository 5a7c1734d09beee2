import { composeActionIn } from "../actions/actions.ts";
import { lockUnion, OPERATOR } from "../members/members.ts";
import type { DomainDeps } from "../domain-deps.ts";
import type { Crowdfund } from "./crowdfunds.ts";

/**
 * Tells the members: an open crowdfund becomes a call-to-action ("donate")
 * published at once, whose link is the crowdfund's pledge page, through the
 * same streamed fan-out and hash chain as every call-to-action. The action,
 * its delivery intent and the crowdfund's link to it commit together, under
 * the union's lock, so it happens exactly once: a second announcer (another
 * worker, the recovery pass after a crash between opening the vault and
 * announcing) finds it done. Returns whether this call announced.
 */
export async function announceCrowdfund(deps: DomainDeps, cf: Crowdfund, how: { pledgeUrl: URL; goalText: string }): Promise<boolean> {
  if (cf.actionId) return false;
  const title = `Crowdfund: ${cf.title}`.slice(0, 200);
  const text = `${cf.bodyMd}\n\nGoal: ${how.goalText}, by ${cf.deadline.toISOString().slice(0, 16).replace("T", " ")} UTC. Pledge from your wallet: ${how.pledgeUrl.href}`.slice(0, 10_000);
  const actionId = await deps.db.transaction().execute(async (trx) => {
    await lockUnion(trx, cf.unionId);
    const row = await trx.selectFrom("crowdfunds").select(["action_id", "state"]).where("id", "=", cf.id).executeTakeFirst();
    if (!row || row.action_id !== null || row.state !== "open") return null;
    const action = await composeActionIn(deps, trx, cf.unionId, OPERATOR, {
      title, text, kind: "donate", link: how.pledgeUrl.href, deadline: cf.deadline.getTime() > Date.now() ? cf.deadline : null,
    }, { publishNow: true });
    await trx.updateTable("crowdfunds").set({ action_id: action.id }).where("id", "=", cf.id).where("action_id", "is", null).execute();
    return action.id;
  });
  if (actionId) deps.events.emit("action.published", { unionId: cf.unionId, actionId });
  return actionId !== null;
}
