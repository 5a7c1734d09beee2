import type { Hono } from "hono";
import type { Kysely } from "kysely";
import type { DB } from "../db/schema.ts";
import { type Crowdfund, CrowdfundError, findCrowdfund, listCrowdfunds, pledgeMemo } from "../crowdfunds/crowdfunds.ts";
import { listPledges } from "../crowdfunds/pledges.ts";
import { settlementTransactions } from "../crowdfunds/settlement.ts";
import { mayReadRoster } from "../members/roster.ts";
import { getTreasury } from "../treasury/treasury.ts";
import { getUnionBySlug, type Union } from "../unions/unions.ts";
import { signedInMember } from "./members-web.ts";
import { errorPage } from "./pages/error.ts";
import { crowdfundPage, type CrowdfundListItem } from "./pages/crowdfund.ts";

export interface CrowdfundsWebDeps {
  readonly db: Kysely<DB>;
  /** Reads a vault's balance from the chain; absent in a process without a ledger. */
  readonly vaultBalance?: (vault: string) => Promise<bigint | null>;
  /** Formats base units with the mint's decimals. */
  readonly formatUnits: (amount: bigint, decimals: number) => string;
}

/** Crowdfunds members see: not the proposals and rejections, which are the officers' business. */
const SHOWN: readonly Crowdfund["state"][] = ["open", "succeeded", "settled", "failed", "refunded"];

export async function crowdfundItems(deps: CrowdfundsWebDeps, union: Union): Promise<CrowdfundListItem[]> {
  const t = await getTreasury(deps.db, union.id);
  return (await listCrowdfunds(deps.db, union.id, { states: SHOWN })).map((cf) => ({
    seq: cf.seq, title: cf.title, state: cf.state, goal: t ? `${deps.formatUnits(cf.goal, t.decimals)} tokens` : `${cf.goal} units`,
  }));
}



/** `/u/<slug>/crowdfunds/<3 | id>`: readable by whoever may read the union's calls-to-action. */
export function mountCrowdfundsWeb(app: Hono, deps: CrowdfundsWebDeps): void {
  app.get("/u/:slug/crowdfunds/:id", async (c) => {
    const union = await getUnionBySlug(deps.db, c.req.param("slug"));
    if (!union) return c.html(errorPage(404, "No such union here."), 404);
    const notHere = () => c.html(errorPage(404, "No such crowdfund here."), 404);
    let cf: Crowdfund;
    try {
      cf = await findCrowdfund(deps.db, union.id, c.req.param("id"));
    } catch (e) {
      if (e instanceof CrowdfundError) return notHere();
      throw e;
    }
    const viewer = await signedInMember(deps.db, c, union);
    const officer = viewer?.state === "active" && (viewer.role === "officer" || viewer.role === "leader");
    if (!SHOWN.includes(cf.state) && !officer) return notHere();
    if (union.actionsVisibility !== "public" && !viewer) return c.html(errorPage(403, "Sign in as a member of this union to see its crowdfunds."), 403);
    c.header("Cache-Control", "private, no-cache");
    const t = await getTreasury(deps.db, union.id);
    const decimals = t?.decimals ?? 0;
    const pledges = await listPledges(deps.db, cf.id);
    // Who pledged reveals membership: names follow the union's roster rule.
    let names: Map<string, string> | null = null;
    if (await mayReadRoster(deps.db, union, { via: "web", member: viewer })) {
      const ids = [...new Set(pledges.map((p) => p.memberId).filter((id): id is string => id !== null))];
      const rows = ids.length ? await deps.db.selectFrom("members").select(["id", "handle", "actor_id"]).where("id", "in", ids).execute() : [];
      names = new Map(rows.map((r) => [r.id, r.handle ?? r.actor_id ?? "a member"]));
    }
    let vaultBalance: bigint | "closed" | null = null;
    if (cf.vault && deps.vaultBalance) {
      try {
        vaultBalance = (await deps.vaultBalance(cf.vault)) ?? "closed";
      } catch {
        vaultBalance = null;
      }
    }
    return c.html(crowdfundPage({
      union, crowdfund: cf, fmt: (a) => `${deps.formatUnits(a, decimals)} tokens`, pledges, names, vaultBalance,
      transactions: await settlementTransactions(deps.db, cf.id),
      memo: pledgeMemo(cf.id, viewer?.actorId ?? "<your actor id>"), officer,
    }));
  });
}
