import { randomBytes } from "node:crypto";
import type pg from "pg";
import { logger } from "../src/logging.ts";

const log = logger("queue", "listen");

export type Wake = (queue: string, availableAt: number) => void;

/**
 * What NOTIFY carries on the channel: a lane's new message (`queue`, `at`,
 * the announcing pool's tag `from`, and `pick`, see SharedListen#picked),
 * or a listening process announcing itself (`hello`, its `lanes`) or leaving
 * (`bye`).
 */
interface Notice {
  queue: string;
  at: number;
  from?: string;
  pick?: number;
  hello?: string;
  lanes?: string[];
  bye?: string;
}

/** How often a listening process announces itself; one missed for HELLO_TTL_MS and it is taken for gone. */
const HELLO_MS = 2000;
const HELLO_TTL_MS = 5000;

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
  readonly #subscribers = new Set<{ readonly queue: string; readonly wake: Wake }>();
  #client: pg.PoolClient | undefined;
  #connecting: Promise<void> | undefined;
  #retry: NodeJS.Timeout | undefined;
  /** Listening processes heard announcing themselves: tag to lanes and when last heard. */
  readonly #live = new Map<string, { lanes: Set<string>; seen: number }>();
  #hello: NodeJS.Timeout | undefined;

  constructor(pool: pg.Pool, channel: string) {
    this.#pool = pool;
    this.#channel = channel;
  }

  async subscribe(queue: string, wake: Wake): Promise<Subscription> {
    const subscriber = { queue, wake };
    this.#subscribers.add(subscriber);
    if (this.#client === undefined) await (this.#connecting ??= this.#connect().finally(() => (this.#connecting = undefined)));
    // Anything announced before this lane subscribed went unheard by it.
    wake(queue, 0);
    this.#sayHello();
    return {
      live: () => this.#client !== undefined,
      close: async () => {
        this.#subscribers.delete(subscriber);
        if (this.#subscribers.size > 0) return;
        if (this.#retry !== undefined) clearTimeout(this.#retry);
        this.#retry = undefined;
        const client = this.#client;
        if (client === undefined) return;
        // The others stop picking this process at once, not HELLO_TTL_MS later.
        await client.query("select pg_notify($1, $2)", [this.#channel, JSON.stringify({ bye: poolTag(this.#pool) })]).catch(() => undefined);
        // Destroyed rather than returned, so no pooled connection keeps LISTENing.
        if (this.#client === client) this.#drop(client);
      },
    };
  }

  readonly #onNotification = (message: pg.Notification) => {
    if (message.channel !== this.#channel || message.payload === undefined) return;
    let parsed: Notice;
    try {
      parsed = JSON.parse(message.payload) as Notice;
    } catch {
      return; // not one of ours
    }
    if (typeof parsed.hello === "string") {
      this.#live.set(parsed.hello, { lanes: new Set(Array.isArray(parsed.lanes) ? parsed.lanes : []), seen: Date.now() });
      return;
    }
    if (typeof parsed.bye === "string") {
      this.#live.delete(parsed.bye);
      return;
    }
    // Our own pool's announcement, whose lanes were already woken in
    // process: woken again, each would claim once more and find nothing.
    if (parsed.from !== undefined && parsed.from === tags.get(this.#pool)) return;
    if (!this.#picked(parsed.queue, parsed.pick, parsed.from)) return;
    for (const s of this.#subscribers) s.wake(parsed.queue, parsed.at);
  };

  /**
   * Whether this process is the one a notice with `pick` is for: of the
   * processes listening to its lane (each announces itself every HELLO_MS),
   * in the order of their tags, the one at `pick` modulo their number. Every
   * listener hears the same announcements, so all but one let the notice
   * pass, instead of each claiming and all but one finding nothing. While
   * this process does not yet see itself among them, or sees no other, or
   * the notice has no pick (a batch of many messages, a freed ordering key),
   * it is woken. A notice from a process that listens to the lane itself
   * wakes none: that process woke its own lane when it enqueued.
   */
  #picked(queue: string, pick: number | undefined, from: string | undefined): boolean {
    if (typeof pick !== "number" || !Number.isInteger(pick) || pick < 0) return true;
    const now = Date.now();
    const listening: string[] = [];
    for (const [tag, { lanes, seen }] of this.#live) {
      if (now - seen > HELLO_TTL_MS) this.#live.delete(tag);
      else if (lanes.has(queue)) listening.push(tag);
    }
    const own = poolTag(this.#pool);
    if (listening.length < 2 || !listening.includes(own)) return true;
    if (from !== undefined && listening.includes(from)) return false;
    listening.sort();
    return listening[pick % listening.length] === own;
  }

  /** Announces this process and its lanes to every listener (itself included). */
  #sayHello(): void {
    const client = this.#client;
    if (client === undefined || this.#subscribers.size === 0) return;
    const lanes = [...new Set([...this.#subscribers].map((s) => s.queue))].sort();
    client.query("select pg_notify($1, $2)", [this.#channel, JSON.stringify({ hello: poolTag(this.#pool), lanes })]).catch(() => {
      // The connection's own error handler reconnects; the next hello follows.
    });
  }

  /** Processes listening to `queue` that this one hears announcing themselves (tests). */
  listeners(queue: string): string[] {
    const now = Date.now();
    return [...this.#live].filter(([, l]) => now - l.seen <= HELLO_TTL_MS && l.lanes.has(queue)).map(([tag]) => tag).sort();
  }

  #drop(broken: pg.PoolClient, error?: Error): void {
    if (this.#hello !== undefined) clearInterval(this.#hello);
    this.#hello = undefined;
    this.#live.clear();
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
      this.#sayHello();
      this.#hello = setInterval(() => this.#sayHello(), HELLO_MS);
      this.#hello.unref();
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

/** The listening processes this pool hears on `channel` for `queue`, by tag (tests). */
export function listenersHeard(pool: pg.Pool, queue: string): string[] {
  return shared.get(pool)?.listeners(queue) ?? [];
}

/**
 * A notice's `pick` for a message with this ordering key: the same for every
 * message of the key (a join's Accept and welcome, queued in one transaction,
 * send one notice, PostgreSQL folding identical ones), else random.
 */
export function pickFor(orderingKey: string | null | undefined): number {
  if (orderingKey == null) return Math.floor(Math.random() * 0x7fffffff);
  let h = 0x811c9dc5;
  for (let i = 0; i < orderingKey.length; i++) h = Math.imul(h ^ orderingKey.charCodeAt(i), 0x01000193);
  return (h >>> 0) & 0x7fffffff;
}

/** Subscribes a lane to the process's one LISTEN connection on this pool. */
export function listenShared(pool: pg.Pool, channel: string, queue: string, wake: Wake): Promise<Subscription> {
  let listener = shared.get(pool);
  if (!listener) shared.set(pool, (listener = new SharedListen(pool, channel)));
  return listener.subscribe(queue, wake);
}
