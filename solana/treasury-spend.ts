import "./quiet-bindings.ts";
import { getProposal } from "../src/bylaws/proposals.ts";
import { logger } from "../src/logging.ts";
import type { Outbox } from "../src/outbox.ts";
import { parseWalletAddress } from "../src/treasury/badges.ts";
import { TreasuryError } from "../src/treasury/dues.ts";
import { linkSpendIn, refuseSpend, type SpendExecution, spendExecution, spendMemo } from "../src/treasury/spends.ts";
import { buildTransfer, storeTransferIn, submitTransfer, treasuryAuthority, treasuryBalance, type TreasuryChainDeps } from "./treasury-authority.ts";

const log = logger("solana", "spend");

/** Signing stops here: the job submits a ready transfer itself (below), so nothing is lost without an outbox. */
const NO_OUTBOX: Outbox = { add: async () => {} };

/**
 * The ledger lane's `treasury.spend`: pays a passed spend proposal with one
 * treasury transfer, through the same path as `muster treasury transfer`.
 * With the server alone signing (the custodial 1-of-1 treasury) it is sent
 * now; otherwise it waits for officers' co-signatures like any transfer.
 * Done once: the transfer is recorded and linked to the proposal in one
 * database transaction, guarded on the spend still being queued, so a
 * retried or duplicated message finds it linked and at most resubmits the
 * same signed bytes (whose durable nonce lets them run once). What cannot be
 * paid as approved (recipient not an address, another mint, too little in
 * the treasury) is refused with its reason, not retried; a slow or failing
 * ledger throws, and the lane retries.
 */
export async function executeSpend(deps: TreasuryChainDeps & { outbox?: Outbox }, unionId: string, proposalId: string): Promise<SpendExecution | undefined> {
  const done = await spendExecution(deps.db, unionId, proposalId);
  if (!done) return undefined;
  if (done.state === "ready") await submitTransfer(deps, unionId, done.transfer!.id);
  if (done.state !== "queued") return spendExecution(deps.db, unionId, proposalId);
  const p = await getProposal(deps.db, unionId, proposalId);
  if (!p || p.change.kind !== "spend" || p.state !== "passed") return refused(deps, unionId, proposalId, "the proposal is not a passed spend");
  const c = p.change;
  const amount = BigInt(c.amount);
  try {
    parseWalletAddress(c.recipient);
  } catch {
    return refused(deps, unionId, proposalId, `the recipient "${c.recipient.slice(0, 60)}" is not a Solana address, so the treasury cannot send to it`);
  }
  let built;
  try {
    const auth = await treasuryAuthority(deps, unionId);
    if (c.mint && c.mint !== auth.treasury.mint) return refused(deps, unionId, proposalId, `the spend is in ${c.mint} but the treasury holds ${auth.treasury.mint}`);
    const balance = await treasuryBalance(deps.ledger, auth.treasury);
    if (balance < amount) return refused(deps, unionId, proposalId, `insufficient balance: the treasury holds ${balance} base units, less than the ${amount} approved`);
    built = await buildTransfer(deps, unionId, { to: c.recipient, amount, memo: spendMemo(p.number, c.purpose) });
  } catch (e) {
    if (e instanceof TreasuryError && e.code === "invalid") return refused(deps, unionId, proposalId, e.message);
    throw e;
  }
  const linked = await deps.db.transaction().execute(async (trx) => {
    const id = await storeTransferIn(trx, deps.outbox ?? NO_OUTBOX, unionId, built);
    // Another attempt linked it first: this transfer is rolled back (its nonce account stays unused).
    if (!await linkSpendIn(trx, unionId, proposalId, id)) throw new AlreadyLinked();
    return id;
  }).catch((e: unknown) => {
    if (e instanceof AlreadyLinked) return null;
    throw e;
  });
  if (linked !== null) log.info("Spend #{number} of union {unionId}: treasury transfer #{transferId}", { number: p.number, unionId, transferId: linked });
  const now = await spendExecution(deps.db, unionId, proposalId);
  if (now?.state === "ready") await submitTransfer(deps, unionId, now.transfer!.id);
  return spendExecution(deps.db, unionId, proposalId);
}

class AlreadyLinked extends Error {}

async function refused(deps: TreasuryChainDeps, unionId: string, proposalId: string, reason: string): Promise<SpendExecution | undefined> {
  if (await refuseSpend(deps.db, unionId, proposalId, reason)) log.warn("Spend {proposalId} of union {unionId} refused: {reason}", { proposalId, unionId, reason });
  return spendExecution(deps.db, unionId, proposalId);
}
