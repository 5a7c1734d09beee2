import "./quiet-bindings.ts";
import type { Outbox, OutboxIntent } from "../src/outbox.ts";
import { syncBadge, type BadgeSyncDeps } from "./badge-sync.ts";
import { createTreasuryJob, submitTransfer } from "./treasury-authority.ts";
import { submitCosignedSettlement } from "./crowdfund-settlement.ts";
import { submitMove } from "./treasury-move.ts";
import { syncRoleBadges } from "./role-badges.ts";
import { executeSpend } from "./treasury-spend.ts";

/** The ledger lane's handler: one message per chain intent from the domain's outbox; an unknown kind fails loudly. */
export async function handleLedgerIntent(deps: BadgeSyncDeps & { outbox?: Outbox }, message: { intent: OutboxIntent }): Promise<void> {
  const { intent } = message;
  switch (intent.kind) {
    case "badge.sync":
      await syncBadge(deps, intent.unionId, intent.memberId);
      await syncRoleBadges(deps, intent.unionId, intent.memberId);
      return;
    case "treasury.create":
      await createTreasuryJob(deps, intent.unionId);
      return;
    case "treasury.transfer":
      // A crowdfund settlement's transaction goes in its settlement's order; any other is sent now.
      if (await submitCosignedSettlement(deps, intent.transferId) || await submitMove(deps, intent.transferId)) return;
      await submitTransfer(deps, intent.unionId, intent.transferId);
      return;
    case "treasury.spend":
      await executeSpend(deps, intent.unionId, intent.proposalId);
      return;
    default:
      throw new Error(`the ledger lane has no handler for ${intent.kind}`);
  }
}
