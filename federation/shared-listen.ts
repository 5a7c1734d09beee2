import { randomBytes } from "node:crypto";
import type pg from "pg";
import { logger } from "../src/logging.ts";

const log = logger("queue", "listen");

export type Wake = (queue: string, availableAt: number) => void;

/** The "queue" of a heartbeat's NOTIFY payload: `{ queue, lane, hb: listener id, n: in flight }`. */
export const HEARTBEAT_QUEUE = "~share";

/** A lane listener's heartbeat heard (lane-share.ts): who, and how many messages it has in flight. */
export type Heard = (queue: string, peer: string, inFlight: number) => void;

export interface Subscription {
  /** Whether the LISTEN connection is up now (notifications are being heard). */
  live(): boolean;
  close(): Promise<void>;
}

/**
 * One LISTEN connection per process (per pool), shared by every queue lane
 * listening on it: six lanes used to hold six pooled connections idle for
 * LISTEN alone. Notifications name their lane; each subscriber's `wake`
 * ignores the others'. If the connection drops, the lanes keep polling and it
 * is re-established while anyone still listens.
 */
class SharedListen {
  readonly #pool: pg.Pool;
  readonly #channel: string;
  readonly #subscribers = new Set<{ readonly queue: string; readonly wake: Wake; readonly heard?: Heard | undefined }>();
  #client: pg.PoolClient | undefined;
  #connecting: Promise<void> | undefined;
  #retry: NodeJS.Timeout | undefined;

  constructor(pool: pg.Pool, channel: string) {
    this.#pool = pool;
    this.#channel = channel;
  }

  async subscribe(queue: string, wake: Wake, heard?: Heard): Promise<Subscription> {
    const subscriber = { queue, wake, heard };
    this.#subscribers.add(subscriber);
    if (this.#client === undefined) await (this.#connecting ??= this.#connect().finally(() => (this.#connecting = undefined)));
    // Anything announced before this lane subscribed went unheard by it.
    wake(queue, 0);
    return {
      live: () => this.#client !== undefined,
      close: async () => {
        this.#subscribers.delete(subscriber);
        if (this.#subscribers.size > 0) return;
        if (this.#retry !== undefined) clearTimeout(this.#retry);
        this.#retry = undefined;
        // Destroyed rather than returned, so no pooled connection keeps LISTENing.
        if (this.#client !== undefined) this.#drop(this.#client);
      },
    };
  }

  readonly #onNotification = (message: pg.Notification) => {
    if (message.channel !== this.#channel || message.payload === undefined) return;
    let parsed: { queue: string; at: number; from?: string; lane?: string; hb?: string; n?: number };
    try {
      parsed = JSON.parse(message.payload) as { queue: string; at: number; from?: string; lane?: string; hb?: string; n?: number };
    } catch {
      return; // not one of ours
    }
    // A heartbeat (lane-share.ts) announces no message: it wakes nobody. Its
    // "queue" is no lane's, so a process of an older version ignores it.
    if (parsed.queue === HEARTBEAT_QUEUE) {
      if (typeof parsed.hb !== "string") return;
      for (const s of this.#subscribers) if (s.queue === parsed.lane) s.heard?.(parsed.lane, parsed.hb, Number(parsed.n));
      return;
    }
    // Our own pool's announcement, whose lanes were already woken in
    // process: woken again, each would claim once more and find nothing.
    if (parsed.from !== undefined && parsed.from === tags.get(this.#pool)) return;
    for (const s of this.#subscribers) s.wake(parsed.queue, parsed.at);
  };

  #drop(broken: pg.PoolClient, error?: Error): void {
    broken.off("notification", this.#onNotification);
    broken.release(error ?? true);
    if (this.#client === broken) this.#client = undefined;
  }

  #scheduleRetry(): void {
    if (this.#subscribers.size === 0) return;
    this.#retry ??= setTimeout(() => {
      this.#retry = undefined;
      void this.#connect();
    }, 1000);
  }

  async #connect(): Promise<void> {
    let fresh: pg.PoolClient | undefined;
    try {
      fresh = await this.#pool.connect();
      const self = fresh;
      self.on("notification", this.#onNotification);
      self.on("error", (error) => {
        log.warn("Lost the queue's LISTEN connection; polling until it is back: {error}", { error });
        this.#drop(self, error);
        this.#scheduleRetry();
      });
      await self.query(`LISTEN ${this.#channel}`);
      if (this.#subscribers.size === 0) {
        this.#drop(self);
        return;
      }
      this.#client = self;
      for (const s of this.#subscribers) s.wake(s.queue, 0);
    } catch (error) {
      if (fresh !== undefined) this.#drop(fresh, error instanceof Error ? error : new Error(String(error)));
      log.warn("Could not LISTEN for the queue; polling only for now: {error}", { error });
      this.#scheduleRetry();
    }
  }
}

const shared = new WeakMap<pg.Pool, SharedListen>();
const tags = new WeakMap<pg.Pool, string>();

/**
 * A name for this pool in NOTIFY payloads (`from`): its own LISTEN ignores
 * what it announced itself after waking its lanes directly.
 */
export function poolTag(pool: pg.Pool): string {
  let tag = tags.get(pool);
  if (tag === undefined) tags.set(pool, (tag = randomBytes(6).toString("hex")));
  return tag;
}

/** Subscribes a lane to the process's one LISTEN connection on this pool. */
export function listenShared(pool: pg.Pool, channel: string, queue: string, wake: Wake, heard?: Heard): Promise<Subscription> {
  let listener = shared.get(pool);
  if (!listener) shared.set(pool, (listener = new SharedListen(pool, channel)));
  return listener.subscribe(queue, wake, heard);
}
