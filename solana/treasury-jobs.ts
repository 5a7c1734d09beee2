import { randomUUID } from "node:crypto";
import type { Kysely } from "kysely";
import type { DB } from "../src/db/schema.ts";
import type { EventBus } from "../src/events.ts";
import { logger } from "../src/logging.ts";
import { every } from "../src/sleep.ts";
import { duesParamsFromBylaws } from "../src/treasury/dues-params.ts";
import { runDuesScan } from "./dues-scan-job.ts";
import { anchorDue } from "./feed-anchor.ts";
import { explorerUrl } from "./treasury-report.ts";
import type { Ledger } from "./ledger.ts";

const log = logger("solana", "schedule");

export interface TreasuryScheduleDeps {
  readonly db: Kysely<DB>;
  readonly events: EventBus;
  readonly ledger: Ledger;
  readonly origin: URL;
  /** Tops up the treasury key for fees (the embedded ledger's faucet); nothing on a real network. */
  readonly fund?: ((address: string) => Promise<void>) | undefined;
  /** SOLANA_RPC_URL, or null for the embedded ledger (explorer links then point at this server's RPC). */
  readonly rpcUrl: string | null;
}

/** The chain's scheduled work in this process, until the signal aborts; leases keep each job to one worker. */
export function runTreasurySchedule(deps: TreasuryScheduleDeps, signal: AbortSignal, intervalMs: number): Promise<void> {
  const holder = randomUUID();
  return every(intervalMs, signal, async () => {
    await runDuesScan({ ...deps, duesParams: duesParamsFromBylaws }, holder);
    // Once a day per union; the day's row is the claim, so workers anchor once.
    await anchorDue({ ...deps, explorerUrl: (s) => explorerUrl("tx", s, deps.rpcUrl, deps.origin) });
  }, (error) => log.error("Treasury schedule pass failed: {error}", { error }));
}
