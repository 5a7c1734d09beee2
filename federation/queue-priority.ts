/**
 * Which of a process's queue lanes go first when they compete for it.
 *
 * The lanes are claimed independently (queue-lanes.ts), but in one process
 * they share one event loop, one pool of database connections and the
 * process's share of the CPU. A `muster worker` draining 10^5 deliveries
 * keeps 64 of them in flight and claims the next batch as soon as half are
 * done, so a join's Accept or a member's reply claimed by that worker ran
 * each of its steps (claim, gate, signature, POST, settle) behind a batch of
 * deliveries' callbacks and queries: with two workers on PostgreSQL the
 * Accept's p99 was 2.3 s while the fan-out drained.
 *
 * So bulk lanes (the fan-out's pages and deliveries) yield to interactive
 * ones (inbox work, single deliveries, domain intents) in the same process:
 * while interactive work is being claimed or handled here, a bulk lane
 * claims nothing new and holds what it claimed back from its sender. It
 * waits at most `maxYieldMs` at a time and then goes unhindered for as long,
 * so a steady stream of interactive work slows a fan-out to half at worst and
 * never stops it; deliveries already handed to a sender are not held.
 */
export class LanePriority {
  readonly maxYieldMs: number;
  #interactive = 0;
  /** See yield: until then bulk work does not wait. */
  #freeUntil = 0;
  #idle: (() => void)[] = [];
  /** Bulk waits that ran to maxYieldMs, and all waits (the benchmark and tests read them). */
  readonly stats = { yields: 0, capped: 0 };

  constructor(options: { maxYieldMs?: number } = {}) {
    this.maxYieldMs = options.maxYieldMs ?? DEFAULT_MAX_YIELD_MS;
  }

  /** Whether interactive work is being claimed or handled in this process. */
  get busy(): boolean {
    return this.#interactive > 0;
  }

  /** Interactive work started (a claim under way, or n messages claimed); each must be ended once. */
  begin(n = 1): void {
    this.#interactive += n;
  }

  end(n = 1): void {
    this.#interactive = Math.max(0, this.#interactive - n);
    if (this.#interactive === 0) {
      const idle = this.#idle.splice(0);
      for (const resume of idle) resume();
    }
  }

  /**
   * For bulk work: resolves at once when nothing interactive is under way
   * here, else once it is all done or after maxYieldMs (or `signal` aborts).
   */
  yield(signal?: AbortSignal): Promise<void> {
    if (this.#interactive === 0 || signal?.aborted || performance.now() < this.#freeUntil) return Promise.resolve();
    this.stats.yields++;
    return new Promise<void>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener("abort", done);
        const i = this.#idle.indexOf(done);
        if (i >= 0) this.#idle.splice(i, 1);
        resolve();
      };
      timer = setTimeout(() => {
        this.stats.capped++;
        // Bulk work that waited the whole time goes unhindered for as long:
        // under a steady stream of interactive work it still gets half.
        this.#freeUntil = performance.now() + this.maxYieldMs;
        done();
      }, this.maxYieldMs);
      signal?.addEventListener("abort", done, { once: true });
      this.#idle.push(done);
    });
  }
}

/**
 * How long bulk work waits for interactive work at a time: longer than an
 * Accept or a reply takes on a busy worker (p50 0.1-0.25 s), short enough
 * that a join storm does not stop a fan-out.
 */
const DEFAULT_MAX_YIELD_MS = 500;

/** A lane's part: interactive lanes are waited for, bulk lanes wait. */
export interface LaneRank {
  readonly priority: LanePriority;
  readonly bulk: boolean;
}
