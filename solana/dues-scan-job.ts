import type { Kysely } from "kysely";
import type { DB } from "../src/db/schema.ts";
import type { EventBus } from "../src/events.ts";
import { claimLease } from "../src/job-lease.ts";
import { logger } from "../src/logging.ts";
import { type RecordedPayment, recordDuesPayments } from "../src/treasury/dues.ts";
import { expireReference, openReferences } from "../src/treasury/dues-references.ts";
import type { DuesParamsSource } from "../src/treasury/dues-params.ts";
import { recomputeStandings, type StandingChange } from "../src/treasury/standing.ts";
import { paymentsAmong } from "./dues-scanner.ts";
import { treasuryAuthorities } from "../src/treasury/moves.ts";
import type { Ledger } from "./ledger.ts";

const log = logger("solana", "dues-scan");
/** How often a union's every standing is recomputed by the holder of the scan's lease. */
export const FULL_PASS_MS = 5 * 60_000;
// Per holder and union, in memory: a worker that takes the lease over starts
// with a whole pass, so losing this costs work, never a missed change.
const lastFullPass = new Map<string, number>();
const PAGE = 1000;
const CHUNK = 200;

export interface DuesScanDeps {
  readonly db: Kysely<DB>;
  readonly events: EventBus;
  readonly ledger: Ledger;
  readonly duesParams: DuesParamsSource;
}

/**
 * Records the payments into `address` since the last signature seen there
 * (scan_cursors), oldest first, then moves the cursor. A crash before the
 * cursor moves makes the next pass see some payments again, which records
 * nothing twice: recording is keyed by signature.
 */
export async function scanSinceCursor(deps: DuesScanDeps, unionId: string, address: string): Promise<RecordedPayment[]> {
  const name = `dues:${unionId}:${address}`;
  const cursor = (await deps.db.selectFrom("scan_cursors").select("signature").where("name", "=", name).executeTakeFirst())?.signature;
  const fresh = [];
  let before: string | undefined;
  for (;;) {
    const page = await deps.ledger.signaturesFor(address, { before, until: cursor, limit: PAGE });
    fresh.push(...page);
    if (page.length < PAGE) break;
    before = page.at(-1)!.signature;
  }
  if (fresh.length === 0) return [];
  fresh.reverse();
  const own = await treasuryAuthorities(deps.db, unionId);
  const out: RecordedPayment[] = [];
  // In chunks, oldest first: one read of the chunk's transactions, one database
  // transaction to record them, then the cursor moves past the chunk.
  for (let i = 0; i < fresh.length; i += CHUNK) {
    const chunk = fresh.slice(i, i + CHUNK);
    const payments = (await paymentsAmong(deps.ledger, unionId, chunk, address)).filter((p) => !own.has(p.payer));
    out.push(...await recordDuesPayments(deps, payments));
    const newest = chunk.at(-1)!.signature;
    await deps.db.insertInto("scan_cursors").values({ name, signature: newest })
      .onConflict((oc) => oc.column("name").doUpdateSet({ signature: newest })).execute();
  }
  return out;
}

/**
 * Looks up each reference key the union issued that no payment has carried
 * yet: a payment sent to a wrong account or in a wrong mint never touches the
 * treasury, and is found only this way, then recorded unmatched with the
 * reason. A reference is closed once looked up after its transaction can no
 * longer land.
 */
export async function scanIssuedReferences(deps: DuesScanDeps, unionId: string, now = Date.now()): Promise<RecordedPayment[]> {
  const out: RecordedPayment[] = [];
  for (const { reference, expiresAt } of await openReferences(deps.db, unionId)) {
    const signatures = await deps.ledger.signaturesFor(reference, { limit: 20 });
    const payments = await paymentsAmong(deps.ledger, unionId, [...signatures].reverse());
    if (payments.length > 0) out.push(...await recordDuesPayments(deps, payments));
    else if (now > expiresAt) await expireReference(deps.db, reference);
  }
  return out;
}

export interface DuesScanResult {
  /** False when another worker holds the job's lease: this pass did nothing. */
  readonly ran: boolean;
  readonly recorded: RecordedPayment[];
  readonly changes: StandingChange[];
}

/**
 * One pass of the scheduled dues job, in one worker at a time (a lease):
 * for each union with a treasury, record new payments into its token
 * account, then recompute every member's standing at `now`, which also
 * catches a grace period running out with no payment.
 */
export async function runDuesScan(deps: DuesScanDeps, holder: string, now = Date.now(), leaseMs = 120_000): Promise<DuesScanResult> {
  if (!(await claimLease(deps.db, "dues-scan", holder, leaseMs, now))) return { ran: false, recorded: [], changes: [] };
  const treasuries = await deps.db.selectFrom("treasuries").select(["union_id", "token_account"]).execute();
  const recorded: RecordedPayment[] = [];
  const changes: StandingChange[] = [];
  for (const t of treasuries) {
    try {
      const found = [...await scanSinceCursor(deps, t.union_id, t.token_account), ...await scanIssuedReferences(deps, t.union_id, now)];
      recorded.push(...found);
      const paid = new Set(found.filter((p) => p.recorded && p.status === "credited" && p.memberId).map((p) => p.memberId!));
      // The whole roster only every FULL_PASS_MS: at 10^6 members a pass reads
      // every member and their payments, and standings move by the day (a
      // period or grace running out), while a payment is seen every pass.
      const last = lastFullPass.get(`${holder}\n${t.union_id}`);
      const full = last === undefined || now < last || now - last >= FULL_PASS_MS;
      changes.push(...await recomputeStandings(deps, t.union_id, now, paid, full ? undefined : paid));
      if (full) lastFullPass.set(`${holder}\n${t.union_id}`, now);
    } catch (error) {
      // One union's failure (a ledger hiccup) must not stop the others' scans.
      log.error("Dues scan of union {unionId} failed: {error}", { unionId: t.union_id, error });
    }
  }
  const fresh = recorded.filter((p) => p.recorded).length;
  if (fresh || changes.length) log.info("Dues scan recorded {fresh} payment(s) and {changes} standing change(s)", { fresh, changes: changes.length });
  return { ran: true, recorded, changes };
}
