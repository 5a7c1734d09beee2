import { writeSync } from "node:fs";

/**
 * A test hook for restart tests: when MUSTER_TEST_CRASH_AT names this point,
 * the process kills itself with SIGKILL right here, as a power cut would (no
 * finally blocks, no flush, no shutdown). Unset, it does nothing. The line on
 * stderr, written synchronously, tells the test the point was reached.
 *
 * Points: `vault-opened` (a crowdfund's vault open, not yet announced),
 * `pledge-seen` (a pledge read from the chain, not yet recorded),
 * `settlement-signed` (decision and signed bytes committed, nothing sent),
 * `settlement-sent` (a settlement transaction executed on the chain, not yet
 * marked confirmed in the database).
 */
export function crashPoint(name: string): void {
  if (process.env.MUSTER_TEST_CRASH_AT !== name) return;
  writeSync(2, `MUSTER_TEST_CRASH_AT: SIGKILL at ${name}\n`);
  process.kill(process.pid, "SIGKILL");
}
