import { logger } from "../src/logging.ts";
import { crowdfundsAwaitingVault, listCrowdfunds } from "../src/crowdfunds/crowdfunds.ts";
import { crowdfundsToSettle } from "../src/crowdfunds/settlement.ts";
import { scanPledges } from "./crowdfund-pledges.ts";
import { settleCrowdfund } from "./crowdfund-settlement.ts";
import { type CrowdfundChainDeps, openVault } from "./crowdfund-vault.ts";

const log = logger("solana", "crowdfunds");

/**
 * One pass of the crowdfunds' chain work, run on a timer by each process
 * with a ledger: open approved vaults, record new pledges, settle what is
 * due and finish settlements a crash interrupted. The database is the queue:
 * each step is claimed or keyed so that two workers doing it at once do it
 * once, and one crowdfund's failure never stops the others.
 */
export async function runCrowdfundJobs(deps: CrowdfundChainDeps, now = Date.now()): Promise<void> {
  const step = async (what: string, id: string, work: () => Promise<unknown>) => {
    try {
      await work();
    } catch (error) {
      log.error("Crowdfund {id}: {what} failed: {error}", { id, what, error });
    }
  };
  for (const cf of await crowdfundsAwaitingVault(deps.db)) await step("opening the vault", cf.id, () => openVault(deps, cf.id));
  const unions = await deps.db.selectFrom("crowdfunds").select("union_id").where("state", "=", "open").distinct().execute();
  for (const { union_id } of unions) {
    for (const cf of await listCrowdfunds(deps.db, union_id, { states: ["open"] })) await step("recording pledges", cf.id, () => scanPledges(deps.ledger, deps.db, cf));
  }
  for (const cf of await crowdfundsToSettle(deps.db, now)) await step("settling", cf.id, () => settleCrowdfund(deps, cf, { now }));
}

