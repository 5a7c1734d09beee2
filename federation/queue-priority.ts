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
 *
 * Across processes too (PostgreSQL, `serve --no-worker` and workers): a
 * reply that goes through Fedify's inbox was claimed within 0.1 s by one
 * worker, but its handler then took 1.0-1.8 s (MUSTER_QUEUE_TRACE), while
 * the other worker kept both cores' worth of deliveries (its event loop and
 * its delivery thread) running beside it. So handled interactive work is
 * announced (`announce`, a NOTIFY: priority-link.ts) and a process's bulk
 * lanes yield to what they hear of other processes' (`heard`) as to their
 * own, with the same cap. A claim under way is not announced: it is one
 * short statement, and a NOTIFY for each would cost more than it holds.
 */
export class LanePriority {
  readonly maxYieldMs: number;
  #interactive = 0;
  /** Of #interactive, messages being handled (not claims under way): what other processes are told of. */
  #handling = 0;
  /** Other processes' interactive work heard of: peer to until when (performance.now()) it holds bulk work here. */
  readonly #remote = new Map<string, number>();
  #remoteTimer: NodeJS.Timeout | undefined;
  /** See yield: until then bulk work does not wait. */
  #freeUntil = 0;
  #idle: (() => void)[] = [];
  /** Given (priority-link.ts), told when this process starts and stops handling interactive work, and every maxYieldMs while it goes on. */
  #announce: ((busy: boolean) => void) | undefined;
  #refresh: NodeJS.Timeout | undefined;
  /** Bulk waits that ran to maxYieldMs, and all waits (the benchmark and tests read them). */
  readonly stats = { yields: 0, capped: 0, heard: 0 };

  constructor(options: { maxYieldMs?: number } = {}) {
    this.maxYieldMs = options.maxYieldMs ?? DEFAULT_MAX_YIELD_MS;
  }

  /** Whether interactive work is being claimed or handled in this process, or handled in another that said so. */
  get busy(): boolean {
    return this.#interactive > 0 || this.#remoteBusy();
  }

  /**
   * Interactive work started (n messages claimed, or with `claim` a claim
   * under way); each must be ended once, with the same `claim`.
   */
  begin(n = 1, claim = false): void {
    this.#interactive += n;
    if (claim || n <= 0) return;
    this.#handling += n;
    if (this.#handling === n && this.#announce !== undefined) {
      this.#announce(true);
      // A handler that runs long is announced again, so other processes do not take it for over.
      this.#refresh ??= setInterval(() => this.#announce?.(true), this.maxYieldMs).unref();
    }
  }

  end(n = 1, claim = false): void {
    this.#interactive = Math.max(0, this.#interactive - n);
    if (!claim && this.#handling > 0) {
      this.#handling = Math.max(0, this.#handling - n);
      if (this.#handling === 0) {
        clearInterval(this.#refresh);
        this.#refresh = undefined;
        this.#announce?.(false);
      }
    }
    this.#release();
  }

  /** Tells `announce` of this process's handled interactive work from now on (once; a second call replaces it). */
  announceTo(announce: ((busy: boolean) => void) | undefined): void {
    this.#announce = announce;
  }

  /**
   * Another process (`peer`) started (busy) or stopped handling interactive
   * work. Heard busy, it holds bulk work here as this process's own would,
   * until it says it stopped or for `ttlMs` (it says again every
   * maxYieldMs while it goes on; a process that died says nothing more).
   */
  heard(peer: string, busy: boolean, ttlMs = 2 * this.maxYieldMs): void {
    if (busy) {
      this.stats.heard++;
      this.#remote.set(peer, performance.now() + ttlMs);
      // Looked at again when it would run out, so waiting bulk work goes on then.
      clearTimeout(this.#remoteTimer);
      this.#remoteTimer = setTimeout(() => this.#release(), ttlMs + 1).unref();
    } else {
      this.#remote.delete(peer);
      this.#release();
    }
  }

  #remoteBusy(): boolean {
    if (this.#remote.size === 0) return false;
    const now = performance.now();
    for (const [peer, until] of this.#remote) if (until <= now) this.#remote.delete(peer);
    return this.#remote.size > 0;
  }

  /** Resumes waiting bulk work once nothing interactive holds it. */
  #release(): void {
    if (this.#idle.length === 0 || this.busy) return;
    const idle = this.#idle.splice(0);
    for (const resume of idle) resume();
  }

  /**
   * For bulk work: resolves at once when nothing interactive is under way
   * here or heard of, else once it is all done or after maxYieldMs (or
   * `signal` aborts).
   */
  yield(signal?: AbortSignal): Promise<void> {
    if (!this.busy || signal?.aborted || performance.now() < this.#freeUntil) return Promise.resolve();
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
