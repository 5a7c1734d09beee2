import type { Hono } from "hono";
import type { Kysely } from "kysely";
import type { DB } from "../db/schema.ts";
import type { Ledger } from "../../solana/ledger.ts";
import { duesParamsFromBylaws } from "../treasury/dues-params.ts";
import { blockchainIdFor, mountDuesPay } from "./dues-pay.ts";

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
}
