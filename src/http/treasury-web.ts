import type { Hono } from "hono";
import type { Kysely } from "kysely";
import type { DB } from "../db/schema.ts";
import type { Ledger } from "../../solana/ledger.ts";
import { explorerUrl, treasuryReport } from "../../solana/treasury-report.ts";
import { duesParamsFromBylaws } from "../treasury/dues-params.ts";
import { getUnionBySlug, type Union } from "../unions/unions.ts";
import { mayReadRoster } from "../members/roster.ts";
import { getMember } from "../members/members.ts";
import { apiError } from "./api-error.ts";
import { errorPage } from "./pages/error.ts";
import { signedInMember } from "./members-web.ts";
import { blockchainIdFor, mountDuesPay } from "./dues-pay.ts";
import { treasuryJson, treasuryPage, type TreasuryView } from "./treasury-page.ts";
import type { Context } from "hono";

export interface TreasuryWebDeps {
  readonly db: Kysely<DB>;
  readonly ledger: Ledger;
  readonly origin: URL;
  /** SOLANA_RPC_URL when the chain is a network; null for the embedded ledger. */
  readonly rpcUrl: string | null;
}

/** Everything the web serves about a union's treasury: dues payment requests and the transparency page. */
export function mountTreasuryWeb(app: Hono, deps: TreasuryWebDeps): void {
  mountDuesPay(app, { db: deps.db, ledger: deps.ledger, origin: deps.origin, duesParams: duesParamsFromBylaws, blockchainId: blockchainIdFor(deps.rpcUrl) });

  const view = async (c: Context, union: Union): Promise<TreasuryView> => {
    const report = await treasuryReport(deps.db, deps.ledger, union.id);
    // Who paid is membership: named only to viewers the roster rule lets see members.
    const shown = await mayReadRoster(deps.db, union, { via: "web", member: await signedInMember(deps.db, c, union) });
    let names: Map<string, string> | null = null;
    if (shown && report) {
      names = new Map();
      for (const id of new Set(report.flows.map((f) => f.memberId).filter((x): x is string => x !== null))) {
        const m = await getMember(deps.db, union.id, id);
        if (m) names.set(id, m.handle ?? m.actorId ?? id);
      }
    }
    return {
      union, report, names, ledger: deps.ledger.kind,
      txUrl: (s) => explorerUrl("tx", s, deps.rpcUrl, deps.origin),
      addressUrl: (a) => explorerUrl("address", a, deps.rpcUrl, deps.origin),
      rpcUrl: deps.rpcUrl ?? new URL("/solana/rpc", deps.origin).href,
      duesPayPath: `/u/${union.slug}/dues/pay`,
    };
  };

  app.get("/u/:slug/treasury.json", async (c) => {
    const union = await getUnionBySlug(deps.db, c.req.param("slug"));
    if (!union) return apiError(c, 404, "not_found", "no such union here");
    c.header("Cache-Control", "private, no-cache");
    return c.json(treasuryJson(await view(c, union)));
  });
  app.get("/u/:slug/treasury", async (c) => {
    const union = await getUnionBySlug(deps.db, c.req.param("slug"));
    if (!union) return c.html(errorPage(404, "No such union here."), 404);
    c.header("Cache-Control", "private, no-cache");
    return c.html(treasuryPage(await view(c, union)));
  });
}

