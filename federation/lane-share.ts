/**
 * A bulk lane's fair share of the work in flight across the processes that
 * listen to it (PostgreSQL: `serve --no-worker` plus several `muster worker`).
 *
 * A lane's messages with an ordering key go one at a time per key, and the
 * settle of one claims the next of its key for the same listener (the
 * hand-over in kysely-message-queue.ts). A fan-out to personal inboxes on
 * 100 servers is 100 keys, fewer than one worker's 128 slots: the worker
 * whose claim came first took every key and, handing each key's next
 * delivery to itself, kept all of them to the end while the other worker
 * idled (CPU 54.5 s against 2.5 s in the last session's under-fanout run).
 *
 * So each listener of a bulk lane announces how many messages it has in
 * flight (a NOTIFY heartbeat, while it has work or was woken for the lane
 * lately), hears the others', and holds at most its share: the lane's
 * messages in flight everywhere divided by the listeners, plus a little
 * slack. Above it, a settle hands nothing over (the next message of the key
 * stays in the table, announced by NOTIFY, for a listener under its share to
 * claim) and a claim asks for nothing. Alone, or on SQLite, there is no cap.
 */
export class LaneShare {
  readonly #self: string;
  readonly #ttlMs: number;
  /** Each peer's last reported messages in flight, and when it reported. */
  readonly #peers = new Map<string, { inFlight: number; at: number }>();

  constructor(self: string, options: { ttlMs?: number } = {}) {
    this.#self = self;
    this.#ttlMs = options.ttlMs ?? PEER_TTL_MS;
  }

  /** A peer's heartbeat (our own comes back too, and is ignored). */
  heard(peer: string, inFlight: number, now = Date.now()): void {
    if (peer === this.#self || !Number.isFinite(inFlight) || inFlight < 0) return;
    this.#peers.set(peer, { inFlight, at: now });
  }

  /** Listeners heard from within the TTL, this one left out. */
  peers(now = Date.now()): number {
    let n = 0;
    for (const [id, p] of this.#peers) {
      if (now - p.at > this.#ttlMs) this.#peers.delete(id);
      else n++;
    }
    return n;
  }

  /**
   * The average over the lane's live listeners, rounded up, when this one
   * holds `mine` (`fair`), and how many it may hold (`cap`): a quarter more
   * (at least 2). A listener above its cap gives back down to its fair
   * share, in one go (kysely-message-queue.ts); the band between them keeps
   * two listeners near the average, each reading the other's count a
   * heartbeat late, from passing keys back and forth. Every key that moves
   * starts a batch of its own, for good: a fan-out's deliveries to one
   * server follow each other in batches (a settle hands the next ones over
   * together), and the finer they are cut, the more each delivery costs.
   * Infinity for both with no peer.
   */
  limits(mine: number, now = Date.now()): { fair: number; cap: number } {
    if (this.peers(now) === 0) return { fair: Number.POSITIVE_INFINITY, cap: Number.POSITIVE_INFINITY };
    let total = mine;
    for (const p of this.#peers.values()) total += p.inFlight;
    const fair = Math.ceil(total / (this.#peers.size + 1));
    return { fair, cap: fair + Math.max(2, Math.ceil(fair / 4)) };
  }

  /** limits(mine).cap. */
  cap(mine: number, now = Date.now()): number {
    return this.limits(mine, now).cap;
  }
}

/** A peer not heard from for this long has stopped (or has nothing to do): it gets no share. */
const PEER_TTL_MS = 3000;
