import { logger } from "../src/logging.ts";
import { every } from "../src/sleep.ts";
import type { DomainDeps } from "../src/domain-deps.ts";
import { getUnionById } from "../src/unions/unions.ts";
import { getTreasury } from "../src/treasury/treasury.ts";
import { announceCrowdfund } from "../src/crowdfunds/announce.ts";
import type { Crowdfund } from "../src/crowdfunds/crowdfunds.ts";
import { formatUnits } from "./amounts.ts";
import { crowdfundsAwaitingVault, crowdfundsUnannounced, listCrowdfunds } from "../src/crowdfunds/crowdfunds.ts";
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
  // Open but never announced: the process died between opening the vault and announcing (announcing is once, announce.ts).
  if (deps.announce) {
    for (const cf of await crowdfundsUnannounced(deps.db, now)) await step("announcing", cf.id, () => deps.announce!(cf));
  }
  const unions = await deps.db.selectFrom("crowdfunds").select("union_id").where("state", "=", "open").distinct().execute();
  for (const { union_id } of unions) {
    for (const cf of await listCrowdfunds(deps.db, union_id, { states: ["open"] })) await step("recording pledges", cf.id, () => scanPledges(deps.ledger, deps.db, cf));
  }
  for (const cf of await crowdfundsToSettle(deps.db, now)) await step("settling", cf.id, () => settleCrowdfund(deps, cf, { now }));
}


/** Runs the crowdfund jobs every `intervalMs` until the signal aborts. */
export function runCrowdfunds(deps: CrowdfundChainDeps, signal: AbortSignal, intervalMs = 5_000): Promise<void> {
  return every(intervalMs, signal, () => runCrowdfundJobs(deps), (error) => log.error("Crowdfund pass failed: {error}", { error }));
}

/**
 * What the chain side needs from the rest of the server to announce an
 * opened crowdfund: the pledge page's address and the goal in the mint's units.
 */
export function crowdfundAnnouncer(domain: DomainDeps, origin: URL): (cf: Crowdfund) => Promise<boolean> {
  return async (cf) => {
    const union = await getUnionById(domain.db, cf.unionId);
    const treasury = await getTreasury(domain.db, cf.unionId);
    if (!union || !treasury) return false;
    return announceCrowdfund(domain, cf, { pledgeUrl: new URL(`/u/${union.slug}/crowdfunds/${cf.seq}`, origin), goalText: `${formatUnits(cf.goal, treasury.decimals)} tokens` });
  };
}
