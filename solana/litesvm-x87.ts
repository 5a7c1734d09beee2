import { LiteSVM, type FailedTransactionMetadata, type SimulatedTransactionInfo, type TransactionMetadata } from "litesvm";
import type { Transaction, VersionedTransaction } from "@solana/web3.js";

/*
 * litesvm 0.8 runs programs in solana-sbpf 0.13's x86-64 JIT. Its `callx`
 * trampoline parks a register in MMX register mm0 and never executes EMMS
 * (anza-xyz/sbpf#197; fixed by #200 in sbpf 0.23, which litesvm 1.5 ships).
 * So after any program runs (the Memo program, SPL Token), the calling
 * thread's x87 register stack is left full.
 *
 * V8 on x86-64 computes a floating-point `%` on the x87 unit (fprem). On a
 * full stack its two loads overflow, and that one `%` returns NaN; its two
 * pops then free the two registers it needs, so every later `%` is right.
 * The NaN lands on whatever JavaScript does the next non-integer `%`: in
 * tests it was the Temporal polyfill's BalanceTime, when Fedify's
 * CircuitBreaker turned its default durations into milliseconds on the next
 * server start ("The number NaN cannot be converted to BigInt").
 *
 * So each call that may run a program is followed at once by one `%` of
 * ours, which takes that NaN. The six registers V8 does not use stay marked
 * full: native code needing more than two x87 registers on this thread would
 * still be hurt (none is known here). The cure is litesvm >= 1.5, a port to
 * its @solana/kit API.
 */

let spare = 0.5;

/** One floating-point `%`, after native code may have left the x87 stack full. */
export function releaseX87Stack(): void {
  // Not foldable (module state, non-integer): V8 must run a real fprem.
  spare = (spare + 1.25) % 3.5;
}

/** litesvm with the x87 stack released after each program run (see above). */
export class X87SafeLiteSVM extends LiteSVM {
  override sendTransaction(tx: Transaction | VersionedTransaction): TransactionMetadata | FailedTransactionMetadata {
    try {
      return super.sendTransaction(tx);
    } finally {
      releaseX87Stack();
    }
  }

  override simulateTransaction(tx: Transaction | VersionedTransaction): FailedTransactionMetadata | SimulatedTransactionInfo {
    try {
      return super.simulateTransaction(tx);
    } finally {
      releaseX87Stack();
    }
  }
}
